"""The token pipeline: a DocumentSource -> tokenizer -> shuffle buffer -> packer -> (B, T+1) rows.

Synchronous and deterministic: the same source, encoder, settings and seed give the same rows,
and ``state_dict()`` / ``load_state_dict()`` restore it exactly. A producer
(:mod:`hfstream.loader.producers`) runs it in a background thread; this module needs only the
standard library and numpy (the encoder is passed in, so ``tokenizers`` stays in
:mod:`hfstream.tokens.encoder`).

The pipeline reads its source through ``source.tokenized(cache, key)``
(:class:`~hfstream.source.base.TokenDocuments`): batches of texts to tokenize, or of token ids
a token cache already holds. When the source can seek, every document carries its ref
``(epoch, shard row)`` and the state is *compact*: the shuffle buffer and the packer's
remainder are stored as refs (and the offset into the first document), read back on restore.
Otherwise the state holds the token arrays themselves.

With ``record_docs`` every batch also says which documents (and which of their tokens) each
row holds (``Rows.docs``, :mod:`hfstream.loader.records`); off, none of it runs.
"""

from __future__ import annotations

import collections
import hashlib
import zlib
from typing import Any, Iterator

import numpy as np

from hfstream.errors import StateError, check_int
from hfstream.loader.batch import Rows
from hfstream.loader.packing import TokenPacker
from hfstream.loader.plain import pack_many, unpack_many
from hfstream.loader.records import DocRecorder, DocsInFlight
from hfstream.loader.shuffle import ShuffleBuffer
from hfstream.source.base import DocBatch, DocumentSource, Ref, require_keys
from hfstream.source.token_cache import TOKEN_DTYPE, TokenCache
from hfstream.tokens.jobs import EncodeJob

STATE_VERSION = 2             # 2: compact (refs) or token form, plain data only; 1 (numpy arrays) still loads
TOKENS_VERSION = 1            # how texts become ids here (part of every token cache key)
TOKEN_BYTES = 4               # bytes per token id in the buffer's budget (uint32 arrays)
ARRAY_OVERHEAD = 112          # bytes of a numpy array object besides its data (for the budget)
LOOKAHEAD = 2                 # batches of texts handed to the tokenizer threads ahead of packing
_MASK64 = (1 << 64) - 1
DEFAULT_WARMUP = 256          # documents in the shuffle buffer before the first one leaves (then it grows)


#: a document as the buffer and the packer hold it: (ref or None, token ids, check), and its
#: DocId with ``record_docs``
Item = tuple[Any, ...]


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
        encoder: an object with ``encode_batch(texts) -> list[np.ndarray]``, ``submit(texts)``
            (tokenizes ahead in the background), ``eos_id`` and ``fingerprint``
            (``hfstream.tokens.encoder.TextEncoder``).
        batch_size: rows per batch (B).
        seq_len: tokens per input row (T); rows hold T+1 tokens.
        shuffle_buffer_size: documents held for shuffling; 0 or 1 disables shuffling.
        shuffle_buffer_bytes: memory budget of the buffer (token array bytes).
        seed: seeds the shuffle buffer's generator.
        shuffle_warmup: documents buffered before the first one leaves; the buffer then grows
            to ``shuffle_buffer_size`` at half the input rate. Default ``min(DEFAULT_WARMUP, size)``:
            the first batch comes quickly, shuffling reaches full strength soon after.
        with_positions: also return per-token position ids (reset after each EOS).
        token_cache: where token ids of documents read before are kept (None: no cache).
        record_docs: each batch's ``Rows.docs`` says which documents its rows hold (records).
        stream: the stream's name in records (default: the source's name).
        lookahead: batches of texts being tokenized ahead of packing (more for small batches).
    """

    def __init__(self, source: DocumentSource, encoder: Any, batch_size: int, seq_len: int,
                 shuffle_buffer_size: int = 10_000, shuffle_buffer_bytes: int = 256 << 20,
                 seed: int = 0, with_positions: bool = False, shuffle_warmup: int | None = None,
                 token_cache: TokenCache | None = None, record_docs: bool = False, stream: str | None = None,
                 lookahead: int = LOOKAHEAD):
        check_int("shuffle_buffer_size", shuffle_buffer_size, 0,
                  "use 0 to disable shuffling, 10_000 is a good default")
        self.source, self.encoder, self.lookahead = source, encoder, lookahead
        self.docs = source.tokenized(token_cache, f"{encoder.fingerprint}:{TOKENS_VERSION}", record_docs)
        self.packer = TokenPacker(batch_size, seq_len, encoder.eos_id, with_positions=with_positions)
        capacity = max(shuffle_buffer_size, 1)
        warmup = min(DEFAULT_WARMUP, capacity) if shuffle_warmup is None else shuffle_warmup
        self.buffer = ShuffleBuffer(capacity, shuffle_buffer_bytes, seed, warmup=warmup)
        self._shuffle = shuffle_buffer_size > 1
        self._batches: Iterator[DocBatch] | None = None
        self._inflight: collections.deque[tuple[dict[str, Any], DocBatch, EncodeJob]] = collections.deque()
        self._packed: collections.deque[Item] = collections.deque()  # the documents in the packer
        self._packed_tokens = 0                # their tokens, EOS included
        self._eos = int(encoder.eos_id is not None)
        self._source_done = False              # the source has no more texts (some may be in flight)
        self._exhausted = False                # ... and they are all packed
        self.num_docs = 0                      # documents tokenized (or read from the token cache)
        self.recorder = DocRecorder(stream or source.name, self._eos) if record_docs else None

    def next_batch(self) -> Rows | None:
        """The next (B, T+1) int64 rows (and positions), or None when the source is done."""
        packer = self.packer
        while not packer.num_ready:
            if self._exhausted:
                return None
            self._read_more()
        out = packer.pop()
        pending, packed = packer.num_pending_tokens, self._packed
        docs = None if self.recorder is None else self.recorder.batch(  # before the popped rows' documents go
            packed, self._packed_tokens - pending - packer.batch_size * (packer.seq_len + 1), packer.batch_size,
            packer.seq_len + 1)
        while packed and self._packed_tokens - len(packed[0][1]) - self._eos >= pending:
            self._packed_tokens -= len(packed.popleft()[1]) + self._eos  # wholly in popped rows
        rows = Rows(*out) if isinstance(out, tuple) else Rows(out)
        rows.docs = docs
        return rows

    def prefetch(self) -> None:
        """Hand the next texts to the tokenizer threads now, without waiting for them (a caller
        running many pipelines primes them all before it needs their first rows)."""
        if self._batches is None:
            self._batches = self.docs.batches()
        inflight = self._inflight
        # A deep lookahead (a virtual shard's: the shards take turns) starts at 1, so that the
        # first rows of many shards do not wait for every shard's first batches to be tokenized.
        limit = self.lookahead if self.num_docs or self.lookahead <= LOOKAHEAD else 1
        while not self._source_done and len(inflight) < limit:
            before = self.docs.state_dict()  # the position a restore goes back to
            batch = next(self._batches, None)
            if batch is None:
                self._source_done = True
            else:
                inflight.append((before, batch, self._submit(batch)))

    def _read_more(self) -> None:
        self.prefetch()
        inflight = self._inflight
        if not inflight:
            # The source is done: empty the buffer, in its random order, one batch at a time
            # (all at once would grow the packer by the whole buffer: 128 MB for 10k documents).
            buffer, packer = self.buffer, self.packer
            while len(buffer) and not packer.num_ready:
                self._pack([buffer.pop()])
            self._exhausted = not len(buffer)
            return
        _, batch, job = inflight.popleft()
        arrays = job.result()
        if batch.texts is not None:
            self.docs.record(batch, arrays)
        ids = None if self.recorder is None else self.recorder.read(batch, arrays, self.num_docs)
        self.num_docs += len(arrays)
        checks = map(_doc_check, arrays) if self.docs.seekable else [0] * len(arrays)
        refs = batch.refs or [None] * len(arrays)
        items = list(zip(refs, arrays, checks) if ids is None else zip(refs, arrays, checks, ids))
        if self._shuffle:
            items = self.buffer.push_many(items, [TOKEN_BYTES * len(a) + ARRAY_OVERHEAD for a in arrays])
        self._pack(items)

    def _pack(self, items: list[Item]) -> None:
        self.packer.add_many([item[1] for item in items])
        for item in items:
            if len(item[1]):  # the packer skips empty documents
                self._packed.append(item)
                self._packed_tokens += len(item[1]) + self._eos

    def _submit(self, batch: DocBatch) -> EncodeJob:
        """Token ids of a batch: from the cache as they are, else the texts on the tokenizer
        threads (the encoder gives whole-document ids for documents of any length)."""
        if batch.tokens is not None:
            return EncodeJob.done(batch.tokens)
        return self.encoder.submit(batch.texts)

    # -- the row-source interface a producer runs ------------------------------------------
    def fingerprint(self) -> str:
        return self.source.fingerprint()

    def stats(self) -> dict[str, Any]:
        buffer = self.buffer
        return {"docs": self.num_docs, "buffer_fill": len(buffer) / buffer.capacity,
                "buffer_bytes": buffer.num_bytes, **self.source.stats()}

    def start(self) -> None:
        if self.docs.start():  # texts will come: build the tokenizer while the worker starts
            self.encoder.prepare()

    def close(self) -> None:
        for _, _, job in self._inflight:
            job.cancel()
        self.docs.flush()
        self.source.close()

    def docs_in_flight(self) -> DocsInFlight:
        """The documents read and not all handed out in batches yet (``record_docs``): in the
        buffer and the packer, and what was read since the last batch."""
        assert self.recorder is not None, "docs_in_flight needs record_docs=True"
        return self.recorder.in_flight(self.buffer.state_dict()["items"], self._packed,
                                       self._packed_tokens - self.packer.num_pending_tokens, self._exhausted)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Exact state: source position, buffer (generator and documents), packer remainder.

        Compact (refs) when the source can seek, else with the token arrays; plain data either
        way (``torch.load`` reads it with its defaults).
        """
        source = self._inflight[0][0] if self._inflight else self.docs.state_dict()
        buffer = self.buffer.state_dict()
        items, sizes = buffer.pop("items"), buffer.pop("sizes")
        state = {"version": STATE_VERSION, "source": source, "exhausted": self._exhausted, "num_docs": self.num_docs}
        if self.recorder is not None:
            state["records"] = self.recorder.state_dict(items, self._packed)
        if not self.docs.seekable:
            return {**state, "form": "tokens", "packer": self.packer.state_dict(),
                    "buffer": {**buffer, "items": pack_many([item[1] for item in items]), "sizes": sizes}}
        self.docs.flush()  # every ref recorded so far can now be read back from the token cache
        packed = list(self._packed)
        return {**state, "form": "refs", "check": sum(item[2] for item in items + packed) & _MASK64,
                "buffer": {**buffer, "refs": _flat([item[0] for item in items])},
                "packer": {"refs": _flat([item[0] for item in packed]), "num_empty_skipped": self.packer.num_empty_skipped,
                           "skip": self._packed_tokens - self.packer.num_pending_tokens}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        require_keys(state, ("version", "source", "buffer", "packer", "exhausted", "num_docs"),
                     "token pipeline state", "TokenPipeline.state_dict()")
        if state["version"] not in (1, STATE_VERSION):
            raise StateError(f"pipeline state version {state.get('version')!r} is not {STATE_VERSION}",
                             "restore with the hfstream version that saved it")
        for _, _, job in self._inflight:
            job.cancel()
        self._inflight.clear()
        self._source_done = False
        self.docs.load_state_dict(state["source"])
        ids = packed_ids = None
        if self.recorder is not None:
            ids, packed_ids, lengths = self.recorder.load_state_dict(state.get("records"))
        if state.get("form") == "refs":
            self._load_refs(state, ids, packed_ids)
        else:
            buffer = dict(state["buffer"])
            buffer["items"] = _with_ids([(None, a, 0) for a in unpack_many(buffer["items"])], ids)
            self.buffer.load_state_dict(buffer)
            self.packer.load_state_dict(state["packer"])
            # the packer keeps its tokens; with records, which documents they are (lengths only)
            self._packed = collections.deque(_with_ids(
                [(None, np.broadcast_to(np.uint32(0), (n,)), 0) for n in lengths], packed_ids)
                if packed_ids is not None else ())
            self._packed_tokens = sum(len(item[1]) + self._eos for item in self._packed)
        self._exhausted = state["exhausted"]
        self._batches = None
        self.num_docs = state["num_docs"]

    def _load_refs(self, state: dict[str, Any], ids: list[Any] | None, packed_ids: list[Any] | None) -> None:
        """Read the buffered documents and the packer's remainder again by their refs."""
        if not self.docs.seekable:
            raise StateError(f"the state stores documents by position, but {self.source.name} cannot seek",
                             "restore it into a loader over the same dataset (local files)")
        buffer, packer = dict(state["buffer"]), state["packer"]
        held, packed = _pairs(buffer.pop("refs")), _pairs(packer["refs"])
        arrays = self.docs.fetch(held + packed, self.encoder.encode_batch)
        checks = list(map(_doc_check, arrays))
        if sum(checks) & _MASK64 != state["check"]:
            raise StateError(f"the documents read back for the saved state differ from the saved ones "
                             f"({self.source.name} changed since it was saved)",
                             "restore with the same data files and tokenizer")
        self.buffer.load_state_dict({**buffer, "items": _with_ids(list(zip(held, arrays[:len(held)], checks)), ids),
                                     "sizes": [TOKEN_BYTES * len(a) + ARRAY_OVERHEAD for a in arrays[:len(held)]]})
        self._packed = collections.deque(_with_ids(list(zip(packed, arrays[len(held):], checks[len(held):])),
                                                   packed_ids))
        self._packed_tokens = sum(len(item[1]) + self._eos for item in self._packed)
        parts, positions = [], []
        for array in (item[1] for item in self._packed):  # the packed stream: doc EOS doc EOS ...
            parts += [array.astype(np.int64)] + ([np.array([self.encoder.eos_id], np.int64)] if self._eos else [])
            positions.append(np.arange(len(array) + self._eos))
        tokens = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        position_ids = np.concatenate(positions) if positions else np.zeros(0, np.int64)
        skip = packer["skip"]
        p = self.packer
        self.packer.load_state_dict({"batch_size": p.batch_size, "seq_len": p.seq_len, "eos_id": p.eos_id,
                                     "with_positions": p.with_positions, "tokens": tokens[skip:],
                                     "positions": position_ids[skip:] if p.with_positions else [],
                                     "num_empty_skipped": packer["num_empty_skipped"]})


def _with_ids(items: list[Item], ids: list[Any] | None) -> list[Item]:
    """Items with their DocIds (records), or as they are."""
    return items if ids is None else [(*item, doc) for item, doc in zip(items, ids)]


def _flat(refs: list[Any]) -> list[int]:
    """Refs ``[(e, r), ...]`` as one flat list of ints ``[e, r, ...]`` (small in a pickle)."""
    return [int(x) for ref in refs for x in ref]


def _pairs(flat: list[int]) -> list[Ref]:
    return list(zip(flat[0::2], flat[1::2]))


def _doc_check(array: np.ndarray) -> int:
    """A document's check: its length and a CRC-32 of its first 64 ids. The state holds their sum
    (kept with each document, so saving costs no pass over the tokens); a restore that reads
    other documents back (the data changed) gets another sum."""
    return len(array) << 32 | zlib.crc32(np.ascontiguousarray(array[:64], TOKEN_DTYPE).data)
