"""What to read: the typed source spec, and its resolution to local files or a hub dataset."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import orjson

from hfstream.source import builtin
from hfstream.errors import ConfigError, DataFormatError, DatasetNotFoundError

Format = Literal["parquet", "json", "text", "csv", "arrow"]

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
class SourceSpec:
    """Everything the worker needs to produce one shard's document stream.

    Args:
        dataset: a hub id (``HuggingFaceFW/fineweb``), a local file, glob or directory, a
            builder name with ``data_files`` (``"parquet"``), or a built-in corpus
            (``builtin:python-docs``).
        split: the split to read (hub datasets; local files are always one split).
        name: the hub dataset's config name (``sample-10BT``).
        data_files: files for a builder name or a hub dataset (a path, a glob or a list).
        revision: hub revision (branch, tag or commit).
        text_column: the column holding the document text.
        min_length: documents shorter than this many characters are skipped (and counted).
        max_samples: stop after this many documents (of this shard); None for no limit.
        epochs: passes over the data; None repeats forever.
        shard: this reader's shard index in ``[0, num_shards)``.
        num_shards: number of disjoint shards that together cover the dataset.
        shard_by: ``files`` gives each shard whole files (needs a file count divisible by
            ``num_shards``), ``rows`` every ``num_shards``-th row; ``auto`` picks files when it can.
        seed: if set, the file order is shuffled per epoch with a generator seeded by
            ``(seed, epoch)``; None keeps the sorted order.
        strict: raise on a null or non-string text instead of skipping and counting it.
        sample_by: for text files, one document per ``line``, ``paragraph`` or ``document``.
        encoding_errors: what to do with invalid UTF-8: ``strict`` (error), ``replace``, ``ignore``.
        format: force a format instead of inferring it from file extensions.
        reader: ``fast`` reads local files without ``datasets`` (same documents, same order),
            ``datasets`` always goes through ``datasets.load_dataset(streaming=True)``.
        ws_field: for a ``ws://`` dataset (an EIR-protocol server), the sample field holding the
            text; None picks the server's one sequence output (see ``hfstream.worker.ws``).
    """

    dataset: str
    split: str = "train"
    name: str | None = None
    data_files: Union[str, list[str], None] = None
    revision: str | None = None
    text_column: str = "text"
    min_length: int = 1
    max_samples: int | None = None
    epochs: int | None = 1
    shard: int = 0
    num_shards: int = 1
    shard_by: Literal["auto", "files", "rows"] = "auto"
    seed: int | None = None
    strict: bool = False
    sample_by: Literal["line", "paragraph", "document"] = "line"
    encoding_errors: Literal["strict", "replace", "ignore"] = "strict"
    format: Format | None = None
    reader: Literal["auto", "fast", "datasets"] = "auto"
    ws_field: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def to_json(self) -> str:
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> "SourceSpec":
        return cls(**orjson.loads(text))

    def fingerprint(self) -> str:
        """A short hash of what defines the document sequence (not limits like max_samples)."""
        keys = ("dataset", "split", "name", "data_files", "revision", "text_column", "min_length",
                "shard", "num_shards", "shard_by", "seed", "sample_by", "format")
        ident = orjson.dumps({k: getattr(self, k) for k in keys}, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha1(ident).hexdigest()[:16]


def spec_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(SourceSpec)]


def make_spec(dataset: str, **options: Any) -> SourceSpec:
    """Build a SourceSpec, turning an unknown option into an error naming the closest one."""
    unknown = [k for k in options if k not in spec_fields()]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], spec_fields(), n=1)
        raise ConfigError(f"unknown source option {unknown[0]!r}",
                          f"did you mean {close[0]!r}?" if close else
                          f"valid options: {', '.join(spec_fields())}")
    return SourceSpec(dataset=dataset, **options)


_CHOICES = {"shard_by": ("auto", "files", "rows"), "sample_by": ("line", "paragraph", "document"),
            "encoding_errors": ("strict", "replace", "ignore"), "reader": ("auto", "fast", "datasets"),
            "format": (None, "parquet", "json", "text", "csv", "arrow")}


def _validate(spec: SourceSpec) -> None:
    if not isinstance(spec.dataset, str) or not spec.dataset:
        raise ConfigError(f"dataset must be a non-empty string, got {spec.dataset!r}",
                          "pass a hub id, a local path/glob, or builtin:python-docs")
    for key in ("min_length", "shard"):
        _check_int(key, getattr(spec, key), minimum=0)
    _check_int("num_shards", spec.num_shards, minimum=1)
    for key in ("max_samples", "epochs"):
        if getattr(spec, key) is not None:
            _check_int(key, getattr(spec, key), minimum=0 if key == "max_samples" else 1)
    if spec.seed is not None:
        _check_int("seed", spec.seed)
    if spec.shard >= spec.num_shards:
        raise ConfigError(f"shard={spec.shard} is out of range for num_shards={spec.num_shards}",
                          "shard must be in [0, num_shards): usually the rank, with num_shards = world size")
    if spec.ws_field is not None and (not isinstance(spec.ws_field, str) or not spec.ws_field):
        raise ConfigError(f"ws_field must be a non-empty string, got {spec.ws_field!r}",
                          "pass the server's output name (e.g. text_output), or None to detect it")
    for key, choices in _CHOICES.items():
        if getattr(spec, key) not in choices:
            raise ConfigError(f"{key}={getattr(spec, key)!r} is not valid",
                              f"choose one of {', '.join(map(repr, choices))}")


def _check_int(key: str, value: Any, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r} ({type(value).__name__})",
                          f"pass {key} as a whole number")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}", f"pass {key} >= {minimum}")


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
