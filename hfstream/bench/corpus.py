"""Corpus benchmark: documents/s, MB/s delivered to the parent and time to first document.

Run::

    hfstream bench corpus [--dataset PATH] [--epochs N] [--json]

Measured side by side in one run: hfstream's corpus (per-document ``stream()`` and
``stream_batches()``, worker subprocess included) and the baseline of iterating the same data
in-process with ``datasets.load_dataset(..., streaming=True)``. MB are UTF-8 bytes of text.
"""

from __future__ import annotations

import statistics
import time

import orjson

from hfstream.bench import bench_parser, default_dataset, print_table


def _one_epoch(dataset: str) -> tuple[int, int]:
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    with HuggingFaceStreamingCorpus(dataset) as corpus:
        texts = [t for batch in corpus.stream_batches() for t in batch]
    return len(texts), sum(len(t.encode()) for t in texts)


def first_document_s(dataset: str) -> float:
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    t0 = time.perf_counter()
    with HuggingFaceStreamingCorpus(dataset, max_samples=1) as corpus:
        next(iter(corpus.stream()))
        return time.perf_counter() - t0


def hfstream_throughput(dataset: str, epochs: int, per_document: bool) -> tuple[float, int]:
    """Seconds from corpus creation to the last document, and the number of documents."""
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    t0 = time.perf_counter()
    docs = 0
    with HuggingFaceStreamingCorpus(dataset, epochs=epochs) as corpus:
        if per_document:
            for _ in corpus.stream():
                docs += 1
        else:
            for batch in corpus.stream_batches():
                docs += len(batch)
    return time.perf_counter() - t0, docs


def datasets_baseline(dataset: str, epochs: int) -> dict[str, float]:
    """``import datasets`` + ``load_dataset(streaming=True)`` time, then batched iteration."""
    from hfstream.source.resolve import resolve
    from hfstream.source.spec import SourceSpec

    resolved = resolve(SourceSpec(dataset))
    t0 = time.perf_counter()
    import datasets

    ds = datasets.load_dataset(resolved.format, data_files=resolved.files, split="train", streaming=True)
    ds = ds.select_columns(["text"])
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    docs = 0
    for _ in range(epochs):
        for batch in ds.iter(batch_size=1000):
            docs += len(batch["text"])
    iterate_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    rows = sum(1 for _ in range(epochs) for _row in ds)  # row by row, as most user code does
    return {"setup_s": setup, "iterate_s": iterate_s, "docs": docs, "rows_s": time.perf_counter() - t2,
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("corpus", __doc__)
    p.add_argument("--epochs", type=int, default=10, help="passes per throughput run")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is shown)")
    args = p.parse_args(argv)
    dataset = args.dataset or default_dataset()
    num_docs, epoch_bytes = _one_epoch(dataset)  # warms the page cache and counts exact bytes
    total_mb = epoch_bytes * args.epochs / 1e6

    first = statistics.median(first_document_s(dataset) for _ in range(args.repeats))
    runs = {"stream()": [], "stream_batches()": []}
    for _ in range(args.repeats):
        for name, per_doc in (("stream()", True), ("stream_batches()", False)):
            seconds, docs = hfstream_throughput(dataset, args.epochs, per_doc)
            assert docs == num_docs * args.epochs, (docs, num_docs)
            runs[name].append(seconds)
    base = datasets_baseline(dataset, args.epochs)
    assert base["docs"] == num_docs * args.epochs
    base_mb_s = total_mb / base["iterate_s"]

    results = {"dataset": dataset, "documents_per_epoch": num_docs, "mb_per_epoch": round(epoch_bytes / 1e6, 2),
               "epochs": args.epochs, "first_document_s": round(first, 3),
               "datasets_setup_s": round(base["setup_s"], 2),
               "datasets_mb_per_s": round(base_mb_s, 1)}
    rows = []
    for name, times in runs.items():
        seconds = statistics.median(times)
        mb_s = total_mb / seconds
        results[name] = {"seconds": round(seconds, 3), "docs_per_s": round(num_docs * args.epochs / seconds),
                         "mb_per_s": round(mb_s, 1), "vs_datasets": round(mb_s / base_mb_s, 2)}
        rows.append([f"hfstream {name}", f"{seconds:.2f}", f"{num_docs * args.epochs / seconds:,.0f}",
                     f"{mb_s:,.1f}", f"{mb_s / base_mb_s:.2f}x"])
    rows.append(["datasets in-process iter(1000)", f"{base['iterate_s']:.2f}",
                 f"{num_docs * args.epochs / base['iterate_s']:,.0f}", f"{base_mb_s:,.1f}", "1.00x"])
    rows_mb_s = total_mb / base["rows_s"]
    results["datasets_rows_mb_per_s"] = round(rows_mb_s, 1)
    rows.append(["datasets in-process, row by row", f"{base['rows_s']:.2f}",
                 f"{base['rows'] / base['rows_s']:,.0f}", f"{rows_mb_s:,.1f}", f"{rows_mb_s / base_mb_s:.2f}x"])
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"dataset: {dataset} ({num_docs:,} docs, {epoch_bytes / 1e6:.1f} MB of text per epoch), "
          f"{args.epochs} epochs per run, median of {args.repeats}")
    print_table("throughput (hfstream: wall time from corpus creation to the last document, worker start included)",
                ["pipeline", "seconds", "docs/s", "MB/s", "vs datasets"], rows)
    print_table("latency", ["what", "seconds"], [
        ["hfstream: corpus created -> first document", f"{first:.3f}"],
        ["datasets: import + load_dataset(streaming=True)", f"{base['setup_s']:.2f}"]])
    return 0
