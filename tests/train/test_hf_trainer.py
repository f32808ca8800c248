"""The transformers.Trainer recipe: examples/hf_trainer.py trains a tiny Llama for a few steps on CausalLMBlocks."""

import importlib.util
from pathlib import Path

import pytest
import torch

from conftest import write_jsonl
from hfstream.train.hf_data import CausalLMBlocks

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[2]


def load_example():
    spec = importlib.util.spec_from_file_location("hf_trainer_example", ROOT / "examples" / "hf_trainer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blocks_are_run_clm_blocks_of_the_packed_stream(tokenizer_path, texts):
    from hfstream.tokens.encoder import TextEncoder

    blocks = list(zip(range(6), CausalLMBlocks(texts, tokenizer_path, block_size=20, shuffle_buffer_size=0)))
    items = [item for _, item in blocks]
    assert all(item["input_ids"].shape == (20,) and item["input_ids"].dtype == torch.int64 for item in items)
    assert all(torch.equal(item["input_ids"], item["labels"]) for item in items)
    encoder = TextEncoder(tokenizer_path)
    stream = [t for text in texts for t in [*encoder.encode(text).tolist(), encoder.eos_id]]
    assert torch.cat([item["input_ids"] for item in items]).tolist() == stream[:120]   # no padding, nothing lost


def test_the_trainer_example_runs_a_few_steps(tmp_path, tokenizer_path, texts):
    data = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    config = ROOT / "configs" / "llama-tiny"
    trainer = load_example().main(["--tokenizer", str(tokenizer_path), "--config_name", str(config),
                                   "--dataset_name", str(data), "--max_steps", "4", "--block_size", "32",
                                   "--per_device_train_batch_size", "2", "--output_dir", str(tmp_path / "out")])
    assert trainer.state.global_step == 4
    losses = [h["train_loss"] for h in trainer.state.log_history if "train_loss" in h]
    assert losses and 0 < losses[-1] < 10
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    ids = tokenizer("doc 3:", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] <= ids.shape[1] + 3


def test_dataloader_workers_stream_disjoint_shards(tmp_path, tokenizer_path):
    import re

    from conftest import make_texts
    from hfstream.tokens.encoder import TextEncoder

    data = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in make_texts(60)])
    blocks = CausalLMBlocks(str(data), tokenizer_path, block_size=16, shuffle_buffer_size=0, epochs=1)
    loader = torch.utils.data.DataLoader(blocks, batch_size=None, num_workers=2)
    text = TextEncoder(tokenizer_path).decode(torch.cat([item["input_ids"] for item in loader]).tolist())
    numbers = [int(n) for n in re.findall(r"doc (\d+):", text)]
    # each document at most once (two workers over the same data would give each twice); the last
    # partial read of each worker's finite shard is dropped, as group_texts drops its remainder
    assert len(numbers) == len(set(numbers)) >= 40
