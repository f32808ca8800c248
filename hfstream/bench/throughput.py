"""The loader benchmark's throughput runs: token cache passes, DataLoader workers, state at a full buffer, shuffle quality.

Each ``run_*`` function runs in its own child process of ``hfstream bench loader`` (see
:mod:`hfstream.bench.loader`) and returns a JSON-able dict; start-up (loader construction,
tokenizer load, worker start) is inside every timed span.
"""

from __future__ import annotations

import argparse
import functools
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def timed_pass(args: argparse.Namespace, cache: Any, **options: Any) -> dict[str, Any]:
    """One loader run over ``args.epochs`` epochs: tokens, seconds (construction included), first batch."""
    from hfstream.loader.loader import StreamingTextDataLoader

    t0 = time.perf_counter()
    first, batches = None, 0
    seq_len = options.pop("seq_len", args.seq_len)
    with StreamingTextDataLoader(args.dataset, args.tokenizer, args.batch_size, seq_len, epochs=args.epochs,
                                 token_cache=cache, **options) as loader:
        for _ in loader:
            batches += 1
            if first is None:
                first = time.perf_counter() - t0
        cached = loader.pipeline.docs.num_cached_docs if loader.pipeline is not None and \
            loader.pipeline.docs.seekable else 0
    seconds = time.perf_counter() - t0
    tokens = batches * args.batch_size * seq_len
    steady = (tokens - args.batch_size * seq_len) / (seconds - first) if first and batches > 1 else None
    return {"tokens": tokens, "seconds": seconds, "first_batch_s": first, "steady_tokens_per_s": steady,
            "cached_docs": cached}


def run_cache(args: argparse.Namespace) -> dict[str, Any]:
    """``args.epochs`` passes each: cache off (every pass tokenizes), a cold cache (the first pass
    tokenizes and writes, the later ones read) and a warm one (a new loader: every pass reads)."""
    with tempfile.TemporaryDirectory() as directory:
        off = timed_pass(args, False)
        cold = timed_pass(args, directory)
        warm = timed_pass(args, directory)
        ceiling = mmap_ceiling(Path(directory), args.batch_size, args.seq_len, args.epochs)
    return {"off": off, "cold": cold, "warm": warm, "mmap_ceiling": ceiling, **run_litdata(args)}


def mmap_ceiling(directory: Path, batch_size: int, seq_len: int, epochs: int) -> dict[str, Any]:
    """The bare read: every cached chunk memory-mapped, cut into (B, T+1) int64 rows, ``epochs`` times."""
    from hfstream.source.token_cache import ChunkName, TokenCache

    cache = TokenCache(directory)
    t0 = time.perf_counter()
    tokens, row = 0, batch_size * (seq_len + 1)
    for _ in range(epochs):
        for path in sorted(directory.rglob("*.tok")):
            chunk = cache.open(path.parent.name, ChunkName.parse(path.name))  # type: ignore[arg-type]
            ids = chunk.tokens  # type: ignore[union-attr]
            for start in range(0, len(ids) - row + 1, row):
                batch = ids[start:start + row].astype(np.int64).reshape(batch_size, seq_len + 1)
                tokens += batch[:, :-1].size
    return {"tokens": tokens, "seconds": time.perf_counter() - t0}


def run_litdata(args: argparse.Namespace) -> dict[str, Any]:
    """LitData streaming its own ``optimize`` output (the same documents tokenized with the same
    ids, EOS after each, ``TokensLoader`` blocks of T+1, shuffled), ``args.epochs`` passes; the
    ``optimize`` conversion timed apart. Skipped when litdata is not installed (never a dependency)."""
    try:
        import litdata
    except ImportError:
        return {"litdata": None}
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    with HuggingFaceStreamingCorpus(args.dataset) as corpus:
        texts = [t for batch in corpus.stream_batches() for t in batch]
    groups = [texts[i:i + 256] for i in range(0, len(texts), 256)]
    with tempfile.TemporaryDirectory() as directory:
        t0 = time.perf_counter()
        litdata.optimize(fn=functools.partial(litdata_tokenize, args.tokenizer), inputs=groups, output_dir=directory, chunk_bytes="64MB",
                         item_loader=litdata.TokensLoader(), num_workers=1, mode="overwrite")
        convert = time.perf_counter() - t0
        t0 = time.perf_counter()
        dataset = litdata.StreamingDataset(directory, item_loader=litdata.TokensLoader(block_size=args.seq_len + 1),
                                           shuffle=True, drop_last=True, seed=0)
        loader = litdata.StreamingDataLoader(dataset, batch_size=args.batch_size, num_workers=0, drop_last=True)
        first, tokens = None, 0
        for _ in range(args.epochs):
            for rows in loader:
                inputs, targets = rows[:, :-1], rows[:, 1:]  # (B, T+1) -> 2 x (B, T)
                tokens += inputs.numel()
                if first is None:
                    first = time.perf_counter() - t0
    return {"litdata": {"tokens": tokens, "seconds": time.perf_counter() - t0, "first_batch_s": first,
                        "optimize_s": convert, "version": litdata.__version__}}


def litdata_tokenize(tokenizer: str, group: list[str]) -> Any:
    """LitData's ``optimize`` function (module level: its workers are spawned): ids + EOS per document."""
    import torch

    from hfstream.tokens.encoder import TextEncoder

    encoder = _ENCODERS.get(tokenizer) or _ENCODERS.setdefault(tokenizer, TextEncoder(tokenizer))
    for ids in encoder.encode_batch(group):
        yield torch.from_numpy(np.append(ids, encoder.eos_id).astype(np.int32))


_ENCODERS: dict[str, Any] = {}


def run_workers(args: argparse.Namespace) -> dict[str, Any]:
    """num_workers 0 vs 2 at T and at 128, token cache off (every pass tokenizes)."""
    out = {}
    for seq_len in (args.seq_len, 128):
        for workers in (0, 2):
            out[f"T={seq_len} workers={workers}"] = timed_pass(args, False, seq_len=seq_len, num_workers=workers)
    return {"runs": out}


def state_size(state: Any) -> int:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return len(buffer.getvalue())


def run_full_state(args: argparse.Namespace) -> dict[str, Any]:
    """At a full 10k-document buffer: compact state size, restore + next batch, and the ws:// old form."""
    from hfstream.loader.loader import StreamingTextDataLoader

    with tempfile.TemporaryDirectory() as directory:
        def make():
            return StreamingTextDataLoader(args.dataset, args.tokenizer, args.batch_size, args.seq_len,
                                           epochs=None, token_cache=directory)

        with make() as loader:
            for batches, _ in enumerate(loader, 1):
                if loader.metrics["buffer_fill"] >= 1.0:
                    break
            state = loader.state_dict()
        size = state_size(state)
        t0 = time.perf_counter()
        with make() as loader:
            loader.load_state_dict(state)
            next(iter(loader))
            restore = time.perf_counter() - t0
    return {"batches": batches, "state_bytes": size, "restore_s": restore,
            "buffer_docs": len(state["pipeline"]["buffer"]["refs"]) // 2, **ws_state(args)}


def ws_state(args: argparse.Namespace, docs: int = 3000) -> dict[str, Any]:
    """The old form: the state of a loader reading a ws:// server (which cannot seek) with ``docs`` buffered."""
    from hfstream.eir.runner import ServerThread
    from hfstream.eir.server import ServerConfig
    from hfstream.loader.loader import StreamingTextDataLoader
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    corpus = HuggingFaceStreamingCorpus(args.dataset, epochs=None)
    with ServerThread(corpus, ServerConfig(port=0, sequence_length=0)) as server:
        with StreamingTextDataLoader(server.url, args.tokenizer, args.batch_size, args.seq_len,
                                     shuffle_warmup=docs, shuffle_buffer_size=docs) as loader:
            next(iter(loader))
            state = loader.state_dict()
    return {"ws_state_bytes": state_size(state), "ws_buffer_docs": len(state["pipeline"]["buffer"]["items"]["data"]),
            "ws_form": state["pipeline"]["form"]}


def shuffle_quality(capacity: int = 10_000, warmups: tuple[int, ...] = (1000, 256), n: int = 40_000) -> list[list[Any]]:
    """Mean |output position - input position| of documents through the shuffle buffer (items are
    their input positions): over the first 1,000 and 5,000 out, and in steady state (20k-30k out)."""
    from hfstream.loader.shuffle import ShuffleBuffer

    rows = []
    for warmup in warmups:
        buffer = ShuffleBuffer(capacity, 1 << 60, 0, warmup=warmup)
        out: list[int] = []
        for i in range(n):
            out += buffer.push(i, 1)
        out += buffer.drain()
        shift = np.abs(np.array(out) - np.arange(len(out)))
        rows.append([warmup, f"{shift[:1000].mean():,.0f}", f"{shift[:5000].mean():,.0f}",
                     f"{shift[20_000:30_000].mean():,.0f}"])
    return rows
