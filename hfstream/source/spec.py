"""SourceSpec: the typed list of source options, the one place every flag, config key and check comes from.

Each field carries its help text; :func:`source_options` lists them with their resolved types,
so the CLIs' flags (``hfstream.cli.options``), the trainer's ``data`` section
(``hfstream.train.config.DataConfig``) and the forwarding between them are generated from
here, and the choices of a ``Literal`` field are validated from its annotation.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import orjson

from hfstream.errors import ConfigError, check_int

Format = Literal["parquet", "json", "text", "csv", "arrow"]


def option(default: Any, help: str) -> Any:
    """A SourceSpec field with its help text (used by the CLIs and the config reference)."""
    return field(default=default, metadata={"help": help})


@dataclass
class SourceSpec:
    """Everything the worker needs to produce one shard's document stream.

    Every field is also a keyword argument of ``HuggingFaceStreamingCorpus``, a CLI flag
    (``--text-column``) and, except the per-rank placement, a key of the trainer's ``data``
    section. The help text of each field says what it means.
    """

    dataset: str = option("", "hub id (HuggingFaceFW/fineweb), local file/glob/directory, format name "
                              "with data_files, ws:// EIR server, or builtin:python-docs")
    split: str = option("train", "the split to read (hub datasets; local files are one split)")
    name: str | None = option(None, "the hub dataset's config name (e.g. sample-10BT)")
    data_files: Union[str, list[str], None] = option(None, "files for a format name or a hub dataset "
                                                           "(a path, a glob or a list)")
    revision: str | None = option(None, "hub revision (branch, tag or commit)")
    text_column: str = option("text", "the column holding the document text")
    min_length: int = option(1, "skip documents shorter than this many characters (counted)")
    max_samples: int | None = option(None, "stop after this many documents of this shard")
    epochs: int | None = option(1, "passes over the data; None (0 on the command line) repeats forever")
    shard: int = option(0, "this reader's shard in [0, num_shards) (usually the rank)")
    num_shards: int = option(1, "disjoint shards that together cover the dataset (usually the world size)")
    shard_by: Literal["auto", "files", "row_groups", "rows"] = option(
        "auto", "files: whole files per shard (file count divisible by num_shards); row_groups: "
                "every num_shards-th parquet row group; rows: every num_shards-th row (every shard "
                "reads every row); auto: files when they divide evenly, else row groups for parquet, else rows")
    seed: int | None = option(None, "shuffle the file order per epoch with (seed, epoch); None: sorted")
    strict: bool = option(False, "a null or non-string text is an error instead of skipped and counted")
    sample_by: Literal["line", "paragraph", "document"] = option(
        "line", "text files: one document per line, paragraph or file")
    encoding_errors: Literal["strict", "replace", "ignore"] = option(
        "strict", "invalid UTF-8: an error, replaced by U+FFFD, or dropped")
    format: Format | None = option(None, "force a format instead of inferring it from the extensions")
    reader: Literal["auto", "fast", "datasets"] = option(
        "auto", "fast reads parquet/JSON lines/text without datasets (same documents); datasets "
                "always goes through datasets.load_dataset(streaming=True)")
    ws_field: str | None = option(None, "ws:// datasets: the sample field holding the text "
                                        "(default: the server's one sequence output)")

    def __post_init__(self) -> None:
        _validate(self)

    def to_json(self) -> str:
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> "SourceSpec":
        return cls(**orjson.loads(text))

    def fingerprint(self, with_revision: bool = False) -> str:
        """A short hash of what defines the document sequence (not limits like max_samples).

        The revision is left out (hashed as None): a hub corpus records the commit it reads and
        checks that on resume, so pinning ``revision=`` to that commit keeps the fingerprint.
        ``with_revision=True`` gives the fingerprint of states saved before that check existed.
        """
        keys = ("dataset", "split", "name", "data_files", "revision", "text_column", "min_length",
                "shard", "num_shards", "shard_by", "seed", "sample_by", "format")
        ident = {k: getattr(self, k) for k in keys}
        if not with_revision:
            ident["revision"] = None
        return hashlib.sha1(orjson.dumps(ident, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


#: Fields each rank sets for itself (from its rank and world size), never a shared setting.
PLACEMENT_FIELDS = ("shard", "num_shards")


@dataclass(frozen=True)
class SourceOption:
    """One SourceSpec field as the CLIs and configs see it."""

    name: str
    annotation: Any           # the resolved type, e.g. ``int | None``
    default: Any
    help: str
    choices: tuple[Any, ...] | None   # a Literal field's values (None included when optional)


def source_options() -> list[SourceOption]:
    """Every SourceSpec field, in declaration order, with its resolved type and help."""
    hints = typing.get_type_hints(SourceSpec)
    return [SourceOption(f.name, hints[f.name], f.default, f.metadata["help"], choices_of(hints[f.name]))
            for f in dataclasses.fields(SourceSpec)]


def spec_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(SourceSpec)]


def choices_of(annotation: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` annotation (``| None`` adds None), else None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return args
    if typing.get_origin(annotation) in (Union, types.UnionType):
        literals = [a for a in args if typing.get_origin(a) is Literal]
        if literals:
            values = tuple(v for lit in literals for v in typing.get_args(lit))
            return (None, *values) if type(None) in args else values
    return None


def make_spec(dataset: str, **options: Any) -> SourceSpec:
    """Build a SourceSpec, turning an unknown option into an error naming the closest one."""
    unknown = [k for k in options if k not in spec_fields()]
    if unknown:
        close = difflib.get_close_matches(unknown[0], spec_fields(), n=1)
        raise ConfigError(f"unknown source option {unknown[0]!r}",
                          f"did you mean {close[0]!r}?" if close else
                          f"valid options: {', '.join(spec_fields())}")
    return SourceSpec(dataset=dataset, **options)


def _validate(spec: SourceSpec) -> None:
    if not isinstance(spec.dataset, str) or not spec.dataset:
        raise ConfigError(f"dataset must be a non-empty string, got {spec.dataset!r}",
                          "pass a hub id, a local path/glob, or builtin:python-docs")
    for key in ("min_length", "shard"):
        check_int(key, getattr(spec, key), minimum=0)
    check_int("num_shards", spec.num_shards, minimum=1)
    for key in ("max_samples", "epochs"):
        if getattr(spec, key) is not None:
            check_int(key, getattr(spec, key), minimum=0 if key == "max_samples" else 1)
    if spec.seed is not None:
        check_int("seed", spec.seed)
    if spec.shard >= spec.num_shards:
        raise ConfigError(f"shard={spec.shard} is out of range for num_shards={spec.num_shards}",
                          "shard must be in [0, num_shards): usually the rank, with num_shards = world size")
    if spec.ws_field is not None and (not isinstance(spec.ws_field, str) or not spec.ws_field):
        raise ConfigError(f"ws_field must be a non-empty string, got {spec.ws_field!r}",
                          "pass the server's output name (e.g. text_output), or None to detect it")
    for opt in source_options():
        value = getattr(spec, opt.name)
        if opt.choices is not None and value not in opt.choices:
            raise ConfigError(f"{opt.name}={value!r} is not valid",
                              f"choose one of {', '.join(map(repr, opt.choices))}")
