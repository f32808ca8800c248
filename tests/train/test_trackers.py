"""--report_to: TensorBoard event files and an offline W&B run hold what metrics.jsonl and samples.jsonl hold."""

import json
import struct
import sys

import pytest

from conftest import make_texts, write_jsonl
from hfstream.cli.train import main
from hfstream.rundir import read_metrics

RUN = """
data:
  streams:
    - {{dataset: {web}, proportion: 0.5, label: web}}
    - {{dataset: {code}, proportion: 0.5, label: code}}
  eval_docs: 4
  shuffle_buffer_size: 16
tokenizer: {{path: {tokenizer}}}
model: {{n_layer: 1, n_head: 2, n_embd: 32, seq_len: 32}}
optim: {{learning_rate: 1.0e-2, warmup_steps: 1, decay_steps: 4}}
train: {{output_dir: {output}, max_steps: 4, batch_size: 2, logging_steps: 1, eval_steps: 2, eval_batches: 1,
         save_steps: 0, export: false}}
sample: {{prompts: ["web", "code"], sample_steps: 2, max_new_tokens: 4}}
"""


@pytest.fixture
def config(tmp_path, tokenizer_path, monkeypatch):
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_PROJECT": "hfstream-tests",
                       "WANDB_CONFIG_DIR": tmp_path / "wandb-config", "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
                       "WANDB_DATA_DIR": tmp_path / "wandb-data"}.items():
        monkeypatch.setenv(key, str(value))
    paths = {name: write_jsonl(tmp_path / f"{name}.jsonl", [{"text": t} for t in make_texts(40, k, name)])
             for k, name in enumerate(("web", "code"))}
    path = tmp_path / "run.yaml"
    path.write_text(RUN.format(**paths, tokenizer=tokenizer_path, output=tmp_path / "run"))
    return path, tmp_path / "run"


def tensorboard_scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    texts = {tag: {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors(tag)}
             for tag in events.Tags()["tensors"]}
    return scalars, texts


def wandb_history(run_dir):
    """The history rows of an offline W&B run, read from its .wandb file (LevelDB log records)."""
    from wandb.proto import wandb_internal_pb2

    [path] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, block, chunks, rows = path.read_bytes(), 7, 32768, b"", []   # 7: the ':W&B' file header
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):   # the rest of a block is padding
            pos += left
            continue
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):                             # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.mark.slow
def test_tensorboard_and_wandb_get_the_metrics_and_samples(config):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    path, out = config
    assert main(["--config", str(path), "-q", "--report_to", "tensorboard", "wandb"]) == 0
    records = read_metrics(out / "metrics.jsonl")                 # metrics.jsonl stays
    train = {r["step"]: r for r in records if "loss" in r}
    evals = {r["step"]: r for r in records if "eval_loss" in r}
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]

    scalars, texts = tensorboard_scalars(out / "tensorboard")
    for step, r in train.items():
        assert scalars["train/loss"][step] == pytest.approx(r["loss"], rel=1e-6)
        assert scalars["train/learning_rate"][step] == pytest.approx(r["lr"], rel=1e-6)
        assert scalars["train/tokens_per_s"][step] == pytest.approx(r["tokens_per_s"], rel=1e-6)
        assert scalars["train/data_wait_pct"][step] == pytest.approx(r["data_wait_pct"], rel=1e-5, abs=1e-6)
        assert scalars["stream_shares/web"][step] == pytest.approx(r["stream_shares"]["web"], rel=1e-6)
    assert {s: round(v, 5) for s, v in scalars["eval/loss"].items()} == \
        {s: round(r["eval_loss"], 5) for s, r in evals.items()}
    assert set(scalars["eval/perplexity"]) == {0, 2, 4}
    assert texts["samples/0/text_summary"][2].endswith(f"web{samples[0]['text']}\n```")

    history = wandb_history(out)
    logged = {row["_step"]: row for row in history}
    for step, r in train.items():
        assert logged[step]["train/loss"] == pytest.approx(r["loss"], rel=1e-6)
        assert logged[step]["stream_shares/code"] == pytest.approx(r["stream_shares"]["code"], rel=1e-6)
    assert {step: round(logged[step]["eval/loss"], 5) for step in evals} == \
        {step: round(r["eval_loss"], 5) for step, r in evals.items()}
    [table] = (out / "wandb").glob("offline-run-*/files/media/table/samples_4_*.table.json")
    rows = json.loads(table.read_text())["data"]
    assert rows == [[s["step"], s["prompt"], s["text"]] for s in samples]   # the whole table at the end


@pytest.mark.slow
def test_a_resumed_run_continues_its_trackers(config):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    path, out = config
    assert main(["--config", str(path), "-q", "--max_steps", "3", "save_steps=3", "--report_to", "tensorboard,wandb"]) == 0
    run_id = (out / "wandb_run_id").read_text()
    assert main(["--resume", str(out), "-q", "--max_steps", "4"]) == 0
    assert (out / "wandb_run_id").read_text() == run_id
    assert len(list((out / "wandb").glob(f"offline-run-*-{run_id.strip()}"))) == 2   # one run id, two segments
    scalars, _ = tensorboard_scalars(out / "tensorboard")
    assert sorted(scalars["train/loss"]) == [1, 2, 3, 4]


def test_report_to_none_and_missing_libraries(config, monkeypatch, capsys):
    path, out = config
    assert main(["--config", str(path), "--print-config", "--report_to", "tensorboard,wandb"]) == 0
    assert "report_to:\n  - tensorboard\n  - wandb" in capsys.readouterr().out
    # nargs="+": an override written after the names is still an override
    assert main(["--config", str(path), "--print-config", "--report_to", "tensorboard", "model.n_layer=3"]) == 0
    printed = capsys.readouterr().out
    assert "report_to:\n  - tensorboard\n" in printed and "n_layer: 3" in printed
    monkeypatch.setitem(sys.modules, "wandb", None)               # as if not installed
    assert main(["--config", str(path), "-q", "--report_to", "wandb"]) == 2
    err = capsys.readouterr().err
    assert "--report_to wandb (train.report_to) needs the wandb library" in err
    assert 'pip install "hfstream[wandb]"' in err and not out.exists()
    assert main(["--config", str(path), "-q", "--report_to", "none", "--max_steps", "1", "sample_steps=0"]) == 0
    assert not (out / "tensorboard").exists() and not (out / "wandb").exists()
    assert main(["--config", str(path), "train.report_to=[mlflow]", "--print-config"]) == 2
    assert "train.report_to[0]='mlflow' is not one of" in capsys.readouterr().err
