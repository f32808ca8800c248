"""Virtual shards in the loader benchmark: tokens/s with K shards vs the single pipeline, state, elastic resume.

Run by ``hfstream bench loader`` (``--extra elastic``), in a child process. The dataset is
rewritten once into a parquet file of 64 row groups (so that K = 4, 16 and 64 shard it by row
group, as a real multi-file dataset would be); every run reads that file, token cache off
(every pass tokenizes), one rank, no DataLoader workers, start-up included (loader
construction, tokenizer, the reader subprocesses: one per shard; the imports are done before
the first run).
"""

from __future__ import annotations

import argparse
import math
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

from hfstream.loader.elastic import merge_states
from hfstream.loader.loader import StreamingTextDataLoader
from hfstream.tokens.encoder import TextEncoder

SHARDS = (4, 16, 64)
ROW_GROUPS = 64


def _split_file(dataset: str, directory: Path) -> str:
    import pyarrow.parquet as pq

    table = pq.read_table(dataset, columns=["text"]) if dataset.endswith(".parquet") else None
    if table is None:
        import pyarrow as pa

        from hfstream.bench.loader import _texts
        table = pa.table({"text": _texts(dataset)})
    path = directory / "data.parquet"
    pq.write_table(table, path, row_group_size=math.ceil(table.num_rows / ROW_GROUPS))
    return str(path)


def _loader(args: argparse.Namespace, data: str, shards: int, epochs: int | None, **options: Any) -> Any:
    return StreamingTextDataLoader(data, args.tokenizer, args.batch_size, args.seq_len, epochs=epochs,
                                   token_cache=False, virtual_shards=shards, **options)


def _timed(args: argparse.Namespace, data: str, shards: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    first, batches = None, 0
    with _loader(args, data, shards, args.epochs) as loader:
        for _ in loader:
            batches += 1
            if first is None:
                first = time.perf_counter() - t0
    return {"tokens": batches * args.batch_size * args.seq_len, "seconds": time.perf_counter() - t0,
            "first_batch_s": first}


def _resume(args: argparse.Namespace, data: str, shards: int, after: int = 200) -> dict[str, Any]:
    """State after ``after`` batches on 1 rank; then rank 0 of 2 and of 4 resuming from it."""
    with _loader(args, data, shards, None) as loader:
        for _, _batch in zip(range(after), loader):
            pass
        state = merge_states([loader.state_dict()])
    out = {"state_mb": len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)) / 1e6}
    for world in (2, 4):
        t0 = time.perf_counter()
        with _loader(args, data, shards, None, shard=0, num_shards=world) as loader:
            loader.load_state_dict(state)
            next(loader)
            out[f"resume_{world}_s"] = time.perf_counter() - t0
    return out


def run_elastic(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = _split_file(args.dataset, Path(tmp))
        TextEncoder(args.tokenizer).encode_batch(["warm up"])  # what every run below needs loaded, loaded
        runs = {"single pipeline": _timed(args, data, 0)}
        for k in SHARDS:
            runs[f"virtual_shards={k}"] = _timed(args, data, k)
        resume = _resume(args, data, 16)
    return {"runs": runs, "resume": resume}


def print_elastic(result: dict[str, Any], print_table: Any) -> None:
    runs = result["runs"]
    rate = lambda r: r["tokens"] / r["seconds"]  # noqa: E731
    base = rate(runs["single pipeline"])
    print_table("virtual shards (one rank, no workers, token cache off, start-up included)",
                ["plan", "M tok/s", "vs single pipeline", "first batch s"],
                [[name, f"{rate(r) / 1e6:.2f}", f"{rate(r) / base:.2f}x", f"{r['first_batch_s']:.3f}"]
                 for name, r in runs.items()])
    r = result["resume"]
    print_table("elastic resume, virtual_shards=16 (state after 200 batches on 1 rank)", ["what", "value"], [
        ["state, every shard (pickled)", f"{r['state_mb']:.2f} MB"],
        ["rank 0 of 2: new loader + load_state_dict + first batch", f"{r['resume_2_s']:.3f} s"],
        ["rank 0 of 4: new loader + load_state_dict + first batch", f"{r['resume_4_s']:.3f} s"]])
