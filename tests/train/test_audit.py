"""hfstream audit: real train-streaming runs (one rank, DDP, resumed, mixtures) prove exactly-once; planted faults are named."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import losses, make_texts, torchrun, write_jsonl
from hfstream.cli.main import main as hfstream
from hfstream.cli.train import main as train
from hfstream.rundir import read_metrics
from hfstream.train.checkpoint import load_checkpoint
from test_trainer import MIXED

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["-q", "record_docs=true", "eval_steps=0", "sample_steps=0", "train.plot=false", "export=false"]


def audit(run_dir, capsys, *flags):
    """(exit code, the report as JSON) of ``hfstream audit RUN_DIR``, and the text report printed."""
    capsys.readouterr()
    code = hfstream(["audit", str(run_dir), "--json", *flags])
    report = json.loads(capsys.readouterr().out)
    assert hfstream(["audit", str(run_dir), *flags]) == code
    return code, report, capsys.readouterr().out


def totals(report, stream=None):
    keys = ("expected", "once", "repeated", "missing", "held_out", "filtered", "buffered", "tail")
    rows = [r for r in report["epochs"] if stream is None or r["stream"] == stream]
    return {k: sum(r[k] for r in rows) for k in keys}


def assert_clean(report):
    t = totals(report)
    assert report["clean"] and not report["problems"] and t["repeated"] == t["missing"] == 0
    assert t["expected"] == t["once"] + t["buffered"] + t["tail"] > 0


def edit_log(path, change):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    change([r for r in records if "micro" in r])
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_run_audits_clean_and_a_planted_duplicate_or_loss_is_named(make_config, capsys):
    config, out = make_config()
    assert train(["--config", str(config), *QUIET]) == 0
    code, report, text = audit(out, capsys)
    assert code == 0
    assert_clean(report)
    assert report["steps"] == 6 and report["micro_batches"] == 6 and report["ranks"] == [0]
    assert totals(report)["held_out"] == 12                       # data.eval_docs: held out, not missing
    assert report["tokens"] == {str(config.parent / "docs.jsonl"): {"tokens": 6 * 4 * 33, "share": 1.0,
                                                                     "budget_share": None}}
    assert "clean: every document read was trained on exactly once" in text and "seen once" in text

    duplicate, lost = out.parent / "duplicate", out.parent / "lost"
    shutil.copytree(out, duplicate)
    shutil.copytree(out, lost)
    planted = {}

    def copy_span(micro):     # a document's tokens in a second row
        planted["dup"] = span = micro[1]["rows"][0][0]
        micro[4]["rows"][2].append(span)

    def delete_span(micro):   # a document's tokens in no row
        planted["lost"] = micro[3]["rows"][1].pop()

    edit_log(duplicate / "docs-rank0.jsonl", copy_span)
    edit_log(lost / "docs-rank0.jsonl", delete_span)
    code, report, text = audit(duplicate, capsys)
    row = planted["dup"][4]
    assert code == 1 and not report["clean"] and totals(report)["repeated"] == 1 and totals(report)["missing"] == 0
    assert f"shard 0/1 epoch 0 row {row}: tokens {planted['dup'][5]}-{planted['dup'][6]}" in report["problems"][0]
    assert "at step 2 rank 0 micro 0 row 0" in report["problems"][0] and "at step 5 rank 0 micro 0 row 2" in \
        report["problems"][0]
    assert "NOT CLEAN: 1 problem(s)" in text
    code, report, text = audit(lost, capsys)
    assert code == 1 and totals(report)["missing"] == 1 and totals(report)["repeated"] == 0
    assert f"row {planted['lost'][4]}: tokens {planted['lost'][5]}-{planted['lost'][6]} of {planted['lost'][7]} " \
           "were never trained and are in no buffer" in report["problems"][0]


def running(config, out, steps, *flags, **popen):
    """train-streaming in a child process, once it has logged ``steps`` steps (it goes on to 100,000)."""
    command = [sys.executable, str(ROOT / "bins" / "train-streaming"), "--config", str(config),
               "--max_steps", "100000", *QUIET, *flags]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), **popen)
    deadline = time.time() + 60
    while max(losses(out) if (out / "metrics.jsonl").exists() else {}, default=0) < steps and time.time() < deadline:
        time.sleep(0.1)
    return proc


def test_a_run_stopped_by_ctrl_c_and_resumed_twice_audits_clean(make_config, capsys):
    config, out = make_config()
    proc = running(config, out, 3, "save_steps=0")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    stopped = load_checkpoint(out / "checkpoint.pt")["step"]
    code, report, _ = audit(out, capsys)
    assert code == 0 and report["steps"] == stopped
    for steps in (stopped + 6, stopped + 12):
        assert train(["--resume", str(out), "--max_steps", str(steps), *QUIET]) == 0
    code, report, text = audit(out, capsys)
    assert code == 0, text
    assert_clean(report)
    assert report["steps"] == stopped + 12 == report["micro_batches"]
    assert [s["resumed_at"] for s in report["segments"]] == [None, stopped, stopped + 6]
    assert f"3 segment(s) (resumed at step {stopped}, {stopped + 6})" in text


def test_a_killed_run_is_unusable_until_resumed_then_audits_clean(make_config, capsys):
    """A crash leaves no final line (exit 2, saying to resume); the resume cuts the log back to the
    checkpoint, as metrics.jsonl, and the whole run audits clean."""
    config, out = make_config()
    proc = running(config, out, 6, start_new_session=True)               # save_steps: 4
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    saved = load_checkpoint(out / "checkpoint.pt")["step"]
    assert max(r["step"] for r in read_metrics(out / "docs-rank0.jsonl")) > saved  # steps to be redone
    assert hfstream(["audit", str(out)]) == 2
    assert "has no final line" in capsys.readouterr().err
    assert train(["--resume", str(out), "--max_steps", str(saved + 5), *QUIET]) == 0
    code, report, text = audit(out, capsys)
    assert code == 0, text
    assert_clean(report)
    assert report["steps"] == saved + 5 == report["micro_batches"]


def test_an_epoch_limited_run_trains_every_document_once(make_config, capsys):
    config, out = make_config()
    assert train(["--config", str(config), "--max_steps", "1000", *QUIET, "data.epochs=1"]) == 0
    code, report, text = audit(out, capsys)
    assert code == 0, text
    assert_clean(report)
    [epoch] = report["epochs"]
    assert epoch["status"] == "complete" and epoch["expected"] == 120 - 12 and epoch["held_out"] == 12
    assert epoch["missing"] == epoch["repeated"] == epoch["buffered"] == 0
    # what is not trained is the stream's tail: less than one batch (4 x 33 tokens), never handed out
    final = [r for r in read_metrics(out / "docs-rank0.jsonl") if r.get("final")][0]
    assert sum(end - start for *_, start, end, _ in final["tail"]) < 4 * 33
    assert epoch["once"] + epoch["tail"] == epoch["expected"] and epoch["tail"] == len({tuple(s[:5])
                                                                                          for s in final["tail"]})


@pytest.mark.slow
def test_a_ddp_run_of_two_ranks_audits_clean(make_config, capsys):
    config, out = make_config()
    proc = torchrun(ROOT / "bins" / "train-streaming", "--config", str(config), "--max_steps", "8", *QUIET)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, report, text = audit(out, capsys)
    assert code == 0, text
    assert_clean(report)
    assert report["ranks"] == [0, 1] and report["micro_batches"] == 16
    shards = {(r[1], r[2]) for r in _spans(out, 0)} | {(r[1], r[2]) for r in _spans(out, 1)}
    assert shards == {(0, 2), (1, 2)}                      # each rank its own shard


def _spans(out, rank):
    return [span for r in read_metrics(out / f"docs-rank{rank}.jsonl") if "micro" in r for row in r["rows"]
            for span in row]


@pytest.mark.parametrize("mix_by,epoch_size,method", [("samples", "null", "random"), ("tokens", "'64k'", "stratified")])
def test_a_mixture_run_audits_clean_per_stream(tmp_path, tokenizer_path, mix_by, epoch_size, method, capsys):
    paths = {name: write_jsonl(tmp_path / f"{name}.jsonl", [{"text": t} for t in make_texts(80, seed=k, prefix=name)])
             for k, name in enumerate(("web", "code"))}
    config = tmp_path / "mixed.yaml"
    config.write_text(MIXED.format(web=paths["web"], code=paths["code"], mix_by=mix_by, epoch_size=epoch_size,
                                   method=method, tokenizer_path=tokenizer_path, output=tmp_path / "out"))
    assert train(["--config", str(config), "--max_steps", "10", *QUIET]) == 0
    code, report, text = audit(tmp_path / "out", capsys)
    assert code == 0, text
    assert_clean(report)
    assert {r["stream"] for r in report["epochs"]} == {"web", "code"}
    first = {"epochs": [r for r in report["epochs"] if r["epoch"] == 0]}
    assert totals(first, "web")["held_out"] == totals(first, "code")["held_out"] == 3   # 6 split between them
    tokens = report["tokens"]
    assert tokens["web"]["tokens"] + tokens["code"]["tokens"] == 10 * 8 * 32
    if mix_by == "tokens":    # stratified: every batch of 8 rows holds 2 web rows and 6 code rows, as budgeted
        assert tokens["web"] == {"tokens": 10 * 2 * 32, "share": 0.25, "budget_share": 0.25}
        assert "web: 640 (25.0%, budget 25.0%)" in text
    else:
        assert tokens["web"]["budget_share"] is None and 0.05 < tokens["web"]["share"] < 0.5


def test_unusable_input_is_a_clear_error(tmp_path, make_config, capsys):
    assert hfstream(["audit", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    config, out = make_config()
    assert train(["--config", str(config), *QUIET]) == 0
    assert train(["--resume", str(out), "--max_steps", "8", *QUIET, "record_docs=false"]) == 0
    capsys.readouterr()
    assert hfstream(["audit", str(out)]) == 2                  # steps 7 and 8 are in no log
    assert "the docs logs end at step 6, but the run reached step 8 (resumed without train.record_docs?)" in \
        capsys.readouterr().err
    (out / "docs-rank0.jsonl").unlink()
    assert hfstream(["audit", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no docs-rank0.jsonl" in err and "train.record_docs: true" in err and "Traceback" not in err
    (out / "docs-rank0.jsonl").write_text('{"step": 1, "micro": 0}\n')
    assert hfstream(["audit", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a record of train.record_docs" in err and "Traceback" not in err


def test_a_rank_that_a_resume_left_out_counts_up_to_that_resume(tmp_path, capsys):
    """Elastic resume (2 ranks, then 1 from step 2): rank 1's log is never cut back, so what it logged
    after step 2 and its final line are stale; its documents went on in the state rank 0 loaded."""
    def micro(step, rank, shard, row, reads=()):
        return {"step": step, "micro": 0, "rank": rank, "streams": ["s"], "rows": [[[0, shard, 2, 0, row, 0, 4, 4]]],
                **({"reads": list(reads)} if reads else {})}

    def final(step, rank, buffered):
        return {"step": step, "rank": rank, "final": True, "streams": ["s"], "tail": [],
                "buffered": [[0, shard, 2, 0, row, 0, 4, 4] for shard, row in buffered]}

    def segment(rank, resumed_at, world_size):
        return {"step": resumed_at or 0, "rank": rank, "segment": {"resumed_at": resumed_at, "world_size": world_size}}

    logs = {0: [segment(0, None, 2), micro(1, 0, 0, 0, [[0, 0, 2, 0, 0, 3]]), micro(2, 0, 0, 1),
                segment(0, 2, 1), micro(3, 0, 0, 2), micro(4, 0, 1, 2), final(4, 0, [])],
            1: [segment(1, None, 2), micro(1, 1, 1, 0, [[0, 1, 2, 0, 0, 3]]), micro(2, 1, 1, 1),
                micro(3, 1, 1, 2), final(3, 1, [])]}                    # step 3: redone by rank 0 after the resume
    for rank, records in logs.items():
        (tmp_path / f"docs-rank{rank}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, report, text = audit(tmp_path, capsys)
    assert code == 0, text
    assert_clean(report)
    assert totals(report)["once"] == 6 and report["micro_batches"] == 6 and report["ranks"] == [0, 1]
