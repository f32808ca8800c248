"""The held-out slice: the head of a stream, and the filter (a DocumentSource) that never yields it again.

The first ``n`` documents of the stream are the evaluation set. Training reads the stream
through :class:`ExcludingSource`, which drops every document whose text hashes like one of
them: in every epoch, on every rank, duplicates included (EIR's validation ids, by content).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable, Iterator, Sequence

from hfstream.errors import EmptyDatasetError
from hfstream.source.base import DocBatch, DocumentSource, Ref, TokenDocuments, as_document_source


def text_id(text: str) -> bytes:
    """A 16-byte content hash of a document: how held-out documents are recognised."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def heldout_fingerprint(texts: Sequence[str]) -> str:
    """16 hex digits identifying an evaluation set (stored in checkpoints, checked on resume)."""
    h = hashlib.blake2b(digest_size=8)
    for text in texts:
        h.update(text_id(text))
    return h.hexdigest()


def read_head(corpus: DocumentSource, n: int) -> list[str]:
    """The first ``n`` documents of a source (fewer if it ends first)."""
    out: list[str] = []
    if n <= 0:
        return out
    for text in corpus.stream():
        out.append(text)
        if len(out) >= n:
            break
    return out


class ExcludingSource(DocumentSource):
    """A corpus minus a set of documents, with the corpus's exact, resumable position.

    Skipped documents advance the position like any other, so a state saved after a batch
    resumes at the same next document, and the same documents are skipped again.

    Args:
        corpus: the DocumentSource to filter (a corpus, a mixture).
        excluded: texts never to yield.
    """

    def __init__(self, corpus: DocumentSource, excluded: Iterable[str]):
        self.corpus = as_document_source(corpus)
        self.name = self.corpus.name
        self.excluded_ids = frozenset(text_id(t) for t in excluded)
        self.num_excluded = 0   # documents dropped so far (this process)
        # An endless stream whose every document is held out would spin forever: give up
        # after this many dropped in a row (generous, so that duplicated documents pass).
        self.max_dropped_in_a_row = max(10 * len(self.excluded_ids), 10_000)

    def fingerprint(self) -> str:
        """The wrapped source's: the loader ties its state to the data, which is the same."""
        return self.corpus.fingerprint()

    def stats(self) -> dict[str, Any]:
        return {**self.corpus.stats(), "excluded": self.num_excluded}

    def start(self) -> None:
        self.corpus.start()

    def stream_batches(self) -> Iterator[list[str]]:
        for batch in self._filtered(DocBatch(texts=texts) for texts in self.corpus.stream_batches()):
            yield batch.texts  # type: ignore[misc]

    def _filtered(self, batches: Iterator[DocBatch]) -> Iterator[DocBatch]:
        """The batches without held-out texts (token batches from a cache were filtered when written)."""
        excluded = self.excluded_ids
        dropped_in_a_row = 0
        for batch in batches:
            if excluded and batch.texts is not None:
                keep = [i for i, t in enumerate(batch.texts) if text_id(t) not in excluded]
                self.num_excluded += len(batch) - len(keep)
                dropped_in_a_row = 0 if keep else dropped_in_a_row + len(batch)
                if dropped_in_a_row > self.max_dropped_in_a_row:
                    raise EmptyDatasetError(
                        f"{dropped_in_a_row:,} documents in a row were held-out ones: every "
                        "document of this stream (shard) seems to be in the evaluation set",
                        "lower data.eval_docs, or use a larger dataset")
                if len(keep) < len(batch):
                    batch = _kept(batch, keep)
            # an emptied seekable batch still moves the cache writer on; an identified one says what it read
            if len(batch) or batch.refs is not None or batch.reads:
                yield batch

    def tokenized(self, cache: Any, key: str, identified: bool = False) -> TokenDocuments:
        """The wrapped source's documents minus the held-out ones; cached under ``key`` and the held-out set."""
        held_out = hashlib.blake2b(b"".join(sorted(self.excluded_ids)), digest_size=8).hexdigest()
        return _ExcludingDocuments(self, self.corpus.tokenized(cache, f"{key}|excluding:{held_out}", identified))

    def state_dict(self) -> dict[str, Any]:
        return self.corpus.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.corpus.load_state_dict(state)

    def close(self) -> None:
        self.corpus.close()


def _kept(batch: DocBatch, keep: list[int]) -> DocBatch:
    """The documents ``keep`` of a batch of texts; with ids, the others are its ``held_out``."""
    refs = None if batch.refs is None else [batch.refs[i] for i in keep]
    out = DocBatch([batch.texts[i] for i in keep], None, refs, batch.start, batch.end)  # type: ignore[index]
    if batch.ids is not None:
        kept = set(keep)
        out.ids, out.reads = [batch.ids[i] for i in keep], batch.reads
        out.held_out = [doc for i, doc in enumerate(batch.ids) if i not in kept]
    return out


class _ExcludingDocuments:
    """TokenDocuments of an ExcludingSource: the inner ones, held-out texts dropped."""

    def __init__(self, source: ExcludingSource, inner: TokenDocuments):
        self.source, self.inner = source, inner
        self.seekable = inner.seekable

    def start(self) -> bool:
        return self.inner.start()

    def batches(self) -> Iterator[DocBatch]:
        return self.source._filtered(self.inner.batches())

    def record(self, batch: DocBatch, arrays: list[Any]) -> None:
        self.inner.record(batch, arrays)

    def fetch(self, refs: Sequence[Ref], encode: Callable[[list[str]], list[Any]]) -> list[Any]:
        return self.inner.fetch(refs, encode)

    def flush(self) -> None:
        self.inner.flush()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
