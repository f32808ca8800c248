"""Workers forked by the fork server (``fork_server=True``): the same exactness, watchdog and cleanup as spawned ones."""

import multiprocessing
import os
import signal
import subprocess

from conftest import make_texts, write_jsonl
from hfstream import HuggingFaceStreamingCorpus
from hfstream.source import forkserver


def test_a_forked_worker_reports_its_exit_as_popen_would(tmp_path):
    """Restarts after kill -9, the SIGSTOP watchdog and no orphans, forked: tests/source/test_corpus.py
    (parametrized over fork_server)."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in make_texts(200)])
    with HuggingFaceStreamingCorpus(str(path), epochs=None, batch_size=4, queue_bytes=1024,
                                    fork_server=True) as corpus:
        next(corpus.stream())
        worker = corpus._worker.proc
        assert isinstance(worker, forkserver.ForkedWorker) and worker.poll() is None
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait(timeout=5) == -signal.SIGKILL


def _read_in_child(path, queue):
    with HuggingFaceStreamingCorpus(path, fork_server=True) as corpus:
        queue.put((list(corpus.stream()), forkserver._SERVER.pid == os.getpid()))


def test_a_forked_process_gets_its_own_server(tmp_path):
    texts = make_texts(40)
    path = str(write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts]))
    with HuggingFaceStreamingCorpus(path, fork_server=True) as corpus:  # this process's server exists
        assert list(corpus.stream()) == texts
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_read_in_child, args=(path, queue))
    child.start()
    got, own = queue.get(timeout=60)
    child.join(timeout=30)
    assert got == texts and own


def test_the_server_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("HFSTREAM_FORK_SERVER", "0")
    texts = make_texts(20)
    path = str(write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts]))
    got = []
    with HuggingFaceStreamingCorpus(path, fork_server=True) as corpus:
        for text in corpus.stream():
            if not got:
                assert isinstance(corpus._worker.proc, subprocess.Popen)
            got.append(text)
    assert got == texts
