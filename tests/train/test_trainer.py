"""train-streaming end to end: outputs, exact resume, held-out docs never trained on, Ctrl+C, bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import losses, make_texts, train_small_tokenizer, write_jsonl
from hfstream.train.checkpoint import load_checkpoint
from hfstream.cli.train import main
from hfstream.errors import EmptyDatasetError
from hfstream.source.heldout import ExcludingSource, text_id
from hfstream.train.evaluate import pack_rows
from hfstream.rundir import read_metrics
from hfstream.tokens.encoder import TextEncoder

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"doc (\d+):")

def batch_log(run_dir, rank=0):
    return [json.loads(line) for line in (run_dir / f"batches-rank{rank}.jsonl").read_text().splitlines()]


def trained_text(run_dir, tokenizer, rank=0):
    """Everything a rank trained on, decoded: its rows in order (inputs + the last target)."""
    encoder = TextEncoder(tokenizer)
    rows = [np.array(r["rows"]) for r in batch_log(run_dir, rank)]
    return encoder.decode(np.concatenate([row.reshape(-1) for row in rows]))


def test_end_to_end_in_process(make_config, capsys):
    config, out = make_config()
    before = set(_children(os.getpid()))
    assert main(["--config", str(config), "-q"]) == 0
    assert not [k for k in set(_children(os.getpid())) - before if _alive(k)]  # workers stopped
    printed = capsys.readouterr()
    assert "done: 6 steps" in printed.out and "eval loss" in printed.out
    assert "global batch: 4 sequences x 32 tokens x 1 accumulation x 1 rank(s) = 128 tokens/step" in printed.err
    assert "data order: rank r streams shard r/1" in printed.err
    assert "--- sample at step 3 ---" in printed.err
    names = {p.name for p in out.iterdir()}
    assert {"checkpoint.pt", "config.yaml", "metrics.jsonl", "samples.jsonl", "summary.json",
            "training_curve.png", "tokenizer.json", "run_info.json", "batches-rank0.jsonl"} <= names
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "eval_loss" in r] == [0, 3, 6]
    assert all(r["eval_ppl"] > 1 for r in records if "eval_loss" in r)
    assert all({"lr", "tokens", "tokens_per_s", "data_wait_pct"} <= set(r) for r in records if "loss" in r)
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [(s["step"], s["prompt"]) for s in samples] == [(3, "doc 1"), (3, "alpha"), (6, "doc 1"), (6, "alpha")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["tokens"] == 6 * 128 and not summary["interrupted"]
    assert summary["final_eval_loss"] is not None and 0 <= summary["data_wait_pct"] <= 100
    assert (out / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 6 and ckpt["world_size"] == 1 and len(ckpt["ranks"]) == 1
    assert {"model", "optimizer", "scheduler", "config", "tokenizer"} <= set(ckpt)
    assert ckpt["scheduler"]["decay_steps"] == 8


def test_resume_gives_the_same_batches_and_losses_as_one_run(make_config):
    config, straight = make_config("straight")
    assert main(["--config", str(config), "-q", "--max_steps", "8", "eval_steps=0"]) == 0
    config, split = make_config("split")
    assert main(["--config", str(config), "-q", "--max_steps", "4", "eval_steps=0"]) == 0
    assert load_checkpoint(split / "checkpoint.pt")["step"] == 4
    # the run's own config.yaml is used; --max_steps extends it (the schedule is pinned by decay_steps)
    assert main(["--resume", "--output", str(split), "-q", "--max_steps", "8"]) == 0
    assert losses(split) == losses(straight) and len(losses(straight)) == 8
    assert [b["sha1"] for b in batch_log(split)] == [b["sha1"] for b in batch_log(straight)]
    a = load_checkpoint(straight / "checkpoint.pt")["model"]
    b = load_checkpoint(split / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_held_out_documents_are_never_trained_on(make_config, dataset, tokenizer_path):
    _, texts = dataset
    config, out = make_config()
    # more than an epoch of the data: later epochs must skip the held-out documents too
    assert main(["--config", str(config), "-q", "--max_steps", "30", "train.batch_size=16",
                 "eval_steps=0", "sample_steps=0", "save_steps=0", "logging_steps=10"]) == 0
    seen = {int(m) for m in MARKER.findall(trained_text(out, tokenizer_path))}
    assert seen.isdisjoint(range(12))                      # the first 12 documents are held out
    assert set(range(12, 120)) <= seen                     # everything else was trained on


def test_no_tokenizer_trains_one_from_the_stream_without_the_held_out_docs(make_config):
    config, out = make_config(tokenizer=None)
    assert main(["--config", str(config), "-q", "--max_steps", "2", "eval_steps=0",
                 "tokenizer.vocab_size=300"]) == 0
    report = json.loads((out / "tokenizer_report.json").read_text())
    assert report["documents"] == 108 and report["holdout_documents"] == 12   # 120 - 12 held out
    assert TextEncoder(out / "tokenizer.json").vocab_size == 300
    assert load_checkpoint(out / "checkpoint.pt")["model_config"]["vocab_size"] == 320  # padded to 64


def test_console_script_end_to_end(make_config):
    config, out = make_config()
    script = Path(sys.executable).with_name("train-streaming")
    command = [str(script)] if script.exists() else [sys.executable, str(ROOT / "bins" / "train-streaming")]
    proc = subprocess.run(command + ["--config", str(config), "--max-steps", "3", "-q"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert "done: 3 steps" in proc.stdout
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3


def _children(pid):
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find child processes")
def test_ctrl_c_writes_a_checkpoint_and_leaves_no_process(make_config):
    config, out = make_config()
    command = [sys.executable, str(ROOT / "bins" / "train-streaming"), "--config", str(config),
               "--max_steps", "100000", "-q", "eval_steps=0", "sample_steps=0", "save_steps=0",
               "record_batches=false", "data.token_cache=false"]  # no cache: the worker stays up to be checked
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.time() + 60
    while len(losses(out) if (out / "metrics.jsonl").exists() else {}) < 3 and time.time() < deadline:
        time.sleep(0.2)
    kids = _children(proc.pid)
    assert kids, "the corpus worker should be a child process"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "checkpoint written" in stderr and "interrupted:" in stdout
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] >= 3 and ckpt["step"] == max(losses(out))
    time.sleep(0.5)
    assert not [k for k in kids if _alive(k)], "orphaned processes"
    # and the run continues from there (--resume RUN_DIR: its config.yaml, its directory)
    assert main(["--resume", str(out), "-q", "--max_steps", str(ckpt["step"] + 2)]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == ckpt["step"] + 2


# -- bad input: clear errors, nothing half-written ---------------------------------------------

def test_unknown_config_key_names_the_closest(make_config, capsys):
    config, out = make_config()
    assert main(["--config", str(config), "model.n_layr=2"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'model.n_layr'" in err and "did you mean model.n_layer?" in err
    assert not out.exists()
    config.write_text(config.read_text().replace("max_steps: 6", "max_step: 6"))
    assert main(["--config", str(config)]) == 2
    assert "did you mean train.max_steps?" in capsys.readouterr().err


def test_wrong_value_types(make_config, capsys):
    config, out = make_config()
    assert main(["--config", str(config), "train.batch_size=four"]) == 2
    assert "train.batch_size must be an integer, got 'four'" in capsys.readouterr().err
    config.write_text(config.read_text().replace("eval_docs: 12", "eval_docs: many"))
    assert main(["--config", str(config)]) == 2
    assert "data.eval_docs must be an integer, got 'many'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:                 # typed flags: argparse says it
        main(["--config", str(config), "--max_steps", "x"])
    assert info.value.code == 2 and "invalid int value: 'x'" in capsys.readouterr().err
    assert not out.exists()


def test_tokenizer_that_does_not_match_the_checkpoint(make_config, tmp_path, capsys):
    config, out = make_config()
    assert main(["--config", str(config), "-q", "--max_steps", "2", "eval_steps=0"]) == 0
    other = tmp_path / "other.json"
    train_small_tokenizer(other, make_texts(300, seed=5), vocab_size=500)
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["--resume", "--output", str(out), "--tokenizer", str(other), "-q", "--max_steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "the tokenizer does not match the checkpoint" in err and "500 tokens" in err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_from_a_missing_or_corrupt_checkpoint(make_config, tmp_path, capsys):
    config, out = make_config()
    assert main(["--config", str(config), "--resume", "-q"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert main(["--config", str(config), "--resume", str(tmp_path / "nope.pt"), "-q"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert main(["--config", str(config), "-q", "--max_steps", "2", "eval_steps=0"]) == 0
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert main(["--resume", "--output", str(out), "-q", "--max_steps", "4"]) == 2
    assert "is corrupt or truncated" in capsys.readouterr().err
    ckpt.write_bytes(b"not a checkpoint at all")
    assert main(["--resume", "--output", str(out), "-q", "--max_steps", "4"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_unwritable_output_and_an_existing_run(make_config, tmp_path, capsys):
    config, out = make_config()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--config", str(config), "--output", str(blocker / "run"), "-q"]) == 2
    assert "cannot write to the output directory" in capsys.readouterr().err
    assert main(["--config", str(config), "-q", "--max_steps", "2", "eval_steps=0"]) == 0
    assert main(["--config", str(config), "-q", "--max_steps", "2"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_shard_flags_are_for_torchrun(make_config, capsys):
    config, _ = make_config()
    assert main(["--config", str(config), "--num-shards", "2"]) == 2
    assert "set by torchrun" in capsys.readouterr().err


def test_print_config_shows_flags_and_run_clm_names(make_config, capsys):
    config, _ = make_config()
    assert main(["--config", str(config), "--print-config", "--dataset_name", "HuggingFaceFW/fineweb",
                 "--dataset_config_name", "sample-10BT", "--per_device_train_batch_size", "7",
                 "--gradient_accumulation_steps", "3", "--learning_rate", "1e-4", "--output_dir", "r",
                 "--logging_steps", "5", "--save_steps", "9", "--max_steps", "11", "--max-samples", "50",
                 "--epochs", "0", "--batch-size", "1000", "model.n_layer=3"]) == 0
    import yaml

    c = yaml.safe_load(capsys.readouterr().out)
    assert c["data"]["dataset"] == "HuggingFaceFW/fineweb" and c["data"]["name"] == "sample-10BT"
    assert c["train"]["batch_size"] == 7 and c["train"]["gradient_accumulation_steps"] == 3
    assert c["optim"]["learning_rate"] == 1e-4 and c["train"]["output_dir"] == "r"
    assert (c["train"]["logging_steps"], c["train"]["save_steps"], c["train"]["max_steps"]) == (5, 9, 11)
    assert c["data"]["max_samples"] == 50 and c["data"]["epochs"] is None
    assert c["data"]["fetch_batch_size"] == 1000   # the seed's --batch-size: documents per worker batch
    assert c["model"]["n_layer"] == 3 and c["data"]["eval_docs"] == 12   # the file's other values stand


# -- the held-out helpers ----------------------------------------------------------------------

class ListCorpus:
    """A corpus stand-in with an exact position (the batch index)."""

    def __init__(self, texts, batch=4, repeat=1):
        self.texts, self.batch, self.repeat, self.pos = texts, batch, repeat, 0

    def stream_batches(self):
        batches = [self.texts[i:i + self.batch] for i in range(0, len(self.texts), self.batch)] * self.repeat
        while self.pos < len(batches):
            self.pos += 1
            yield batches[self.pos - 1]

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]


def test_excluding_source_drops_copies_and_resumes_exactly():
    texts = [f"t{i}" for i in range(20)] + ["t3", "t1"]
    source = ExcludingSource(ListCorpus(texts, repeat=2), ["t1", "t3"])
    stream = source.stream_batches()
    first = [next(stream) for _ in range(2)]
    state = source.state_dict()
    rest = [t for b in stream for t in b]
    again = ExcludingSource(ListCorpus(texts, repeat=2), ["t1", "t3"])
    again.load_state_dict(state)
    assert [t for b in again.stream_batches() for t in b] == rest
    everything = [t for b in first for t in b] + rest
    assert "t1" not in everything and "t3" not in everything and len(everything) == 2 * 18
    assert source.num_excluded == 8


def test_excluding_everything_is_an_error_not_a_hang():
    source = ExcludingSource(ListCorpus(["a", "b"], repeat=10 ** 6), ["a", "b"])
    source.max_dropped_in_a_row = 100
    with pytest.raises(EmptyDatasetError, match="held-out"):
        list(source.stream_batches())


def test_pack_rows_joins_documents_with_eos_and_overlaps_by_one():
    rows = pack_rows([np.array([1, 2, 3]), np.array([4, 5])], eos_id=0, seq_len=3)
    assert rows.tolist() == [[1, 2, 3, 0], [0, 4, 5, 0]]          # stream 1 2 3 0 4 5 0
    assert pack_rows([np.array([1, 2, 3])], 0, 3, max_rows=0).shape == (0, 4)
    assert pack_rows([], 0, 3).shape == (0, 4)
    assert text_id("a") != text_id("b") and len(text_id("a")) == 16


def test_the_readme_main_job_config_runs(tmp_path, capsys):
    """configs/tiny.yaml as shipped (built-in corpus, tokenizer trained first), for a few steps."""
    assert main(["--config", str(ROOT / "configs" / "tiny.yaml"), "--output", str(tmp_path / "tiny"),
                 "-q", "--max_steps", "3", "eval_batches=1", "sample.max_new_tokens=4"]) == 0
    out = capsys.readouterr()
    assert "training a 1024-token byte-level BPE" in out.err and "done: 3 steps" in out.out
    assert (tmp_path / "tiny" / "tokenizer_report.json").is_file()


MIXED = """
data:
  streams:
    - {{dataset: {web}, proportion: 0.25, label: web}}
    - {{dataset: {code}, proportion: 0.75, label: code}}
  mix_by: {mix_by}
  epoch_size: {epoch_size}
  batching_method: {method}
  eval_docs: 6
  shuffle_buffer_size: 20
tokenizer: {{path: {tokenizer_path}}}
model: {{n_layer: 1, n_head: 2, n_embd: 32, seq_len: 31}}
optim: {{learning_rate: 1.0e-2, warmup_steps: 2}}
train: {{output_dir: {output}, max_steps: 6, batch_size: 8, logging_steps: 2, eval_steps: 0, save_steps: 0}}
sample: {{prompts: ["web"], sample_steps: 0, max_new_tokens: 4}}
"""


@pytest.mark.parametrize("mix_by,epoch_size,method", [("samples", "null", "random"),
                                                      ("tokens", "'64k'", "stratified")])
def test_a_streams_mixture_in_the_yaml_trains_and_reports_realized_shares(tmp_path, tokenizer_path, mix_by,
                                                                          epoch_size, method, capsys):
    paths = {name: write_jsonl(tmp_path / f"{name}.jsonl",
                               [{"text": t} for t in make_texts(80, seed=k, prefix=name)])
             for k, name in enumerate(("web", "code"))}
    config = tmp_path / "mixed.yaml"
    config.write_text(MIXED.format(web=paths["web"], code=paths["code"], mix_by=mix_by, epoch_size=epoch_size,
                                   method=method, tokenizer_path=tokenizer_path, output=tmp_path / "out"))
    assert main(["--config", str(config), "-q"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    shares = summary["stream_shares"]
    assert set(shares) == {"web", "code"} and abs(shares["web"] - 0.25) < 0.15
    if method == "stratified":
        assert shares == {"code": 0.75, "web": 0.25}       # every batch of 8 rows: 2 web, 6 code
    assert all("stream_shares" in r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "loss" in r)
    assert "realized stream shares" in capsys.readouterr().err


def test_a_bad_stream_in_the_yaml_names_it(tmp_path, tokenizer_path):
    config = tmp_path / "bad.yaml"
    config.write_text(MIXED.format(web="a.jsonl", code="b.jsonl", mix_by="samples", epoch_size="null",
                                   method="random", tokenizer_path=tokenizer_path, output=tmp_path / "o")
                      .replace("proportion: 0.75", "repeat: 2"))
    assert main(["--config", str(config), "-q"]) == 2


def test_a_full_disk_at_a_checkpoint_is_one_error_and_the_last_checkpoint_resumes(make_config, small_disk,
                                                                                   capsys):
    from conftest import fill_disk

    config, _ = make_config()
    run = small_disk / "run"
    flags = ["-q", "--output", str(run), "train.plot=false", "eval_steps=0"]
    assert main(["--config", str(config), *flags]) == 0  # 6 steps, checkpoint.pt at step 6
    capsys.readouterr()
    size = (run / "checkpoint.pt").stat().st_size
    stale = run / ".checkpoint.pt.k1ll3d00.tmp"            # what a write killed half-way leaves
    stale.write_bytes(b"x" * 100)
    filler = fill_disk(small_disk, leave=size // 2)        # room for the logs, not for a checkpoint
    assert main(["--resume", *flags, "--max_steps", "8"]) == 2
    err = capsys.readouterr().err
    assert f"\nerror: cannot write {run / 'checkpoint.pt'}: the disk is full (the disk mounted at {small_disk}: " in err
    assert "checkpoint.pt needs" in err and "the previous checkpoint.pt is intact" in err
    assert "HINT:" in err and "Traceback" not in err
    assert not stale.exists() and not list(run.glob(".checkpoint.pt.*.tmp"))
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6
    filler.unlink()                                         # space again: the run continues from step 6
    assert main(["--resume", *flags, "--max_steps", "8"]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 8


def test_doc_mask_trains_within_documents_and_is_part_of_the_model_section(make_config, capsys):
    config, plain = make_config("plain")
    assert main(["--config", str(config), "-q", "--max_steps", "2", "sample_steps=0"]) == 0
    config, masked = make_config("masked")
    assert main(["--config", str(config), "-q", "--max_steps", "2", "sample_steps=0", "model.doc_mask=true"]) == 0
    assert "document-masked attention" in capsys.readouterr().err
    evals = [{r["step"]: r["eval_loss"] for r in read_metrics(run / "metrics.jsonl") if "eval_loss" in r}
             for run in (plain, masked)]
    # the same initial weights and batches: the losses differ only by where attention may look
    assert evals[0][0] != evals[1][0] and losses(plain)[1] != losses(masked)[1]
    assert load_checkpoint(masked / "checkpoint.pt")["model_config"]["doc_mask"] is True
    assert main(["--resume", str(masked), "-q", "--max_steps", "3", "model.doc_mask=false"]) == 2
    assert "doc_mask: saved True, now False" in capsys.readouterr().err


def test_the_plan_asks_the_loader_for_positions_when_doc_mask_is_on(make_config):
    from hfstream.train import plan
    from hfstream.train.config import load_config
    from hfstream.train.distributed import Ranks

    config, _ = make_config()
    for doc_mask in (False, True):
        c = load_config(config, {"model.doc_mask": doc_mask})
        encoder = TextEncoder(c.tokenizer.path)
        with plan.make_loader(c, Ranks(), encoder, [], torch.device("cpu")) as loader:
            batch = next(loader)
            assert (batch.positions is not None) == doc_mask
            if doc_mask:
                assert batch.positions.shape == batch.inputs.shape
        loader.source.close()


def test_a_checkpoint_from_before_the_new_model_keys_still_resumes():
    import dataclasses

    from hfstream.train.checkpoint import MODEL_KEYS_ADDED, check_matches
    from hfstream.train.config import ModelConfig

    now = dataclasses.asdict(ModelConfig(vocab_size=640))
    older = {"model_config": {k: v for k, v in now.items() if k not in MODEL_KEYS_ADDED}}
    check_matches(older, "model_config", now)              # no error: the keys had their defaults then
