"""The token cache on disk: chunks of documents' token ids, written atomically, read memory-mapped, evicted least recently used.

Layout: ``ROOT/<stream key>/<row_start>-<row_end>-<c|e>.tok``. A *stream key* names one shard's
document stream as a worker reads it, under one tokenizer (:mod:`hfstream.source.cached` makes
it); a *chunk* holds the documents whose shard rows lie in ``[row_start, row_end)`` of an
epoch of that stream, ``e`` marking a chunk that ends its epoch. A chunk file is::

    MAGIC (8 bytes) | header length (8, little-endian) | header JSON, padded to 8 bytes
    rows int64[docs] | offsets int64[docs + 1] | tokens uint32[tokens]

The header holds the counts, the range and a CRC-32 of everything after it. Writers write a
temporary file and rename it (atomic: concurrent ranks and workers writing the same chunk are
safe, the last rename wins with the same content); readers check the size at once and the
CRC on the first open in a process, and delete a corrupt chunk (it is written again on the next
pass through its documents). Every open marks the chunk used (its access time); past the
budget the least recently used chunks go.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hfstream.errors import ConfigError

log = logging.getLogger("hfstream.source.token_cache")
MAGIC = b"HFSTOK1\n"
SUFFIX = ".tok"
DEFAULT_BUDGET = 16 << 30          # bytes on disk before the least recently used chunks go
BUDGET_ENV = "HFSTREAM_TOKEN_CACHE_BYTES"
STALE_TEMP_S = 3600                # a writer's temporary file older than this was left by a crash
TOKEN_DTYPE = np.dtype("<u4")


def default_cache_root() -> Path:
    """``$HFSTREAM_CACHE/tokens``, else ``~/.cache/hfstream/tokens``."""
    return Path(os.environ.get("HFSTREAM_CACHE") or Path.home() / ".cache" / "hfstream") / "tokens"


def default_budget() -> int:
    """The disk budget: ``$HFSTREAM_TOKEN_CACHE_BYTES`` (bytes, or with k/M/G), else 16 GiB."""
    raw = os.environ.get(BUDGET_ENV)
    return DEFAULT_BUDGET if not raw else parse_bytes(raw)


def parse_bytes(text: str | int) -> int:
    """``"20G"``, ``"512M"``, ``"1000000"`` -> bytes.

    Raises:
        ConfigError: not a size.
    """
    if isinstance(text, int):
        return text
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    raw = text.strip().lower().rstrip("ib").rstrip("b")
    try:
        return int(float(raw[:-1]) * units[raw[-1]]) if raw and raw[-1] in units else int(raw)
    except ValueError:
        raise ConfigError(f"{text!r} is not a size in bytes", "write it like 20G, 512M or 1000000") from None


@dataclass(frozen=True)
class ChunkName:
    """Where a chunk lies in its stream: shard rows ``[row_start, row_end)``; ``epoch_end``: the epoch ends at ``row_end``."""

    row_start: int
    row_end: int
    epoch_end: bool

    @property
    def filename(self) -> str:
        return f"{self.row_start:012d}-{self.row_end:012d}-{'e' if self.epoch_end else 'c'}{SUFFIX}"

    @classmethod
    def parse(cls, filename: str) -> "ChunkName | None":
        parts = filename[:-len(SUFFIX)].split("-") if filename.endswith(SUFFIX) else []
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()) or parts[2] not in "ce":
            return None
        return cls(int(parts[0]), int(parts[1]), parts[2] == "e")

    def covers(self, row: int) -> bool:
        """Reading from ``row`` can start in this chunk (at its end, if the epoch ends there)."""
        return self.row_start <= row < self.row_end or (self.epoch_end and row == self.row_end)


class Chunk:
    """One chunk, memory-mapped: ``rows`` (shard row of each document) and each document's tokens."""

    def __init__(self, name: ChunkName, rows: np.ndarray, offsets: np.ndarray, tokens: np.ndarray):
        self.name, self.rows, self.offsets, self.tokens = name, rows, offsets, tokens

    def __len__(self) -> int:
        return len(self.rows)

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]


class TokenCache:
    """A directory of token chunks with a disk budget (least recently used chunks go past it).

    Args:
        root: the directory (default :func:`default_cache_root`).
        budget: bytes on disk (default :func:`default_budget`).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, budget: int | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.budget = default_budget() if budget is None else parse_bytes(budget)
        self._listing: dict[str, tuple[float, list[ChunkName]]] = {}
        self._verified: set[tuple[str, int, int]] = set()

    def __reduce__(self) -> Any:  # pickled into DataLoader workers: settings only
        return (TokenCache, (self.root, self.budget))

    def __repr__(self) -> str:
        return f"TokenCache({str(self.root)!r}, budget={self.budget:,})"

    # -- finding and reading ---------------------------------------------------------------
    def find(self, key: str, row: int, max_age_s: float = 0.0) -> ChunkName | None:
        """The chunk of stream ``key`` to read from shard row ``row`` on (the longest), or None.

        ``max_age_s``: how old a listing of the directory may be (chunks others wrote since are missed).
        """
        names = self.names(key, max_age_s)
        return max((n for n in names if n.covers(row)), key=lambda n: n.row_end, default=None)

    def names(self, key: str, max_age_s: float = 0.0) -> list[ChunkName]:
        """The chunks of stream ``key`` (a listing at most ``max_age_s`` old)."""
        seen = self._listing.get(key)
        now = time.monotonic()
        if seen is not None and now - seen[0] <= max_age_s:
            return seen[1]
        try:
            names = [n for n in map(ChunkName.parse, os.listdir(self.root / key)) if n is not None]
        except OSError:
            names = []
        self._listing[key] = (now, names)
        return names

    def open(self, key: str, name: ChunkName) -> Chunk | None:
        """The chunk, memory-mapped and checked; None when it is gone or corrupt (then deleted)."""
        path = self.root / key / name.filename
        try:
            with open(path, "rb") as f:
                stat = os.fstat(f.fileno())
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if stat.st_size else b""
        except (OSError, ValueError):
            self._forget(key)
            return None
        try:
            chunk = self._parse(name, data, (str(path), stat.st_ino, stat.st_mtime_ns))
        except ValueError as exc:
            log.warning("token cache: %s is corrupt (%s); deleting it, it will be written again", path, exc)
            self._remove(path, key)
            return None
        try:
            os.utime(path, ns=(time.time_ns(), stat.st_mtime_ns))  # used now: the access time orders eviction
        except OSError:
            pass
        return chunk

    def _parse(self, name: ChunkName, data: Any, ident: tuple[str, int, int]) -> Chunk:
        if len(data) < 16 or data[:8] != MAGIC:
            raise ValueError("not a token chunk (bad magic or truncated header)")
        (header_len,) = struct.unpack("<Q", data[8:16])
        body = 16 + header_len
        if len(data) < body:
            raise ValueError("truncated header")
        header = json.loads(bytes(data[16:body]))
        num_docs, num_tokens = header["docs"], header["tokens"]
        if len(data) != body + 8 * (2 * num_docs + 1) + 4 * num_tokens:
            raise ValueError(f"size {len(data)} does not match its header (truncated?)")
        if ident not in self._verified:
            if zlib.crc32(memoryview(data)[body:]) != header["crc32"]:
                raise ValueError("checksum mismatch")
            self._verified.add(ident)
        rows = np.frombuffer(data, np.int64, num_docs, body)
        offsets = np.frombuffer(data, np.int64, num_docs + 1, body + 8 * num_docs)
        tokens = np.frombuffer(data, TOKEN_DTYPE, num_tokens, body + 8 * (2 * num_docs + 1))
        return Chunk(name, rows, offsets, tokens)

    # -- writing ---------------------------------------------------------------------------
    def covered(self, key: str, row_start: int, row_end: int) -> bool:
        """Whether one chunk already holds all of ``[row_start, row_end)``."""
        return any(n.row_start <= row_start and row_end <= n.row_end for n in self.names(key))

    def write(self, key: str, name: ChunkName, rows: Sequence[int], docs: Sequence[np.ndarray],
              about: dict[str, Any] | None = None) -> int:
        """Write one chunk atomically (temporary file + rename); returns its size in bytes."""
        directory = self.root / key
        directory.mkdir(parents=True, exist_ok=True)
        if about is not None and not (directory / "about.json").exists():
            _atomic_write(directory / "about.json", json.dumps(about, indent=1).encode())
        lengths = np.fromiter((len(d) for d in docs), np.int64, len(docs))
        offsets = np.zeros(len(docs) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        parts = [np.asarray(rows, np.int64).tobytes(), offsets.tobytes()]
        parts += [np.ascontiguousarray(d, TOKEN_DTYPE).data for d in docs]
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        header = json.dumps({"docs": len(docs), "tokens": int(offsets[-1]), "row_start": name.row_start,
                             "row_end": name.row_end, "epoch_end": name.epoch_end, "crc32": crc}).encode()
        header += b" " * (-len(header) % 8)
        size = _atomic_write(directory / name.filename,
                             [MAGIC, struct.pack("<Q", len(header)), header, *parts])
        self._forget(key)
        self.evict()
        return size

    # -- housekeeping ----------------------------------------------------------------------
    def entries(self) -> list[tuple[Path, os.stat_result]]:
        """Every chunk file with its stat."""
        out = []
        for directory in _subdirs(self.root):
            for entry in os.scandir(directory):
                if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                    try:
                        out.append((Path(entry.path), entry.stat()))
                    except OSError:
                        pass
        return out

    def evict(self) -> int:
        """Delete least recently used chunks until the cache fits its budget; returns bytes freed."""
        entries = self.entries()
        total = sum(stat.st_size for _, stat in entries)
        freed = 0
        for path, stat in sorted(entries, key=lambda e: e[1].st_atime):
            if total - freed <= self.budget:
                break
            if self._remove(path, path.parent.name):
                freed += stat.st_size
        self._sweep_temps()
        return freed

    def info(self) -> dict[str, Any]:
        """What the cache holds: per stream (its ``about.json``), chunks and bytes; totals."""
        streams = []
        for directory in _subdirs(self.root):
            files = [e for e in os.scandir(directory) if e.name.endswith(SUFFIX) and not e.name.startswith(".")]
            about = _read_json(directory / "about.json")
            streams.append({"key": directory.name, **about, "chunks": len(files),
                            "bytes": sum(e.stat().st_size for e in files)})
        return {"root": str(self.root), "budget": self.budget, "streams": streams,
                "chunks": sum(s["chunks"] for s in streams), "bytes": sum(s["bytes"] for s in streams)}

    def clear(self) -> int:
        """Delete every chunk (and the stream directories); returns bytes freed."""
        freed = 0
        for directory in _subdirs(self.root):
            for entry in os.scandir(directory):
                try:
                    size = entry.stat().st_size
                    os.unlink(entry.path)
                    freed += size
                except OSError:
                    pass
            try:
                directory.rmdir()
            except OSError:
                pass
        self._listing.clear()
        return freed

    def _remove(self, path: Path, key: str) -> bool:
        try:
            path.unlink()
        except OSError:
            return False
        self._forget(key)
        return True

    def _forget(self, key: str) -> None:
        self._listing.pop(key, None)

    def _sweep_temps(self) -> None:
        cutoff = time.time() - STALE_TEMP_S
        for directory in _subdirs(self.root):
            for entry in os.scandir(directory):
                try:
                    if entry.name.startswith(".tmp-") and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                except OSError:
                    pass


def _subdirs(root: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(root) if e.is_dir()]
    except OSError:
        return []


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}


def _atomic_write(path: Path, parts: bytes | list[Any]) -> int:
    """Write ``parts`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
    size = 0
    try:
        with open(tmp, "wb") as f:
            for part in [parts] if isinstance(parts, bytes) else parts:
                size += f.write(part)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return size
