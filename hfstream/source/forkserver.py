"""A fork server for worker subprocesses: many workers started in milliseconds instead of ~0.3 s of imports each.

A process that starts many workers (the virtual shards of :mod:`hfstream.loader.lanes`: one
reader per shard) asks one long-lived server (:mod:`hfstream.worker.zygote`, started on first
use, one per process) to fork them. Each worker is still its own process with its own pipes,
session and exit code, watched, killed and restarted exactly as a spawned one;
:class:`ForkedWorker` gives it ``subprocess.Popen``'s interface.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading

from hfstream.errors import WorkerError

_MAX_MESSAGE = 1 << 20


class ForkedWorker:
    """A worker forked by the fork server, seen as a ``subprocess.Popen``."""

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int):
        self.pid = pid
        self.stdin = os.fdopen(stdin, "wb", buffering=0)
        self.stdout = os.fdopen(stdout, "rb", buffering=1 << 20)
        self.stderr = os.fdopen(stderr, "rb")
        self.returncode: int | None = None
        self._exited = threading.Event()

    def _set_exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """This process's fork server (:func:`fork_server`)."""

    def __init__(self, env: dict[str, str]):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, "-m", "hfstream.worker.zygote", str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        theirs.close()
        self.sock = ours
        self.pid = os.getpid()
        self._lock = threading.Lock()          # the children and early exits
        self._spawn_lock = threading.Lock()    # one request (and its reply) at a time
        self._spawned: queue.Queue = queue.Queue()
        self._children: dict[int, ForkedWorker] = {}
        self._exits: dict[int, int] = {}      # exits reported before their worker was registered
        threading.Thread(target=self._listen, daemon=True, name="hfstream-forkserver").start()

    def _listen(self) -> None:
        while True:
            try:
                message = self.sock.recv(_MAX_MESSAGE)
            except OSError:
                message = b""
            if not message:
                self._spawned.put(None)
                for child in list(self._children.values()):  # the server died: so are its children's reports
                    if child.returncode is None:
                        child._set_exit(-signal.SIGKILL)
                return
            event = json.loads(message)
            if "pid" in event:
                self._spawned.put(event["pid"])
                continue
            with self._lock:
                child = self._children.pop(event["exit"], None)
                if child is None:
                    self._exits[event["exit"]] = event["code"]
            if child is not None:
                child._set_exit(event["code"])

    def spawn(self, argv: list[str], env: dict[str, str]) -> ForkedWorker:
        """``python -m hfstream.worker ARGV`` with ``env``, forked."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        try:
            with self._spawn_lock:
                socket.send_fds(self.sock, [json.dumps({"argv": argv, "env": env}).encode()],
                                [stdin_r, stdout_w, stderr_w])
                pid = self._spawned.get(timeout=60)
            if pid is None:
                raise WorkerError("the worker fork server stopped",
                                  "look for its error above; set HFSTREAM_FORK_SERVER=0 to spawn workers")
            child = ForkedWorker(pid, stdin_w, stdout_r, stderr_r)
            with self._lock:
                if pid in self._exits:
                    child._set_exit(self._exits.pop(pid))
                else:
                    self._children[pid] = child
            return child
        finally:
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None


_SERVER: ForkServer | None = None
_SERVER_LOCK = threading.Lock()


def fork_server(env: dict[str, str]) -> ForkServer:
    """This process's fork server, started with ``env`` on first use (again after a fork)."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or not _SERVER.alive():
            _SERVER = ForkServer(env)
        return _SERVER


def enabled(requested: bool) -> bool:
    """Whether to fork workers: asked for, and not turned off by ``HFSTREAM_FORK_SERVER=0``."""
    return requested and os.environ.get("HFSTREAM_FORK_SERVER", "1") != "0" and hasattr(socket, "send_fds")


def spawn_args(cmd: list[str]) -> list[str]:
    """The worker's own arguments in a ``python -m hfstream.worker ...`` command."""
    return cmd[cmd.index("hfstream.worker") + 1:]


