"""The run directory: a full disk is one clear error and the last checkpoint stays; killed writes leave nothing."""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import fill_disk
from hfstream.errors import DiskFullError
from hfstream.rundir import MetricsLog, atomic_write_text, ensure_writable_dir, read_metrics
from hfstream.train.checkpoint import load_checkpoint, save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_checkpoint_that_does_not_fit_says_so_and_the_previous_one_still_loads(small_disk):
    path = small_disk / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "weights": torch.arange(1000.0)})
    with pytest.raises(DiskFullError) as info:
        save_checkpoint(path, {"step": 2, "weights": torch.zeros(2_000_000)})  # 8 MB on a 4 MB disk
    message = str(info.value)
    assert f"cannot write {path}: the disk is full (the disk mounted at {small_disk}:" in message
    assert "MB free, checkpoint.pt needs 8.0 MB); the previous checkpoint.pt is intact" in message
    assert "HINT: free space on" in message and "--resume" in message
    assert isinstance(info.value, OSError)
    old = load_checkpoint(path)
    assert old["step"] == 1 and torch.equal(old["weights"], torch.arange(1000.0))
    assert sorted(p.name for p in small_disk.iterdir()) == ["checkpoint.pt"]  # no temporary file left


def test_a_first_file_that_does_not_fit_says_nothing_was_written(small_disk):
    with pytest.raises(DiskFullError, match=r"summary\.json needs 5\.0 MB\); no summary\.json was written"):
        atomic_write_text(small_disk / "summary.json", "x" * 5_000_000)


def test_a_metrics_record_on_a_full_disk_is_one_clear_error(small_disk):
    log = MetricsLog(small_disk / "metrics.jsonl")
    log.write({"step": 1, "loss": 2.5})
    fill_disk(small_disk)
    with pytest.raises(DiskFullError, match=r"metrics\.jsonl: the disk is full .* the records before this one "
                                            r"are intact") as info:
        for step in range(2, 10_000):  # the page the first record is on may still have room
            log.write({"step": step, "loss": 2.5, "pad": "x" * 200})
    assert info.value.__cause__.errno == errno.ENOSPC
    assert read_metrics(small_disk / "metrics.jsonl")[0] == {"step": 1, "loss": 2.5}
    log.close()


def test_a_file_over_the_size_limit_is_one_clear_error(tmp_path):
    # RLIMIT_FSIZE: write() fails with EFBIG (Python ignores SIGXFSZ); no root needed.
    script = textwrap.dedent("""\
        import resource, sys, torch
        from hfstream.train.checkpoint import save_checkpoint
        save_checkpoint(sys.argv[1], {"step": 1})
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            save_checkpoint(sys.argv[1], {"step": 2, "weights": torch.zeros(1_000_000)})
        except OSError as exc:
            print(type(exc).__name__, exc, sep="\\n")
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "checkpoint.pt")], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.stdout.startswith("DiskFullError\n"), out.stderr[-2000:]
    assert "the file size limit of this process (ulimit -f) is reached (1.0 MB); it needs 4.0 MB" in out.stdout
    assert "the previous checkpoint.pt is intact" in out.stdout and "ulimit -f unlimited" in out.stdout
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


KILLED_WRITE = textwrap.dedent("""\
    import os, sys, time
    from pathlib import Path
    from hfstream import rundir
    def stuck(fd):  # the data is written, the rename not done yet: the process dies here
        print("writing", flush=True)
        time.sleep(60)
    rundir.os.fsync = stuck
    rundir.atomic_write_bytes(Path(sys.argv[1]) / "checkpoint.pt", b"x" * 100_000)
""")


def test_temporary_files_of_killed_writes_are_removed_at_the_start_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, str(run)], stdout=subprocess.PIPE,
                              cwd=REPO)
    assert writer.stdout.readline() == b"writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    left = [p.name for p in run.iterdir()]
    assert len(left) == 1 and left[0].startswith(".checkpoint.pt.") and left[0].endswith(".tmp")
    ours = [".metrics.jsonl.a1b2c3d4.tmp", ".training_curve.png.tmp", ".batches-rank3.jsonl.zz_9zz_9.tmp"]
    theirs = [".checkpoint.pt.tmp.keep", "notes.tmp", ".other.abcd1234.tmp", "checkpoint.pt.abcd1234.tmp",
              ".checkpoint.pt.TOOLONGXX.tmp"]
    for name in ours + theirs:
        (run / name).write_text("x")
    (run / "sub").mkdir()
    (run / "sub" / ".checkpoint.pt.abcd1234.tmp").write_text("x")
    ensure_writable_dir(run)  # what a run or a resume does first
    assert sorted(p.name for p in run.iterdir()) == sorted(theirs + ["sub"])
    assert (run / "sub" / ".checkpoint.pt.abcd1234.tmp").exists()
