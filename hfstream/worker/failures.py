"""Why a data file could not be read: low-level errors turned into hfstream errors with a cause and a fix.

The readers raise what the libraries raise (``EOFError``, ``gzip.BadGzipFile``, ``zlib.error``,
``PermissionError``, pandas' ``ParserError``, pyarrow's ``ArrowInvalid`` ...). These functions
say what that means for the file: not readable by this user, truncated, not compressed at all,
corrupt, an unclosed CSV quote. The worker sends the result as a structured error, so the
parent raises it without a traceback (the worker writes the traceback to its stderr, which
the parent logs at debug level: ``-v`` on the command line).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import lzma
import os
import re
import zlib
from typing import Any, Callable, Iterator, NoReturn

from hfstream.errors import DataFormatError, DatasetNotFoundError, FileAccessError, HfStreamError
from hfstream.source.resolve import compression_of
from hfstream.worker.compressed import open_binary

#: compression suffix -> (magic bytes every such file starts with, format name, checking command)
COMPRESSED: dict[str, tuple[bytes, str, str]] = {
    "gz": (b"\x1f\x8b", "gzip", "gzip -t"), "bz2": (b"BZh", "bzip2", "bzip2 -t"),
    "xz": (b"\xfd7zXZ\x00", "xz", "xz -t"), "zst": (b"\x28\xb5\x2f\xfd", "zstd", "zstd -t")}


def explain_read_error(exc: BaseException, path: str) -> HfStreamError | None:
    """The error that says why reading the file ``path`` failed with ``exc``; None when ``exc``
    is not about the file (a bug, a network error: the caller lets it through)."""
    if isinstance(exc, HfStreamError):
        return None
    if isinstance(exc, PermissionError):
        return FileAccessError(
            f"{path}: permission denied: {_user()} may not read it",
            f"make it readable (see: ls -l {path}; e.g. chmod a+r {path}), or read it as a user who can")
    if isinstance(exc, IsADirectoryError):
        return FileAccessError(f"{path} is a directory where a data file was expected",
                               "point the dataset at the files, or at the directory that holds them")
    if isinstance(exc, FileNotFoundError):
        return DatasetNotFoundError(f"{path} was listed but is gone ({exc.strerror})",
                                    "it was moved or deleted while the dataset was read: check it and "
                                    "start again")
    compression = compression_of(path)
    if compression is not None and _is_decompression_error(exc):
        return _compression_error(exc, path, *COMPRESSED[compression])
    return None


def _compression_error(exc: BaseException, path: str, magic: bytes, name: str,
                       check: str) -> DataFormatError:
    head = _first_bytes(path, 16)
    if head is not None and not head.startswith(magic):
        suffix = os.path.splitext(path)[1]
        return DataFormatError(
            f"{path} is not {name} data (it starts with {head!r}), though its name ends in {suffix}",
            f"if it is not compressed, rename it without {suffix}; otherwise compress it again "
            f"(check with: {check} {path})")
    if isinstance(exc, EOFError):
        return DataFormatError(
            f"{path}: the {name} data ends before its end-of-stream marker: the file is truncated",
            f"it was cut short (an interrupted download or copy): download or write it again "
            f"({check} {path} confirms it)")
    return DataFormatError(f"{path}: corrupt {name} data ({type(exc).__name__}: {exc})",
                           f"the file is damaged: download or write it again ({check} {path} "
                           "confirms it)")


def _is_decompression_error(exc: BaseException) -> bool:
    if isinstance(exc, (EOFError, zlib.error, lzma.LZMAError)) or type(exc).__name__ == "ZstdError":
        return True
    # gzip.BadGzipFile, and bz2's "Invalid data stream", are OSErrors without an errno.
    return type(exc) in (OSError, gzip.BadGzipFile) and exc.errno is None  # type: ignore[union-attr]


def _first_bytes(path: str, n: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return None


def _user() -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"
    except (ImportError, KeyError, AttributeError):  # not a POSIX system, or no name for the uid
        return "this user"


def explained(chunks: Iterator[Any], path: str) -> Iterator[Any]:
    """``chunks``, with an error raised while reading ``path`` explained (see explain_read_error)."""
    try:
        yield from chunks
    except Exception as exc:  # noqa: BLE001 - explained, or raised as it was
        _raise(exc, explain_read_error(exc, path))


def explained_reader(reader: Callable[[str, Any, int], tuple[int, Iterator[Any]]]):
    """A fast reader whose failures on a file are explained, whether opening it or reading it."""

    def read(path: str, spec: Any, skip: int) -> tuple[int, Iterator[Any]]:
        try:
            jumped, chunks = reader(path, spec, skip)
        except Exception as exc:  # noqa: BLE001 - explained, or raised as it was
            _raise(exc, explain_read_error(exc, path))
        return jumped, explained(chunks, path)

    return read


def _raise(exc: BaseException, explanation: HfStreamError | None) -> NoReturn:
    if explanation is None:
        raise exc
    raise explanation from exc


# -- the datasets reader --------------------------------------------------------------------

_FAILED_FILE = re.compile(r"(?:read|load JSON from) file '(.+?)' with error")


class _FailedFile(logging.Handler):
    """Remembers the file named by the builders' "Failed to read file '...'" log line."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.path: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        found = _FAILED_FILE.search(record.getMessage())
        if found is not None:
            self.path = found.group(1)


def explained_datasets(chunks: Iterator[Any], files: list[str]) -> Iterator[Any]:
    """``chunks`` read by ``datasets`` from ``files``, with a failure on one of them explained."""
    failed = _FailedFile()
    logger = logging.getLogger("datasets")  # the builders log to children of it
    logger.addHandler(failed)
    try:
        yield from chunks
    except Exception as exc:  # noqa: BLE001 - explained, or raised as it was
        path = next((f for f in files if failed.path and (f == failed.path or failed.path.endswith(f))),
                    failed.path)
        _raise(exc, explain_datasets_error(exc, path, files))
    finally:
        logger.removeHandler(failed)


_CSV_EOF_IN_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")
_JSON_ROW = re.compile(r"JSON parse error: (.*) in row (\d+)")


def explain_datasets_error(exc: BaseException, path: str | None, files: list[str]) -> HfStreamError | None:
    """Why ``datasets`` failed on ``path`` (the file it named, when it did) among ``files``.

    None when ``exc`` is none of the known file problems.
    """
    where = path or (files[0] if len(files) == 1 else f"one of {len(files)} files ({', '.join(files[:3])}, ...)")
    if path is not None or len(files) == 1:
        error = explain_read_error(exc, where) or _truncated(where)
        if error is not None:
            return error
    message = str(exc)
    if type(exc).__name__ == "ParserError":  # pandas, under the CSV builder
        quote = _CSV_EOF_IN_QUOTE.search(message)
        if quote is not None:
            line = _csv_record_line(where, int(quote.group(1)))
            at = f"{where}:{line}" if line else f"{where} (row {quote.group(1)}, the header being row 0)"
            return DataFormatError(
                f"{at}: a quoted field is never closed: everything after its opening quote, to the end of "
                f"the file, would be one value (pandas: {message})",
                "close the quote or remove the stray \" in that record"
                + (f" (see it with: sed -n '{line}p' {where})" if line else ""))
        return DataFormatError(f"{where}: malformed CSV ({message})",
                               "fix the line pandas names (every record needs the header's number of "
                               "fields; quote fields that hold the separator)")
    if type(exc).__name__ == "ArrowInvalid" and _JSON_ROW.search(message):
        what, row = _JSON_ROW.search(message).groups()  # type: ignore[union-attr]
        hint = ("a lone surrogate escape such as \\ud800 is valid JSON that pyarrow cannot read: "
                if "surrogate" in what else "")
        return DataFormatError(
            f"{where}: invalid JSON in row {row} ({what})",
            f"{hint}read local JSON lines with reader='fast' (the default; it names the line and honours "
            "encoding_errors), or fix that row")
    if isinstance(exc, UnicodeDecodeError):
        return DataFormatError(f"{where}: invalid UTF-8 ({exc.reason} at byte {exc.start} of a block)",
                               "re-encode the file as UTF-8; the fast reader (reader='fast', for local "
                               "parquet, JSON lines and text) also honours encoding_errors='replace'")
    return None


def _truncated(path: str) -> HfStreamError | None:
    """The error for a compressed file that is cut short (read once more to its end), else None.

    A parse error on the last, half-written row is then put down to its true cause: fsspec's
    zstd ends a truncated frame as if it were whole.
    """
    if compression_of(path) is None or not os.path.isfile(path):
        return None
    try:
        with open_binary(path) as f:
            while f.read(1 << 20):
                pass
    except Exception as exc:  # noqa: BLE001 - whatever reading it again says
        return explain_read_error(exc, path)
    return None


def _csv_record_line(path: str, record: int) -> int | None:
    """The line where CSV record ``record`` (the header is record 0) starts, counting quoted newlines."""
    if not os.path.isfile(path):
        return None
    try:
        with io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace", newline="") as f:
            rows = csv.reader(f, delimiter="\t" if ".tsv" in path else ",")
            for _ in range(record):
                next(rows)
            return rows.line_num + 1
    except (csv.Error, StopIteration, OSError, EOFError):
        return None
