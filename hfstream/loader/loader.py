"""StreamingTextDataLoader: (B, T) token batches for training, from any text stream, resumable."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from hfstream.errors import ConfigError, StateError
from hfstream.loader.pipeline import IterableSource, TokenPipeline

log = logging.getLogger("hfstream.loader")
STATE_VERSION = 1
_END = object()


class Batch:
    """One training batch: ``inputs, targets = batch`` (int64, (B, T)); ``positions`` optional."""

    __slots__ = ("inputs", "targets", "positions", "stream_ids", "source_rows")

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None,
                 source_rows: tuple | None = None, stream_ids: torch.Tensor | None = None):
        self.inputs, self.targets, self.positions = inputs, targets, positions
        self.stream_ids = stream_ids    # (B,): each row's stream, with a token mixture
        self.source_rows = source_rows  # the packer's (B, T+1) rows (+ positions, ids) it came from

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.inputs, self.targets))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> torch.Tensor:
        return (self.inputs, self.targets)[i]

    def to(self, device: Any, non_blocking: bool = True) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(move(self.inputs), move(self.targets), move(self.positions), self.source_rows,
                     self.stream_ids)

    def __repr__(self) -> str:
        return f"Batch(inputs={tuple(self.inputs.shape)}, targets={tuple(self.targets.shape)})"


def rows_to_batch(rows: np.ndarray, positions: np.ndarray | None, pin_memory: bool,
                  stream_ids: np.ndarray | None = None) -> Batch:
    """(B, T+1) rows -> inputs (B, T) = rows[:, :-1], targets (B, T) = rows[:, 1:]."""
    # (B, T+1) -> 2 x (B, T); numpy copies cost half of torch's slicing + contiguous()
    inputs = torch.from_numpy(np.ascontiguousarray(rows[:, :-1]))
    targets = torch.from_numpy(np.ascontiguousarray(rows[:, 1:]))
    pos = None if positions is None else torch.from_numpy(positions[:, :-1].copy())
    if pin_memory:
        inputs, targets = inputs.pin_memory(), targets.pin_memory()
        pos = None if pos is None else pos.pin_memory()
    ids = None if stream_ids is None else torch.from_numpy(stream_ids)
    return Batch(inputs, targets, pos, source_rows=(rows, positions, stream_ids), stream_ids=ids)


class StreamingTextDataLoader:
    """Iterate (B, T) token batches drawn from a stream of documents.

    A background thread reads documents, tokenizes them on the tokenizer threads (the next
    group while the current one is packed), shuffles the token arrays in a bounded buffer
    (documents and bytes) and packs them, with an EOS after each document, into rows of
    ``seq_len + 1``; ``prefetch`` batches are kept ready.

    Args:
        source: a ``HuggingFaceStreamingCorpus``, a dataset name/path (a corpus is built with
            ``**corpus_options``), or any iterable of strings (a list restores exactly).
        tokenizer: path to ``tokenizer.json`` (or its directory), a ``tokenizers.Tokenizer``,
            or a ``TextEncoder``.
        batch_size: rows per batch (B).
        seq_len: tokens per row (T).
        shuffle_buffer_size: documents in the shuffle buffer; 0 disables shuffling.
        seed: seeds the shuffle buffer.
        shuffle_warmup: documents buffered before the first leaves (default ``min(1000,
            shuffle_buffer_size)``); the buffer then grows to full size at half the input rate.
        shuffle_buffer_bytes: memory budget of the shuffle buffer.
        prefetch: batches kept ready ahead of the consumer (refilled from half-empty in one go).
        pin_memory: put batches in pinned memory (for fast host-to-GPU copies).
        device: move each batch there (non-blocking) before yielding it.
        backend: tokenizer backend, ``auto`` | ``tokenizers`` | ``tiktoken``.
        eos_token: the separator token (default: found in the vocabulary, e.g. ``<|endoftext|>``).
        with_positions: batches carry ``positions`` (B, T): position ids that restart at each
            document, for document-masked attention.
        num_workers: 0 runs the pipeline in a thread of this process; N > 0 runs N torch
            DataLoader worker processes, each with its own corpus on a disjoint shard (needs a
            dataset name as ``source``). Resume is exact in both modes.
        state_every: with workers, each worker attaches its full state to every
            ``state_every``-th batch; a restore replays at most that many batches per worker.
        mix_by: for a list of streams: ``samples`` mixes documents (mosaic counting, random
            order), ``tokens`` mixes training rows with budgets in tokens (``choose``, ``epoch_size``)
            and makes ``batching_method`` hold on every batch.
        epoch_size, batching_method: mixture options (see ``hfstream.mixing``).
        wrap_source: with ``mix_by="tokens"``, applied to each stream's source (the trainer uses
            it to exclude held-out documents).
        **corpus_options: passed to ``HuggingFaceStreamingCorpus`` when ``source`` is a name
            (``shard``/``num_shards`` also place a mixture under DDP).

    Example::

        loader = StreamingTextDataLoader("builtin:python-docs", "tok/tokenizer.json", 8, 256, epochs=None)
        for step, (inputs, targets) in zip(range(1000), loader):
            loss = model(inputs, targets)
        torch.save(loader.state_dict(), "loader.pt")
    """

    def __init__(self, source: Any, tokenizer: Any, batch_size: int, seq_len: int,
                 shuffle_buffer_size: int = 10_000, seed: int = 0, *,
                 shuffle_buffer_bytes: int = 256 << 20, prefetch: int = 8, pin_memory: bool = False,
                 device: Any = None, backend: str = "auto", eos_token: str | None = None,
                 with_positions: bool = False, shuffle_warmup: int | None = None, num_workers: int = 0,
                 state_every: int = 256, multiprocessing_context: str | None = None,
                 mix_by: str = "samples", epoch_size: int | str | None = None,
                 batching_method: str = "random", wrap_source: Any = None, **corpus_options: Any):
        from hfstream.tokens.encoder import TextEncoder

        for key, value in (("batch_size", batch_size), ("seq_len", seq_len), ("prefetch", prefetch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be an integer >= 1, got {value!r}", f"pass {key} >= 1")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}", "pass seed=0 (or any int)")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"num_workers must be an integer >= 0, got {num_workers!r}",
                              "0 runs in a thread; N > 0 uses N DataLoader worker processes")
        if num_workers and not isinstance(source, str):
            raise ConfigError(f"num_workers={num_workers} needs a dataset name or path as source, "
                              f"got {type(source).__name__}",
                              "each worker process opens its own shard: pass the dataset name and corpus options")
        self.num_workers = num_workers
        if num_workers:
            from hfstream.source.spec import make_spec

            self.source, self._owns_source = None, False
            self._spec = make_spec(source, **corpus_options)  # validates the options here
        mixture = isinstance(source, (list, tuple)) and bool(source) and not isinstance(source[0], str)
        if mixture and mix_by not in ("samples", "tokens"):
            raise ConfigError(f"mix_by={mix_by!r} is not valid", "use 'samples' (documents) or 'tokens'")
        row_mix = mixture and mix_by == "tokens"
        if mixture and not row_mix:
            if batching_method != "random":
                raise ConfigError(f"batching_method={batching_method!r} with mix_by='samples'",
                                  "batch composition is defined on training rows: use mix_by='tokens' "
                                  "(budgets in tokens), or batching_method='random'")
            from hfstream.mixing.streams import MixedSource

            source = MixedSource(list(source), epoch_size=epoch_size, seed=seed,
                                 rank=corpus_options.pop("shard", 0),
                                 world_size=corpus_options.pop("num_shards", 1),
                                 epochs=corpus_options.pop("epochs", 1))
        if row_mix:
            self.source, self._owns_source = None, True
        elif not num_workers:
            self.source, owned = _as_source(source, corpus_options)
            self._owns_source = owned or mixture
            if hasattr(self.source, "start"):
                self.source.start()  # the worker opens the dataset while the tokenizer loads
        if isinstance(tokenizer, TextEncoder):
            self.encoder = tokenizer
        else:
            self.encoder = TextEncoder(tokenizer, backend=backend, eos_token=eos_token)
        if self.encoder.eos_id is None:
            raise ConfigError("the tokenizer has no end-of-text token to separate documents",
                              "pass eos_token='<|endoftext|>' (or whichever special token it has)")
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.shuffle_buffer_size = shuffle_buffer_size
        if pin_memory and not torch.cuda.is_available():
            log.warning("pin_memory=True but no CUDA device is available: batches stay in pageable memory")
            pin_memory = False
        self.prefetch, self.pin_memory = prefetch, pin_memory
        self.device = torch.device(device) if device is not None else None
        if num_workers:
            from hfstream.loader.workers import StreamingTextDataset, WorkerTracker

            self.pipeline = None
            self._dataset = StreamingTextDataset(source, self.encoder, batch_size, seq_len, shuffle_buffer_size,
                                                 seed, shuffle_buffer_bytes=shuffle_buffer_bytes,
                                                 shuffle_warmup=shuffle_warmup, with_positions=with_positions,
                                                 state_every=state_every, **corpus_options)
            self._tracker = WorkerTracker(num_workers)
            self._mp_context = multiprocessing_context
            self._dl_iter: Any = None
        elif row_mix:
            from hfstream.loader.row_mixer import RowMixer

            self.pipeline = self.source = RowMixer(
                list(source), self.encoder, batch_size, seq_len, epoch_size=epoch_size, seed=seed,
                batching_method=batching_method, rank=corpus_options.pop("shard", 0),
                world_size=corpus_options.pop("num_shards", 1), epochs=corpus_options.pop("epochs", None),
                shuffle_buffer_size=shuffle_buffer_size, shuffle_buffer_bytes=shuffle_buffer_bytes,
                shuffle_warmup=shuffle_warmup, with_positions=with_positions, wrap_source=wrap_source)
            if corpus_options:
                raise ConfigError(f"options {sorted(corpus_options)} do not apply to a mixture as a whole",
                                  "put source options on each stream: Stream(dataset, text_column=...)")
            self.source.start()
        else:
            self.pipeline = TokenPipeline(self.source, self.encoder, batch_size, seq_len,
                                          shuffle_buffer_size, shuffle_buffer_bytes, seed, with_positions,
                                          shuffle_warmup)
        self._ready: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._low_water = prefetch // 2       # the producer refills once the queue is this low
        self._consumer_waiting = False
        self._work = threading.Lock()      # held by the producer while it advances the pipeline
        self._thread: threading.Thread | None = None
        self._stop = False
        self._reset_metrics()

    # -- iteration ------------------------------------------------------------------------
    def __iter__(self) -> "StreamingTextDataLoader":
        return self

    def __next__(self) -> Batch:
        t0 = time.perf_counter()
        if self._t_first is None:
            self._t_first = t0
        if self.num_workers:
            return self._next_from_workers(t0)
        if self._thread is None:
            self._start()
        with self._cond:
            while not self._ready:
                self._consumer_waiting = True
                self._cond.wait()
                self._consumer_waiting = False
            item = self._ready[0]
            if item is not _END and not isinstance(item, BaseException):
                self._ready.popleft()
                if len(self._ready) <= self._low_water:  # wake the producer only to refill
                    self._cond.notify_all()
        self._wait_s += time.perf_counter() - t0
        if item is _END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        self._batches += 1
        batch = item if self.device is None else item.to(self.device)
        self._t_last = time.perf_counter()
        return batch

    def start(self) -> None:
        """Start preparing batches now, so that the first ``next()`` finds them ready."""
        if self.num_workers:
            self._start_workers()
        elif self._thread is None:
            self._start()

    def _start_workers(self) -> None:
        if self._dl_iter is None:
            from torch.utils.data import DataLoader

            from hfstream.loader.workers import as_is

            # as_is: items are tensors already; torch's default conversion would also turn the
            # numpy arrays of every anchor state into tensors.
            self._dl_iter = iter(DataLoader(self._dataset, batch_size=None, num_workers=self.num_workers,
                                            prefetch_factor=self.prefetch, pin_memory=self.pin_memory,
                                            multiprocessing_context=self._mp_context, collate_fn=as_is))

    def _next_from_workers(self, t0: float) -> Batch:
        self._start_workers()
        item = self._tracker.next_batch(self._dl_iter)
        if item is None:  # every worker's shard is done
            raise StopIteration
        self._wait_s += time.perf_counter() - t0
        self._batches += 1
        batch = Batch(item["inputs"], item["targets"], item.get("positions"))
        batch = batch if self.device is None else batch.to(self.device)
        self._t_last = time.perf_counter()
        return batch

    def _start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._produce, daemon=True, name="hfstream-loader")
        self._thread.start()

    def _produce(self) -> None:
        # Hysteresis: once the queue is full, wait until it is down to the low-water mark and
        # then refill it in one go, instead of waking up (and trading the GIL) for every batch.
        try:
            while True:
                with self._cond:
                    if len(self._ready) >= self.prefetch:
                        while len(self._ready) > self._low_water and not self._stop:
                            self._cond.wait()
                if self._stop:
                    return
                with self._work:
                    if self._stop:
                        return
                    out = self.pipeline.next_batch()
                    item = _END if out is None else rows_to_batch(*_split(out), self.pin_memory,
                                                                  *_ids(out))
                    with self._cond:
                        self._ready.append(item)
                        if self._consumer_waiting or item is _END:
                            self._cond.notify_all()
                if item is _END:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, with its context
            with self._cond:
                self._ready.append(exc)
                self._cond.notify_all()

    def _halt(self) -> None:
        """Stop the producer thread at its next consistent point (or the DataLoader workers)."""
        if self.num_workers:
            if self._dl_iter is not None:
                self._dl_iter._shutdown_workers()  # ends each worker (and its corpus subprocess)
                self._dl_iter = None
            return
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        thread.join()
        self._thread = None

    # -- state ----------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What a saved state must match: the data, the tokenizer and the shape settings."""
        source = self._spec if self.num_workers else getattr(self.source, "spec", None)
        return {"source": source.fingerprint() if source is not None else self.source.fingerprint(),
                "dataset": source.dataset if source is not None else type(self.source).__name__,
                "tokenizer": self.encoder.fingerprint, "batch_size": self.batch_size,
                "seq_len": self.seq_len, "seed": self.seed,
                "shuffle_buffer_size": self.shuffle_buffer_size, "num_workers": self.num_workers}

    def state_dict(self) -> dict[str, Any]:
        """The exact state after the last batch returned: restoring it reproduces what follows.

        Batches already prepared ahead of the consumer are part of the state (as token rows),
        so the producer never has to be rewound.
        """
        if self.num_workers:
            return {"version": STATE_VERSION, "fingerprint": self.fingerprint(),
                    "workers": self._tracker.state_dict(), "batches": self._batches_before + self._batches}
        with self._work, self._cond:
            queued = [item for item in self._ready if isinstance(item, Batch)]
            ended = any(item is _END for item in self._ready)
            return {"version": STATE_VERSION, "fingerprint": self.fingerprint(),
                    "pipeline": self.pipeline.state_dict(),
                    "queued": [b.source_rows for b in queued], "ended": ended,
                    "batches": self._batches_before + self._batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where ``state`` was saved.

        Raises:
            StateError: a state of another dataset, tokenizer, seq_len, batch size or seed.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise StateError("not a StreamingTextDataLoader state (or of another hfstream version)",
                             "pass the dict returned by StreamingTextDataLoader.state_dict()")
        mine, theirs = self.fingerprint(), state.get("fingerprint", {})
        diff = [k for k in mine if mine[k] != theirs.get(k)]
        if diff:
            detail = ", ".join(f"{k}: saved {theirs.get(k)!r}, now {mine[k]!r}" for k in diff)
            raise StateError(f"the loader state was saved for another setup ({detail})",
                             "restore into a loader with the same dataset, tokenizer, batch_size, "
                             "seq_len, seed and shuffle_buffer_size")
        self._halt()
        self._batches_before = state.get("batches", 0)  # metrics count this process's batches only
        if self.num_workers:
            self._tracker.load_state_dict(state["workers"], self._dataset)
            return
        self.pipeline.load_state_dict(state["pipeline"])
        with self._cond:
            self._ready.clear()
            for rows, positions, ids in state["queued"]:
                self._ready.append(rows_to_batch(np.asarray(rows, dtype=np.int64),
                                                 None if positions is None else np.asarray(positions, dtype=np.int64),
                                                 self.pin_memory, ids))
            if state.get("ended"):
                self._ready.append(_END)

    # -- metrics --------------------------------------------------------------------------
    def _reset_metrics(self) -> None:
        self._batches = 0
        self._batches_before = 0  # batches of earlier runs, from a restored state
        self._wait_s = 0.0
        self._t_first: float | None = None
        self._t_last: float | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        """Throughput and health, measured from the first ``next()``."""
        elapsed = (self._t_last or 0.0) - (self._t_first or 0.0)
        batches = self._batches
        tokens = batches * self.batch_size * self.seq_len
        workers = self.num_workers
        docs = sum(self._tracker.docs.values()) if workers else self.pipeline.num_docs
        buffer = None if workers else self.pipeline.buffer
        return {"batches": batches, "tokens": tokens, "docs": docs, "elapsed_s": elapsed,
                "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
                "docs_per_s": docs / elapsed if elapsed > 0 else 0.0,
                "buffer_fill": None if buffer is None else len(buffer) / buffer.capacity,
                "buffer_bytes": None if buffer is None else buffer.num_bytes,
                "data_wait_s": self._wait_s,
                "data_wait_frac": self._wait_s / elapsed if elapsed > 0 else 0.0}

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.encoder.vocab_size

    def close(self) -> None:
        """Stop the background thread and the source's worker (if this loader created it)."""
        self._halt()
        if self._owns_source and hasattr(self.source, "close"):
            self.source.close()

    def __enter__(self) -> "StreamingTextDataLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _split(out: Any) -> tuple[np.ndarray, np.ndarray | None]:
    return out[:2] if isinstance(out, tuple) else (out, None)


def _ids(out: Any) -> tuple[np.ndarray, ...]:
    return out[2:] if isinstance(out, tuple) else ()


def _as_source(source: Any, corpus_options: dict[str, Any]) -> tuple[Any, bool]:
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    if isinstance(source, str):
        # Batches of 256 documents: tokenization starts sooner and overlaps reading more finely.
        return HuggingFaceStreamingCorpus(source, **{"batch_size": 256, **corpus_options}), True
    if corpus_options:
        raise ConfigError(f"corpus options {sorted(corpus_options)} given with a ready-made source",
                          "pass them to HuggingFaceStreamingCorpus(...) instead, or pass the dataset name")
    if hasattr(source, "stream_batches") and hasattr(source, "state_dict"):
        return source, False
    if isinstance(source, Iterable):
        return IterableSource(source), True
    raise ConfigError(f"source must be a dataset name, a corpus or an iterable of str, got {type(source).__name__}",
                      "pass e.g. 'builtin:python-docs' or HuggingFaceStreamingCorpus(...)")
