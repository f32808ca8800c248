"""The token pipeline: a DocumentSource -> tokenizer -> shuffle buffer -> packer -> (B, T+1) rows.

Synchronous and deterministic: the same source, encoder, settings and seed give the same rows,
and ``state_dict()`` / ``load_state_dict()`` restore it exactly. A producer
(:mod:`hfstream.loader.producers`) runs it in a background thread; this module needs only the
standard library and numpy (the encoder is passed in, so ``tokenizers`` stays in
:mod:`hfstream.tokens.encoder`).
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any, Iterator

import numpy as np

from hfstream.errors import StateError, check_int
from hfstream.loader.batch import Rows
from hfstream.loader.packing import TokenPacker
from hfstream.loader.shuffle import ShuffleBuffer
from hfstream.source.base import DocumentSource, require_keys
from hfstream.tokens.jobs import EncodeJob

STATE_VERSION = 1
ARRAY_OVERHEAD = 112          # bytes of a numpy array object besides its data (for the budget)
LOOKAHEAD = 2                 # batches of texts handed to the tokenizer threads ahead of packing


def derive_seed(seed: int, key: object) -> int:
    """A 64-bit seed derived from (seed, key), the same on every machine (for workers, streams)."""
    return int.from_bytes(hashlib.sha256(f"hfstream:{seed}:{key}".encode()).digest()[:8], "little")


class TokenPipeline:
    """Documents from ``source`` tokenized, shuffled, and packed with EOS separators into rows.

    Tokenizing before shuffling lets reading and tokenizing overlap from the first document,
    and makes the buffer's byte budget exact: it holds token arrays (4 bytes per token).
    While one batch of texts is packed, the next :data:`LOOKAHEAD` - 1 are being tokenized
    (``encoder.submit``), so the tokenizer threads never wait for the packer. Those texts are
    not part of the state: it holds the source position before them, and a restore reads
    them again.

    Args:
        source: the DocumentSource (a corpus, a mixture, texts in memory, a held-out filter).
        encoder: an object with ``encode_batch(texts) -> list[np.ndarray]`` and ``eos_id``
            (``hfstream.tokenization.TextEncoder``); its ``submit(texts)``, if it has one,
            tokenizes ahead in the background.
        batch_size: rows per batch (B).
        seq_len: tokens per input row (T); rows hold T+1 tokens.
        shuffle_buffer_size: documents held for shuffling; 0 or 1 disables shuffling.
        shuffle_buffer_bytes: memory budget of the buffer (token array bytes).
        seed: seeds the shuffle buffer's generator.
        shuffle_warmup: documents buffered before the first one leaves; the buffer then grows
            to ``shuffle_buffer_size`` at half the input rate. Default ``min(1000, size)``:
            the first batch comes quickly, shuffling reaches full strength soon after.
        with_positions: also return per-token position ids (reset after each EOS).
    """

    def __init__(self, source: DocumentSource, encoder: Any, batch_size: int, seq_len: int,
                 shuffle_buffer_size: int = 10_000, shuffle_buffer_bytes: int = 256 << 20,
                 seed: int = 0, with_positions: bool = False, shuffle_warmup: int | None = None):
        check_int("shuffle_buffer_size", shuffle_buffer_size, 0,
                  "use 0 to disable shuffling, 10_000 is a good default")
        self.source, self.encoder = source, encoder
        self._encoder_submit = getattr(encoder, "submit", None)  # None: a synchronous encoder
        self.packer = TokenPacker(batch_size, seq_len, encoder.eos_id, with_positions=with_positions)
        capacity = max(shuffle_buffer_size, 1)
        warmup = min(1000, capacity) if shuffle_warmup is None else shuffle_warmup
        self.buffer = ShuffleBuffer(capacity, shuffle_buffer_bytes, seed, warmup=warmup)
        self._shuffle = shuffle_buffer_size > 1
        self._batches: Iterator[list[str]] | None = None
        self._inflight: collections.deque[tuple[dict[str, Any], int, EncodeJob]] = collections.deque()
        self._source_done = False              # the source has no more texts (some may be in flight)
        self._exhausted = False                # ... and they are all packed
        self.num_docs = 0                      # documents tokenized

    def next_batch(self) -> Rows | None:
        """The next (B, T+1) int64 rows (and positions), or None when the source is done."""
        packer = self.packer
        while not packer.num_ready:
            if self._exhausted:
                return None
            self._read_more()
        out = packer.pop()
        return Rows(*out) if isinstance(out, tuple) else Rows(out)

    def _read_more(self) -> None:
        if self._batches is None:
            self._batches = self.source.stream_batches()
        inflight = self._inflight
        while not self._source_done and len(inflight) < LOOKAHEAD:
            before = self.source.state_dict()  # the position a restore goes back to
            texts = next(self._batches, None)
            if texts is None:
                self._source_done = True
            else:
                inflight.append((before, len(texts), self._submit(texts)))
        if not inflight:
            # The source is done: empty the buffer, in its random order, one batch at a time
            # (all at once would grow the packer by the whole buffer: 128 MB for 10k documents).
            buffer, packer = self.buffer, self.packer
            while len(buffer) and not packer.num_ready:
                packer.add(buffer.pop())
            self._exhausted = not len(buffer)
            return
        _, num_texts, job = inflight.popleft()
        arrays = job.result()
        self.num_docs += num_texts
        if self._shuffle:
            arrays = self.buffer.push_many(arrays, [a.nbytes + ARRAY_OVERHEAD for a in arrays])
        self.packer.add_many(arrays)

    def _submit(self, texts: list[str]) -> EncodeJob:
        submit = self._encoder_submit
        return submit(texts) if submit else EncodeJob.done(self.encoder.encode_batch(texts))

    # -- the row-source interface a producer runs ------------------------------------------
    def fingerprint(self) -> str:
        return self.source.fingerprint()

    def stats(self) -> dict[str, Any]:
        buffer = self.buffer
        return {"docs": self.num_docs, "buffer_fill": len(buffer) / buffer.capacity,
                "buffer_bytes": buffer.num_bytes, **self.source.stats()}

    def start(self) -> None:
        self.source.start()

    def close(self) -> None:
        for _, _, job in self._inflight:
            job.cancel()
        self.source.close()

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Exact state: source position, buffer contents and generator, packer remainder."""
        source = self._inflight[0][0] if self._inflight else self.source.state_dict()
        return {"version": STATE_VERSION, "source": source,
                "buffer": self.buffer.state_dict(), "packer": self.packer.state_dict(),
                "exhausted": self._exhausted, "num_docs": self.num_docs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        require_keys(state, ("version", "source", "buffer", "packer", "exhausted", "num_docs"),
                     "token pipeline state", "TokenPipeline.state_dict()")
        if state["version"] != STATE_VERSION:
            raise StateError(f"pipeline state version {state.get('version')!r} is not {STATE_VERSION}",
                             "restore with the hfstream version that saved it")
        for _, _, job in self._inflight:
            job.cancel()
        self._inflight.clear()
        self._source_done = False
        self.source.load_state_dict(state["source"])
        self.buffer.load_state_dict(state["buffer"])
        self.packer.load_state_dict(state["packer"])
        self._exhausted = state["exhausted"]
        self._batches = None
        self.num_docs = state["num_docs"]
