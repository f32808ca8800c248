"""The token pipeline: text source -> tokenizer -> shuffle buffer -> packer -> (B, T+1) rows.

Synchronous and deterministic: the same source, encoder, settings and seed give the same rows,
and ``state_dict()`` / ``load_state_dict()`` restore it exactly. The loader runs it in a
background thread; this module needs only the standard library and numpy (the encoder is
passed in, so ``tokenizers`` stays in ``hfstream.tokenization``).
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any, Iterable, Iterator, Protocol

import numpy as np

from hfstream.tokens.jobs import EncodeJob
from hfstream.errors import ConfigError, StateError
from hfstream.loader.packing import TokenPacker
from hfstream.loader.shuffle import ShuffleBuffer

STATE_VERSION = 1
ARRAY_OVERHEAD = 112          # bytes of a numpy array object besides its data (for the budget)
LOOKAHEAD = 2                 # batches of texts handed to the tokenizer threads ahead of packing


def derive_seed(seed: int, key: object) -> int:
    """A 64-bit seed derived from (seed, key), the same on every machine (for workers, streams)."""
    return int.from_bytes(hashlib.sha256(f"hfstream:{seed}:{key}".encode()).digest()[:8], "little")


class TextSource(Protocol):
    """What the pipeline reads from: batches of texts, and an exact position."""

    def stream_batches(self) -> Iterator[list[str]]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class IterableSource:
    """A TextSource over a plain iterable of strings.

    The position is the number of texts consumed. A re-iterable (a list, a tuple, anything
    whose ``iter()`` starts over) restores exactly by skipping that many; a one-shot
    iterator (a generator) cannot be restored and says so.
    """

    def __init__(self, texts: Iterable[str], batch_size: int = 256):
        self._texts = texts
        self._reiterable = iter(texts) is not texts
        self._batch_size = batch_size
        self._consumed = 0
        self._iterator: Iterator[str] | None = None

    def fingerprint(self) -> str:
        return "iterable"

    def stream_batches(self) -> Iterator[list[str]]:
        if self._iterator is None:
            self._iterator = iter(self._texts)
            for _ in range(self._consumed if self._reiterable else 0):
                next(self._iterator, None)
        batch: list[str] = []
        for text in self._iterator:
            batch.append(text)
            if len(batch) >= self._batch_size:
                self._consumed += len(batch)
                yield batch
                batch = []
        if batch:
            self._consumed += len(batch)
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self._consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self._reiterable and state["consumed"] != self._consumed:
            raise StateError(
                f"cannot restore a one-shot iterator ({type(self._texts).__name__}) to position "
                f"{state['consumed']}", "pass a list (or another re-iterable), or a dataset/corpus, "
                "to get exact resume")
        self._consumed, self._iterator = state["consumed"], None


class TokenPipeline:
    """Documents from ``source`` tokenized, shuffled, and packed with EOS separators into rows.

    Tokenizing before shuffling lets reading and tokenizing overlap from the first document,
    and makes the buffer's byte budget exact: it holds token arrays (4 bytes per token).
    While one batch of texts is packed, the next :data:`LOOKAHEAD` - 1 are being tokenized
    (``encoder.submit``), so the tokenizer threads never wait for the packer. Those texts are
    not part of the state: it holds the source position before them, and a restore reads
    them again.

    Args:
        source: a TextSource (e.g. HuggingFaceStreamingCorpus or IterableSource).
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

    def __init__(self, source: TextSource, encoder: Any, batch_size: int, seq_len: int,
                 shuffle_buffer_size: int = 10_000, shuffle_buffer_bytes: int = 256 << 20,
                 seed: int = 0, with_positions: bool = False, shuffle_warmup: int | None = None):
        if isinstance(shuffle_buffer_size, bool) or not isinstance(shuffle_buffer_size, int) \
                or shuffle_buffer_size < 0:
            raise ConfigError(f"shuffle_buffer_size must be an integer >= 0, got {shuffle_buffer_size!r}",
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

    def next_batch(self) -> np.ndarray | tuple[np.ndarray, np.ndarray] | None:
        """The next (B, T+1) int64 rows (and positions), or None when the source is done."""
        packer = self.packer
        while not packer.num_ready:
            if self._exhausted:
                return None
            self._read_more()
        return packer.pop()

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

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Exact state: source position, buffer contents and generator, packer remainder."""
        source = self._inflight[0][0] if self._inflight else self.source.state_dict()
        return {"version": STATE_VERSION, "source": source,
                "buffer": self.buffer.state_dict(), "packer": self.packer.state_dict(),
                "exhausted": self._exhausted, "num_docs": self.num_docs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
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
