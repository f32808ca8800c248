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
"""

from __future__ import annotations

from typing import Any, Iterator

from hfstream.errors import ConfigError, StateError


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
