"""The ``hfstream`` command: look at, measure and serve any dataset through the streaming worker.

Usage::

    hfstream head --dataset builtin:python-docs -n 3        # print the first documents
    hfstream scan --dataset 'data/*.parquet' --epochs 2     # stream through, docs/s and MB/s
    hfstream serve --dataset builtin:python-docs            # serve it to EIR over WebSocket
    hfstream datasets                                       # list the built-in corpora
    hfstream info                                           # versions, native modules, CPUs, CUDA
    hfstream cache info|clear                               # the token cache (where, how big, clear it)
    hfstream audit runs/tiny                                # prove each document was trained on exactly once
    hfstream bench corpus|loader|serve                      # the benchmarks (hfstream bench loader --help)

``-v`` (debug logging, the worker's output) works before or after the subcommand.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import orjson

from hfstream.bench import BENCHMARKS
from hfstream.cli import audit, cache, export, info, serve
from hfstream.cli.common import HelpFormatter, help_texts, run_main
from hfstream.cli.options import add_mixture_args, add_source_args, open_source_from_args
from hfstream.progress import progress_bar
from hfstream.source.builtin import BUILTIN_DATASETS, PREFIX


def cmd_head(args: argparse.Namespace) -> int:
    limit = args.n if args.max_samples is None else min(args.n, args.max_samples)
    with open_source_from_args(args, args.batch_size, max_samples=limit) as source:
        for i, text in zip(range(limit), source.stream()):
            if args.json:
                sys.stdout.write(orjson.dumps({"text": text}).decode() + "\n")
                continue
            shown = text if args.chars <= 0 or len(text) <= args.chars else text[:args.chars] + " […]"
            print(f"--- document {i} ({len(text):,} chars) ---\n{shown}")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    docs = nbytes = 0
    first = None
    with open_source_from_args(args, args.batch_size) as corpus, progress_bar(total=args.max_samples, unit="doc", unit_scale=True,
                                               disable=args.quiet, smoothing=0.1) as bar:
        for batch in corpus.stream_batches():
            if first is None:
                first = time.perf_counter() - t0
            size = sum(len(t.encode()) for t in batch)
            docs += len(batch)
            nbytes += size
            bar.update(len(batch))
            elapsed = time.perf_counter() - t0
            bar.set_postfix_str(f"{nbytes / 1e6 / elapsed:,.1f} MB/s", refresh=False)
        stats = corpus.stats()
        skipped, restarts = stats.get("skipped", {}), stats.get("restarts", 0)
        if "shares" in stats:
            print(f"realized proportions: {stats['shares']}", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    summary = {"documents": docs, "mb": round(nbytes / 1e6, 2), "seconds": round(elapsed, 3),
               "docs_per_s": round(docs / elapsed, 1), "mb_per_s": round(nbytes / 1e6 / elapsed, 1),
               "first_document_s": None if first is None else round(first, 3),
               "skipped": skipped, "restarts": restarts}
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        print(f"{docs:,} documents, {nbytes / 1e6:,.1f} MB in {elapsed:.2f}s: {summary['docs_per_s']:,.0f} "
              f"docs/s, {summary['mb_per_s']:,.1f} MB/s; first document after {summary['first_document_s']}s; "
              f"skipped {skipped or 'none'}; worker restarts {restarts}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    for name, description in BUILTIN_DATASETS.items():
        print(f"{PREFIX}{name}\t{description}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    return BENCHMARKS[args.which](args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfstream", formatter_class=HelpFormatter,
                                     **help_texts(__doc__))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (the worker's output too)")
    # The same flag after the subcommand (`hfstream serve -v`); SUPPRESS keeps a -v given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging (the worker's output too)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=lambda **kw: argparse.ArgumentParser(
                                    parents=[common], **{"formatter_class": HelpFormatter, **kw}))

    head = sub.add_parser("head", help="print the first N documents of a dataset")
    add_source_args(head, dataset_required=False)
    add_mixture_args(head)
    head.add_argument("-n", type=int, default=5, help="documents to print")
    head.add_argument("--chars", type=int, default=600, help="truncate each document (0: full text)")
    head.add_argument("--json", action="store_true", help="print JSON lines {\"text\": ...}")
    head.add_argument("--batch-size", type=int, default=64, help="documents per worker message")
    head.set_defaults(func=cmd_head)

    scan = sub.add_parser("scan", help="stream through a dataset, reporting documents/s and MB/s")
    add_source_args(scan, dataset_required=False)
    add_mixture_args(scan)
    scan.add_argument("--batch-size", type=int, default=1000, help="documents per worker message")
    scan.add_argument("--json", action="store_true", help="print the summary as JSON")
    scan.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    scan.set_defaults(func=cmd_scan)

    datasets = sub.add_parser("datasets", help="list the built-in offline corpora")
    datasets.set_defaults(func=cmd_datasets)

    serve.register(sub)
    info.register(sub)
    export.register(sub)
    cache.register(sub)
    audit.register(sub)

    bench = sub.add_parser("bench", help=f"run a benchmark program: {', '.join(sorted(BENCHMARKS))}",
                           description="Run a benchmark program; each prints figures and ratios measured "
                                       "side by side in one run. `hfstream bench NAME --help` for its options.")
    bench.add_argument("which", choices=sorted(BENCHMARKS), metavar="NAME",
                       help=f"the benchmark: {', '.join(sorted(BENCHMARKS))}")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(name)s %(levelname)s: %(message)s")
    return run_main(lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
