"""RowMixer: a token mixture: one token pipeline per stream; a schedule picks each training row's stream.

Counting in training rows (``seq_len + 1`` tokens each) makes token budgets exact and makes
the batching methods hold on the tensors themselves: with ``stratified`` every global batch
has each stream's share of rows, with ``per_stream`` every global batch comes from one
stream, with ``device_per_stream`` every rank's batch does. The loader uses it for
``mix_by="tokens"``; torch-free like TokenPipeline.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from hfstream.loader.batch import Rows
from hfstream.loader.pipeline import TokenPipeline, derive_seed
from hfstream.loader.records import BatchDocs, DocsInFlight
from hfstream.mixing.base import Mixture
from hfstream.mixing.streams import epoch_counts, parse_count, sorted_streams
from hfstream.source.base import DocumentSource

log = logging.getLogger("hfstream.mixing")


class RowMixer(Mixture):
    """(B, T+1) rows (+ positions, + the stream of each row) from a token-budget mixture.

    Args:
        streams: Streams or stream configs; ``choose`` and ``epoch_size`` count tokens here.
        encoder: the TextEncoder shared by all streams.
        batch_size, seq_len: B and T of the batches (B per rank).
        epoch_size: tokens per epoch (with proportions); int or "64M".
        seed: seeds the budgets' rounding, the schedule and each stream's shuffle buffer.
        batching_method: random | stratified | per_stream | device_per_stream.
        rank, world_size: DDP placement; streams are read on shard ``rank``.
        epochs: epochs to run (None: forever).
        wrap_source: applied to each stream's source (e.g. to exclude held-out documents).
        **pipeline_options: shuffle_buffer_size, shuffle_buffer_bytes, shuffle_warmup, with_positions,
            token_cache, record_docs (each stream's records name it by its label).
    """

    def __init__(self, streams: list[Any], encoder: Any, batch_size: int, seq_len: int, *,
                 epoch_size: int | str | None = None, seed: int = 0, batching_method: str = "random",
                 rank: int = 0, world_size: int = 1, epochs: int | None = None,
                 wrap_source: Callable[[DocumentSource], DocumentSource] | None = None,
                 **pipeline_options: Any):
        ordered = sorted_streams(streams)
        row_tokens = seq_len + 1
        epoch_tokens = None if epoch_size is None else parse_count(epoch_size)
        self.token_budgets = epoch_counts(ordered, [None] * len(ordered), epoch_tokens, seed)
        rows_per_epoch = [c // row_tokens for c in self.token_budgets]   # global, all ranks
        super().__init__(ordered, rows_per_epoch, kind="rows", unit="row", seed=seed,
                         method=batching_method, per_device=batch_size, rank=rank, world_size=world_size,
                         epochs=epochs, budgets=self.token_budgets)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.with_positions = bool(pipeline_options.get("with_positions"))
        wrap = wrap_source or (lambda source: source)
        self.members = self.pipelines = [
            TokenPipeline(wrap(s.open_source(epochs=None, shard=rank, num_shards=world_size)), encoder, 1,
                          seq_len, seed=derive_seed(seed, s.label), stream=s.label, **pipeline_options)
            for s in self.streams]
        log.info("token mixture (rows of %d tokens): %s", row_tokens,
                 ", ".join(f"{s.label}={t:,} tokens" for s, t in zip(self.streams, self.token_budgets)))

    def next_batch(self) -> Rows | None:
        """The next B rows, each from the stream the schedule names; None after the last epoch."""
        # The labels first: at the end of the last epoch no row is taken for a batch that cannot be
        # finished (its documents stay in their pipelines, not lost in a batch never handed out).
        labels = [self.next_label() for _ in range(self.batch_size)]
        if None in labels:
            return None
        rows, positions, ids, docs = [], [], [], []
        for label in labels:
            out = self.pipelines[label].next_batch()
            if out is None:  # streams are endless; only an empty stream ends here
                return None
            rows.append(out.tokens[0])
            docs.append(out.docs)
            positions.append(None if out.positions is None else out.positions[0])
            ids.append(label)
        pos_array = np.stack(positions) if self.with_positions else None
        batch_docs = None if docs[0] is None else BatchDocs.joined(docs)
        return Rows(np.stack(rows), pos_array, np.array(ids, dtype=np.int64), batch_docs)  # B x (T+1) -> (B, T+1)

    def docs_in_flight(self) -> DocsInFlight:
        out = DocsInFlight()
        for pipeline in self.pipelines:
            out.add(pipeline.docs_in_flight())
        return out

    def stats(self) -> dict[str, Any]:
        fills = [p.stats()["buffer_fill"] for p in self.pipelines]
        return {"docs": sum(p.num_docs for p in self.pipelines), "buffer_fill": sum(fills) / len(fills),
                "buffer_bytes": sum(p.buffer.num_bytes for p in self.pipelines), "shares": self.shares()}
