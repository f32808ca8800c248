"""Remote files through fsspec: the filesystem of a URL (or the extra to install), globs, and file objects.

``hf://`` is huggingface_hub's HfFileSystem (``HF_ENDPOINT`` and ``HF_TOKEN`` apply), ``s3://``
s3fs, ``gs://`` gcsfs, ``http(s)://`` fsspec's own HTTP filesystem (aiohttp). Parquet is read
with exact range reads (no read-ahead cache: pyarrow asks for exactly a footer or a column
chunk), other formats sequentially in large blocks.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import IO, Any

from hfstream.errors import ConfigError, DatasetNotFoundError
from hfstream.source.faults import TruncatedReadError
from hfstream.source.resolve import URL_SCHEMES

#: scheme -> (the fsspec package that reads it, the hfstream extra that installs it)
FILESYSTEM_PACKAGES = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
                       "az": ("adlfs", None), "abfs": ("adlfs", None), "http": ("aiohttp", None),
                       "https": ("aiohttp", None), "hf": ("huggingface_hub", None)}
SEQUENTIAL_BLOCK = 8 << 20  # JSON lines / text: one range request per 8 MiB


def is_url(path: str) -> bool:
    """A remote file URL (``ws://`` is a server, not a file)."""
    return path.startswith(URL_SCHEMES)


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower()


def filesystem(url: str) -> tuple[Any, str]:
    """(the fsspec filesystem for ``url``, the path inside it).

    Raises:
        ConfigError: the scheme's fsspec package is not installed (naming the pip command), or
            the scheme is unknown to fsspec.
    """
    import fsspec

    scheme = scheme_of(url)
    options: dict[str, Any] = {}
    if scheme == "hf" and os.environ.get("HF_ENDPOINT"):
        options["endpoint"] = os.environ["HF_ENDPOINT"]  # also when huggingface_hub was imported before it was set
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        package, extra = FILESYSTEM_PACKAGES.get(scheme, (None, None))
        install = f"pip install 'hfstream[{extra}]'" if extra else f"pip install {package or 'the fsspec backend'}"
        raise ConfigError(f"{scheme}:// URLs are read through {package or 'an fsspec backend'}, which is not "
                          f"installed ({exc})", f"{install}, or copy the files locally") from None
    except ValueError as exc:
        raise ConfigError(f"cannot read {url!r}: {exc}",
                          f"supported URL schemes: {', '.join(s for s in URL_SCHEMES)}") from None


@dataclass(frozen=True)
class RemoteFile:
    """A remote file as listed: its URL, size and version tag (ETag, git blob id, mtime; "" if unknown)."""

    url: str
    size: int | None
    version: str


def list_files(patterns: list[str]) -> list[RemoteFile]:
    """The files the URLs and URL globs name, each glob sorted (as ``datasets`` resolves them).

    Raises:
        DatasetNotFoundError: a URL or glob that names no file.
    """
    out: list[RemoteFile] = []
    for pattern in patterns:
        fs, path = filesystem(pattern)
        if any(c in path for c in "*?["):
            found = fs.glob(path, detail=True)
            infos = {p: i for p, i in sorted(found.items()) if i.get("type") == "file"}
        else:
            try:
                infos = {path: fs.info(path)}
            except FileNotFoundError:
                if pattern.startswith(("http://", "https://")) and raise_if_server_trouble([pattern]):
                    raise ConnectionError(f"{pattern}: not found, then found: a flaky server") from None
                infos = {}
        if not infos:
            raise DatasetNotFoundError(f"cannot open {pattern!r}: no remote file matches it",
                                       "check the URL (bucket, path and pattern) and that your credentials can list it")
        for p, info in infos.items():
            url = pattern if p == path else fs.unstrip_protocol(p)
            version = str(info.get("ETag") or info.get("etag") or info.get("blob_id") or info.get("LastModified")
                          or info.get("mtime") or info.get("updated") or "")
            out.append(RemoteFile(url, info.get("size"), version))
    return out


def raise_if_server_trouble(files: list[str]) -> bool:
    """fsspec and datasets report an HTTP 5xx/429 at open time as a missing file: tell transient from missing.

    Returns:
        Whether every http(s) URL answers a HEAD now (then "missing" was a passing fault).

    Raises:
        ConnectionError: a remote file whose server is down or overloaded (the worker retries).
    """
    import urllib.error
    import urllib.request

    found = True
    for url in (f for f in files if f.startswith(("http://", "https://"))):
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
        except urllib.error.HTTPError as exc:
            found = False
            if exc.code >= 500 or exc.code == 429:
                raise ConnectionError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(f"{url}: {exc}") from None
    return found


def open_exact(url: str, size: int | None = None) -> IO[bytes]:
    """The file for exact range reads (no cache: each read is one request for those bytes).

    ``size`` (when known, e.g. from a cached layout) spares the request that would look it up.
    """
    fs, path = filesystem(url)
    options = {} if size is None else {"size": size}
    return CheckedReads(fs.open(path, "rb", cache_type="none", block_size=SEQUENTIAL_BLOCK, **options))


def open_sequential(url: str) -> IO[bytes]:
    """The file (decompressed by its extension) for reading start to end, in 8 MiB range requests."""
    from fsspec.utils import infer_compression

    fs, path = filesystem(url)
    return fs.open(path, "rb", cache_type="readahead", block_size=SEQUENTIAL_BLOCK,
                   compression=infer_compression(path))


class CheckedReads(io.RawIOBase):
    """A read-only remote file that turns a short read before the end (a cut body) into a retryable error.

    Some clients hand back what arrived before the connection dropped; pyarrow would then see a
    corrupt file. Raising ``TruncatedReadError`` sends the worker back to the same row group.
    """

    def __init__(self, f: Any):
        super().__init__()
        self._f, self.size = f, f.size

    def readinto(self, buffer: Any) -> int:
        pos = self._f.tell()
        want = max(0, min(len(buffer), self.size - pos))
        data = self._f.read(want) if want else b""
        if len(data) < want:
            raise TruncatedReadError(f"read {len(data)} of {want} bytes at offset {pos} of {self._f.path}")
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()
        super().close()
