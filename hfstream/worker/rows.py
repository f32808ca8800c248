"""A shard's row stream for one epoch: file order, shard selection and the start row.

Positions are counted in *shard rows*: the rows this shard owns, in the order it reads them,
before any filtering. ``local_shard_rows(...)`` (whole files) and ``piece_shard_rows(...)``
(parquet row groups, located through their row counts without reading what comes before) yield
chunks of raw values starting exactly at a given shard row, so a restarted worker continues at
the next undelivered document.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

from hfstream.errors import ConfigError, StateError
from hfstream.source.diskcache import read_cached, write_cached
from hfstream.source.spec import SourceSpec

Chunks = Iterator[list[Any]]
#: (path, spec, skip hint) -> (rows jumped, chunks of the rest)
FileReader = Callable[[str, SourceSpec, int], "tuple[int, Chunks]"]
ShardMode = Literal["files", "row_groups", "rows"]
SHARD_MODES = ("files", "row_groups", "rows")
#: (pieces, rows to drop from the first) -> chunks of their rows
PieceReader = Callable[[list["Piece"], int], Chunks]


def epoch_file_order(files: list[str], seed: int | None, epoch: int) -> list[str]:
    """The files in reading order for an epoch: sorted, or shuffled by (seed, epoch)."""
    if seed is None:
        return list(files)
    order = list(files)
    random.Random(f"hfstream:{seed}:{epoch}").shuffle(order)  # str seeds hash the same everywhere
    return order


def shard_mode(spec: SourceSpec, num_units: int | None, num_groups: int | None = None,
               forced: str | None = None) -> ShardMode:
    """How this shard's rows are chosen: ``files``, ``row_groups`` or ``rows`` (see ``SourceSpec.shard_by``).

    Args:
        num_units: files (or hub shards) in the dataset, if known.
        num_groups: parquet row groups in the dataset, when the reader knows them (None: it
            cannot shard by row group).
        forced: the mode a saved state was read with (``legacy``: a state from before row-group
            sharding, read as ``auto`` then chose), so a resume counts rows as the first run did.

    Raises:
        ConfigError: shard_by='files' with a unit count that does not split evenly, or
            shard_by='row_groups' without row groups to split.
        StateError: ``forced`` names a mode this reader cannot use.
    """
    if spec.num_shards == 1:
        return "files"  # one shard: every mode reads the same rows
    if forced == "legacy":
        num_groups, forced = None, None
    if forced is not None:
        if forced not in SHARD_MODES or forced == "row_groups" and num_groups is None:
            raise StateError(f"the state was saved by a reader that sharded by {forced!r}, which this "
                             "reader cannot do", "resume with the same reader (reader='auto') and data")
        return forced  # type: ignore[return-value]
    divisible = num_units is not None and num_units >= spec.num_shards and num_units % spec.num_shards == 0
    if spec.shard_by == "files" and not divisible:
        raise ConfigError(
            f"shard_by='files' needs a file count divisible by num_shards={spec.num_shards}, "
            f"got {num_units} files",
            "use shard_by='row_groups' (parquet), 'rows' (every num_shards-th row) or 'auto'")
    if spec.shard_by == "row_groups" and (num_groups is None or num_groups < spec.num_shards):
        raise ConfigError(
            f"shard_by='row_groups' needs parquet files with at least num_shards={spec.num_shards} row "
            f"groups, read by hfstream's parquet reader; got {num_groups if num_groups is not None else 'no'} "
            "row groups", "use shard_by='auto', 'files' or 'rows' (and reader='auto')")
    if spec.shard_by in ("rows", "row_groups"):
        return spec.shard_by
    if divisible:
        return "files"
    return "row_groups" if num_groups is not None and num_groups >= spec.num_shards else "rows"


@dataclass(frozen=True)
class Piece:
    """One read: row group ``group`` (``num_rows`` rows) of the file at index ``file``."""

    file: int
    group: int
    num_rows: int


def shard_pieces(layout: list[list[int]], spec: SourceSpec, epoch: int, mode: ShardMode) -> list[Piece]:
    """The row groups read in ``epoch``, in order: this shard's (files, row_groups) or all (rows).

    Args:
        layout: per file (in the dataset's order), the rows of each of its row groups.
    """
    order = epoch_file_order(list(range(len(layout))), spec.seed, epoch)  # same shuffle as the paths
    if mode == "files":
        order = order[spec.shard::spec.num_shards]
    pieces = [Piece(f, g, n) for f in order for g, n in enumerate(layout[f])]
    return pieces[spec.shard::spec.num_shards] if mode == "row_groups" else pieces


def locate(pieces: list[Piece], row: int) -> tuple[int, int]:
    """(index of the piece holding ``row`` of the pieces' concatenated rows, offset in it).

    Past the end: ``(len(pieces), 0)``.
    """
    ends = list(itertools.accumulate(p.num_rows for p in pieces))
    index = bisect.bisect_right(ends, row)
    if index >= len(pieces):
        return len(pieces), 0
    return index, row - (ends[index - 1] if index else 0)


def piece_shard_rows(layout: list[list[int]], spec: SourceSpec, epoch: int, start: int, mode: ShardMode,
                     read: PieceReader) -> Chunks:
    """Chunks of this shard's raw text values in ``epoch`` from shard row ``start``, read by row group.

    Only the row groups from the one holding ``start`` on are read: a restart costs one row group.
    """
    pieces = shard_pieces(layout, spec, epoch, mode)
    if mode != "rows":
        index, offset = locate(pieces, start)
        return read(pieces[index:], offset)
    global_start = start * spec.num_shards + spec.shard  # shard row r is global row r * n + shard
    index, offset = locate(pieces, global_start)
    return _every_nth(read(pieces[index:], offset), spec.num_shards)


class FileCounts:
    """Rows per file, learned by reading each file whole and kept in the hfstream cache.

    JSON lines and text files have no row index: a restart would read every file before its
    position. With the counts of the files already read (by any worker on this machine), it
    skips them unopened and reads only the file that holds the position.

    Args:
        versions: a tag per file that changes when the file does (size and mtime, ETag).
    """

    def __init__(self, versions: dict[str, str]):
        self.versions = versions

    def get(self, path: str) -> int | None:
        version = self.versions.get(path)
        return read_cached("row-counts", [path, version]) if version else None

    def put(self, path: str, num_rows: int) -> None:
        version = self.versions.get(path)
        if version:  # a file without a version tag is never trusted to be unchanged
            write_cached("row-counts", [path, version], num_rows)


def local_shard_rows(files: list[str], spec: SourceSpec, epoch: int, start: int,
                     reader: FileReader, mode: ShardMode, counts: FileCounts | None = None) -> Chunks:
    """Chunks of this shard's raw text values in ``epoch``, from shard row ``start`` on, file by file.

    ``mode`` is ``files`` or ``rows`` (``shard_mode(spec, len(files))``); ``counts`` lets whole
    files before the start be skipped unread.
    """
    order = epoch_file_order(files, spec.seed, epoch)
    if mode == "files":
        mine = order[spec.shard::spec.num_shards]
        return _concat(mine, spec, start, reader, counts)
    # Row sharding: shard row r is global row r * n + shard.
    global_start = start * spec.num_shards + spec.shard
    return _every_nth(_concat(order, spec, global_start, reader, counts), spec.num_shards)


def _concat(files: list[str], spec: SourceSpec, skip: int, reader: FileReader,
            counts: FileCounts | None = None) -> Chunks:
    """The files' chunks one after another, with the first ``skip`` rows dropped."""
    for path in files:
        known = counts.get(path) if counts is not None else None
        if known is not None and skip >= known:
            skip -= known  # counted before: not opened
            continue
        jumped, chunks = reader(path, spec, skip)
        skip -= jumped
        seen = jumped
        for chunk in chunks:
            seen += len(chunk)
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            if skip:
                chunk, skip = chunk[skip:], 0
            yield chunk
        if counts is not None and known is None:
            counts.put(path, seen)  # read whole: the next restart can skip it


def skip_rows(chunks: Chunks, skip: int) -> Chunks:
    """The chunks with their first ``skip`` rows dropped."""
    for chunk in chunks:
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        yield chunk[skip:] if skip else chunk
        skip = 0


def _every_nth(chunks: Chunks, n: int) -> Chunks:
    """Keep rows 0, n, 2n, ... of the concatenated chunks."""
    offset = 0  # index within the next chunk of the next row to keep
    for chunk in chunks:
        kept = chunk[offset::n]
        offset = (offset - len(chunk)) % n
        if kept:
            yield kept
