"""Fast readers for local or remote files: the same rows as ``datasets``, without importing it.

Each reader yields *chunks* (lists of raw text values, ``None`` where a row has no text) for
one file. ``skip`` is a hint: a reader that can jump rows cheaply returns how many it jumped,
the caller drops the rest from the chunks. Parquet is read by row group in
``hfstream.worker.row_groups``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from typing import IO, Any, Callable, Iterator

import orjson

from hfstream.errors import DataFormatError
from hfstream.source.resolve import compression_of
from hfstream.source.spec import SourceSpec
from hfstream.worker import remote

Chunks = Iterator[list[Any]]
_CHUNK_ROWS = 512
_TEXT_CHUNK_CHARS = 4 << 20


def open_binary(path: str) -> IO[bytes]:
    """Open a possibly compressed local file or URL for binary reading (by its extension)."""
    if remote.is_url(path):
        return remote.open_sequential(path)
    compression = compression_of(path)
    if compression == "gz":
        return gzip.open(path, "rb")
    if compression == "bz2":
        return bz2.open(path, "rb")
    if compression == "xz":
        return lzma.open(path, "rb")
    if compression == "zst":
        import zstandard

        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return open(path, "rb")


def read_json(path: str, spec: SourceSpec, skip: int) -> tuple[int, Chunks]:
    def chunks() -> Chunks:
        column, chunk, lineno = spec.text_column, [], 0
        with open_binary(path) as f:
            first = True
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue  # blank lines are not rows (as in datasets)
                if first and line.lstrip()[:1] == b"[":
                    raise DataFormatError(f"{path} is a JSON array, not JSON lines",
                                          "write one JSON object per line, or pass reader='datasets'")
                record = _parse_json_line(line, path, lineno, spec.encoding_errors)
                if first:
                    first = False
                    if column not in record:
                        raise missing_column(path, column, list(record))
                chunk.append(record.get(column))
                if len(chunk) >= _CHUNK_ROWS:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    return 0, chunks()


def _parse_json_line(line: bytes, path: str, lineno: int, errors: str) -> dict:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc) or "utf-8" in str(exc):
            if errors != "strict":
                return _parse_json_line(line.decode("utf-8", errors).encode(), path, lineno, "strict")
            raise DataFormatError(f"{path}:{lineno}: invalid UTF-8 ({exc})",
                                  "re-encode the file as UTF-8, or pass encoding_errors='replace' "
                                  "(--encoding-errors replace) to substitute U+FFFD") from None
        raise DataFormatError(f"{path}:{lineno}: malformed JSON line ({exc}): {line[:80]!r}",
                              f"fix or delete line {lineno} (see it with: sed -n '{lineno}p' {path})") from None
    if not isinstance(record, dict):
        raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}",
                              "each line must be an object like {\"text\": \"...\"}")
    return record


def read_text(path: str, spec: SourceSpec, skip: int) -> tuple[int, Chunks]:
    def chunks() -> Chunks:
        raw = open_binary(path)
        # Universal newlines ("\r\n", "\r" -> "\n"), exactly as datasets' text builder reads.
        with io.TextIOWrapper(raw, encoding="utf-8", errors=spec.encoding_errors) as f:
            try:
                yield from _text_chunks(f, spec.sample_by)
            except UnicodeDecodeError as exc:
                raise DataFormatError(
                    f"{path}: invalid UTF-8 near byte {exc.start} of a read block ({exc.reason})",
                    "re-encode the file as UTF-8, or pass encoding_errors='replace'") from None

    return 0, chunks()


def _text_chunks(f: IO[str], sample_by: str) -> Chunks:
    if sample_by == "document":
        yield [f.read()]
    elif sample_by == "line":
        chunk: list[str] = []
        for line in f:
            chunk.append(line[:-1] if line.endswith("\n") else line)
            if len(chunk) >= _CHUNK_ROWS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    else:  # paragraph: split on blank lines, empty paragraphs dropped
        carry = ""
        while True:
            block = f.read(_TEXT_CHUNK_CHARS)
            if not block:
                break
            parts = (carry + block + f.readline()).split("\n\n")
            carry = parts.pop()
            if any(parts):
                yield [p for p in parts if p]
        if carry:
            yield [carry]


def missing_column(path: str, column: str, names: list[str]) -> DataFormatError:
    return DataFormatError(
        f"{path}: no column {column!r}; the columns are: {', '.join(map(repr, names)) or '(none)'}",
        "pass text_column=NAME (--text-column NAME) with the column that holds the text")


#: format -> fast reader of whole files; parquet is read by row group (``hfstream.worker.row_groups``),
#: formats missing here go through datasets.
READERS: dict[str, Callable[[str, SourceSpec, int], tuple[int, Chunks]]] = {"json": read_json, "text": read_text}
