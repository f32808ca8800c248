"""Benchmark programs (``hfstream bench NAME``): tables of figures and same-run ratios."""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Callable


#: benchmark name -> module with ``main(argv) -> int`` (imported only when run)
BENCHMARK_MODULES = {"corpus": "hfstream.bench.corpus", "loader": "hfstream.bench.loader",
                     "serve": "hfstream.bench.serve", "remote": "hfstream.bench.remote"}


def _runner(module: str) -> Callable[[list[str]], int]:
    return lambda argv: importlib.import_module(module).main(argv)


BENCHMARKS: dict[str, Callable[[list[str]], int]] = {name: _runner(m) for name, m in BENCHMARK_MODULES.items()}


def default_dataset() -> str:
    """The FineWeb sample of ``../shared/data`` when it is there, else the built-in corpus."""
    candidates = [os.environ.get("HFSTREAM_SHARED_DATA", ""), "../shared/data",
                  str(Path(__file__).resolve().parents[2].parent / "shared" / "data")]
    for base in candidates:
        path = Path(base) / "fineweb_legal.parquet"
        if base and path.exists():
            return str(path)
    return "builtin:python-docs"


def bench_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser every benchmark starts from: ``--dataset`` (see :func:`default_dataset`) and ``--json``."""
    parser = argparse.ArgumentParser(prog=f"hfstream bench {name}", description=(doc or "").split("\n\n")[0])
    parser.add_argument("--dataset", default=None, help="default: ../shared/data/fineweb_legal.parquet, "
                        "else builtin:python-docs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """Print an aligned text table."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for k, row in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))
