"""Where a spec's documents come from: local files (expanded, sorted, format known), a hub id, a URL, a ws:// server."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from hfstream.errors import ConfigError, DataFormatError, DatasetNotFoundError
from hfstream.source import builtin
from hfstream.source.spec import Format, SourceSpec

#: file suffix -> format; compression suffixes are stripped first.
EXTENSIONS: dict[str, Format] = {
    ".parquet": "parquet", ".jsonl": "json", ".json": "json", ".ndjson": "json",
    ".txt": "text", ".text": "text", ".md": "text", ".csv": "csv", ".tsv": "csv",
    ".arrow": "arrow",
}
COMPRESSIONS = (".gz", ".zst", ".bz2", ".xz")
_GLOB_CHARS = set("*?[")
#: remote file URLs read through datasets/fsspec (ws:// is an EIR server, not a file)
URL_SCHEMES = ("http://", "https://", "s3://", "gs://", "gcs://", "hf://", "az://", "abfs://")


@dataclass
class Resolved:
    """Where the documents come from: ``kind`` is ``local`` (``files`` in ``format``), ``hub``,
    or ``ws`` (an EIR-protocol WebSocket server at the dataset URL)."""

    kind: Literal["local", "remote", "hub", "ws"]
    format: Format | None = None
    files: list[str] = field(default_factory=list)


def resolve(spec: SourceSpec) -> Resolved:
    """Resolve a spec to local files (sorted, format known), a hub dataset or a ws:// server.

    Raises:
        DatasetNotFoundError: a path that does not exist, a glob matching nothing, an empty directory.
        DataFormatError: an unknown or mixed file extension.
    """
    dataset = spec.dataset
    if dataset.startswith(("ws://", "wss://")):
        return Resolved("ws")
    if dataset.startswith(URL_SCHEMES):
        return Resolved("remote", spec.format or infer_format([dataset]), [dataset])
    if builtin.is_builtin(dataset):
        return Resolved("local", "json", [str(builtin.builtin_path(dataset))])
    if dataset in EXTENSIONS.values() or dataset in ("jsonl",):  # builder name + data_files
        if spec.data_files is None:
            raise ConfigError(f"dataset={dataset!r} is a format name and needs data_files",
                              f"pass data_files='path/*.{'jsonl' if dataset == 'json' else dataset}' "
                              "or give the path itself as the dataset")
        files = _expand_all(_as_list(spec.data_files), base=None)
        kind = "remote" if any(f.startswith(URL_SCHEMES) for f in files) else "local"
        return Resolved(kind, spec.format or ("json" if dataset == "jsonl" else dataset), files)
    if os.path.isdir(dataset) and spec.data_files is not None:
        files = _expand_all(_as_list(spec.data_files), base=dataset)
        return Resolved("local", spec.format or infer_format(files), files)
    if os.path.exists(dataset) or _looks_local(dataset):
        files = _expand_all([dataset], base=None)
        return Resolved("local", spec.format or infer_format(files), files)
    return Resolved("hub")


def _as_list(data_files: Union[str, list[str]]) -> list[str]:
    return [data_files] if isinstance(data_files, str) else list(data_files)


def _looks_local(dataset: str) -> bool:
    """A string that can only be meant as a local path (hub ids are ``name`` or ``org/name``)."""
    if any(c in _GLOB_CHARS for c in dataset) or dataset.startswith((".", "/", "~")):
        return True
    if dataset.count("/") > 1 or os.sep != "/" and os.sep in dataset:
        return True
    return _strip_compression(dataset).suffix.lower() in EXTENSIONS


def _expand_all(patterns: list[str], base: str | None) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if base is not None and not os.path.isabs(pattern):
            pattern = os.path.join(base, pattern)
        files.extend(_expand(pattern))
    return files


def _expand(pattern: str) -> list[str]:
    if pattern.startswith(URL_SCHEMES):
        return [pattern]  # remote: datasets/fsspec resolves it
    if any(c in _GLOB_CHARS for c in pattern) and not os.path.exists(pattern):
        matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not matches:
            raise DatasetNotFoundError(f"the glob {pattern!r} matched no files",
                                       f"check the directory and the pattern (try: ls {pattern})")
        return matches
    if os.path.isdir(pattern):
        matches = sorted(str(p) for p in Path(pattern).rglob("*")
                         if p.is_file() and not p.name.startswith(".")
                         and _strip_compression(p).suffix.lower() in EXTENSIONS)
        if not matches:
            raise DatasetNotFoundError(
                f"the directory {pattern!r} holds no data files",
                f"supported extensions: {', '.join(EXTENSIONS)} (optionally {', '.join(COMPRESSIONS)})")
        return matches
    if not os.path.exists(pattern):
        raise DatasetNotFoundError(f"no such file or directory: {pattern!r}",
                                   "check the path; for a hub dataset pass its id as org/name")
    return [pattern]


def _strip_compression(path: Union[str, Path]) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in COMPRESSIONS else path


def infer_format(files: list[str]) -> Format:
    """The one format shared by all files, from their extensions."""
    formats = {}
    for f in files:
        suffix = _strip_compression(f).suffix.lower()
        if suffix not in EXTENSIONS:
            raise DataFormatError(
                f"cannot tell the format of {f!r} from its extension {suffix or '(none)'!r}",
                f"rename it to one of {', '.join(EXTENSIONS)} or pass format='json'|'parquet'|'text'|...")
        formats.setdefault(EXTENSIONS[suffix], f)
    if len(formats) > 1:
        examples = ", ".join(f"{fmt}: {f}" for fmt, f in formats.items())
        raise DataFormatError(f"the files mix formats ({examples})",
                              "point the dataset at files of one format, or mix them as separate streams")
    return next(iter(formats))


def compression_of(path: str) -> str | None:
    suffix = Path(path).suffix.lower()
    return suffix[1:] if suffix in COMPRESSIONS else None
