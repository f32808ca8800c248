"""train-streaming under torchrun: 2 CPU processes (gloo), uneven shards, equal steps, disjoint data."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_texts, write_jsonl
from hfstream.train.checkpoint import load_checkpoint
from hfstream.rundir import read_metrics
from hfstream.tokens.encoder import TextEncoder

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"(small|large) (\d+):")

CONFIG = """
data:
  dataset: {data}
  shard_by: files
  eval_docs: 3
  shuffle_buffer_size: 8
  fetch_batch_size: 4
  epochs: {epochs}
tokenizer: {{path: {tokenizer}}}
model: {{n_layer: 1, n_head: 2, n_embd: 32, seq_len: 32}}
optim: {{warmup_steps: 2}}
train:
  output_dir: {output}
  max_steps: {max_steps}
  batch_size: 4
  logging_steps: 1
  eval_steps: 4
  eval_batches: 2
  save_steps: 4
  record_batches: true
sample: {{prompts: ["small"], sample_steps: 0, max_new_tokens: 4}}
"""


@pytest.fixture
def shards(tmp_path):
    """Two files: shard 0 gets 10 short documents, shard 1 gets 150 -- very uneven."""
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "part-0.jsonl", [{"text": t} for t in make_texts(10, prefix="small")])
    write_jsonl(data / "part-1.jsonl", [{"text": t} for t in make_texts(150, seed=1, prefix="large")])
    return data


def torchrun(tmp_path, shards, tokenizer_path, epochs, max_steps):
    out = tmp_path / "run"
    config = tmp_path / "ddp.yaml"
    config.write_text(CONFIG.format(data=shards, tokenizer=tokenizer_path, output=out,
                                    epochs=epochs, max_steps=max_steps))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "-m", "hfstream.cli.train", "--config", str(config), "-q"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def trained(out, rank, encoder):
    records = [json.loads(x) for x in (out / f"batches-rank{rank}.jsonl").read_text().splitlines()]
    text = encoder.decode(np.concatenate([np.array(r["rows"]).reshape(-1) for r in records]))
    return records, {(kind, int(n)) for kind, n in MARKER.findall(text)}


@pytest.mark.slow
def test_endless_uneven_shards_take_equal_steps_on_disjoint_data(tmp_path, shards, tokenizer_path):
    out, proc = torchrun(tmp_path, shards, tokenizer_path, epochs="null", max_steps=10)
    encoder = TextEncoder(tokenizer_path)
    steps = {}
    seen = {}
    for rank in (0, 1):
        records, seen[rank] = trained(out, rank, encoder)
        steps[rank] = sorted({r["step"] for r in records})
    assert steps[0] == steps[1] == list(range(1, 11))      # the same steps on both ranks
    assert {k for k, _ in seen[0]} == {"small"} and {k for k, _ in seen[1]} == {"large"}  # disjoint
    assert {n for _, n in seen[0]} == set(range(3, 10))    # the small shard went round several times
    assert not seen[0] & {("small", n) for n in range(3)}  # the held-out head: never trained on
    assert "done: 10 steps" in proc.stdout                  # rank 0 reports, once
    assert proc.stdout.count("done:") == 1
    info = json.loads((out / "run_info.json").read_text())
    assert info["global_batch"]["tokens_per_step"] == 4 * 32 * 2 and info["world_size"] == 2
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == list(range(1, 11))
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 10 and ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2
    assert ckpt["ranks"][0]["loader"] != ckpt["ranks"][1]["loader"]


@pytest.mark.slow
def test_finite_uneven_shards_stop_together_when_one_runs_dry(tmp_path, shards, tokenizer_path):
    out, proc = torchrun(tmp_path, shards, tokenizer_path, epochs=1, max_steps=1000)
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["steps"] < 20                        # the small shard ends the run early
    records = {rank: [json.loads(x)["step"] for x in (out / f"batches-rank{rank}.jsonl").read_text().splitlines()]
               for rank in (0, 1)}
    assert records[0] == records[1] == list(range(1, summary["steps"] + 1))
    assert "the data stream ended" in proc.stderr
