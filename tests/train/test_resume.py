"""Resuming train-streaming: a complete run is left alone, summaries name the run and the segment, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import losses
from hfstream.cli.train import main
from hfstream.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _files(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.iterdir() if p.is_file()}


def test_resuming_a_complete_run_says_so_and_changes_nothing(make_config, capsys):
    config, out = make_config()
    assert main(["--config", str(config), "-q"]) == 0
    capsys.readouterr()
    before = _files(out)
    assert main(["--resume", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "is complete: it reached step 6 (max_steps=6); nothing was changed" in printed
    assert "--max_steps 12" in printed
    assert _files(out) == before                       # not a byte, not a timestamp
    assert json.loads((out / "summary.json").read_text())["final_eval_loss"] is not None


def test_after_a_resume_the_summary_names_the_whole_run_and_this_segment(make_config, capsys):
    config, out = make_config()
    assert main(["--config", str(config), "-q"]) == 0
    first = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["--resume", str(out), "-q", "--max_steps", "9"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 9 and summary["tokens"] == 9 * 128 and summary["resumed_at_step"] == 6
    assert summary["segment"]["steps"] == 3 and summary["segment"]["tokens"] == 3 * 128
    assert summary["tokens_per_s"] == summary["segment"]["tokens_per_s"] > 0
    assert summary["run_train_s"] >= first["train_s"] + summary["segment"]["train_s"] - 0.01
    assert "done: 9 steps, 1,152 tokens in all; this segment: 3 steps, 384 tokens in" in printed
    assert first["segment"]["steps"] == 6 and first["resumed_at_step"] is None


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_exits_143(make_config):
    config, out = make_config()
    command = [sys.executable, str(ROOT / "bins" / "train-streaming"), "--config", str(config),
               "--max_steps", "100000", "-q", "eval_steps=0", "sample_steps=0", "save_steps=0",
               "record_batches=false"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.time() + 60
    while len(losses(out) if (out / "metrics.jsonl").exists() else {}) < 2 and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "stopped by SIGTERM" in stderr and "interrupted:" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and load_checkpoint(out / "checkpoint.pt")["step"] == summary["steps"]
