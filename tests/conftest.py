"""Shared fixtures: small real files in every format, written to tmp_path; a private cache."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hfstream.rundir import read_metrics

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FINEWEB = SHARED_DATA / "fineweb_legal.parquet"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Keep generated corpora (builtin:python-docs) out of the user's ~/.cache."""
    os.environ["HFSTREAM_CACHE"] = str(tmp_path_factory.mktemp("hfstream-cache"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets-cache")))


def make_texts(n: int, seed: int = 0, prefix: str = "doc") -> list[str]:
    """Distinct documents of varied length, with unicode, quotes and newlines."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "naïve", "café", "東京", "emoji😀", 'quote"d', "tab\there",
             "back\\slash", "line\nbreak"]
    return [f"{prefix} {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
            for i in range(n)]


def write_parquet(path: Path, texts: list, row_group_size: int = 7, **extra_columns) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": pa.array(texts, pa.string()), **extra_columns})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_jsonl(path: Path, records: list[dict], blank_every: int = 0) -> Path:
    lines = []
    for i, record in enumerate(records):
        lines.append(json.dumps(record, ensure_ascii=False))
        if blank_every and i % blank_every == blank_every - 1:
            lines.append("")
    data = ("\n".join(lines) + "\n").encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


@pytest.fixture
def texts() -> list[str]:
    return make_texts(50)


@pytest.fixture
def parquet_dir(tmp_path) -> tuple[Path, list[str]]:
    """Four parquet files of 25 docs each (several row groups), and all texts in order."""
    all_texts = make_texts(100)
    for k in range(4):
        write_parquet(tmp_path / f"part-{k}.parquet", all_texts[25 * k:25 * (k + 1)])
    return tmp_path, all_texts


def read_all(dataset, **options) -> list[str]:
    from hfstream import HuggingFaceStreamingCorpus

    with HuggingFaceStreamingCorpus(dataset, **options) as corpus:
        return list(corpus.stream())


def train_small_tokenizer(path: Path, texts: list[str], vocab_size: int = 600) -> Path:
    """A real byte-level BPE (GPT-2 style) trained in-process; saved as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory) -> Path:
    """A 600-token byte-level BPE trained on CPython's documentation topics (real English)."""
    from pydoc_data.topics import topics

    return train_small_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json",
                                 list(topics.values()) + make_texts(200))


@dataclass
class Twins:
    """A native module and its pure-Python twin, for tests that run both and compare them."""

    python: ModuleType
    native: ModuleType | None       # None when the extension is not built
    needs_native: Any               # a skipif mark for tests that need the native module

    @property
    def impls(self) -> list:
        """Both, as pytest params ``python`` and ``native`` (the latter skipped when not built)."""
        return [pytest.param(self.python, id="python"),
                pytest.param(self.native, id="native", marks=self.needs_native)]


def twins(native_name: str, twin: ModuleType) -> Twins:
    """The twins of ``hfstream.<native_name>`` (not built: the native side is skipped here, and
    test_native.py fails in CI, where the build is required)."""
    try:
        native = importlib.import_module(f"hfstream.{native_name}")
    except ImportError:
        native = None
    reason = f"native hfstream.{native_name} is not built (python setup.py build_ext --inplace)"
    return Twins(twin, native, pytest.mark.skipif(native is None, reason=reason))


def torchrun(script: Path, *args: str, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``script`` under ``torch.distributed.run --standalone`` (a free port: tests may run side by
    side) with this checkout importable; returns the finished process (text output)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", str(script), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


# -- a tiny training run (tests of train-streaming) ------------------------------------------

#: A config for a few-second run: 1 layer, 32 wide, 6 steps of 4 x 32 tokens.
TINY = """
data:
  dataset: {dataset}
  eval_docs: 12
  shuffle_buffer_size: 40
  fetch_batch_size: 25
tokenizer:
  path: {tokenizer}
  vocab_size: 400
  max_samples: 300
model: {{n_layer: 1, n_head: 2, n_embd: 32, seq_len: 32}}
optim: {{learning_rate: 1.0e-2, warmup_steps: 2, decay_steps: 8}}
train:
  output_dir: {output}
  max_steps: 6
  batch_size: 4
  logging_steps: 1
  eval_steps: 3
  eval_batches: 2
  save_steps: 4
  record_batches: true
sample: {{prompts: ["doc 1", "alpha"], sample_steps: 3, max_new_tokens: 8}}
"""


@pytest.fixture
def dataset(tmp_path):
    texts = make_texts(120)              # "doc N: words..." -- each document carries its number
    return write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts]), texts


@pytest.fixture
def make_config(tmp_path, dataset, tokenizer_path):
    def make(name="run", tokenizer=tokenizer_path, **extra):
        text = TINY.format(dataset=dataset[0], tokenizer=tokenizer if tokenizer else "null",
                           output=tmp_path / name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        return path, tmp_path / name
    return make


def losses(run_dir: Path) -> dict[int, float]:
    """Each logged step's training loss, from a run's metrics.jsonl."""

    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}
