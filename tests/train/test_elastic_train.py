"""Elastic runs: train-streaming with virtual shards, resumed on other ranks × workers (real gloo processes).

Every global batch (all ranks' rows of a step, in the global order: rank r's c-th row of the
step is row c*W + r) must hash as in the uninterrupted run, and ``hfstream audit`` must find
every document trained once.
"""

import hashlib
import json

import pytest

from conftest import make_texts, torchrun, write_parquet
from hfstream.cli.train import main as train
from hfstream.rundir import read_metrics
from test_audit import ROOT, assert_clean, audit

CONFIG = """
data:
  dataset: {data}
  eval_docs: 4
  shuffle_buffer_size: 16
  fetch_batch_size: 16
  virtual_shards: 4
  {streams}
tokenizer: {{path: {tokenizer}}}
model: {{n_layer: 1, n_head: 2, n_embd: 32, seq_len: 32}}
optim: {{warmup_steps: 2}}
train: {{output_dir: {output}, max_steps: 2, batch_size: 1, logging_steps: 1, eval_steps: 0, save_steps: 100,
         record_batches: true, record_docs: true, plot: false, export: false}}
sample: {{sample_steps: 0}}
"""
MIXTURE = """streams: [{{dataset: {data}, proportion: 0.7}}, {{dataset: {other}, proportion: 0.3}}]
  mix_by: tokens
  epoch_size: 400k
  batching_method: stratified"""
#: (ranks, --dataloader_num_workers, --per_device_train_batch_size, max_steps): 2 steps per segment
SEGMENTS = [(4, 0, 1, 2), (2, 2, 1, 4), (2, 0, 1, 6), (1, 4, 4, 8), (4, 0, 1, 10)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("elastic-data")
    texts = make_texts(240, seed=5)
    (root / "a").mkdir()
    for i in range(4):
        write_parquet(root / "a" / f"part-{i}.parquet", texts[i * 60:(i + 1) * 60])
    write_parquet(root / "other.parquet", make_texts(80, seed=9, prefix="other"))
    return root / "a", root / "other.parquet"


def config(tmp_path, files, tokenizer_path, name, mixture=False):
    data, other = files
    streams = MIXTURE.format(data=data, other=other) if mixture else ""
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONFIG.format(data=data, streams=streams, tokenizer=tokenizer_path, output=tmp_path / name))
    return path, tmp_path / name


def run(config_path, out, ranks, workers, batch, steps, resume):
    args = (["--resume", str(out)] if resume else ["--config", str(config_path)]) + [
        "--max_steps", str(steps), "--dataloader_num_workers", str(workers), "--per_device_train_batch_size",
        str(batch), "--adjust_accumulation", "-q"]
    proc = torchrun(ROOT / "bins" / "train-streaming", *args, nproc=ranks)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def global_batches(out):
    """sha1 of each step's global batch, rebuilt from every rank's batches-rankR.jsonl."""
    local: dict[int, dict[int, list]] = {}
    for path in sorted(out.glob("batches-rank*.jsonl")):
        rank = int(path.stem.removeprefix("batches-rank"))
        for r in read_metrics(path):
            local.setdefault(r["step"], {}).setdefault(rank, []).extend(r["rows"])
    digests = []
    for step in sorted(local):
        ranks = local[step]
        world = len(ranks)
        rows = [ranks[r][c] for c in range(len(ranks[0])) for r in range(world)]  # row c*W + r
        digests.append(hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:12])
    return digests


@pytest.mark.slow
@pytest.mark.parametrize("mixture", [False, True], ids=["dataset", "token-mixture"])
def test_resumes_on_other_ranks_and_workers_train_the_same_global_batches(tmp_path, files, tokenizer_path,
                                                                           mixture, capsys):
    segments = SEGMENTS if not mixture else SEGMENTS[:2] + SEGMENTS[3:4]
    steps = segments[-1][3]
    path, straight = config(tmp_path, files, tokenizer_path, "straight", mixture)
    run(path, straight, 4, 0, 1, steps, resume=False)
    path, elastic = config(tmp_path, files, tokenizer_path, "elastic", mixture)
    for i, (ranks, workers, batch, max_steps) in enumerate(segments):
        run(path, elastic, ranks, workers, batch, max_steps, resume=i > 0)
    reference = global_batches(straight)
    assert len(reference) == steps
    assert global_batches(elastic) == reference
    segments_logged = [r["segment"]["world_size"] for r in read_metrics(elastic / "docs-rank0.jsonl") if "segment" in r]
    assert segments_logged == [s[0] for s in segments]
    code, report, text = audit(elastic, capsys)
    assert code == 0, text
    assert_clean(report)


def test_ranks_times_workers_that_do_not_divide_the_shards_fail_clearly(tmp_path, files, tokenizer_path, capsys):
    path, out = config(tmp_path, files, tokenizer_path, "bad")
    assert train(["--config", str(path), "--dataloader_num_workers", "3", "-q"]) == 2
    err = capsys.readouterr().err
    assert "virtual_shards=4 is not a multiple of ranks × workers = 1 × 3 = 3" in err
    assert "virtual_shards=6" in err


def test_a_changed_global_batch_is_an_error_that_shows_the_arithmetic(tmp_path, files, tokenizer_path, capsys):
    path, out = config(tmp_path, files, tokenizer_path, "run")
    assert train(["--config", str(path), "--per_device_train_batch_size", "4", "-q"]) == 0
    capsys.readouterr()
    assert train(["--resume", str(out), "--max_steps", "3", "--per_device_train_batch_size", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "4 rows × 1 accumulation × 1 ranks = 4; this run's would be 1 × 1 × 1 = 1" in err
    assert "--gradient_accumulation_steps 4" in err
    assert train(["--resume", str(out), "--max_steps", "3", "--per_device_train_batch_size", "3", "-q"]) == 2
    assert "no accumulation makes 3 × N × 1 = 4" in capsys.readouterr().err
    assert train(["--resume", str(out), "--max_steps", "3", "--per_device_train_batch_size", "2",
                  "--adjust_accumulation", "-q"]) == 0


def test_the_shards_are_fixed_for_the_whole_run(tmp_path, files, tokenizer_path, capsys):
    path, out = config(tmp_path, files, tokenizer_path, "plain")
    path.write_text(path.read_text().replace("virtual_shards: 4", "virtual_shards: 0"))
    assert train(["--config", str(path), "-q"]) == 0
    capsys.readouterr()
    assert train(["--resume", str(out), "--max_steps", "3", "--virtual_shards", "4", "-q"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint's run has data.virtual_shards=0, this run 4" in err
    assert "resume with data.virtual_shards=0" in err
