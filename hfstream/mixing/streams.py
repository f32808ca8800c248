"""Streams of a mixture and their weights: Stream, the stream registry, and mosaic's arithmetic of counts per epoch.

Vocabulary (as in ``streaming.Stream`` / ``StreamingDataset``):

* ``Stream(dataset, proportion=|repeat=|choose=, **source_options)``: at most one weight per
  stream, and every stream uses the same kind: relative (``proportion``, normalized) or
  absolute (``repeat`` x the stream's size, ``choose`` samples, or nothing = its size).
* ``epoch_size``: samples per epoch for relative weights (default: the total of unique
  samples); ``int(epoch_size * p)`` per stream, the rounding shortfall given +1 each to streams
  drawn by ``numpy.random.default_rng(seed)`` without replacement. Absolute weights take
  ``int(repeat * size)`` and reject ``epoch_size``.
* Batching methods live in :mod:`hfstream.mixing.schedule`, the document mixture in
  :mod:`hfstream.mixing.documents`, the token (row) mixture in :mod:`hfstream.loader.row_mixer`.

On raw streams there is no random access, so a stream's samples in an epoch are the *next*
ones of its endless, reshuffled-per-pass sequence: ``repeat=3`` reads it three times,
``repeat=0.25`` the next quarter (a different quarter each epoch).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hfstream.errors import ConfigError
from hfstream.source.base import DocumentSource, as_document_source
from hfstream.source.corpus import HuggingFaceStreamingCorpus
from hfstream.source.resolve import resolve
from hfstream.source.spec import make_spec


# -- streams and the registry --------------------------------------------------------------

@dataclasses.dataclass
class Stream:
    """One data source of a mixture, with at most one of proportion / repeat / choose.

    Args:
        dataset: anything a single dataset can be (hub id, path/glob, builtin:..., ws://...).
        proportion: relative weight (normalized over all streams).
        repeat: absolute: this many passes over the stream per epoch (0.25: a quarter).
        choose: absolute: this many samples (or tokens, with ``mix_by="tokens"``) per epoch.
        label: the stream's name: seeds, states and logs use it, never its list position
            (default: the dataset string).
        size: the stream's number of samples, if known (else counted when needed).
        **source_options: HuggingFaceStreamingCorpus options (``text_column``, ``split``, the hub
            config ``name``, ``min_length``, ...).
    """

    dataset: str
    proportion: float | None = None
    repeat: float | None = None
    choose: int | None = None
    label: str = ""
    size: int | None = None
    source_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __init__(self, dataset: str, *, proportion: float | None = None, repeat: float | None = None,
                 choose: int | str | None = None, label: str | None = None, size: int | None = None,
                 **source_options: Any):
        self.dataset, self.proportion, self.repeat = dataset, proportion, repeat
        self.choose = None if choose is None else parse_count(choose, "choose")
        self.label, self.size, self.source_options = label or dataset, size, source_options
        weights = [k for k in ("proportion", "repeat", "choose") if getattr(self, k) is not None]
        if len(weights) > 1:
            raise ConfigError(f"stream {self.label!r} sets {' and '.join(weights)}",
                              "give each stream at most one of proportion, repeat or choose")
        for key in ("proportion", "repeat"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(f"stream {self.label!r}: {key} must be a number >= 0, got {value!r}",
                                  f"pass {key}=0.5 for example")

    @property
    def relative(self) -> bool:
        return self.proportion is not None

    def open(self, **overrides: Any) -> Any:
        """The stream's document source (a HuggingFaceStreamingCorpus unless a registered class)."""
        return HuggingFaceStreamingCorpus(self.dataset, **{**self.source_options, **overrides})

    def open_source(self, **overrides: Any) -> DocumentSource:
        """``open(**overrides)`` as a DocumentSource (a registered class may return any object
        with ``stream()``, ``state_dict()`` and ``load_state_dict()``)."""
        return as_document_source(self.open(**overrides), name=self.label)


_REGISTRY: dict[str, type] = {"stream": Stream}


def register_stream(name: str, cls: type | None = None) -> Any:
    """Register a custom Stream class under ``name`` (also usable as a class decorator).

    The class subclasses ``Stream`` and overrides ``open(**overrides)`` to return a
    DocumentSource, or any object with ``stream()``, ``state_dict()`` and ``load_state_dict()``.
    """
    def add(klass: type) -> type:
        if not (isinstance(klass, type) and issubclass(klass, Stream)):
            raise ConfigError(f"cannot register {klass!r} as stream {name!r}",
                              "register a subclass of hfstream.Stream that overrides open(**overrides)")
        _REGISTRY[name] = klass
        return klass

    return add if cls is None else add(cls)


def sorted_streams(streams: list[Any]) -> list[Stream]:
    """Streams built from configs and sorted by label: list order never changes a mixture."""
    built = [make_stream(s) for s in streams]
    if not built:
        raise ConfigError("a mixture needs at least one stream", "pass streams=[Stream(...), ...]")
    labels = [s.label for s in built]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"stream labels repeat: {labels}", "give streams distinct label=...")
    return sorted(built, key=lambda s: s.label)


def make_stream(config: Stream | dict[str, Any]) -> Stream:
    """A Stream from a Stream or a config dict (``{"dataset": ..., "stream_name": "my_stream", ...}``)."""
    if isinstance(config, Stream):
        return config
    if not isinstance(config, dict) or "dataset" not in config:
        raise ConfigError(f"a stream must be a Stream or a dict with a 'dataset' key, got {config!r}",
                          "write streams as [{dataset: ..., proportion: ...}, ...]")
    options = dict(config)
    kind = options.pop("stream_name", "stream")
    extra = options.pop("stream_config", {}) or {}
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown stream_name {kind!r}", f"registered: {', '.join(sorted(_REGISTRY))}; "
                          "add yours with hfstream.register_stream(name, cls)")
    return _REGISTRY[kind](options.pop("dataset"), **options, **extra)


# -- counts per epoch (mosaic's arithmetic) -------------------------------------------------

_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_count(value: int | str, key: str = "epoch_size") -> int:
    """``100000``, ``"100k"``, ``"64M"``, ``"1.5B"`` -> int."""
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a count, got {value!r}", f"pass {key}=100000 or '100k'")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}", f"pass {key}=100000 or '100k'")
        return value
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbBgGtT]?)\s*", str(value))
    if not match:
        raise ConfigError(f"{key}={value!r} is not a count", f"use an int or a string like '100k', '64M', '1.5B'")
    number, suffix = float(match.group(1)), match.group(2).lower()
    return int(round(number * _SUFFIXES.get(suffix, 1)))


def epoch_counts(streams: list[Stream], sizes: list[int | None], epoch_size: int | None,
                 seed: int) -> list[int]:
    """Samples per stream per epoch, exactly as mosaic's ``Stream.apply_weights``.

    Raises:
        ConfigError: mixed relative/absolute weights (naming the streams), epoch_size with
            absolute weights, or a size that is needed but unknown.
    """
    relative = [s for s in streams if s.relative]
    if relative and len(relative) != len(streams):
        absolute = [s.label for s in streams if not s.relative]
        raise ConfigError(
            f"relative (proportion) and absolute (repeat/choose/none) weights are mixed: "
            f"{', '.join(s.label for s in relative)} use proportion, {', '.join(absolute)} do not",
            "give every stream a proportion, or none of them")
    if relative:
        if not epoch_size:
            epoch_size = sum(_need_size(s, n, "the default epoch_size (the total of unique samples)")
                             for s, n in zip(streams, sizes))
        p = np.array([s.proportion for s in streams], np.float64)
        if p.sum() <= 0:
            raise ConfigError("all proportions are 0", "give at least one stream a positive proportion")
        p /= p.sum()
        counts = (epoch_size * p).astype(np.int64)
        shortfall = int(epoch_size - counts.sum())
        counts[np.random.default_rng(seed).choice(len(streams), shortfall, replace=False)] += 1
        return counts.tolist()
    if epoch_size:
        raise ConfigError(f"epoch_size={epoch_size} is given with absolute weights (repeat/choose)",
                          "use proportion=... on every stream to scale to an epoch_size, or drop epoch_size")
    counts = []
    for s, n in zip(streams, sizes):
        if s.choose is not None:
            counts.append(s.choose)
        elif s.repeat is not None:
            counts.append(int(s.repeat * _need_size(s, n, "repeat")))
        else:
            counts.append(_need_size(s, n, "a stream without a weight (its size is its share)"))
    return counts


def _need_size(stream: Stream, size: int | None, why: str) -> int:
    if size is None:
        raise ConfigError(f"the size of stream {stream.label!r} is unknown, and {why} needs it",
                          "pass size=N on the stream (e.g. from its dataset card), use choose=N, "
                          "or proportion=... with an explicit epoch_size")
    return size


def stream_sizes(streams: list[Stream], epoch_size: int | None) -> list[int | None]:
    """Each stream's size where its weight needs it: ``size=`` when given, else a counting pass."""
    relative = any(s.relative for s in streams)
    return [s.size if s.size is not None else
            None if (relative and epoch_size) or s.choose is not None else count_documents(s)
            for s in streams]


def count_documents(stream: Stream) -> int:
    """The number of documents a stream yields in one pass (all shards), by a counting pass.

    Raises:
        ConfigError: hub and ws:// streams cannot be counted here (pass ``size=``).
    """
    spec = make_spec(stream.dataset, **{k: v for k, v in stream.source_options.items()
                                        if k not in ("shard", "num_shards", "epochs", "max_samples")})
    if resolve(spec).kind != "local":
        raise ConfigError(f"the size of stream {stream.label!r} ({stream.dataset}) is unknown and it is not "
                          "local files, so it cannot be counted here",
                          "pass size=N on the stream (its dataset card gives it), use choose=N, "
                          "or proportion=... with an explicit epoch_size")
    with HuggingFaceStreamingCorpus(stream.dataset, **{**stream.source_options, "epochs": 1,
                                                       "shard": 0, "num_shards": 1}) as corpus:
        return sum(len(batch) for batch in corpus.stream_batches())


#: keys a mixture file may hold besides ``streams`` (MixedSource's options)
MIXTURE_FILE_KEYS = ("epoch_size", "seed", "batching_method", "batch_size", "epochs")


def is_mixture_file(path: str) -> bool:
    """A ``.yaml``/``.yml`` path: a mixture file (data files never have these extensions)."""
    return path.lower().endswith((".yaml", ".yml"))


def load_mixture_file(path: str) -> dict[str, Any]:
    """Read a mixture file: a list of streams, or a mapping with ``streams`` and mixture options.

    Raises:
        ConfigError: unreadable file, no ``streams`` list, or an unknown key (naming it).
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the mixture file {path!r}: {exc}",
                          "write it as YAML: streams: [{dataset: a.jsonl, proportion: 0.3}, ...]") from None
    if isinstance(data, list):
        data = {"streams": data}
    if not isinstance(data, dict) or not isinstance(data.get("streams"), list):
        raise ConfigError(f"{path!r} has no 'streams' list",
                          "write: streams: [{dataset: a.jsonl, proportion: 0.3}, {dataset: b.jsonl, proportion: 0.7}]")
    unknown = sorted(set(data) - {"streams", *MIXTURE_FILE_KEYS})
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in the mixture file {path!r}",
                          f"valid keys: {', '.join(sorted(('streams', *MIXTURE_FILE_KEYS)))}")
    return data
