"""The parent's view of one worker: the byte-bounded queue, a real worker subprocess, its stop."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from conftest import make_texts, write_jsonl
from hfstream.source.process import ByteQueue, WorkerProcess
from hfstream.source.spec import SourceSpec


def test_byte_queue_blocks_while_full_admits_one_oversized_item_and_releases_on_close():
    q = ByteQueue(max_bytes=10)
    assert q.put("a", 6) and q.put("b", 4)           # exactly full
    blocked = threading.Event()

    def producer():
        q.put("c", 1)                                 # over the bound: waits for room
        blocked.set()

    threading.Thread(target=producer, daemon=True).start()
    time.sleep(0.2)
    assert not blocked.is_set() and q.num_bytes == 10
    assert q.get(timeout=1) == "a"                    # room for "c" now
    assert blocked.wait(2) and q.num_bytes == 5
    assert q.get(timeout=1) == "b" and q.get(timeout=1) == "c"
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    assert q.put("huge", 1000) and q.num_bytes == 1000   # an oversized item alone is admitted
    done = threading.Event()
    threading.Thread(target=lambda: (q.put("late", 1), done.set()), daemon=True).start()
    q.close()                                         # a blocked put returns (False) at close
    assert done.wait(2) and len(q) == 0


def _worker(path, **options) -> WorkerProcess:
    spec = SourceSpec(str(path), **options)
    return WorkerProcess(spec, start_epoch=0, start_row=0, limit=None, docs_per_message=8, queue_bytes=1 << 20)


def test_a_worker_sends_its_batches_then_done_then_exit(tmp_path):
    texts = make_texts(30)
    worker = _worker(write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts]))
    got, kinds = [], []
    while True:
        kind, message = worker.queue.get(timeout=30)
        kinds.append(kind)
        if kind == "batch":
            got += message["batch"]
        if kind == "exit":
            break
    worker.stop()
    assert got == texts and kinds[-2:] == ["done", "exit"] and message == 0
    assert worker.status["status"] == "ready" and worker.status["reader"] == "fast"


def test_stop_ends_a_worker_that_is_blocked_on_a_full_queue(tmp_path):
    texts = [t * 40 for t in make_texts(400)]
    spec = SourceSpec(str(write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])), epochs=None)
    worker = WorkerProcess(spec, start_epoch=0, start_row=0, limit=None, docs_per_message=4, queue_bytes=4096)
    deadline = time.monotonic() + 30
    while not len(worker.queue) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    # Bounded: past 4 kB no second item is queued (each line here is larger), and the worker,
    # whose stdout pipe then fills, waits for us instead of running ahead.
    assert len(worker.queue) == 1 and worker.proc.poll() is None
    assert worker.silent_for() == 0.0                          # a full queue is our pace, not silence
    t0 = time.monotonic()
    worker.stop()
    assert worker.proc.poll() is not None and time.monotonic() - t0 < 5
    assert all(not thread.is_alive() for thread in worker._threads)


def test_stderr_tail_keeps_the_workers_last_lines(tmp_path):
    worker = _worker(tmp_path / "missing.jsonl")
    while worker.queue.get(timeout=30)[0] != "exit":
        pass
    assert "missing.jsonl" in worker.stderr_tail() and worker.exit_code == 2
    worker.stop()
