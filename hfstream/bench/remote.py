"""Remote benchmark: a hub dataset read by row group over HTTP vs the same files read locally vs ``datasets``.

Run::

    hfstream bench remote [--dataset PARQUET] [--min-mb 200] [--bandwidth MBPS] [--repeats 3] [--json]

A FineWeb-shaped repo of at least ``--min-mb`` MB of parquet (the ``--dataset`` file repeated;
default: ../shared/data/fineweb_legal.parquet, else synthetic text) is served by a local hub
(``hfstream.testing.LocalHub``) in its own process on 127.0.0.1, with ``--bandwidth`` MB/s as a
cap over all connections (0: none). Measured side by side in one run:

(a) MB/s of text delivered to this process by ``HuggingFaceStreamingCorpus(hub id)`` (worker
    subprocess, HTTP range reads through HfFileSystem) vs the same corpus over the same files on
    local disk, and vs ``datasets.load_dataset(hub id, streaming=True)`` iterated in a child
    process. Both hfstream runs are timed from the corpus's creation to the last document (worker
    start included; the hub resolution is cached by an untimed first pass); ``datasets`` from
    ``load_dataset`` to the last row (its ``import`` excluded, reported apart).
(b) time from a restart to the next document at 1% and 90% of the stream: hfstream timed from a
    new corpus + ``load_state_dict`` (worker start, hub commit check, one footer, one row group);
    ``datasets`` from ``load_dataset`` + ``IterableDataset.load_state_dict`` to the first row
    (its own resume; import excluded).
(c) bytes the hub served for 4 ranks reading their shards (``shard_by=row_groups``, and ``rows``
    for contrast) vs the dataset's size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from hfstream.bench import bench_parser, print_table

REPO_ID, CONFIG = "HuggingFaceFW/fineweb", "sample-10BT"
_ROOT = str(Path(__file__).resolve().parents[2])

DATASETS_READ = """
import json, sys, time
t0 = time.perf_counter()
import datasets
t1 = time.perf_counter()
ds = datasets.load_dataset(sys.argv[1], name=sys.argv[2], split="train", streaming=True).select_columns(["text"])
docs = size = 0
for batch in ds.iter(batch_size=1000):
    docs += len(batch["text"])
    size += sum(len(t.encode()) for t in batch["text"])
print(json.dumps({"import_s": t1 - t0, "seconds": time.perf_counter() - t1, "docs": docs, "bytes": size}))
"""

DATASETS_RESTART = """
import hashlib, json, sys, time
import datasets
load = lambda: datasets.load_dataset(sys.argv[1], name=sys.argv[2], split="train", streaming=True)
out = []
for position in map(int, sys.argv[3:]):
    ds = load()
    rows = iter(ds)
    for _ in range(position):
        next(rows)
    state = ds.state_dict()
    t0 = time.perf_counter()
    again = load()
    again.load_state_dict(state)
    text = next(iter(again))["text"]
    out.append({"seconds": time.perf_counter() - t0, "sha": hashlib.sha1(text.encode()).hexdigest()})
print(json.dumps(out))
"""


class HubProcess:
    """A LocalHub in its own process (so serving costs this process no GIL); counters over stdin."""

    def __init__(self, root: Path, bandwidth_mb_s: float):
        self.proc = subprocess.Popen([sys.executable, "-m", "hfstream.bench.remote", "--serve", str(root),
                                      "--bandwidth", str(bandwidth_mb_s)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=_env())
        self.url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]

    def ask(self, command: str) -> Any:
        self.proc.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=30)


def serve(root: str, bandwidth_mb_s: float) -> int:
    """The hub child: print the URL, then answer ``bytes`` / ``reset`` lines until stdin closes."""
    from hfstream.testing.hub import LocalHub

    with LocalHub(root) as hub:
        hub.bandwidth = bandwidth_mb_s * 1e6 if bandwidth_mb_s > 0 else None
        print(hub.url, flush=True)
        for line in sys.stdin:
            if line.strip() == "reset":
                hub.reset_counters()
            print(json.dumps({"bytes": hub.bytes_served}), flush=True)
    return 0


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p))


def read_all(dataset: str, **options: Any) -> dict[str, float]:
    """Seconds from corpus creation to the last document, documents and UTF-8 bytes of text."""
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    t0 = time.perf_counter()
    docs = size = 0
    with HuggingFaceStreamingCorpus(dataset, **options) as corpus:
        for batch in corpus.stream_batches():
            docs += len(batch)
            size += sum(len(t.encode()) for t in batch)
    return {"seconds": time.perf_counter() - t0, "docs": docs, "bytes": size}


def restart_s(position: int, base: dict[str, Any]) -> tuple[float, str]:
    """Seconds from a new corpus + ``load_state_dict`` at ``position`` to its next document."""
    import hashlib

    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    t0 = time.perf_counter()
    with HuggingFaceStreamingCorpus(REPO_ID, name=CONFIG, max_samples=position + 1) as corpus:
        corpus.load_state_dict(dict(base, row=position, delivered=position))
        text = next(iter(corpus.stream()))
        return time.perf_counter() - t0, hashlib.sha1(text.encode()).hexdigest()


def child(script: str, *args: Any) -> Any:
    done = subprocess.run([sys.executable, "-c", script, REPO_ID, CONFIG, *map(str, args)],
                          capture_output=True, text=True, env=_env(), timeout=1800)
    if done.returncode:
        raise RuntimeError(f"datasets child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(repo: Any, hub: HubProcess, args: Any) -> dict[str, Any]:
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    local = str(repo.root / "sample" / "10BT" / "*.parquet")
    read_all(REPO_ID, name=CONFIG, max_samples=1)  # resolves the hub id once (cached), untimed
    runs: dict[str, list[dict[str, float]]] = {"hub": [], "local": []}
    for _ in range(args.repeats):
        runs["hub"].append(read_all(REPO_ID, name=CONFIG))
        runs["local"].append(read_all(local))
    base_ds = child(DATASETS_READ)
    assert base_ds["docs"] == runs["hub"][0]["docs"] == runs["local"][0]["docs"] == repo.num_rows

    with HuggingFaceStreamingCorpus(REPO_ID, name=CONFIG) as corpus:
        next(iter(corpus.stream()))
        base = corpus.state_dict()
    positions = [int(repo.num_rows * f) for f in (0.01, 0.9)]
    restarts = {p: [restart_s(p, base) for _ in range(args.repeats)] for p in positions}
    ds_restarts = child(DATASETS_RESTART, *positions)
    for p, theirs in zip(positions, ds_restarts):
        assert {sha for _, sha in restarts[p]} == {theirs["sha"]}, "not the same next document"

    served = {}
    for mode in ("row_groups", "rows"):
        hub.ask("reset")
        docs = sum(read_all(REPO_ID, name=CONFIG, shard=r, num_shards=args.ranks, shard_by=mode)["docs"]
                   for r in range(args.ranks))
        assert docs == repo.num_rows
        served[mode] = hub.ask("bytes")["bytes"]
    return {"runs": runs, "datasets": base_ds, "restarts": restarts, "datasets_restarts": ds_restarts,
            "positions": positions, "served": served}


def report(repo: Any, args: Any, m: dict[str, Any]) -> dict[str, Any]:
    def rate(run: dict[str, float]) -> float:
        return run["bytes"] / run["seconds"] / 1e6

    hub_s = statistics.median(r["seconds"] for r in m["runs"]["hub"])
    local_s = statistics.median(r["seconds"] for r in m["runs"]["local"])
    text_mb = m["runs"]["hub"][0]["bytes"] / 1e6
    ds = m["datasets"]
    out: dict[str, Any] = {
        "parquet_mb": round(repo.num_bytes / 1e6, 1), "text_mb": round(text_mb, 1), "documents": repo.num_rows,
        "bandwidth_mb_s": args.bandwidth, "repeats": args.repeats,
        "hub_mb_s": [round(rate(r), 1) for r in m["runs"]["hub"]],
        "local_mb_s": [round(rate(r), 1) for r in m["runs"]["local"]],
        "datasets_mb_s": round(rate(ds), 1), "datasets_import_s": round(ds["import_s"], 2),
        "hub_vs_local": round(local_s / hub_s, 2), "hub_vs_datasets": round(ds["seconds"] / hub_s, 2),
        "restart_s": {f"{p}": [round(s, 3) for s, _ in m["restarts"][p]] for p in m["positions"]},
        "datasets_restart_s": [round(r["seconds"], 3) for r in m["datasets_restarts"]],
        "served_mb": {k: round(v / 1e6, 1) for k, v in m["served"].items()},
        "served_vs_dataset": {k: round(v / repo.num_bytes, 3) for k, v in m["served"].items()},
    }
    low, high = (statistics.median(s for s, _ in m["restarts"][p]) for p in m["positions"])
    out["restart_ratio_90_vs_1"] = round(high / low, 2)
    return out


def print_report(r: dict[str, Any], ranks: int) -> None:
    cap = f"{r['bandwidth_mb_s']:g} MB/s cap" if r["bandwidth_mb_s"] else "no bandwidth cap"
    print(f"dataset: FineWeb-shaped hub repo on 127.0.0.1, {r['parquet_mb']} MB of parquet, {r['text_mb']} MB "
          f"of text, {r['documents']:,} documents; {cap}; hfstream figures over {r['repeats']} runs")
    hub, local = r["hub_mb_s"], r["local_mb_s"]
    print_table("(a) throughput: MB/s of text delivered (hfstream: corpus creation -> last document, worker start "
                "included; datasets: load_dataset -> last row, import excluded)",
                ["reader", "MB/s (runs)", "hub vs it"], [
                    ["hfstream, hub id (HTTP range reads)", ", ".join(map(str, hub)), "1.00x"],
                    ["hfstream, same files on local disk", ", ".join(map(str, local)), f"{r['hub_vs_local']:.2f}x"],
                    [f"datasets streaming, hub id (import {r['datasets_import_s']}s apart)", str(r["datasets_mb_s"]),
                     f"{r['hub_vs_datasets']:.2f}x"]])
    rows = []
    for (position, runs), theirs in zip(r["restart_s"].items(), r["datasets_restart_s"]):
        pct = round(100 * int(position) / r["documents"])
        rows.append([f"{pct}% (document {int(position):,})", ", ".join(f"{s:.2f}" for s in runs), f"{theirs:.2f}"])
    print_table("(b) restart -> next document, seconds (hfstream: new corpus + load_state_dict, worker start "
                "included; datasets: load_dataset + load_state_dict, import excluded)",
                ["position", "hfstream (runs)", "datasets"], rows)
    print(f"90% / 1% (hfstream medians): {r['restart_ratio_90_vs_1']:.2f}")
    print_table(f"(c) bytes served to {ranks} ranks reading their shards, vs the dataset's {r['parquet_mb']} MB",
                ["shard_by", "MB served", "vs dataset"],
                [[mode, f"{mb:,.1f}", f"{r['served_vs_dataset'][mode]:.3f}x"] for mode, mb in r["served_mb"].items()])


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("remote", __doc__)
    p.add_argument("--min-mb", type=float, default=200, help="parquet MB of the benchmark repo (the source repeated)")
    p.add_argument("--bandwidth", type=float, default=0, help="the hub's cap in MB/s over all connections; 0: none")
    p.add_argument("--repeats", type=int, default=3, help="hfstream runs per figure")
    p.add_argument("--ranks", type=int, default=4, help="ranks for the bytes-served figure")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # the hub child's mode
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.bandwidth)
    from hfstream.testing.fineweb import make_large_fineweb_repo

    with tempfile.TemporaryDirectory(prefix="hfstream-bench-remote-") as tmp:
        repo = make_large_fineweb_repo(int(args.min_mb * 1e6), Path(tmp) / "hub" / REPO_ID, args.dataset)
        hub = HubProcess(Path(tmp) / "hub", args.bandwidth)
        saved = dict(os.environ)
        os.environ.update({"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
                           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                           "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_HOME": f"{tmp}/hf",
                           "HF_DATASETS_CACHE": f"{tmp}/ds", "HFSTREAM_CACHE": f"{tmp}/cache"})
        try:
            result = report(repo, args, measure(repo, hub, args))
        finally:
            os.environ.clear()
            os.environ.update(saved)
            hub.close()
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print_report(result, args.ranks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
