"""Parquet by row group: each file's layout from its footer (cached for remote files), and a reader
of row groups that fetches the next one in a thread while the current one is sent.

The layout (rows per row group, footer length, size) is what maps a position to one row group
(``rows.locate``) and splits a dataset between shards by row group, without reading data. A
remote file is opened with one exact read of its footer (its length is in the layout) and each
row group costs one range request for the text column's chunk.
"""

from __future__ import annotations

import io
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Iterator, NoReturn

from hfstream.errors import DataFormatError
from hfstream.source.diskcache import cached_json
from hfstream.source.faults import is_refused, is_transient
from hfstream.source.spec import SourceSpec
from hfstream.worker import remote
from hfstream.worker.fast import missing_column
from hfstream.worker.rows import Chunks, Piece

#: per file: {"size": bytes, "footer": bytes of metadata, "rows": [rows of each row group]}
Layout = dict[str, Any]
_FOOTER_THREADS = 8
_DONE = object()  # the end of the pieces


def read_footer(f: IO[bytes], size: int, footer_len: int | None = None) -> tuple[Any, int]:
    """(the file's FileMetaData, its length), from one exact read (two without ``footer_len``)."""
    import pyarrow.parquet as pq

    if footer_len is None:
        f.seek(size - 8)
        tail = f.read(8)
        footer_len = struct.unpack("<i", tail[:4])[0]
        if tail[4:] != b"PAR1" or not 0 < footer_len <= size - 12:
            raise ValueError("no parquet footer at the end of the file")
    f.seek(size - 8 - footer_len)
    data = f.read(footer_len + 8)
    return pq.read_metadata(io.BytesIO(b"PAR1" + data)), footer_len


def file_layout(path: str) -> Layout:
    """The layout of one parquet file (local path or URL), from its footer."""
    try:
        with _open(path) as f:
            size = f.size if isinstance(f, remote.CheckedReads) else f.seek(0, 2)
            meta, footer_len = read_footer(f, size)
    except Exception as exc:  # noqa: BLE001 - corrupt data named, network errors kept
        raise_classified(exc, path)
    return {"size": size, "footer": footer_len, "rows": [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]}


def layouts(files: list[str], versions: list[str] | None = None) -> list[Layout]:
    """Every file's layout, footers read in parallel; for URLs, cached by (URL, version).

    Args:
        files: local paths or URLs.
        versions: one tag per file that changes when the file does (ETag, mtime, or the commit
            in an ``hf://...@sha`` URL); None for local files (never cached: their footers are
            a local read). A file without a tag ("") is not cached either: a file that changed
            under a stale layout would be misread.
    """
    def gather() -> list[Layout]:
        with ThreadPoolExecutor(min(_FOOTER_THREADS, len(files) or 1)) as pool:
            return list(pool.map(file_layout, files))

    if versions is None or not all(versions):
        return gather()
    return cached_json("parquet-layouts", [files, versions], gather)


class RowGroupReader:
    """Reads runs of row groups (``Piece``s) of ``files``, the next one fetched while this one is sent.

    Args:
        files: the dataset's files (local paths or URLs), indexed by ``Piece.file``.
        file_layouts: their layouts (``layouts(files)``).
        spec: the column to read (``text_column``).
        read_ahead: fetch the next row group in a thread while the current one is converted and
            sent (remote files); False reads in the calling thread (local files: the page cache
            is already ahead).
    """

    def __init__(self, files: list[str], file_layouts: list[Layout], spec: SourceSpec, read_ahead: bool = True):
        self.files, self.layouts, self.column, self.read_ahead = files, file_layouts, spec.text_column, read_ahead

    def __call__(self, pieces: list[Piece], offset: int) -> Chunks:
        tables = self._prefetched(pieces) if self.read_ahead else self._tables(pieces)
        for table in tables:
            values = table.column(0).to_pylist()
            if offset:
                values, offset = values[offset:], 0
            if values:
                yield values

    def _tables(self, pieces: list[Piece]) -> Iterator[Any]:
        """The text column of each piece, in order; one open file at a time."""
        current: tuple[int, Any, Any] | None = None  # (file index, file object, ParquetFile)
        try:
            for piece in pieces:
                if current is None or current[0] != piece.file:
                    _close(current)
                    current = None
                    current = (piece.file, *self._open(piece.file))
                yield self._read(current[2], piece)
        finally:
            _close(current)

    def _open(self, index: int) -> tuple[Any, Any]:
        """(the open file or None, its ParquetFile), checked for the text column."""
        import pyarrow.parquet as pq

        path, layout, f = self.files[index], self.layouts[index], None
        try:
            if remote.is_url(path):
                f = remote.open_exact(path, size=layout["size"])  # the size known: no listing request
                meta, _ = read_footer(f, layout["size"], layout["footer"])
                parquet = pq.ParquetFile(f, metadata=meta)  # pre_buffer: one request per column chunk
            else:  # mmap + no pre-buffering + no threads measured fastest for local files
                parquet = pq.ParquetFile(path, memory_map=True, pre_buffer=False)
        except Exception as exc:  # noqa: BLE001
            if f is not None:
                f.close()
            raise_classified(exc, path)
        names = parquet.schema_arrow.names
        if self.column not in names:
            raise missing_column(path, self.column, names)
        return f, parquet

    def _read(self, parquet: Any, piece: Piece) -> Any:
        try:
            return parquet.read_row_group(piece.group, columns=[self.column], use_threads=False)
        except Exception as exc:  # noqa: BLE001
            raise_classified(exc, self.files[piece.file], piece.group)

    def _prefetched(self, pieces: list[Piece]) -> Iterator[Any]:
        """``_tables``, the next row group read in a thread while the caller uses this one.

        Exactly one read is ahead (a restart then costs one footer, the row group it needs and
        the next); the generator only ever runs in that thread, one step at a time.
        """
        tables = self._tables(pieces)
        with ThreadPoolExecutor(1, thread_name_prefix="hfstream-read-ahead") as pool:
            ahead = pool.submit(next, tables, _DONE)
            try:
                while True:
                    table = ahead.result()  # re-raises the reader's error here
                    if table is _DONE:
                        return
                    ahead = pool.submit(next, tables, _DONE)
                    yield table
            finally:
                ahead.cancel()
                try:
                    pool.submit(tables.close)  # after the running read: the executor runs one at a time
                except RuntimeError:
                    pass  # the interpreter is exiting: nothing left to close


def _open(path: str) -> Any:
    return remote.open_exact(path) if remote.is_url(path) else open(path, "rb")


def _close(current: tuple[int, Any, Any] | None) -> None:
    if current is not None and current[1] is not None:
        current[1].close()


def raise_classified(exc: BaseException, path: str, group: int | None = None) -> NoReturn:
    """Re-raise network and credential errors as they are (the worker retries or reports them);
    anything else is corrupt data, named."""
    if isinstance(exc, DataFormatError) or is_transient(exc) or is_refused(exc):
        raise exc
    where = f"row group {group} of " if group is not None else ""
    raise DataFormatError(f"{where}{path}: truncated or corrupt parquet data ({type(exc).__name__}: {exc})",
                          "the file is truncated or damaged: download or write it again") from exc
