"""Small JSON results kept under the hfstream cache, computed once across processes (ranks, restarts).

A hub resolution or the row-group layout of a set of parquet files costs network round trips;
every rank and every restarted worker asks the same question. ``cached_json`` answers it from
``$HFSTREAM_CACHE/<kind>/<hash of key>.json`` and, on a miss, lets one process compute it while
the others wait on a file lock and then read its answer.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import orjson

from hfstream.source.builtin import cache_dir


def cache_path(kind: str, key: Any) -> Path:
    """Where the answer for ``key`` (any JSON-serializable value) is kept."""
    digest = hashlib.sha1(orjson.dumps(key, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
    return cache_dir() / kind / f"{digest}.json"


def cached_json(kind: str, key: Any, compute: Callable[[], Any]) -> Any:
    """The cached answer for ``key``, else ``compute()`` once (under a lock), stored and returned.

    A cache that cannot be written (read-only home, full disk) only costs the recomputation.
    """
    path = cache_path(kind, key)
    found = _read(path)
    if found is not None:
        return found
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a+b")
    except OSError:
        return compute()
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other ranks wait here, then read the answer
        found = _read(path)
        if found is not None:
            return found
        value = compute()
        _write(path, value)
        return value


def read_cached(kind: str, key: Any) -> Any:
    """The value stored for ``key``, or None."""
    return _read(cache_path(kind, key))


def write_cached(kind: str, key: Any, value: Any) -> None:
    """Store ``value`` for ``key`` (best effort: an unwritable cache is skipped)."""
    path = cache_path(kind, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    _write(path, value)


def _read(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def _write(path: Path, value: Any) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(value))
        os.replace(tmp, path)  # readers see the whole answer or none
    except OSError:
        pass
