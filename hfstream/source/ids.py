"""Document identities for records: DocIds and reads attached to a source's batches (``identified=True``).

Only asked for by a pipeline that records its documents (``record_docs``, for ``hfstream audit``):
without it no batch carries them and none of this runs.
"""

from __future__ import annotations

from typing import Iterator

from hfstream.source.base import DocBatch, TextDocuments

DOCS_PER_BATCH = 256


def identify(batch: DocBatch, shard: int, num_shards: int) -> DocBatch:
    """``batch`` (of a seekable source: refs, start and end) with its ids and the rows read for it."""
    epoch, end = batch.end  # type: ignore[misc]
    first, start = batch.start  # type: ignore[misc]
    batch.ids = [(None, shard, num_shards, e, r) for e, r in batch.refs]  # type: ignore[union-attr]
    # a batch that starts a new epoch read it from row 0 (the rows after the last document of the
    # epoch before were all filtered out: no read holds them)
    batch.reads = [(None, shard, num_shards, epoch, start if first == epoch else 0, end)]
    return batch


def end_marker(shard: int, num_shards: int, epoch: int, row: int) -> DocBatch:
    """An empty batch saying where a finished source stopped: at row 0 of the epoch after its last,
    when it read every epoch to its end (an empty read there tells the audit that they are complete)."""
    return DocBatch(tokens=[], refs=[], ids=[], reads=[(None, shard, num_shards, epoch, row, row)])


class IdentifiedTexts(TextDocuments):
    """A source's texts with ids, read document by document (``stream_identified``), in batches.

    For sources whose every document says where it was found (a corpus that cannot seek, a
    document mixture); the position between batches is exact, as ``stream()``'s is.
    """

    def batches(self) -> Iterator[DocBatch]:
        texts, ids, reads = [], [], []
        for text, where in self.source.stream_identified():
            assert where is not None, "IdentifiedTexts needs a source that says where each document is"
            texts.append(text)
            ids.append(where[:5])
            reads.append(where[:4] + where[5:])
            if len(texts) >= DOCS_PER_BATCH:
                yield DocBatch(texts=texts, ids=ids, reads=reads)
                texts, ids, reads = [], [], []
        if texts:
            yield DocBatch(texts=texts, ids=ids, reads=reads)
