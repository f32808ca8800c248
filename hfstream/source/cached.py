"""CachedCorpus: a corpus's documents with refs, served from the token cache where it has them, else read by the worker and written to it.

The cache is a side effect, never a conversion step: the first pass reads texts from the worker
as always, the pipeline tokenizes them and hands the ids back (``record``), and they are
written in chunks keyed by the stream (:func:`stream_key`: the files' identities, the options
that shape the row stream, the tokenizer). Later passes, and later runs, find the chunks that
cover their position and read ids memory-mapped: no worker, no text, no tokenizer. Where no
chunk covers the position the worker starts there; after each worker batch the cache is
looked at again. Positions are the corpus's own ``(epoch, row, delivered)``, so states load
into a corpus without a cache and back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import defaultdict
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import orjson

from hfstream.errors import StateError
from hfstream.source.base import DocBatch, Ref, TokenDocuments
from hfstream.source.ids import end_marker, identify
from hfstream.source.resolve import Resolved
from hfstream.source.spec import SourceSpec
from hfstream.source.token_cache import TOKEN_DTYPE, Chunk, ChunkName, TokenCache

log = logging.getLogger("hfstream.source.cached")
KEY_VERSION = 1
CHUNK_TOKENS = 4 << 20        # tokens per chunk written (16 MB)
DOCS_PER_BATCH = 256          # documents per batch read from the cache
#: the options that shape a shard's row stream (not limits: max_samples, epochs)
STREAM_FIELDS = ("split", "name", "data_files", "text_column", "min_length", "shard", "num_shards", "shard_by",
                 "strict", "sample_by", "encoding_errors", "format", "reader")
_SHA = re.compile(r"[0-9a-f]{40}")


def stream_identity(spec: SourceSpec, resolved: Resolved) -> dict[str, Any] | None:
    """What the data is: local files by path, size and modification time; a hub dataset by its
    commit sha (``revision``). None when it has no stable identity (a hub branch, a URL, ws://)."""
    if resolved.kind == "local":
        files = []
        for path in resolved.files:
            stat = os.stat(path)
            files.append([os.path.abspath(path), stat.st_size, stat.st_mtime_ns])
        return {"files": files, "format": resolved.format}
    if resolved.kind == "hub" and spec.revision is not None and _SHA.fullmatch(spec.revision):
        return {"hub": spec.dataset, "revision": spec.revision}
    return None


def stream_key(identity: dict[str, Any], spec: SourceSpec, epoch: int, key: str, shard_mode: str | None) -> str:
    """The cache key of the shard's stream in ``epoch`` (the same for every epoch unless the
    file order is shuffled per epoch), tokenized by ``key``. ``shard_mode`` is the corpus state's:
    a fresh reader's choice follows from the spec and the files, but a state from before row-group
    sharding (``legacy``) counts the shard's rows another way."""
    shuffled = spec.seed is not None and len(identity.get("files", ())) > 1
    legacy = shard_mode == "legacy" and spec.num_shards > 1
    ident = {"v": KEY_VERSION, "data": identity, "options": {f: getattr(spec, f) for f in STREAM_FIELDS},
             "order": [spec.seed, epoch] if shuffled else None, "tokens": key, "legacy_rows": legacy}
    return hashlib.sha1(orjson.dumps(ident, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


class CachedCorpus(TokenDocuments):
    """A corpus's documents as :class:`~hfstream.source.base.TokenDocuments` (seekable).

    Args:
        corpus: the HuggingFaceStreamingCorpus (its public position and ``stream_located``).
        cache: the token cache, or None (refs and re-reading only).
        key: the tokenizer's fingerprint (what the ids are made by).
        identified: batches carry ids and reads (records), and a finished stream ends with an
            empty batch saying where it stopped.
    """

    seekable = True

    def __init__(self, corpus: Any, cache: TokenCache | None, key: str, identified: bool = False):
        self.corpus, self.cache, self.key, self.identified = corpus, cache, key, identified
        self.spec: SourceSpec = corpus.spec
        self.identity = stream_identity(corpus.spec, corpus.resolved)
        self._state = corpus.state_dict()   # the position, in the corpus's own format
        self._live: Iterator[Any] | None = None  # the corpus's batches while it reads for us
        self._keys: dict[int, str] = {}
        self._writer = _ChunkWriter(self) if cache is not None else None
        self.num_cached_docs = 0            # documents served from the cache (this process)

    def key_of(self, epoch: int) -> str:
        k = self._keys.get(epoch)
        if k is None:
            k = self._keys[epoch] = stream_key(self.identity or {}, self.spec, epoch, self.key,
                                               self._state.get("shard_mode"))
        return k

    # -- position ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.corpus.load_state_dict(state)   # validates it
        self._state = self.corpus.state_dict()
        self._live = None
        self._keys.clear()                   # the state may count rows another way (legacy)

    def start(self) -> bool:
        """Start the worker unless the cache has what comes first; True when texts will come."""
        if self._state["finished"] or self._covering(self._state["epoch"], self._state["row"], 0.0) is not None:
            return False
        self.corpus.start()  # the corpus stands at self._state (see _from_worker)
        return True

    def _move(self, epoch: int, row: int, delivered: int, finished: bool = False) -> None:
        self._state.update(epoch=epoch, row=row, delivered=delivered, finished=finished)

    # -- reading -----------------------------------------------------------------------------
    def batches(self) -> Iterator[DocBatch]:
        """Batches from the current position: token ids from the cache, texts from the worker."""
        shard, num_shards = self.spec.shard, self.spec.num_shards
        while not self._state["finished"]:
            chunk = self._covering(self._state["epoch"], self._state["row"], 0.0)
            batches = self._from_chunk(chunk) if chunk is not None else self._from_worker()
            yield from (identify(b, shard, num_shards) for b in batches) if self.identified else batches
        if self.identified:
            yield end_marker(shard, num_shards, self._state["epoch"], self._state["row"])

    def _covering(self, epoch: int, row: int, max_age_s: float) -> Chunk | None:
        if self.cache is None:
            return None
        key = self.key_of(epoch)
        name = self.cache.find(key, row, max_age_s)
        return None if name is None else self.cache.open(key, name)

    def _from_chunk(self, chunk: Chunk) -> Iterator[DocBatch]:
        epoch, row, delivered = self._state["epoch"], self._state["row"], self._state["delivered"]
        self.corpus.close()  # its worker, if one is reading ahead (a no-op otherwise)
        self._live = None
        limit = self.spec.max_samples
        if limit is not None and delivered >= limit:
            self._move(epoch, row, delivered, True)
            return
        i, n = int(np.searchsorted(chunk.rows, row)), len(chunk)
        while i < n:
            j = min(i + DOCS_PER_BATCH, n)
            if limit is not None:
                j = min(j, i + limit - delivered)
            ids, offsets = chunk.tokens, chunk.offsets[i:j + 1].tolist()
            tokens = [ids[a:b] for a, b in zip(offsets, offsets[1:])]
            refs = [(epoch, r) for r in chunk.rows[i:j].tolist()]
            delivered += j - i
            end = chunk.name.row_end if j == n else int(chunk.rows[j - 1]) + 1
            self._move(epoch, end, delivered, limit is not None and delivered >= limit)
            self.num_cached_docs += j - i
            yield DocBatch(tokens=tokens, refs=refs, start=(epoch, row), end=(epoch, end))
            if self._state["finished"]:
                return
            i, row = j, end
        self._move(epoch, chunk.name.row_end, delivered)
        if chunk.name.epoch_end:
            last = self.spec.epochs is not None and epoch + 1 >= self.spec.epochs
            self._move(epoch + 1, 0, delivered, last)

    def _from_worker(self) -> Iterator[DocBatch]:
        if self._live is None:
            if _where(self.corpus.state_dict()) != _where(self._state):
                self.corpus.load_state_dict(self._state)
            self._live = self.corpus.stream_located()
        start = (self._state["epoch"], self._state["row"])
        for epoch, rows, end, texts in self._live:
            self._state = self.corpus.state_dict()
            if self._writer is not None and epoch != start[0]:
                self._writer.epoch_ended(start)
            yield DocBatch(texts=texts, refs=[(epoch, r) for r in rows], start=start, end=(epoch, end))
            start = (epoch, end)
            if self._covering(epoch, end, 1.0) is not None:
                return  # the cache has what follows: stop the worker (in _from_chunk)
        self._state = self.corpus.state_dict()
        self._live = None
        if self._writer is not None and self._state["epoch"] != start[0]:
            self._writer.epoch_ended(start)

    # -- writing -----------------------------------------------------------------------------
    def record(self, batch: DocBatch, arrays: list[np.ndarray]) -> None:
        """The ids of a batch of texts this view gave out, in order: written to the cache."""
        if self._writer is not None:
            self._writer.add(batch, arrays)

    def flush(self) -> None:
        """Commit the chunk being written, so that every ref recorded so far can be read back."""
        if self._writer is not None:
            self._writer.commit()

    # -- reading again -----------------------------------------------------------------------
    def fetch(self, refs: Sequence[Ref], encode: Callable[[list[str]], list[np.ndarray]]) -> list[np.ndarray]:
        """The token ids of the documents at ``refs``: from the cache, else read again and tokenized.

        Raises:
            StateError: a document is not where its ref says (the data changed).
        """
        out: list[np.ndarray | None] = [None] * len(refs)
        missing = self._fetch_cached(refs, out) if self.cache is not None else list(range(len(refs)))
        if missing:
            wanted = {refs[i] for i in missing}
            log.warning("reading %d documents of %s again from the source (the token cache does not hold "
                        "them): restoring takes longer", len(wanted), self.spec.dataset)
            texts = self._read_again(wanted)
            arrays = encode([texts[refs[i]] for i in missing])
            for i, array in zip(missing, arrays):
                out[i] = np.asarray(array, TOKEN_DTYPE)
        return out  # type: ignore[return-value]

    def _fetch_cached(self, refs: Sequence[Ref], out: list[np.ndarray | None]) -> list[int]:
        """Fill ``out`` from the cache (chunk by chunk, vectorized); returns the indices it lacks."""
        cache = self.cache
        assert cache is not None
        by_key: dict[str, list[int]] = defaultdict(list)
        for i, (epoch, _) in enumerate(refs):
            by_key[self.key_of(epoch)].append(i)
        missing: list[int] = []
        for key, indices in by_key.items():
            rows = np.array([refs[i][1] for i in indices], np.int64)
            todo = np.ones(len(indices), bool)
            for name in sorted(cache.names(key), key=lambda n: n.row_start - n.row_end):  # the longest first
                where = np.flatnonzero(todo & (rows >= name.row_start) & (rows < name.row_end))
                chunk = cache.open(key, name) if len(where) else None
                if chunk is None or not len(chunk):
                    continue
                at = np.minimum(np.searchsorted(chunk.rows, rows[where]), len(chunk) - 1)
                found = chunk.rows[at] == rows[where]
                at, where = at[found], where[found]
                starts, ends = chunk.offsets[at].tolist(), chunk.offsets[at + 1].tolist()
                for k, a, b in zip(where.tolist(), starts, ends):
                    out[indices[k]] = chunk.tokens[a:b]
                todo[where] = False
            missing += [indices[k] for k in np.flatnonzero(todo).tolist()]
        return sorted(missing)

    def _read_again(self, wanted: set[Ref]) -> dict[Ref, str]:
        first, last = min(wanted), max(wanted)
        state = {**self._state, "epoch": first[0], "row": first[1], "delivered": 0, "finished": False}
        self.corpus.load_state_dict(state)
        found: dict[Ref, str] = {}
        for epoch, rows, _, texts in self.corpus.stream_located():
            found.update(((epoch, r), t) for r, t in zip(rows, texts) if (epoch, r) in wanted)
            if rows and (epoch, rows[-1]) >= last:
                break
        self.corpus.close()
        self._live = None
        if len(found) < len(wanted):
            raise StateError(f"{len(wanted) - len(found)} documents of the saved state are no longer at their "
                             f"place in {self.spec.dataset!r} (first: epoch {min(wanted - found.keys())[0]}, "
                             f"row {min(wanted - found.keys())[1]})",
                             "the data changed since the state was saved: restore it with the same files")
        return found


def _where(state: dict[str, Any]) -> tuple[Any, ...]:
    return state["epoch"], state["row"], state["delivered"], state["finished"]


class _ChunkWriter:
    """Collects the ids of the documents a CachedCorpus gave out and writes them as chunks."""

    def __init__(self, docs: CachedCorpus):
        self.docs = docs
        self.epoch = self.row_start = self.row_end = -1
        self.rows: list[int] = []
        self.arrays: list[np.ndarray] = []
        self.num_tokens = 0
        self.ends: dict[int, int] = {}     # epoch -> the row its last batch ended at
        self.written = 0                   # bytes written by this writer
        self.enabled = True

    def epoch_ended(self, last: Ref) -> None:
        self.ends[last[0]] = last[1]

    def add(self, batch: DocBatch, arrays: list[np.ndarray]) -> None:
        epoch, end = batch.end  # type: ignore[misc]
        start = batch.start[1] if batch.start[0] == epoch else 0  # type: ignore[index]
        if self.rows and (self.epoch != epoch or self.row_end != start):
            self.commit()
        if not self.rows:
            self.epoch, self.row_start = epoch, start
        self.rows.extend(r for _, r in batch.refs)  # type: ignore[union-attr]
        self.arrays.extend(arrays)
        self.num_tokens += sum(map(len, arrays))
        self.row_end = end
        if self.num_tokens >= CHUNK_TOKENS:
            self.commit()

    def commit(self) -> None:
        if not self.rows:
            return
        name = ChunkName(self.row_start, self.row_end, self.ends.get(self.epoch) == self.row_end)
        rows, arrays = self.rows, self.arrays
        self.rows, self.arrays, self.num_tokens = [], [], 0
        self.row_start = self.row_end
        cache, key = self.docs.cache, self.docs.key_of(self.epoch)
        if not self.enabled or cache is None or cache.covered(key, name.row_start, name.row_end):
            return
        if self.written > cache.budget // 2:
            log.warning("token cache: %s needs more than half the cache budget (%s bytes): not caching the rest "
                        "(raise it with HFSTREAM_TOKEN_CACHE_BYTES or token_cache_bytes=)", self.docs.spec.dataset,
                        f"{cache.budget:,}")
            self.enabled = False
            return
        spec = self.docs.spec
        about = {"dataset": spec.dataset, "shard": f"{spec.shard}/{spec.num_shards}", "tokenizer": self.docs.key}
        try:
            self.written += cache.write(key, name, rows, arrays, about)
        except OSError as exc:
            log.warning("token cache: cannot write to %s (%s): not caching", cache.root, exc)
            self.enabled = False
