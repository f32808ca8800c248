"""The one door: whatever a user passes as data (a name, Streams, a mixture file, texts, a source) becomes one DocumentSource.

Every entry point — the loader, the trainer, the tokenizer trainer, the EIR server and the
CLIs — calls :func:`open_source` and never asks what kind of source it holds::

    open_source("HuggingFaceFW/fineweb", name="sample-10BT", shard=rank, num_shards=world)
    open_source("data/*.parquet", epochs=None)                    # a corpus (worker subprocess)
    open_source([Stream("a.jsonl", proportion=0.3), Stream("b.jsonl", proportion=0.7)])
    open_source("mixture.yaml")                                   # a mixture file
    open_source(["text one", "text two"])                         # texts in memory
    open_source(corpus)                                           # a ready DocumentSource, as is
"""

from __future__ import annotations

from typing import Any, Iterable

from hfstream.errors import ConfigError
from hfstream.mixing.documents import MixedSource
from hfstream.mixing.streams import MIXTURE_FILE_KEYS, Stream, is_mixture_file, load_mixture_file
from hfstream.source.base import DocumentSource, as_document_source, missing_source_methods
from hfstream.source.corpus import HuggingFaceStreamingCorpus
from hfstream.source.memory import IterableSource

#: options of a whole mixture (per-stream source options go on each stream)
MIXTURE_OPTIONS = ("shard", "num_shards", *MIXTURE_FILE_KEYS)


def open_source(data: Any, *, corpus_defaults: dict[str, Any] | None = None,
                mixture_defaults: dict[str, Any] | None = None, **options: Any) -> DocumentSource:
    """Turn ``data`` into a DocumentSource.

    Args:
        data: a dataset name/path/URL (a ``HuggingFaceStreamingCorpus``), a ``.yaml`` mixture
            file or a mixture dict ``{"streams": [...], ...}``, a list of ``Stream``s or stream
            dicts (a ``MixedSource``), a DocumentSource (returned as is), or an iterable of
            strings (an ``IterableSource``; a list restores exactly).
        corpus_defaults: options used only when ``data`` is a dataset name.
        mixture_defaults: options used only when ``data`` is a mixture (a mixture file's own
            keys win over them).
        **options: for a dataset, ``HuggingFaceStreamingCorpus`` options (SourceSpec fields,
            ``batch_size``, ``queue_bytes``, ...); for a mixture, ``shard``/``num_shards``
            (its rank and world size), ``epochs``, ``epoch_size``, ``seed``,
            ``batching_method``, ``batch_size``; for texts, ``epochs``.

    Raises:
        ConfigError: options that do not apply to what ``data`` is, or data of no known kind.
    """
    mixture = mixture_spec(data)
    if mixture is not None:
        return _open_mixture(mixture, {**(mixture_defaults or {}), **_mixture_keys(mixture)}, options)
    if isinstance(data, str):
        return HuggingFaceStreamingCorpus(data, **{**(corpus_defaults or {}), **options})
    if isinstance(data, DocumentSource) or not missing_source_methods(data):
        if options:
            raise ConfigError(f"options {sorted(options)} given with a ready-made source "
                              f"({type(data).__name__})",
                              "pass them to the source's constructor instead, or pass the dataset name")
        return as_document_source(data)
    if isinstance(data, Iterable) and not isinstance(data, (bytes, dict)):
        unknown = sorted(set(options) - {"epochs"})
        if unknown:
            raise ConfigError(f"options {unknown} do not apply to texts in memory",
                              "pass a dataset name to read a corpus with source options")
        return IterableSource(data, **options)
    raise ConfigError(f"data must be a dataset name, a list of Streams, a mixture file, a source or an "
                      f"iterable of str, got {type(data).__name__}",
                      "pass e.g. 'builtin:python-docs' or HuggingFaceStreamingCorpus(...)")


def mixture_spec(data: Any) -> dict[str, Any] | None:
    """``{"streams": [...], ...}`` when ``data`` describes a mixture, else None."""
    if isinstance(data, str) and is_mixture_file(data):
        return load_mixture_file(data)
    if isinstance(data, dict) and "streams" in data:
        return dict(data)
    if isinstance(data, (list, tuple)) and data and all(isinstance(s, (Stream, dict)) for s in data):
        return {"streams": list(data)}
    return None


def _mixture_keys(mixture: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mixture.items() if k != "streams"}


def _open_mixture(mixture: dict[str, Any], defaults: dict[str, Any], options: dict[str, Any]) -> MixedSource:
    unknown = sorted(set(options) - set(MIXTURE_OPTIONS))
    if unknown:
        raise ConfigError(f"options {unknown} do not apply to a mixture as a whole",
                          "put source options on each stream: Stream(dataset, text_column=...), "
                          "or {dataset: ..., text_column: ...} in a mixture file")
    kwargs = {**defaults, **options}
    rank, world_size = kwargs.pop("shard", 0), kwargs.pop("num_shards", 1)
    return MixedSource(mixture["streams"], rank=rank, world_size=world_size, **kwargs)
