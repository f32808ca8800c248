"""transformers causal LMs in train-streaming: from a config.json or a local directory; resume, DDP, errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import write_jsonl
from hfstream.cli.train import main
from hfstream.rundir import read_metrics
from hfstream.train.checkpoint import load_checkpoint

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 64, "tie_word_embeddings": True, "vocab_size": 50}
RUN = """
data: {{dataset: {dataset}, eval_docs: 4, shuffle_buffer_size: 16, fetch_batch_size: 25}}
tokenizer: {{path: {tokenizer}}}
model: {{seq_len: 32}}
optim: {{learning_rate: 1.0e-2, warmup_steps: 1, decay_steps: 6}}
train: {{output_dir: {output}, max_steps: 4, batch_size: 2, logging_steps: 1, eval_steps: 2, eval_batches: 2,
         save_steps: 0, record_batches: true, export: false}}
sample: {{prompts: ["doc"], sample_steps: 2, max_new_tokens: 4}}
"""


@pytest.fixture
def llama_config(tmp_path):
    path = tmp_path / "llama" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(LLAMA))
    return path


@pytest.fixture
def run_config(tmp_path, texts, tokenizer_path):
    dataset = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])

    def make(name, tokenizer=tokenizer_path):
        path = tmp_path / f"{name}.yaml"
        path.write_text(RUN.format(dataset=dataset, tokenizer=tokenizer or "null", output=tmp_path / name))
        return path, tmp_path / name
    return make


def losses(run):
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


def test_a_llama_from_a_config_json_trains_resumes_exactly_and_reports(run_config, llama_config, capsys):
    config, straight = run_config("straight")
    assert main(["--config", str(config), "-q", "--config_name", str(llama_config), "--max_steps", "6"]) == 0
    err = capsys.readouterr().err
    assert "model: LlamaForCausalLM from" in err and "(from scratch)" in err and "vocab 640" in err
    ckpt = load_checkpoint(straight / "checkpoint.pt")
    assert ckpt["architecture"]["kind"] == "transformers"
    assert ckpt["architecture"]["config"]["vocab_size"] == 640       # the tokenizer's 600, rounded up to 64
    assert ckpt["model_config"]["config_name"] == str(llama_config)
    assert [r["step"] for r in read_metrics(straight / "metrics.jsonl") if "eval_loss" in r] == [0, 2, 4, 6]
    assert len((straight / "samples.jsonl").read_text().splitlines()) == 3
    # a run stopped at step 3 and resumed: the same batches and losses as the straight run
    config, split = run_config("split")
    assert main(["--config", str(config), "-q", "--config_name", str(llama_config), "--max_steps", "3"]) == 0
    assert main(["--resume", str(split), "-q", "--max_steps", "6"]) == 0
    assert losses(split) == losses(straight) and len(losses(split)) == 6
    a, b = (load_checkpoint(run / "checkpoint.pt")["model"] for run in (straight, split))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_local_model_directory_trains_its_own_weights_with_its_own_tokenizer(run_config, llama_config,
                                                                               tokenizer_path, tmp_path):
    from hfstream.tokens.encoder import TextEncoder
    from hfstream.train.export import tokenizer_for_transformers

    pretrained = tmp_path / "pretrained"
    config = transformers.AutoConfig.from_pretrained(llama_config)
    config.vocab_size = 640
    torch.manual_seed(123)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(pretrained)
    tokenizer_for_transformers(TextEncoder(tokenizer_path)).save_pretrained(pretrained)  # tokenizer.json
    run_yaml, run = run_config("tuned", tokenizer=None)         # no tokenizer.path: the model directory's
    assert main(["--config", str(run_yaml), "-q", "--model_name_or_path", str(pretrained), "--max_steps", "1",
                 "optim.learning_rate=0", "sample_steps=0"]) == 0
    trained = load_checkpoint(run / "checkpoint.pt")["model"]
    # learning rate 0: the weights are the pretrained ones, so they were loaded (not initialized)
    assert all(torch.equal(trained[f"hf.{k}"], v) for k, v in model.state_dict().items())
    used = TextEncoder(run / "tokenizer.json")
    assert used.fingerprint == TextEncoder(pretrained / "tokenizer.json").fingerprint
    assert used.encode("doc 5: café").tolist() == TextEncoder(tokenizer_path).encode("doc 5: café").tolist()


@pytest.mark.slow
def test_a_llama_under_torchrun_ddp(run_config, llama_config, tmp_path):
    config, out = run_config("ddp")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "hfstream.cli.train", "--config", str(config), "-q", "--config_name",
                           str(llama_config), "eval_steps=0", "sample_steps=0"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "done: 4 steps" in proc.stdout
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and ckpt["architecture"]["kind"] == "transformers"
    rows = [[json.loads(x)["sha1"] for x in (out / f"batches-rank{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)]
    assert len(rows[0]) == len(rows[1]) == 4 and set(rows[0]).isdisjoint(rows[1])  # each rank its shard


def test_a_hub_id_offline_fails_fast_and_clearly(run_config, monkeypatch, capsys):
    config, out = run_config("hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")   # nothing listens there: as offline
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    t0 = time.perf_counter()
    assert main(["--config", str(config), "-q", "--model_name_or_path", "hfstream-tests/not-cached"]) == 2
    assert time.perf_counter() - t0 < 15
    err = capsys.readouterr().err
    assert "'hfstream-tests/not-cached' is not a local path" in err and "cannot be reached" in err
    assert "HINT:" in err and "save_pretrained" in err
    assert not out.exists()


@pytest.mark.parametrize("overrides,message", [
    (["model.name_or_path=a", "model.config_name=b"], "both set"),
    (["model.config_name=x.json", "model.doc_mask=true"], "doc_mask applies to the built-in GPT"),
    (["--config_name", "no/such/config.json"], "does not exist"),
    (["--config_name", "{llama}", "model.seq_len=65"], "longer than the model's context (64 positions)"),
    (["--config_name", "{llama}", "model.vocab_size=64"], "fewer than the tokenizer's"),
])
def test_bad_model_settings(run_config, llama_config, capsys, overrides, message):
    config, out = run_config("bad")
    overrides = [o.replace("{llama}", str(llama_config)) for o in overrides]
    assert main(["--config", str(config), "-q", *overrides]) == 2
    assert message in capsys.readouterr().err


def test_the_llama_tiny_example_config_runs_from_any_directory(tmp_path, tokenizer_path, monkeypatch, capsys):
    """configs/llama-tiny.yaml as shipped (its config_name found from elsewhere), for a few steps."""
    monkeypatch.chdir(tmp_path)
    assert main(["--config", "llama-tiny", "--output", str(tmp_path / "llama"), "--tokenizer", str(tokenizer_path),
                 "-q", "--max_steps", "2", "eval_batches=1", "sample.max_new_tokens=4"]) == 0
    out = capsys.readouterr()
    assert "model: LlamaForCausalLM from configs/llama-tiny/config.json (from scratch)" in out.err
    assert "done: 2 steps" in out.out
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "llama" / "hf")
    assert model.config.num_hidden_layers == 4 and model.config.num_key_value_heads == 2
