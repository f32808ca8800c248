"""Fast readers for local or remote files: the same rows as ``datasets``, without importing it.

Each reader yields *chunks* (lists of raw text values, ``None`` where a row has no text) for
one file. ``skip`` is a hint: a reader that can jump rows cheaply returns how many it jumped,
the caller drops the rest from the chunks. Parquet is read by row group in
``hfstream.worker.row_groups``.
"""

from __future__ import annotations

import io
import json
import re
from typing import IO, Any, Callable, Iterator

import orjson

from hfstream.errors import DataFormatError
from hfstream.source.spec import SourceSpec
from hfstream.worker.compressed import open_binary
from hfstream.worker.failures import explained_reader

Chunks = Iterator[list[Any]]
_CHUNK_ROWS = 512
_TEXT_CHUNK_CHARS = 4 << 20


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
        if "surrogate in string" in str(exc):
            record = _parse_lone_surrogates(line, path, lineno, errors)
        else:
            raise _malformed_json(exc, line, path, lineno) from None
    if not isinstance(record, dict):
        raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}",
                              "each line must be an object like {\"text\": \"...\"}")
    return record


def _malformed_json(exc: ValueError, line: bytes, path: str, lineno: int) -> DataFormatError:
    return DataFormatError(f"{path}:{lineno}: malformed JSON line ({exc}): {line[:80]!r}",
                           f"fix or delete line {lineno} (see it with: sed -n '{lineno}p' {path})")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _parse_lone_surrogates(line: bytes, path: str, lineno: int, errors: str) -> Any:
    """A line whose strings hold a lone surrogate escape such as ``"\\ud800"``: valid JSON (which
    orjson refuses), but no Unicode character. ``errors`` says what becomes of it, as for bad UTF-8:
    replace -> U+FFFD, ignore -> dropped, strict -> an error that names the line."""
    try:
        record = json.loads(line)
    except ValueError as exc:  # also malformed in another way
        raise _malformed_json(exc, line, path, lineno) from None
    if errors == "strict":
        lone = _SURROGATE.search(json.dumps(record, ensure_ascii=False)).group()  # type: ignore[union-attr]
        code = f"\\u{ord(lone):04x}"
        raise DataFormatError(
            f"{path}:{lineno}: a JSON string holds a lone surrogate escape ({code}): valid JSON, "
            "but not a Unicode character",
            "pass encoding_errors='replace' (--encoding-errors replace) to read it as U+FFFD, or "
            f"'ignore' to drop it; or fix line {lineno} (see it with: sed -n '{lineno}p' {path})")
    return _without_surrogates(record, "\ufffd" if errors == "replace" else "")


def _without_surrogates(value: Any, replacement: str) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub(replacement, value)
    if isinstance(value, dict):
        return {_SURROGATE.sub(replacement, k): _without_surrogates(v, replacement) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v, replacement) for v in value]
    return value


def read_text(path: str, spec: SourceSpec, skip: int) -> tuple[int, Chunks]:
    def chunks() -> Chunks:
        raw = open_binary(path)
        # Universal newlines ("\r\n", "\r" -> "\n"), exactly as datasets' text builder reads.
        with io.TextIOWrapper(raw, encoding="utf-8", errors=spec.encoding_errors) as f:
            try:
                yield from _text_chunks(f, spec.sample_by)
            except UnicodeDecodeError as exc:
                where = _first_invalid_utf8(path)
                at = f"{path}:{where[0]}: invalid UTF-8 at byte {where[1]} of the line" if where else \
                    f"{path}: invalid UTF-8"
                raise DataFormatError(
                    f"{at} ({exc.reason})",
                    "re-encode the file as UTF-8, or pass encoding_errors='replace' (--encoding-errors "
                    "replace) to substitute U+FFFD") from None

    return 0, chunks()


def _first_invalid_utf8(path: str) -> tuple[int, int] | None:
    """(line, byte in the line), both from 1, of the first invalid UTF-8 in a file (read again)."""
    with open_binary(path) as f:
        for lineno, line in enumerate(f, 1):  # b"\n" never occurs inside a UTF-8 sequence
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return lineno, exc.start + 1
    return None


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
#: A failure on a file (not readable, truncated, not compressed at all, ...) is raised as an error
#: that says so.
READERS: dict[str, Callable[[str, SourceSpec, int], tuple[int, Chunks]]] = {
    "json": explained_reader(read_json), "text": explained_reader(read_text)}
