"""Loader benchmark: hfstream end to end vs the HF streaming pipeline vs bare tokenizers.

Run::

    hfstream bench loader [--dataset PATH] [--tokenizer tokenizer.json] [--epochs 3]

Each pipeline runs in its own child process (so peak RSS is its own), side by side in one run:

(a) hfstream: file -> StreamingTextDataLoader -> (B, T) int64 tensors, worker start included;
(b) HF: ``load_dataset(streaming=True)`` + batched ``map`` tokenization + ``group_texts`` +
    torch ``DataLoader`` (the run_clm path);
(c) bare ``tokenizers`` ``encode_batch`` over the texts already in memory;
(d) bare ``tiktoken`` ``encode_ordinary_batch`` (same merges) over the texts in memory;
(e) bare ``tiktoken`` ``encode_to_numpy``, the call hfstream's tokenizer threads make, over the
    texts in memory (what the hfstream pipeline costs on top of its own tokenizer call);

(a') with ``--record-docs``: (a) again with ``record_docs=True`` (what ``train.record_docs``
costs the loader: every row's document spans);

and (:mod:`hfstream.bench.throughput`) the token cache's pass 2 vs pass 1 (and the bare
memory-mapped read of the cache as the ceiling), ``num_workers=2`` vs 0 at T and at T=128 with
the cache off, the state at a full 10k-document buffer (size, restore + next batch, and a ws://
source's token-array form), the shuffle buffer's displacement statistic, and (:mod:`hfstream.bench.elastic`) virtual shards:
K = 4, 16, 64 vs the single pipeline, the state of every shard, and the time from an elastic
resume (rank 0 of 2 and of 4 loading a 1-rank state) to the first batch. Run (a) has the
token cache off: every pass tokenizes. Every timed span includes start-up.

Without ``--tokenizer`` a 32k byte-level BPE is trained from the dataset first (and cached).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hfstream.bench import bench_parser, default_dataset, print_table
from hfstream.bench import throughput
from hfstream.bench.elastic import print_elastic, run_elastic
from hfstream.tokens.encoder import default_threads

# Bare tiktoken encodes one text in the calling thread before the clock starts, as tiktoken's own
# benchmark does: an encoding whose first use is by two threads at once stays ~30% slower in those
# threads (measured with tiktoken 0.14). hfstream's TiktokenBPE warms itself the same way.
WARM_UP = "warm up"
PIPELINES = ("hfstream", "hf_pipeline", "tokenizers", "tiktoken", "tiktoken_numpy")
EXTRA = ("cache", "workers", "full_state", "elastic")
CHILD_RUNS = PIPELINES + EXTRA + ("state", "hfstream_docs")


def _texts(dataset: str) -> list[str]:
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    with HuggingFaceStreamingCorpus(dataset) as corpus:
        return [t for batch in corpus.stream_batches() for t in batch]


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + children) / 1024, 1)  # ru_maxrss is KiB on Linux


def _rss_mb(pid: int | str = "self") -> float | None:
    """Current resident memory of a process (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None


class RssSampler:
    """This process's RSS and the loader worker's, every ``interval`` seconds (a daemon thread)."""

    def __init__(self, worker_pid: Any, interval: float = 0.25):
        self.samples: list[tuple[float | None, float | None]] = []
        self._worker_pid, self._interval = worker_pid, interval
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="rss-sampler").start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            pid = self._worker_pid()
            self.samples.append((_rss_mb(), _rss_mb(pid) if pid else None))

    def summary(self) -> dict[str, Any]:
        """Parent RSS at 25/50/75/100% of the run, and the worker's largest."""
        self._stop.set()
        parent = [p for p, _ in self.samples if p is not None]
        worker = [w for _, w in self.samples if w is not None]
        at = [parent[max(int(len(parent) * q) - 1, 0)] for q in (0.25, 0.5, 0.75, 1.0)] if parent else []
        return {"parent_rss_mb": [round(x) for x in at], "worker_rss_max_mb": round(max(worker)) if worker else None}


def run_hfstream(args: argparse.Namespace, record_docs: bool = False) -> dict[str, Any]:
    from hfstream.loader.loader import StreamingTextDataLoader
    from hfstream.tokens.encoder import TextEncoder

    TextEncoder(args.tokenizer)  # the floor: torch + tokenizers + tiktoken loaded, no loader yet
    floor_mb = _peak_rss_mb()
    t0 = time.perf_counter()
    first, batches = None, 0
    with StreamingTextDataLoader(args.dataset, args.tokenizer, args.batch_size, args.seq_len,
                                 epochs=args.epochs, token_cache=False, record_docs=record_docs) as loader:
        rss = RssSampler(lambda: loader.source.worker_pid)
        for _ in loader:
            batches += 1
            if first is None:
                first = time.perf_counter() - t0
        backend, metrics = loader.encoder.backend, loader.metrics
    seconds = time.perf_counter() - t0
    tokens = batches * args.batch_size * args.seq_len
    steady = (tokens - args.batch_size * args.seq_len) / (seconds - first) if first else None
    return {"tokens": tokens, "seconds": seconds, "first_batch_s": first, "floor_rss_mb": floor_mb,
            "steady_tokens_per_s": steady, **rss.summary(),
            "note": f"backend={backend}, buffer 10k docs, data-wait {metrics['data_wait_frac']:.0%}"
                    + (", record_docs" if record_docs else "")}


def run_state(args: argparse.Namespace) -> dict[str, Any]:
    return state_figures(args)


def state_figures(args: argparse.Namespace, after: int = 200) -> dict[str, Any]:
    """State size after ``after`` batches, and the time to restore it and get the next batch."""
    import pickle
    import tempfile

    from hfstream.loader.loader import StreamingTextDataLoader

    with tempfile.TemporaryDirectory() as cache:  # a cache of this run only: what it wrote before the state
        with StreamingTextDataLoader(args.dataset, args.tokenizer, args.batch_size, args.seq_len,
                                     epochs=None, token_cache=cache) as loader:
            for _, _batch in zip(range(after), loader):
                pass
            state = loader.state_dict()
        size = len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        t0 = time.perf_counter()
        with StreamingTextDataLoader(args.dataset, args.tokenizer, args.batch_size, args.seq_len,
                                     epochs=None, token_cache=cache) as loader:
            loader.load_state_dict(state)
            next(iter(loader))
            restore = time.perf_counter() - t0
    return {"state_mb": round(size / 1e6, 2), "restore_s": round(restore, 3),
            "buffer_docs_in_state": len(state["pipeline"]["buffer"]["refs"]) // 2}


def run_hf_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    import datasets
    import torch
    from tokenizers import Tokenizer

    from hfstream.source.resolve import resolve
    from hfstream.source.spec import SourceSpec

    tokenizer = Tokenizer.from_file(args.tokenizer)
    block = args.seq_len + 1
    resolved = resolve(SourceSpec(args.dataset))
    ds = datasets.load_dataset(resolved.format, data_files=resolved.files, split="train", streaming=True)
    ds = ds.select_columns(["text"])

    def tokenize(batch):
        return {"input_ids": [e.ids for e in tokenizer.encode_batch(batch["text"])]}

    def group_texts(batch):  # run_clm's group_texts: concatenate, cut into blocks
        flat = [t for ids in batch["input_ids"] for t in ids]
        usable = len(flat) // block * block
        return {"input_ids": [flat[i:i + block] for i in range(0, usable, block)]}

    ds = ds.map(tokenize, batched=True, remove_columns=["text"]).map(group_texts, batched=True)
    loader = torch.utils.data.DataLoader(ds.with_format("torch"), batch_size=args.batch_size)
    first, tokens = None, 0
    for batch in loader:
        ids = batch["input_ids"]
        inputs, targets = ids[:, :-1], ids[:, 1:]  # (B, T+1) -> 2 x (B, T)
        tokens += inputs.numel()
        if first is None:
            first = time.perf_counter() - t0
        if args.hf_max_tokens and tokens >= args.hf_max_tokens:
            break
    return {"tokens": tokens, "seconds": time.perf_counter() - t0, "first_batch_s": first,
            "note": "1 pass, includes import datasets" + (f", capped at {args.hf_max_tokens:,} tokens"
                                                          if args.hf_max_tokens else "")}


def run_tokenizers(args: argparse.Namespace) -> dict[str, Any]:
    from tokenizers import Tokenizer

    texts = _texts(args.dataset)
    tokenizer = Tokenizer.from_file(args.tokenizer)
    t0 = time.perf_counter()
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
    return {"tokens": tokens, "seconds": time.perf_counter() - t0, "first_batch_s": None,
            "note": "texts already in memory"}


def run_tiktoken(args: argparse.Namespace) -> dict[str, Any]:
    from hfstream.tokens.tiktoken_bridge import build_tiktoken_bpe

    texts = _texts(args.dataset)
    encoding = build_tiktoken_bpe(json.loads(Path(args.tokenizer).read_text())).encoding
    encoding.encode_ordinary(WARM_UP)  # see WARM_UP
    threads = default_threads()  # as many as hfstream's tokenizer threads
    t0 = time.perf_counter()
    tokens = 0
    for _ in range(args.epochs):
        tokens += sum(map(len, encoding.encode_ordinary_batch(texts, num_threads=threads)))
    return {"tokens": tokens, "seconds": time.perf_counter() - t0, "first_batch_s": None,
            "note": f"texts already in memory, {threads} threads"}


def run_tiktoken_numpy(args: argparse.Namespace) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from hfstream.tokens.tiktoken_bridge import build_tiktoken_bpe

    texts = _texts(args.dataset)
    bpe = build_tiktoken_bpe(json.loads(Path(args.tokenizer).read_text()))  # warmed up when built
    threads = default_threads()
    t0 = time.perf_counter()
    tokens = 0
    with ThreadPoolExecutor(threads) as pool:  # as encode_ordinary_batch does, one task per text
        for _ in range(args.epochs):
            tokens += sum(map(len, pool.map(bpe.encode, texts)))
    return {"tokens": tokens, "seconds": time.perf_counter() - t0, "first_batch_s": None,
            "note": f"encode_to_numpy (hfstream's call), texts in memory, {threads} threads"}


RUNNERS = {"hfstream": run_hfstream, "hf_pipeline": run_hf_pipeline, "tokenizers": run_tokenizers,
           "tiktoken": run_tiktoken, "tiktoken_numpy": run_tiktoken_numpy, "state": run_state,
           "cache": throughput.run_cache, "workers": throughput.run_workers, "full_state": throughput.run_full_state,
           "hfstream_docs": lambda args: run_hfstream(args, record_docs=True), "elastic": run_elastic}


def ensure_tokenizer(dataset: str, vocab_size: int) -> str:
    from hfstream.source.builtin import cache_dir
    from hfstream.source.spec import SourceSpec

    path = cache_dir() / "bench" / f"bpe{vocab_size}-{SourceSpec(dataset).fingerprint()}" / "tokenizer.json"
    if not path.exists():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        print(f"training a {vocab_size} byte-level BPE on {dataset} -> {path}", file=sys.stderr)
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tokenizer.train_from_iterator(_texts(dataset), trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(path))
    return str(path)


def _child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "hfstream.bench.loader", "--one", name, "--dataset", args.dataset,
           "--tokenizer", args.tokenizer, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--seq-len", str(args.seq_len), "--hf-max-tokens", str(args.hf_max_tokens)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("loader", __doc__)
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (default: train a 32k BPE from the data)")
    p.add_argument("--vocab-size", type=int, default=32_000)
    p.add_argument("--epochs", type=int, default=10, help="passes for hfstream and bare tiktoken")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--hf-max-tokens", type=int, default=2_000_000, help="cap the slow HF pipeline (0: none)")
    p.add_argument("--only", nargs="+", choices=PIPELINES, default=list(PIPELINES))
    p.add_argument("--extra", nargs="*", choices=EXTRA, default=list(EXTRA),
                   help="the throughput runs (cache passes, workers, state at a full buffer)")
    p.add_argument("--record-docs", action="store_true",
                   help="also run hfstream with record_docs=True, side by side (what train.record_docs costs)")
    p.add_argument("--one", choices=CHILD_RUNS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.dataset = args.dataset or default_dataset()
    if args.one:
        result = RUNNERS[args.one](args)
        result["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return 0
    args.tokenizer = args.tokenizer or ensure_tokenizer(args.dataset, args.vocab_size)
    results = {name: _child(name, args) for name in args.only}
    if args.record_docs and "hfstream" in results:
        results["hfstream record_docs"] = _child("hfstream_docs", args)
    for r in results.values():
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
    state = _child("state", args) if "hfstream" in results else {}
    extra = {name: _child(name, args) for name in args.extra}
    if args.json:
        print(json.dumps({"dataset": args.dataset, "tokenizer": args.tokenizer, "results": results,
                          "state": state, **extra, "shuffle": throughput.shuffle_quality()}, indent=2))
        return 0
    ref = results.get("tiktoken", {}).get("tokens_per_s")
    hf = results.get("hf_pipeline", {}).get("tokens_per_s")
    rows = []
    for name, r in results.items():
        tps = r["tokens_per_s"]
        rows.append([name, f"{r['tokens']:,}", f"{r['seconds']:.2f}", f"{tps / 1e6:.3f}",
                     f"{tps / ref:.2f}x" if ref else "-", f"{tps / hf:.1f}x" if hf else "-",
                     "-" if r["first_batch_s"] is None else f"{r['first_batch_s']:.2f}",
                     f"{r['peak_rss_mb']:,.0f}", r["note"]])
    print(f"dataset: {args.dataset}\ntokenizer: {args.tokenizer}\nB={args.batch_size}, T={args.seq_len}, "
          f"{os.cpu_count()} CPUs")
    ours = results.get("hfstream", {})
    if ours:
        steady = ours["steady_tokens_per_s"]
        same_call = results.get("tiktoken_numpy", {}).get("tokens_per_s")
        print_table("hfstream details", ["what", "value"], [
            ["steady M tok/s (after the first batch)",
             f"{steady / 1e6:.3f}" + (f" ({steady / ref:.2f}x tiktoken)" if ref else "")],
            ["end to end vs bare encode_to_numpy (the same tokenizer call)",
             f"{ours['tokens_per_s'] / same_call:.2f}x" if same_call else "-"],
            ["RSS floor: torch + tokenizer loaded, no loader", f"{ours['floor_rss_mb']:,.0f} MB"],
            ["parent RSS at 25 / 50 / 75 / 100% of the run",
             " / ".join(map(str, ours["parent_rss_mb"])) + " MB" if ours["parent_rss_mb"] else "-"],
            ["worker subprocess RSS, largest", f"{ours['worker_rss_max_mb']} MB"],
            ["state_dict size after 200 batches (pickled)",
             f"{state['state_mb']} MB ({state['buffer_docs_in_state']} docs in the buffer)"],
            ["restore: new loader + load_state_dict + next batch", f"{state['restore_s']} s"]])
    _print_extra(extra)
    if "elastic" in extra:
        print_elastic(extra["elastic"], print_table)
    print_table("tokens/s, side by side (peak RSS includes each run's child processes)",
                ["pipeline", "tokens", "seconds", "M tok/s", "vs tiktoken", "vs HF", "first batch s",
                 "peak RSS MB", "note"], rows)
    return 0


def _print_extra(extra: dict[str, Any]) -> None:
    rate = lambda r: r["tokens"] / r["seconds"]  # noqa: E731
    if "cache" in extra:
        c = extra["cache"]
        runs = [("cache off: every pass tokenizes", c["off"]), ("cold cache: pass 1 tokenizes and writes", c["cold"]),
                ("warm cache: every pass reads (a new loader)", c["warm"])]
        if c.get("litdata"):
            runs.append((f"LitData {c['litdata']['version']}: StreamingDataset of its optimize output", c["litdata"]))
        runs.append(("bare mmap read of the cache (ceiling)", c["mmap_ceiling"]))
        print_table("token cache: the same passes, side by side (start-up included)",
                    ["run", "M tok/s", "vs cache off", "steady M tok/s", "first batch s", "docs from the cache"],
                    [[name, f"{rate(r) / 1e6:.2f}", f"{rate(r) / rate(c['off']):.1f}x",
                      f"{r['steady_tokens_per_s'] / 1e6:.2f}" if r.get("steady_tokens_per_s") else "-",
                      f"{r['first_batch_s']:.3f}" if r.get("first_batch_s") else "-",
                      f"{r['cached_docs']:,}" if "cached_docs" in r else "-"] for name, r in runs])
        if c.get("litdata"):
            print(f"LitData's optimize (the conversion step, not in its M tok/s): {c['litdata']['optimize_s']:.2f} s; "
                  f"hfstream warm cache vs LitData: {rate(c['warm']) / rate(c['litdata']):.2f}x")
    if "workers" in extra:
        w = extra["workers"]["runs"]
        rows = []
        for name, r in w.items():
            base = w[name.replace("workers=2", "workers=0")]
            rows.append([name, f"{rate(r) / 1e6:.2f}", f"{rate(r) / rate(base):.2f}x", f"{r['first_batch_s']:.3f}"])
        print_table("DataLoader workers (token cache off)", ["setting", "M tok/s", "vs workers=0", "first batch s"], rows)
    if "full_state" in extra:
        f = extra["full_state"]
        print_table("state at a full shuffle buffer (torch.save bytes)", ["what", "value"], [
            ["compact state (refs), local parquet", f"{f['state_bytes'] / 1e6:.3f} MB ({f['buffer_docs']:,} docs, "
                                                    f"after {f['batches']:,} batches)"],
            ["restore: new loader + load_state_dict + next batch", f"{f['restore_s']:.3f} s"],
            ["ws:// source (cannot seek): token arrays", f"{f['ws_state_bytes'] / 1e6:.2f} MB "
                                                        f"({f['ws_buffer_docs']:,} docs, form {f['ws_form']})"]])
    print_table("shuffle quality: mean |output - input position| of documents (10k buffer)",
                ["warm-up", "first 1,000 out", "first 5,000 out", "steady (20k-30k)"], throughput.shuffle_quality())


if __name__ == "__main__":
    raise SystemExit(main())
