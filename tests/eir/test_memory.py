"""The server's memory under clients that ask and never read: bounded while they stall, given
back when they go. ``hfstream serve`` runs in its own process; its RSS is read from /proc."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from conftest import write_jsonl
from hfstream.eir.client import EirClient
from test_server import RawWs, ServeProcess

MiB = 1 << 20


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
def test_stalled_clients_cannot_grow_the_server_and_their_memory_is_given_back(tmp_path):
    words = [f"word{k:03d}" for k in range(997)]
    docs = [{"text": " ".join(words[(7 * d + k) % 997] for k in range(600))} for d in range(300)]
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    limit = 64 * MiB
    stalled: list[RawWs] = []
    with ServeProcess("--dataset", str(path), "--max-pending-bytes", str(limit)) as server, \
            EirClient(server.url) as client:
        try:
            assert wait_for(lambda: client.status()["read_ahead"] >= 4000, 15)  # read-ahead full (16 M chars)
            idle = rss(server.pid)
            for _ in range(20):  # each asks for 3 x 4,096 samples of 512 words (~25 MB of JSON each)
                ws = RawWs(server.url)
                ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                ws.handshake()
                for _ in range(3):
                    ws.send_json({"type": "getData", "payload": {"batch_size": 4096}})
                stalled.append(ws)
            assert wait_for(lambda: client.status()["pending_reply_bytes"] >= limit * 0.7, 15)
            time.sleep(1.0)
            peak = rss(server.pid)
            assert client.status()["pending_reply_bytes"] <= limit * 1.25
        finally:
            for ws in stalled:
                ws.abort()
        assert wait_for(lambda: client.status()["pending_reply_bytes"] == 0, 10)
        # given back (malloc_trim): before, 75% of the peak stayed with the process
        assert wait_for(lambda: rss(server.pid) - idle < (peak - idle) / 2, 5), (idle, peak, rss(server.pid))
        assert len(client.get_data(8)) == 8  # and it still serves
    # unbounded, the 20 replies held ~1.7 GB (measured before the budget existed)
    assert peak - idle < limit + 96 * MiB, (idle / MiB, peak / MiB)
