"""One running worker subprocess, seen from the parent: spawn, read, watch, stop.

A reader thread decodes protocol lines into a queue bounded in bytes, so the consumer never
waits on the pipe while the worker is ahead, and memory stays bounded while it is behind.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

import orjson

from hfstream.source import forkserver
from hfstream.source import wire as protocol
from hfstream.source.spec import SourceSpec

log = logging.getLogger("hfstream.worker")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds hfstream/


class ByteQueue:
    """A FIFO bounded by the total size of its items (one oversized item is always admitted)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.num_bytes = 0
        self._items: collections.deque[tuple[Any, int]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any, nbytes: int = 0) -> bool:
        """Add an item, blocking while full. Returns False if the queue was closed meanwhile."""
        with self._cond:
            while self.num_bytes and self.num_bytes + nbytes > self.max_bytes and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append((item, nbytes))
            self.num_bytes += nbytes
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> Any:
        """Remove and return the oldest item. Raises queue.Empty after ``timeout`` seconds."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            item, nbytes = self._items.popleft()
            self.num_bytes -= nbytes
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self.num_bytes = 0
            self._cond.notify_all()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class WorkerProcess:
    """A worker reading ``spec`` from ``(start_epoch, start_row)``; ``options`` are more worker flags.

    Items in ``self.queue`` are ``(kind, payload)`` with kind ``batch``, ``done`` or ``error``
    (payload: the message), ``bad`` (a malformed line) or ``exit`` (payload: exit code), which
    is always the last item.
    """

    def __init__(self, spec: SourceSpec, *, start_epoch: int, start_row: int, limit: int | None,
                 docs_per_message: int, queue_bytes: int, heartbeat_s: float = 1.0,
                 progress_interval_s: float = 1.0, python: list[str] | None = None,
                 options: dict[str, str | None] | None = None, fork: bool = False):
        self.queue = ByteQueue(queue_bytes)
        self.progress: dict[str, Any] = {}
        self.status: dict[str, Any] = {}
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._last_active = time.monotonic()
        self._reading = True
        self.killed_by_watchdog = False
        cmd = [*(python or [sys.executable]), "-m", "hfstream.worker", "--spec", spec.to_json(),
               "--start-epoch", str(start_epoch), "--start-row", str(start_row),
               "--docs-per-message", str(docs_per_message), "--heartbeat", str(heartbeat_s),
               "--progress-interval", str(progress_interval_s)]
        if limit is not None:
            cmd += ["--limit", str(limit)]
        for flag, value in (options or {}).items():  # e.g. {"--pinned-revision": sha}
            if value is not None:
                cmd += [flag, value]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        env.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        # Own session: a terminal's Ctrl+C reaches the parent, which stops the worker itself.
        # Our end of its stdin closes when we die (even on SIGKILL): the worker then exits.
        if python is None and forkserver.enabled(fork):  # forked from a server that imported it all once
            self.proc: Any = forkserver.fork_server(env).spawn(forkserver.spawn_args(cmd), env)
        else:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, bufsize=1 << 20, env=env,
                                         start_new_session=True, close_fds=True)
        self._finalizer = weakref.finalize(self, _kill, self.proc)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True, name="hfstream-reader"),
                         threading.Thread(target=self._read_stderr, daemon=True, name="hfstream-stderr")]
        for thread in self._threads:
            thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def silent_for(self) -> float:
        """Seconds since the worker last wrote a line, counted only while we wait for one."""
        return time.monotonic() - self._last_active if self._reading else 0.0

    def _read_stdout(self) -> None:
        put = self.queue.put
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self._last_active = time.monotonic()
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("truncated line (no newline at end of output)")
                message = protocol.decode(line)
            except ValueError as exc:
                put(("bad", f"{exc}: {line[:80]!r}"))
                _kill(self.proc)
                break
            if "batch" in message:
                self._reading = False  # a full queue is the consumer's pace, not a silent worker
                put(("batch", message), len(line))
                self._last_active, self._reading = time.monotonic(), True
            elif "heartbeat" in message:
                continue
            elif "status" in message:
                self.status = message
            else:
                put((protocol.kind_of(message), message))
        self.proc.wait()
        self._reading = False
        put(("exit", self.proc.returncode))

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace").rstrip()
            if line.startswith('{"progress"'):
                try:
                    self.progress = orjson.loads(line)
                    continue
                except orjson.JSONDecodeError:
                    pass
            self._stderr_tail.append(line)
            # Warnings (retries, restarts) are for the user; an error also arrives as a protocol
            # message that the parent raises with its hint, so its log line stays at debug level.
            level = logging.WARNING if " WARNING:" in line else logging.DEBUG
            log.log(level, "%s", line)

    def stderr_tail(self) -> str:
        for thread in self._threads[1:]:
            thread.join(timeout=1.0)  # let the last lines arrive when the process has ended
        return "\n".join(self._stderr_tail)

    @property
    def exit_code(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        _kill(self.proc)

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop the worker (stdin closed, then SIGTERM, then SIGKILL) and release the queue."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                self.proc.terminate()
                self.proc.wait(timeout=grace_s)
            except (subprocess.TimeoutExpired, OSError):
                pass
        _kill(self.proc)
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout=2.0)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass
        self._finalizer.detach()
