"""A shard's row stream for one epoch: file order, shard selection and the start row.

Positions are counted in *shard rows*: the rows this shard owns, in the order it reads them,
before any filtering. ``shard_rows(...)`` yields chunks of raw values starting exactly at a
given shard row, so a restarted worker continues at the next undelivered document.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator

from hfstream.errors import ConfigError
from hfstream.source.spec import SourceSpec

Chunks = Iterator[list[Any]]
#: (path, spec, skip hint) -> (rows jumped, chunks of the rest)
FileReader = Callable[[str, SourceSpec, int], "tuple[int, Chunks]"]


def epoch_file_order(files: list[str], seed: int | None, epoch: int) -> list[str]:
    """The files in reading order for an epoch: sorted, or shuffled by (seed, epoch)."""
    if seed is None:
        return list(files)
    order = list(files)
    random.Random(f"hfstream:{seed}:{epoch}").shuffle(order)  # str seeds hash the same everywhere
    return order


def shard_mode(spec: SourceSpec, num_units: int | None) -> str:
    """``files`` (whole files/hub shards per shard) or ``rows`` (every n-th row).

    Raises:
        ConfigError: shard_by='files' with a unit count that does not split evenly.
    """
    if spec.num_shards == 1:
        return "files"
    divisible = num_units is not None and num_units >= spec.num_shards and num_units % spec.num_shards == 0
    if spec.shard_by == "files" and not divisible:
        raise ConfigError(
            f"shard_by='files' needs a file count divisible by num_shards={spec.num_shards}, "
            f"got {num_units} files",
            "use shard_by='rows' (every num_shards-th row) or 'auto'")
    if spec.shard_by == "rows" or not divisible:
        return "rows"
    return "files"


def local_shard_rows(files: list[str], spec: SourceSpec, epoch: int, start: int,
                     reader: FileReader) -> Chunks:
    """Chunks of this shard's raw text values in ``epoch``, from shard row ``start`` on."""
    order = epoch_file_order(files, spec.seed, epoch)
    if shard_mode(spec, len(order)) == "files":
        mine = order[spec.shard::spec.num_shards]
        return _concat(mine, spec, start, reader)
    # Row sharding: shard row r is global row r * n + shard.
    global_start = start * spec.num_shards + spec.shard
    return _every_nth(_concat(order, spec, global_start, reader), spec.num_shards)


def _concat(files: list[str], spec: SourceSpec, skip: int, reader: FileReader) -> Chunks:
    """The files' chunks one after another, with the first ``skip`` rows dropped."""
    for path in files:
        jumped, chunks = reader(path, spec, skip)
        skip -= jumped
        for chunk in chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            if skip:
                chunk, skip = chunk[skip:], 0
            yield chunk


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
