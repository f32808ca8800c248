"""Row-level mixing: one token pipeline per stream; a schedule picks each training row's stream.

Counting in training rows (``seq_len + 1`` tokens each) makes token budgets exact and makes
the batching methods hold on the tensors themselves: with ``stratified`` every global batch
has each stream's share of rows, with ``per_stream`` every global batch comes from one
stream, with ``device_per_stream`` every rank's batch does. Used by the loader for
``mix_by="tokens"``; torch-free like TokenPipeline.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from hfstream.errors import StateError
from hfstream.mixing.streams import ScheduleCursor, Stream, epoch_counts, parse_count, sorted_streams
from hfstream.loader.pipeline import TokenPipeline, derive_seed

log = logging.getLogger("hfstream.mixing")
STATE_VERSION = 1


class RowMixer:
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
        **pipeline_options: shuffle_buffer_size, shuffle_buffer_bytes, shuffle_warmup, with_positions.
    """

    def __init__(self, streams: list[Any], encoder: Any, batch_size: int, seq_len: int, *,
                 epoch_size: int | str | None = None, seed: int = 0, batching_method: str = "random",
                 rank: int = 0, world_size: int = 1, epochs: int | None = None,
                 wrap_source: Any = None, **pipeline_options: Any):
        self.streams: list[Stream] = sorted_streams(streams)
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.method, self.rank, self.world_size, self.epochs = batching_method, rank, world_size, epochs
        row_tokens = seq_len + 1
        epoch_tokens = None if epoch_size is None else parse_count(epoch_size)
        token_counts = epoch_counts(self.streams, [None] * len(self.streams), epoch_tokens, seed)
        self.token_budgets = token_counts
        self.counts = [c // row_tokens for c in token_counts]   # rows per stream per epoch (global)
        self.with_positions = bool(pipeline_options.get("with_positions"))
        wrap = wrap_source or (lambda source: source)
        self.pipelines = [
            TokenPipeline(wrap(s.open(epochs=None, shard=rank, num_shards=world_size)), encoder, 1, seq_len,
                          seed=derive_seed(seed, s.label), **pipeline_options)
            for s in self.streams]
        self.cursor = ScheduleCursor(self.counts, batching_method, seed, batch_size * world_size, world_size,
                                     rank, epochs, on_epoch_end=self._log_epoch)
        self.realized_rows = [0] * len(self.streams)
        log.info("token mixture (rows of %d tokens): %s", row_tokens,
                 ", ".join(f"{s.label}={t:,} tokens" for s, t in zip(self.streams, token_counts)))

    # the TokenPipeline interface used by the loader --------------------------------------
    @property
    def source(self) -> "RowMixer":
        return self

    @property
    def num_docs(self) -> int:
        return sum(p.num_docs for p in self.pipelines)

    @property
    def buffer(self) -> Any:
        return self.pipelines[0].buffer

    def fingerprint(self) -> str:
        ident = [(s.label, s.dataset, c) for s, c in zip(self.streams, self.token_budgets)]
        raw = f"{ident}|{self.seed}|{self.method}|{self.batch_size}|{self.rank}/{self.world_size}"
        return "rows:" + hashlib.sha1(raw.encode()).hexdigest()[:16]

    def next_batch(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | None:
        rows, positions, ids = [], [], []
        for _ in range(self.batch_size):
            label = self.cursor.next()
            if label is None:
                return None
            out = self.pipelines[label].next_batch()
            if out is None:  # streams are endless; only an empty stream ends here
                return None
            row, pos = out if isinstance(out, tuple) else (out, None)
            rows.append(row[0])
            positions.append(pos[0] if pos is not None else None)
            ids.append(label)
            self.realized_rows[label] += 1
        pos_array = np.stack(positions) if self.with_positions else None
        return np.stack(rows), pos_array, np.array(ids, dtype=np.int64)  # B x (T+1) -> (B, T+1)

    def _log_epoch(self, epoch: int) -> None:
        log.info("mixture epoch %d done; realized token shares: %s", epoch, self.shares())

    def shares(self) -> dict[str, float]:
        total = sum(self.realized_rows) or 1
        return {s.label: round(n / total, 4) for s, n in zip(self.streams, self.realized_rows)}

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "fingerprint": self.fingerprint(), **self.cursor.state_dict(),
                "realized_rows": list(self.realized_rows),
                "pipelines": {s.label: p.state_dict() for s, p in zip(self.streams, self.pipelines)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION or state.get("fingerprint") != self.fingerprint():
            raise StateError("the mixture state was saved for other streams, budgets, seed or batching",
                             "restore into a loader built with the same streams and options")
        for s, p in zip(self.streams, self.pipelines):
            p.load_state_dict(state["pipelines"][s.label])
        self.cursor.load_state_dict(state)
        self.realized_rows = list(state["realized_rows"])

    def start(self) -> None:
        for p in self.pipelines:
            getattr(p.source, "start", lambda: None)()

    def close(self) -> None:
        for p in self.pipelines:
            getattr(p.source, "close", lambda: None)()
