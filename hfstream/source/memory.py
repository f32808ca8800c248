"""Texts already in memory (a list, any iterable of strings) as a DocumentSource."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from hfstream.errors import StateError, check_int
from hfstream.source.base import DocumentSource, require_keys


class IterableSource(DocumentSource):
    """A DocumentSource over an iterable of strings, read ``epochs`` times (None: forever).

    The position is the number of texts consumed. A re-iterable (a list, a tuple, anything
    whose ``iter()`` starts over) restores exactly by skipping that many; a one-shot iterator
    (a generator) is read once and cannot be restored to another position (it says so).

    Args:
        texts: the documents.
        epochs: passes over ``texts`` (a one-shot iterator allows only 1); None repeats forever.
        texts_per_chunk: texts per list from ``stream_batches``.
    """

    def __init__(self, texts: Iterable[str], epochs: int | None = 1, texts_per_chunk: int = 256):
        self._texts = texts
        self._reiterable = iter(texts) is not texts
        self.epochs = None if epochs is None else check_int("epochs", epochs, 1)
        if not self._reiterable and epochs != 1:
            raise StateError(f"a one-shot iterator ({type(texts).__name__}) can be read only once, "
                             f"not epochs={epochs}", "pass a list to repeat it")
        self.texts_per_chunk = check_int("texts_per_chunk", texts_per_chunk, 1)
        self.name = f"{type(texts).__name__} of texts"
        self._position = 0
        self._iterator: Iterator[str] | None = None

    def fingerprint(self) -> str:
        return "iterable"

    def stream(self) -> Iterator[str]:
        """Texts from the current position, one by one (each counted as it is yielded)."""
        if not self._reiterable:
            if self._iterator is None:
                self._iterator = iter(self._texts)
            for text in self._iterator:
                self._position += 1
                yield text
            return
        while self.epochs is None or self._position < self._length() * self.epochs:
            n = self._length()
            if n == 0:
                return
            epoch_start = self._position - self._position % n
            for index, text in enumerate(self._texts):
                if epoch_start + index < self._position:
                    continue  # already consumed (a restore lands inside an epoch)
                self._position += 1
                yield text

    def stream_batches(self) -> Iterator[list[str]]:
        batch: list[str] = []
        for text in self.stream():
            batch.append(text)
            if len(batch) >= self.texts_per_chunk:
                yield batch
                batch = []
        if batch:
            yield batch

    def _length(self) -> int:
        try:
            return len(self._texts)  # type: ignore[arg-type]
        except TypeError:  # a re-iterable without len(): count it once
            self._texts = list(self._texts)
            return len(self._texts)

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        position = require_keys(state, ("consumed",), "texts position", "IterableSource.state_dict()")["consumed"]
        if not self._reiterable and position != self._position:
            raise StateError(
                f"cannot restore a one-shot iterator ({type(self._texts).__name__}) to position "
                f"{position}", "pass a list (or another re-iterable), or a dataset/corpus, "
                "to get exact resume")
        self._position, self._iterator = int(position), None
