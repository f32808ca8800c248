"""Shared fixtures: small real files in every format, written to tmp_path; a private cache."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import os
import random
import subprocess
import sys
import textwrap
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


# -- damaged and unreadable files ------------------------------------------------------------

JSONL = "".join(json.dumps({"text": f"document {i} " + "word " * 40}) + "\n" for i in range(2000)).encode()


def _compressed(suffix: str, data: bytes) -> bytes:
    import bz2
    import lzma

    import zstandard

    return {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
            ".zst": zstandard.ZstdCompressor().compress}[suffix](data)


def write_bad_file(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A damaged file of one kind, and the message the error must carry."""
    if kind.startswith("truncated"):
        suffix = kind.split("-")[1]
        path = tmp_path / f"d.jsonl{suffix}"
        whole = _compressed(suffix, JSONL)
        path.write_bytes(whole[:len(whole) // 2])
        return path, r"d\.jsonl\.\w+: the \w+ data ends before its end-of-stream marker: the file is truncated"
    if kind.startswith("fake"):
        suffix = kind.split("-")[1]
        path = tmp_path / f"d.jsonl{suffix}"
        path.write_bytes(JSONL[:3000])  # plain JSON lines under a compressed name
        return path, r"d\.jsonl\.\w+ is not \w+ data \(it starts with b'\{\"text\": .*\), though its name ends"
    if kind == "csv-quote":
        path = tmp_path / "d.csv"
        path.write_text('text,id\n"multi\nline",1\n"second",2\n"never closed,3\nfourth,4\n')
        return path, r"d\.csv:5: a quoted field is never closed"
    raise AssertionError(kind)


BAD_FILES = ["truncated-.gz", "truncated-.bz2", "truncated-.xz", "truncated-.zst",
             "fake-.gz", "fake-.bz2", "fake-.xz", "fake-.zst", "csv-quote"]


# Root reads any file: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set
# (prctl PR_CAPBSET_DROP), so that after exec the worker is bound by the file's mode like anyone.
WITHOUT_READ_OVERRIDE = textwrap.dedent("""\
    #!{python}
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if os.geteuid() == 0 and libc.prctl(24, cap, 0, 0, 0) != 0:
            sys.exit("cannot drop capability %d: errno %d" % (cap, ctypes.get_errno()))
    os.execv({python!r}, [{python!r}] + sys.argv[1:])
""")


@pytest.fixture
def unreadable(tmp_path):
    """(a function making a file unreadable, the interpreter prefix for which it really is)."""
    wrapper = tmp_path / "python-without-read-override"
    wrapper.write_text(WITHOUT_READ_OVERRIDE.format(python=sys.executable))
    wrapper.chmod(0o755)
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    check = subprocess.run([str(wrapper), "-c", f"open({str(probe)!r}).read()"], capture_output=True, text=True)
    if "PermissionError" not in check.stderr:
        pytest.skip(f"cannot make a file unreadable here: {check.stderr.strip()[-200:] or 'it stays readable'}")

    def make(path):
        path.chmod(0)
        return path

    return make, str(wrapper)


# -- a disk that really fills up ----------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A directory on a 4 MB tmpfs of its own; skipped where mounting one is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                               capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no mount command here")
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.strip() or mount.returncode}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def fill_disk(disk: Path, leave: int = 0) -> Path:
    """Write a filler file on ``disk`` until about ``leave`` bytes stay free; returns it."""
    import shutil

    filler = disk / "filler"
    with open(filler, "ab") as f:
        try:
            f.write(b"\0" * max(shutil.disk_usage(disk).free - leave, 0))
        except OSError:
            pass
    return filler


# -- the local hub (tests of hub reading) ---------------------------------------------------------

#: A child's program: the rows datasets streams for the FineWeb-like repo, as sha1 digests (JSON).
LOAD_DATASET = """
import hashlib, json, datasets
ds = datasets.load_dataset("HuggingFaceFW/fineweb", name="sample-10BT", split="train", streaming=True)
print(json.dumps([hashlib.sha1(row["text"].encode()).hexdigest() for row in ds]))
"""


def digests(texts) -> list[str]:
    """sha1 of each text: compact, comparable lists of documents."""
    return [hashlib.sha1(t.encode()).hexdigest() for t in texts]


def parquet_bytes(hub) -> int:
    """Bytes of parquet files the local hub served."""
    return sum(n for key, n in hub.bytes_by_file.items() if key.endswith(".parquet"))
