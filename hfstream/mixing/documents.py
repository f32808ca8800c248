"""MixedSource: several streams mixed document by document into one resumable DocumentSource.

On raw streams there is no random access, so a stream's samples in an epoch are the *next*
ones of its endless, reshuffled-per-pass sequence: ``repeat=3`` reads it three times,
``repeat=0.25`` the next quarter (a different quarter each epoch).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from hfstream.mixing.base import Mixture
from hfstream.mixing.streams import epoch_counts, parse_count, sorted_streams, stream_sizes
from hfstream.source.base import DocumentSource, TokenDocuments, Where
from hfstream.source.ids import IdentifiedTexts

log = logging.getLogger("hfstream.mixing")


class MixedSource(Mixture, DocumentSource):
    """Several streams mixed into one resumable document stream (a drop-in for a corpus).

    Args:
        streams: Streams or stream config dicts.
        epoch_size: samples per epoch (relative weights); int or "100k"/"64M".
        seed: seeds the rounding and the per-epoch order.
        batching_method: see :mod:`hfstream.mixing.schedule`; batches are counted in documents.
        batch_size: documents per device batch (for stratified/per_stream/device_per_stream).
        rank, world_size: this process's place under DDP: each stream is read on shard
            ``rank`` of ``world_size``, and the global schedule is the same on every rank.
        epochs: epochs to run; None: forever.
    """

    def __init__(self, streams: list[Any], *, epoch_size: int | str | None = None, seed: int = 0,
                 batching_method: str = "random", batch_size: int = 1, rank: int = 0, world_size: int = 1,
                 epochs: int | None = 1):
        ordered = sorted_streams(streams)
        self.epoch_size = None if epoch_size is None else parse_count(epoch_size)
        counts = epoch_counts(ordered, stream_sizes(ordered, self.epoch_size), self.epoch_size, seed)
        super().__init__(ordered, counts, kind="mix", unit="document", seed=seed, method=batching_method,
                         per_device=batch_size, rank=rank, world_size=world_size, epochs=epochs)
        self.members = self.sources = [s.open_source(epochs=None, shard=rank, num_shards=world_size)
                                       for s in self.streams]
        self.name = "mixture of " + ", ".join(self.labels)
        self._iters: list[Iterator[str] | None] = [None] * len(self.sources)
        self._located: list[Iterator[tuple[str, Where | None]] | None] = [None] * len(self.sources)
        log.info("mixture: %s; %s per epoch", ", ".join(f"{s.label}={c}" for s, c in zip(self.streams, counts)),
                 sum(counts))

    def stream(self) -> Iterator[str]:
        """Documents of the mixture, each from the stream the schedule names."""
        while True:
            label = self.next_label()
            if label is None:
                return
            if self._iters[label] is None:
                self._iters[label] = self.sources[label].stream()
            yield next(self._iters[label])  # endless: epochs=None on every stream

    def stream_identified(self) -> Iterator[tuple[str, Where]]:
        """``stream()`` with each document's stream label, shard, epoch and row (records).

        A stream whose source cannot say where its documents are numbers them in the order this
        mixture took them (``num_shards`` 0, ``shard`` this rank).
        """
        while True:
            label = self.next_label()
            if label is None:
                return
            if self._located[label] is None:
                self._located[label] = self.sources[label].stream_identified()
            text, where = next(self._located[label])  # type: ignore[arg-type]
            if where is None:
                k = self.realized[label] - 1
                where = (None, self.rank, 0, 0, k, k, k + 1)
            yield text, (self.streams[label].label, *where[1:])

    def tokenized(self, cache: Any, key: str, identified: bool = False) -> TokenDocuments:
        """Texts (no refs); with ``identified``, read document by document with each one's id."""
        return IdentifiedTexts(self) if identified else super().tokenized(cache, key)

    def proportions(self) -> dict[str, float]:
        """Realized share of each stream so far (this rank)."""
        return self.shares()

    def stats(self) -> dict[str, Any]:
        return {"shares": self.shares()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._iters = [None] * len(self.sources)
        self._located = [None] * len(self.sources)
