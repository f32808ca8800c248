"""The fork server's side: import the worker once, then fork a ready worker for each request.

``python -m hfstream.worker.zygote FD``: FD is a SOCK_SEQPACKET socket to the parent
(:mod:`hfstream.source.forkserver`). A request is ``{"argv": [...], "env": {...}}`` with three
file descriptors (the worker's stdin, stdout, stderr); the reply is ``{"pid": N}``. A forked
worker is exactly ``python -m hfstream.worker ARGV`` (its own session, those fds as 0/1/2, that
environment) minus the ~0.3 s of imports. When a worker exits, ``{"exit": N, "code": C}`` follows
(C as ``Popen.returncode``: negative for a signal). The server is single-threaded (it forks) and
ends when the parent's end of the socket closes.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys

from hfstream.worker.main import main as worker_main

MAX_MESSAGE = 1 << 20


def _run_worker(sock: socket.socket, fds: list[int], request: dict) -> None:
    """In the forked child: become the worker."""
    code = 1
    try:
        sock.close()
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        code = worker_main(request["argv"])
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reap(sock: socket.socket, children: set[int]) -> None:
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            children.discard(pid)
            sock.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def serve(sock: socket.socket) -> None:
    import pyarrow.parquet  # noqa: F401 - what every parquet worker imports, done once here

    children: set[int] = set()
    while True:
        ready, _, _ = select.select([sock], [], [], 0.1)
        _reap(sock, children)
        if not ready:
            continue
        message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 3)
        if not message:  # the parent is gone
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_worker(sock, fds, json.loads(message))
        for fd in fds:
            os.close(fd)
        children.add(pid)
        sock.send(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
