"""FineWeb-shaped dataset repos for the local hub: ``sample/10BT/*.parquet`` and a card with configs."""

from __future__ import annotations

import os
import random
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfstream.errors import ConfigError, DataFormatError, DatasetNotFoundError

FINEWEB_REPO_ID = "HuggingFaceFW/fineweb"
CONFIG_NAME = "sample-10BT"
DATA_DIR = "sample/10BT"  # FineWeb's own layout: sample/10BT/000_00000.parquet, 001_00000.parquet, ...

_CARD = """---
license: odc-by
language:
- en
pretty_name: FineWeb-like test repo
configs:
- config_name: default
  data_files:
  - split: train
    path: {data_dir}/*
- config_name: {config}
  data_files:
  - split: train
    path: {data_dir}/*
---
# FineWeb-like test repo

Written by `hfstream.testing.fineweb` for tests and benchmarks against a local hub: {num_files}
parquet files of {num_rows} rows in `{data_dir}/`, row groups of {row_group_size} rows.
Source: {source}. The real FineWeb's `default` config reads `data/*/*`; here it reads the sample.
"""

_WORDS = ("the court held that a party may appeal within thirty days of judgment under the statute "
          "data web page city school county river market energy water health policy report study "
          "history music game team season market price company service local national public").split()


@dataclass(frozen=True)
class FinewebRepo:
    """What :func:`make_fineweb_like_repo` wrote.

    Attributes:
        root: the repo folder (serve it as ``HuggingFaceFW/fineweb``).
        data_files: the parquet paths in the repo, in the order ``datasets`` reads them (sorted).
        num_rows: documents over all files.
        num_bytes: bytes of the parquet files on disk.
    """

    root: Path
    data_files: list[str]
    num_rows: int
    num_bytes: int

    def texts(self) -> list[str]:
        """Every document's text, file by file, in order."""
        import pyarrow.parquet as pq

        return [t for f in self.data_files for t in pq.read_table(self.root / f, columns=["text"])["text"].to_pylist()]


def shared_fineweb_parquet() -> Path | None:
    """``fineweb_legal.parquet`` of the shared data folder when it is there (users don't have it)."""
    bases = [os.environ.get("HFSTREAM_SHARED_DATA", ""), str(Path(__file__).resolve().parents[3] / "shared" / "data")]
    for base in bases:
        path = Path(base) / "fineweb_legal.parquet"
        if base and path.is_file():
            return path
    return None


def make_fineweb_like_repo(dest: str | os.PathLike, source_parquet: str | os.PathLike | None = None,
                           num_files: int = 5, row_group_size: int = 64, repeat: int = 1,
                           num_synthetic_rows: int = 600, compression: str = "snappy") -> FinewebRepo:
    """Write a FineWeb-shaped dataset repo: ``sample/10BT/000_00000.parquet``... and ``README.md``.

    The card's ``configs:`` has ``sample-10BT`` and ``default``, both ``train`` = ``sample/10BT/*``,
    so ``load_dataset("HuggingFaceFW/fineweb", name="sample-10BT", split="train")`` resolves it.

    Args:
        dest: the repo folder to write (created; existing files of the same names replaced).
        source_parquet: a parquet file with a ``text`` column (e.g. ``fineweb_legal.parquet``);
            None: ``num_synthetic_rows`` generated documents (columns ``text``, ``id``, ``url``).
        num_files: how many parquet files the rows are split into (contiguous slices).
        row_group_size: rows per row group (small, so that reading one row group is cheap).
        repeat: the rows ``repeat`` times over (ids get ``#k``), for a larger benchmark repo.
        num_synthetic_rows: rows generated when there is no source.
        compression: parquet codec.

    Returns:
        The files written and their totals.
    """
    import pyarrow.parquet as pq

    for name, value in (("num_files", num_files), ("row_group_size", row_group_size), ("repeat", repeat)):
        if value < 1:
            raise ConfigError(f"make_fineweb_like_repo: {name} must be >= 1, got {value}", f"pass {name}=1 or more")
    table = _source_table(source_parquet) if source_parquet is not None else _synthetic_table(num_synthetic_rows)
    total = table.num_rows * repeat
    if total < num_files:
        raise ConfigError(f"make_fineweb_like_repo: {total} rows cannot fill {num_files} files",
                          "pass fewer num_files or more rows")
    root = Path(dest)
    (root / DATA_DIR).mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(num_files):
        part = _rows(table, total * k // num_files, total * (k + 1) // num_files)
        files.append(f"{DATA_DIR}/{k:03d}_00000.parquet")
        pq.write_table(part, root / files[-1], row_group_size=row_group_size, compression=compression)
    source = Path(source_parquet).name if source_parquet is not None else "synthetic text"
    (root / "README.md").write_text(_CARD.format(data_dir=DATA_DIR, config=CONFIG_NAME, num_files=num_files,
                                                 num_rows=total, row_group_size=row_group_size,
                                                 source=f"{source} x {repeat}" if repeat > 1 else source))
    return FinewebRepo(root, files, total, sum((root / f).stat().st_size for f in files))


def make_large_fineweb_repo(min_bytes: int = 200_000_000, dest: str | os.PathLike | None = None,
                            source_parquet: str | os.PathLike | None = None, num_files: int = 10,
                            row_group_size: int = 1024) -> FinewebRepo:
    """A FineWeb-shaped repo of at least ``min_bytes`` of parquet, for benchmarks (the sample repeated).

    Args:
        min_bytes: the smallest total size of the parquet files.
        dest: the repo folder; None: a new temporary folder (the caller removes it).
        source_parquet: as for :func:`make_fineweb_like_repo`; None: the shared FineWeb sample
            when it is there, else synthetic text.
        num_files: parquet files.
        row_group_size: rows per row group.
    """
    source = source_parquet if source_parquet is not None else shared_fineweb_parquet()
    if dest is None:
        dest = Path(tempfile.mkdtemp(prefix="fineweb-large-")) / "HuggingFaceFW" / "fineweb"
    with tempfile.TemporaryDirectory(prefix="fineweb-probe-") as probe_dir:
        probe = make_fineweb_like_repo(probe_dir, source, num_files=1, row_group_size=row_group_size)
    repeat = max(1, -(-min_bytes // probe.num_bytes))  # ceil: parquet size grows with the rows
    return make_fineweb_like_repo(dest, source, num_files=num_files, row_group_size=row_group_size, repeat=repeat)


def _source_table(path: str | os.PathLike) -> Any:
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        raise DatasetNotFoundError(f"make_fineweb_like_repo: no file {str(path)!r}",
                                   "pass source_parquet=None for synthetic text")
    table = pq.read_table(path)
    if "text" not in table.column_names:
        raise DataFormatError(f"{path}: no 'text' column; the columns are {table.column_names}",
                              "pass a parquet file with one document per row in a 'text' column")
    return table


def _synthetic_table(num_rows: int) -> Any:
    import pyarrow as pa

    rng = random.Random(0)
    texts = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 900))) + "." for _ in range(num_rows)]
    ids = [f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>" for _ in range(num_rows)]
    return pa.table({"text": texts, "id": ids, "url": [f"https://example.com/page/{i}" for i in range(num_rows)]})


def _rows(table: Any, start: int, stop: int) -> Any:
    """Rows [start, stop) of ``table`` repeated end to end; repeat k > 0 gets ``#k`` on its ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n, parts = table.num_rows, []
    while start < stop:
        k, offset = divmod(start, n)
        part = table.slice(offset, min(n - offset, stop - start))
        if k > 0 and "id" in part.column_names:
            ids = pc.binary_join_element_wise(part["id"].cast(pa.string()), pa.scalar(f"#{k}"), "")
            part = part.set_column(part.column_names.index("id"), "id", ids)
        parts.append(part)
        start += part.num_rows
    return pa.concat_tables(parts).combine_chunks()
