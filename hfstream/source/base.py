"""DocumentSource: the one protocol every stream of documents implements, and its shared defaults.

A source yields document texts in batches and can say exactly where it is. The corpus (a
worker subprocess), the document mixture, texts in memory, the held-out filter and the EIR
server's feed all speak it, so the loader, the trainer, the tokenizer trainer, the EIR server
and the CLIs never ask what kind of source they hold::

    with open_source("data/*.parquet") as source:       # hfstream.sources.open_source
        for batch in source.stream_batches():
            ...
        state = source.state_dict()                     # plain data: ints, strings, lists, dicts

Subclasses implement ``stream_batches`` (or ``stream``: each default is built on the other, so
one of them must be overridden), ``state_dict``, ``load_state_dict`` and ``fingerprint``;
``start``, ``close`` and ``stats`` have no-op defaults.

One optional capability, asked for explicitly: ``tokenized(cache, key)`` returns the source's
documents as :class:`TokenDocuments`. The default (:class:`TextDocuments`) gives texts only; a
source that can *seek* (the corpus over local files) gives each document's ref ``(epoch, shard
row)`` and can read documents again by ref, and with a token cache it serves the token ids of
documents read before instead of their texts. The token pipeline asks every source for it.

Asked with ``identified=True`` (the loader's ``record_docs``), batches also say which documents
they hold (:data:`DocId`) and which rows the reader went over to find them (:data:`Read`), for
``hfstream audit``. A source that cannot say gives none, and the pipeline numbers its
documents in the order they come.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

from hfstream.errors import ConfigError, StateError

if TYPE_CHECKING:
    import numpy as np

    from hfstream.source.token_cache import TokenCache

#: a document's ref: ``(epoch, shard row)``, where a seekable source finds it again
Ref = tuple[int, int]
#: a document's identity in records: ``(stream, shard, num_shards, epoch, shard row)``. ``stream``
#: is None where the source does not know its name (the pipeline's then); ``num_shards`` 0 marks
#: a document numbered in arrival order (a source that cannot say where its documents are).
DocId = tuple[Any, int, int, int, int]
#: rows a reader went over: ``(stream, shard, num_shards, epoch, start row, end row)``
Read = tuple[Any, int, int, int, int, int]
#: where ``stream_identified`` found a document: its DocId, then the rows read for it ``(start,
#: end)``: from the previous document's end (rows before its own were filtered out)
Where = tuple[Any, int, int, int, int, int, int]


class DocumentSource:
    """A resumable stream of document texts.

    Attributes:
        name: what the source reads, for logs and error messages (a dataset, "mixture of ...").
    """

    name: str = "documents"

    def stream_batches(self) -> Iterator[list[str]]:
        """Yield lists of texts from the current position; again after ``load_state_dict``.

        The default groups ``stream()``; a state saved between two batches is exact.
        """
        batch: list[str] = []
        for text in self.stream():
            batch.append(text)
            if len(batch) >= 256:
                yield batch
                batch = []
        if batch:
            yield batch

    def stream(self) -> Iterator[str]:
        """Yield texts one by one from the current position.

        The default flattens ``stream_batches()``: a state saved in the middle of a batch then
        counts the whole batch as read. Sources whose consumers stop mid-batch (the corpus,
        the mixture) override it with an exact per-document position.
        """
        for batch in self.stream_batches():
            yield from batch

    def __iter__(self) -> Iterator[str]:
        return self.stream()

    def state_dict(self) -> dict[str, Any]:
        """The exact position as plain data (JSON- and ``torch.load``-safe)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by ``state_dict`` of a source over the same data.

        Raises:
            StateError: the state belongs to other data or settings, or is malformed.
        """
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short string identifying the document sequence (data and order, not limits)."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Counters for reports: ``skipped`` rows by reason, worker ``restarts``, mixture ``shares``."""
        return {}

    def stream_identified(self) -> "Iterator[tuple[str, Where | None]]":
        """``stream()`` with where each document was found (None: the source cannot say).

        For sources read document by document under records (a document mixture's streams); a
        corpus says its shard, epoch and row. Exact per document, like ``stream()``.
        """
        for text in self.stream():
            yield text, None

    def tokenized(self, cache: "TokenCache | None", key: str, identified: bool = False) -> "TokenDocuments":
        """These documents for a token pipeline (see :class:`TokenDocuments`).

        Args:
            cache: the token cache to read token ids from and write them to, or None.
            key: what the ids are made by (the tokenizer's fingerprint), part of every cache key.
            identified: batches also carry ``ids`` and ``reads`` where the source can say them.

        The default gives texts only, without refs (the pipeline then keeps token arrays in its
        state); a source that can seek overrides it.
        """
        return TextDocuments(self)

    def start(self) -> None:
        """Start reading ahead now (e.g. the worker process), to overlap its start-up."""

    def close(self) -> None:
        """Release what the source holds (processes, files); its position is kept."""

    def __enter__(self) -> "DocumentSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def require_keys(state: Any, keys: tuple[str, ...], what: str, made_by: str) -> dict[str, Any]:
    """``state`` as a dict holding every key in ``keys``, else a StateError naming what is missing.

    Args:
        what: the kind of state, for the message (e.g. "corpus state").
        made_by: the method that makes such a state, for the hint.
    """
    if not isinstance(state, dict):
        raise StateError(f"a {what} must be a dict, got {type(state).__name__}: {str(state)[:80]}",
                         f"pass the dict returned by {made_by}")
    missing = [key for key in keys if key not in state]
    if missing:
        raise StateError(f"the {what} is missing {', '.join(map(repr, missing))}",
                         f"pass the whole dict returned by {made_by} (it may have been cut or edited)")
    return state


class _DuckSource(DocumentSource):
    """An object with ``stream()`` or ``stream_batches()``, ``state_dict()`` and ``load_state_dict()``
    (e.g. returned by a registered Stream class) as a DocumentSource. Its optional methods are
    looked up once, here."""

    def __init__(self, obj: Any, name: str):
        self.obj, self.name = obj, name
        self._stream, self._batches = getattr(obj, "stream", None), getattr(obj, "stream_batches", None)
        self._close, self._start = getattr(obj, "close", None), getattr(obj, "start", None)
        self._fingerprint = getattr(obj, "fingerprint", None)

    def stream(self) -> Iterator[str]:
        return iter(self._stream()) if self._stream is not None else super().stream()

    def stream_batches(self) -> Iterator[list[str]]:
        return iter(self._batches()) if self._batches is not None else super().stream_batches()

    def state_dict(self) -> dict[str, Any]:
        return self.obj.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.obj.load_state_dict(state)

    def fingerprint(self) -> str:
        return self._fingerprint() if self._fingerprint is not None else type(self.obj).__name__

    def start(self) -> None:
        if self._start is not None:
            self._start()

    def close(self) -> None:
        if self._close is not None:
            self._close()


def missing_source_methods(obj: Any) -> list[str]:
    """What ``obj`` lacks to be adapted as a DocumentSource (empty: it can be)."""
    missing = [m + "()" for m in ("state_dict", "load_state_dict") if not callable(getattr(obj, m, None))]
    if not any(callable(getattr(obj, m, None)) for m in ("stream", "stream_batches")):
        missing.insert(0, "stream() or stream_batches()")
    return missing


def as_document_source(obj: Any, name: str | None = None) -> DocumentSource:
    """``obj`` itself if it is a DocumentSource, else ``obj`` adapted to the protocol.

    Raises:
        ConfigError: ``obj`` lacks ``stream()``/``stream_batches()``, ``state_dict()`` or
            ``load_state_dict()``.
    """
    if isinstance(obj, DocumentSource):
        return obj
    missing = missing_source_methods(obj)
    if missing:
        raise ConfigError(f"{type(obj).__name__} is not a document source: it has no {', '.join(missing)}",
                          "subclass hfstream.DocumentSource, or pass a dataset name, a list of texts "
                          "or a list of Streams")
    return _DuckSource(obj, name or type(obj).__name__)


@dataclass
class DocBatch:
    """Consecutive documents of a source, as texts to tokenize or as token ids already made.

    Attributes:
        texts: the texts, or None when ``tokens`` are given (read from a token cache).
        tokens: one uint32 array per document, or None.
        refs: each document's ref ``(epoch, shard row)``, or None when the source cannot seek.
        start, end: the source's ``(epoch, row)`` before and after the batch (seekable sources).
        ids, reads, held_out: with ``identified``: each document's id, the rows read for the batch
            (rows in them that are neither in ``ids`` nor ``held_out`` were filtered out by the
            reader), and the documents the held-out filter dropped.
    """

    texts: list[str] | None = None
    tokens: "list[np.ndarray] | None" = None
    refs: list[Ref] | None = None
    start: Ref | None = None
    end: Ref | None = None
    ids: list[DocId] | None = None
    reads: list[Read] | None = None
    held_out: list[DocId] | None = None

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.tokens or ())


class TokenDocuments(Protocol):
    """A source's documents as a token pipeline reads them (``DocumentSource.tokenized``).

    ``seekable`` says whether batches carry refs and ``fetch`` reads documents again by ref: the
    pipeline's state then stores refs instead of token arrays. ``record`` hands back the ids of
    a text batch (a cache writes them), ``flush`` makes what was written readable (before a
    state is saved), ``state_dict``/``load_state_dict`` are the source's own position.
    """

    seekable: bool

    def start(self) -> bool:
        """Start reading ahead (e.g. the worker); True when texts will come (to tokenize), False
        when what comes first is already tokenized (a token cache) or nothing."""
        ...
    def batches(self) -> Iterator[DocBatch]: ...
    def record(self, batch: DocBatch, arrays: "list[np.ndarray]") -> None: ...
    def fetch(self, refs: Sequence[Ref], encode: "Callable[[list[str]], list[np.ndarray]]") -> "list[np.ndarray]": ...
    def flush(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TextDocuments:
    """The default :class:`TokenDocuments`: a source's text batches, no refs, nothing cached."""

    seekable = False

    def __init__(self, source: DocumentSource):
        self.source = source

    def start(self) -> bool:
        self.source.start()
        return True

    def batches(self) -> Iterator[DocBatch]:
        return (DocBatch(texts=texts) for texts in self.source.stream_batches())

    def record(self, batch: DocBatch, arrays: "list[np.ndarray]") -> None:
        pass

    def fetch(self, refs: Sequence[Ref], encode: "Callable[[list[str]], list[np.ndarray]]") -> "list[np.ndarray]":
        raise StateError(f"{self.source.name} cannot read documents again by position",
                         "restore a state saved by a loader over the same kind of source")

    def flush(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)
