"""HuggingFaceStreamingCorpus: sharding, exact resume, crashes, hangs, orphans, Ctrl+C."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import make_texts, read_all, write_jsonl, write_parquet
from hfstream import HuggingFaceStreamingCorpus
from hfstream.errors import ConfigError, StateError, WorkerError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


# -- sharding -------------------------------------------------------------------------------

@pytest.mark.parametrize("num_shards,shard_by", [(2, "auto"), (4, "files"), (3, "auto"), (2, "rows"),
                                                  (3, "row_groups")])
def test_shards_are_disjoint_and_cover_the_dataset(parquet_dir, num_shards, shard_by):
    directory, texts = parquet_dir
    shards = [read_all(str(directory), shard=k, num_shards=num_shards, shard_by=shard_by)
              for k in range(num_shards)]
    seen = [t for shard in shards for t in shard]
    assert len(seen) == len(set(seen)) == len(texts)  # disjoint
    assert set(seen) == set(texts)                    # complete
    assert all(shards)


def test_seeded_file_order_changes_per_epoch_but_is_reproducible(parquet_dir):
    directory, texts = parquet_dir
    run = read_all(str(directory), seed=7, epochs=3)
    assert run == read_all(str(directory), seed=7, epochs=3)
    epochs = [run[100 * e:100 * (e + 1)] for e in range(3)]
    assert all(sorted(e) == sorted(texts) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # the file order differs between epochs


def test_row_group_sharding_needs_parquet(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in make_texts(20)])
    with pytest.raises(ConfigError, match="shard_by='row_groups' needs parquet"):
        read_all(str(path), shard=0, num_shards=2, shard_by="row_groups")


def test_a_state_from_before_row_group_sharding_resumes_as_it_was_read(parquet_dir):
    """Before row groups, "auto" over 4 files and 3 shards meant "rows": an old state keeps that meaning."""
    directory, _ = parquet_dir
    options = dict(shard=1, num_shards=3, batch_size=4)
    rows_run = read_all(str(directory), shard_by="rows", **options)
    with HuggingFaceStreamingCorpus(str(directory), shard_by="rows", **options) as corpus:
        stream = corpus.stream()
        head = [next(stream) for _ in range(10)]
        state = corpus.state_dict()
    old = {k: v for k, v in state.items() if k not in ("shard_mode", "revision")}  # the old state's keys
    with HuggingFaceStreamingCorpus(str(directory), **options) as auto:
        old["fingerprint"] = auto.fingerprint()  # saved by an "auto" corpus
        auto.load_state_dict(old)
        assert head + list(auto.stream()) == rows_run
        assert auto.state_dict()["shard_mode"] == "rows"
    assert read_all(str(directory), **options) != rows_run  # a new "auto" run shards by row group


def test_repeat_forever_and_max_samples(tmp_path):
    texts = make_texts(10)
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    assert read_all(str(path), epochs=None, max_samples=35) == (texts * 4)[:35]


# -- exact resume ---------------------------------------------------------------------------

def _resume_run(dataset, cut_points, **options):
    """Read the stream, cutting at each point into a fresh corpus restored from state."""
    out, state = [], None
    bounds = list(cut_points) + [None]
    for stop in bounds:
        corpus = HuggingFaceStreamingCorpus(dataset, batch_size=8, **options)
        if state is not None:
            corpus.load_state_dict(state)
        with corpus:
            for text in corpus.stream():
                out.append(text)
                if stop is not None and len(out) >= stop:
                    break
            state = corpus.state_dict()
    return out, state


def test_resume_is_exact_across_three_restores_with_filtering_and_epochs(tmp_path):
    texts = make_texts(60)
    for i in (4, 9, 10, 31):
        texts[i] = None  # skipped rows between documents must not shift the resume point
    write_parquet(tmp_path / "a.parquet", texts[:30])
    write_parquet(tmp_path / "b.parquet", texts[30:])
    options = dict(epochs=2, seed=3, num_shards=2, shard=1, shard_by="rows")
    straight = read_all(str(tmp_path), **options)
    resumed, state = _resume_run(str(tmp_path), [5, 6, 33], **options)
    assert resumed == straight
    assert state["finished"] and state["delivered"] == len(straight)


def test_state_after_finish_yields_nothing_more(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in make_texts(5)])
    with HuggingFaceStreamingCorpus(str(path)) as corpus:
        assert len(list(corpus.stream())) == 5
        state = corpus.state_dict()
    with HuggingFaceStreamingCorpus(str(path)) as corpus:
        corpus.load_state_dict(state)
        assert list(corpus.stream()) == []


def test_state_of_other_dataset_is_a_clear_error(tmp_path, parquet_dir):
    directory, _ = parquet_dir
    with HuggingFaceStreamingCorpus(str(directory), shard=0, num_shards=2) as corpus:
        state = corpus.state_dict()
    other = HuggingFaceStreamingCorpus(str(directory), shard=1, num_shards=2)
    with pytest.raises(StateError, match="shard 0/2"):
        other.load_state_dict(state)
    with pytest.raises(StateError, match="state_dict"):
        other.load_state_dict({"epoch": 0})


# -- crashes, hangs, garbage ----------------------------------------------------------------

@pytest.mark.parametrize("fork_server", [False, True], ids=["spawned", "forked"])
def test_kill_9_of_the_worker_k_times_loses_and_repeats_nothing(tmp_path, fork_server):
    # 4 kB documents: at each kill, what is left (> 1.4 MB) cannot all sit in the pipe and the
    # reader's 1 MB buffer, so the worker is still alive and the kill really interrupts it.
    texts = [t + " " + "x" * 4000 for t in make_texts(400)]
    write_parquet(tmp_path / "d.parquet", texts, row_group_size=20)
    clean = read_all(str(tmp_path), epochs=2)
    got, kills = [], 0
    with HuggingFaceStreamingCorpus(str(tmp_path), epochs=2, batch_size=16, queue_bytes=2048,
                                    fork_server=fork_server) as corpus:
        for text in corpus.stream():
            got.append(text)
            if len(got) in (50, 250, 450) and corpus.worker_pid is not None:
                os.kill(corpus.worker_pid, signal.SIGKILL)
                kills += 1
        assert corpus.num_restarts >= kills == 3
    assert got == clean


@pytest.mark.parametrize("fork_server", [False, True], ids=["spawned", "forked"])
def test_sigstopped_worker_is_killed_by_the_watchdog_and_replaced(tmp_path, fork_server):
    # 4 kB documents, as in the kill -9 test: when it is stopped, the worker cannot have sent them all
    # already (the pipe and the reader's 1 MB buffer hold less than what is left).
    texts = [t + " " + "x" * 4000 for t in make_texts(400)]
    write_parquet(tmp_path / "d.parquet", texts, row_group_size=10)
    got = []
    with HuggingFaceStreamingCorpus(str(tmp_path), batch_size=8, queue_bytes=1024,
                                    watchdog_timeout=1.5, heartbeat=0.2, fork_server=fork_server) as corpus:
        for text in corpus.stream():
            got.append(text)
            if len(got) == 40:
                stopped = corpus.worker_pid
                os.kill(stopped, signal.SIGSTOP)
        assert corpus.num_restarts >= 1
    assert got == texts
    assert _wait_gone(stopped, 5)


FAULTY_PYTHON = textwrap.dedent("""\
    #!{python}
    # Runs the real worker, but the first time (marker file) sends {bad} in place of its 4th
    # stdout line, and stops there.
    import os, subprocess, sys
    marker = {marker!r}
    child = subprocess.Popen([{python!r}] + sys.argv[1:], stdout=subprocess.PIPE)
    for n, line in enumerate(child.stdout):
        if n == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            sys.stdout.buffer.write({bad})
            sys.stdout.flush()
            child.kill()
            sys.exit(0)
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
    sys.exit(child.wait())
""")


def faulty_python(tmp_path, bad: str = 'line[: len(line) // 2] + b"\\n"'):
    """A worker command that sends ``bad`` (a Python expression) once as its 4th line."""
    wrapper = tmp_path / "faulty-python"
    wrapper.write_text(FAULTY_PYTHON.format(python=sys.executable, marker=str(tmp_path / "marker"), bad=bad))
    wrapper.chmod(0o755)
    return str(wrapper)


def test_malformed_line_restarts_from_the_last_good_batch(tmp_path):
    texts = make_texts(120)
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    with HuggingFaceStreamingCorpus(str(path), batch_size=10, python=faulty_python(tmp_path)) as corpus:
        assert list(corpus.stream()) == texts
        assert corpus.num_restarts == 1
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("line", [
    b'{"batch": 5}\n',
    b'{"batch": ["x"], "epoch": 0}\n',
    b'{"batch": ["x", 7], "epoch": 0, "rows": [0, 1], "end": 2}\n',
    b'{"batch": ["x", "y"], "epoch": 0, "rows": [0], "end": 2}\n',
    b'{"batch": ["x"], "epoch": -1, "rows": [0], "end": 1}\n',
    b'{"done": true}\n',
    b'{"error": "boom"}\n',
    b'{"heartbeat": 1, "done": true, "total": 0, "epoch": 0, "end": 0}\n',
], ids=["batch-not-a-list", "batch-without-rows", "batch-non-str", "rows-mismatch", "negative-epoch",
        "done-without-position", "error-not-an-object", "two-kinds"])
def test_a_line_of_the_wrong_shape_restarts_exactly_like_a_garbled_one(tmp_path, line):
    texts = make_texts(120)
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    with HuggingFaceStreamingCorpus(str(path), batch_size=10, python=faulty_python(tmp_path, repr(line))) as corpus:
        assert list(corpus.stream()) == texts  # nothing lost, nothing repeated
        assert corpus.num_restarts == 1
    assert (tmp_path / "marker").exists()


def _shell_worker(tmp_path, script: str) -> str:
    worker = tmp_path / "shell-worker"
    worker.write_text(f"#!/bin/sh\n{script}\n")
    worker.chmod(0o755)
    return str(worker)


def test_a_worker_that_always_dies_ends_in_worker_error_with_exit_code_and_stderr(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in make_texts(5)])
    dying = _shell_worker(tmp_path, "echo 'simulated crash: out of memory' >&2\nexit 9")
    with HuggingFaceStreamingCorpus(str(path), python=dying, max_restarts=2) as corpus:
        with pytest.raises(WorkerError) as info:
            list(corpus.stream())
    assert info.value.exit_code == 9
    assert "simulated crash" in info.value.stderr_tail and "simulated crash" in str(info.value)
    assert corpus.num_restarts == 3
    wrong = _shell_worker(tmp_path, "echo '{\"batch\": [\"x\"], \"epoch\": 0}'")  # always the wrong shape
    with HuggingFaceStreamingCorpus(str(path), python=wrong, max_restarts=2) as corpus:
        with pytest.raises(WorkerError, match=r"malformed output \(a 'batch' message without 'rows'"):
            list(corpus.stream())
    assert corpus.num_restarts == 3


# -- no orphans -----------------------------------------------------------------------------

PARENT = textwrap.dedent("""\
    import signal, sys, time
    from hfstream import HuggingFaceStreamingCorpus
    from hfstream.source import forkserver
    # Ctrl+C raises KeyboardInterrupt, as in a terminal, also when the tests run as a background
    # job (whose children start with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fork = sys.argv[2] == "fork"
    corpus = HuggingFaceStreamingCorpus(sys.argv[1], epochs=None, batch_size=4, queue_bytes=1024, fork_server=fork)
    for i, text in enumerate(corpus.stream()):
        if i == 0:
            print(corpus.worker_pid, forkserver._SERVER.proc.pid if fork else 0, flush=True)
        time.sleep(0.01)
""")


def _start_parent(tmp_path, fork_server=False):
    """A process reading a corpus forever; returns it, its worker's pid and its fork server's (or 0)."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in make_texts(30)])
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    parent = subprocess.Popen([sys.executable, str(script), str(path), "fork" if fork_server else "spawn"],
                              stdout=subprocess.PIPE, env=env)
    worker_pid, server_pid = map(int, parent.stdout.readline().split())
    assert _pid_alive(worker_pid)
    return parent, worker_pid, server_pid


@pytest.mark.parametrize("fork_server", [False, True], ids=["spawned", "forked"])
def test_no_orphan_after_sigkill_of_the_parent(tmp_path, fork_server):
    parent, worker_pid, server_pid = _start_parent(tmp_path, fork_server)
    parent.kill()
    parent.wait()
    assert _wait_gone(worker_pid, 5), "the worker outlived its SIGKILLed parent"
    assert not server_pid or _wait_gone(server_pid, 5), "the fork server outlived its SIGKILLed parent"


def test_ctrl_c_stops_parent_and_worker_within_2s(tmp_path):
    parent, worker_pid, _ = _start_parent(tmp_path)
    parent.send_signal(signal.SIGINT)
    parent.wait(timeout=10)
    assert _wait_gone(worker_pid, 2.0), "the worker was still running 2 s after Ctrl+C"


def test_stream_called_again_continues_after_the_last_yielded_document(tmp_path):
    texts = make_texts(40)
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    got = []
    with HuggingFaceStreamingCorpus(str(path), batch_size=16) as corpus:
        for stop in (3, 20, 21):  # breaks mid-batch, across batches, one document at a time
            for text in corpus.stream():
                got.append(text)
                if len(got) == stop:
                    break
        got.extend(t for batch in corpus.stream_batches() for t in batch)
        assert corpus.num_delivered == 40
    assert got == texts


def test_the_worker_imports_the_parents_hfstream(tmp_path):
    # The worker runs from the parent's PYTHONPATH plus the directory holding this hfstream: a
    # parent run from elsewhere (or beside an installed copy) must not start another version.
    from hfstream.source import process

    assert os.path.isfile(os.path.join(process._PACKAGE_ROOT, "hfstream", "worker", "__main__.py"))
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from hfstream import HuggingFaceStreamingCorpus\n"
              "with HuggingFaceStreamingCorpus(sys.argv[2]) as corpus: print(len(list(corpus.stream())))")
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in make_texts(7)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script, process._PACKAGE_ROOT, str(path)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "7", out.stderr[-2000:]
