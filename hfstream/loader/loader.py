"""StreamingTextDataLoader: (B, T) token batches for training, from any text stream, resumable.

The loader validates its settings, builds the tokenizer, and picks its producer once
(:mod:`hfstream.loader.producers`): a token pipeline or a token mixture in a background
thread, or pipelines in DataLoader worker processes. Iterating, metrics, moving batches to a
device and the fingerprinted state are the same whichever it picked.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import torch

from hfstream.errors import ConfigError, StateError, check_int
from hfstream.loader.batch import Batch, Rows, rows_to_batch
from hfstream.loader.elastic import elastic_producer
from hfstream.loader.pipeline import TokenPipeline
from hfstream.loader.producers import Producer, ThreadProducer
from hfstream.loader.records import DocsInFlight
from hfstream.loader.row_mixer import RowMixer
from hfstream.loader.workers import WorkerProducer
from hfstream.source.base import DocumentSource
from hfstream.sources import mixture_spec, open_source
from hfstream.source.token_cache import TokenCache
from hfstream.tokens.encoder import TextEncoder

__all__ = ["Batch", "Rows", "StreamingTextDataLoader", "rows_to_batch"]
log = logging.getLogger("hfstream.loader")
STATE_VERSION = 1
MIX_BY = ("samples", "tokens")


class StreamingTextDataLoader:
    """Iterate (B, T) token batches drawn from a stream of documents.

    A background thread reads documents, tokenizes them on the tokenizer threads (the next
    group while the current one is packed), shuffles the token arrays in a bounded buffer
    (documents and bytes) and packs them, with an EOS after each document, into rows of
    ``seq_len + 1``; ``prefetch`` batches are kept ready.

    Args:
        source: anything :func:`hfstream.sources.open_source` takes: a dataset name/path/URL (a
            corpus is built with ``**corpus_options``), a list of ``Stream``s or a mixture file
            (see ``mix_by``), a ``DocumentSource`` (e.g. a ``HuggingFaceStreamingCorpus``), or
            any iterable of strings (a list restores exactly).
        tokenizer: path to ``tokenizer.json`` (or its directory), a ``tokenizers.Tokenizer``,
            or a ``TextEncoder``.
        batch_size: rows per batch (B).
        seq_len: tokens per row (T).
        shuffle_buffer_size: documents in the shuffle buffer; 0 disables shuffling.
        seed: seeds the shuffle buffer.
        shuffle_warmup: documents buffered before the first leaves (default ``min(256,
            shuffle_buffer_size)``); the buffer then grows to full size at half the input rate,
            so only the first ~1,000 documents are shuffled less (see the loader benchmark).
        shuffle_buffer_bytes: memory budget of the shuffle buffer.
        prefetch: batches kept ready ahead of the consumer (refilled from half-empty in one go).
        pin_memory: put batches in pinned memory (for fast host-to-GPU copies).
        device: move each batch there (non-blocking) before yielding it.
        backend: tokenizer backend, ``auto`` | ``tokenizers`` | ``tiktoken``.
        eos_token: the separator token (default: found in the vocabulary, e.g. ``<|endoftext|>``).
        with_positions: batches carry ``positions`` (B, T): position ids that restart at each
            document, for document-masked attention.
        num_workers: 0 runs the pipeline in a thread of this process; N > 0 runs N torch
            DataLoader worker processes, each with its own source on a disjoint shard (needs a
            source each worker can open again: a dataset name or a mixture). Resume is exact in
            both modes.
        state_every: with workers, each worker attaches its full state to every
            ``state_every``-th batch; a restore replays at most that many batches per worker. With
            virtual shards, each shard's state comes every ``state_every // 4`` of its rows.
        mix_by: for a list of streams: ``samples`` mixes documents (mosaic counting, random
            order), ``tokens`` mixes training rows with budgets in tokens (``choose``, ``epoch_size``)
            and makes ``batching_method`` hold on every batch.
        token_cache: where the token ids of documents read before are kept, so that later
            passes and runs skip reading text and tokenizing: True (default) for
            ``$HFSTREAM_CACHE/tokens`` (``~/.cache/hfstream/tokens``), a directory, a
            ``TokenCache``, or False for none. Only sources with a stable identity are cached
            (local files, a hub dataset at a commit sha).
        token_cache_bytes: the cache's disk budget (default ``$HFSTREAM_TOKEN_CACHE_BYTES`` or
            16 GiB; ``"20G"`` works); the least recently used chunks go past it.
        epoch_size, batching_method: mixture options (see :mod:`hfstream.mixing`).
        wrap_source: with ``mix_by="tokens"``, applied to each stream's source (the trainer uses
            it to exclude held-out documents).
        record_docs: every batch says which documents each row holds and which of their tokens
            (``batch.docs``, :mod:`hfstream.loader.records`), and ``docs_in_flight()`` which are
            inside the loader: what ``train.record_docs`` logs for ``hfstream audit``. Off, it
            costs nothing.
        virtual_shards: K > 0 splits the source into K fixed shards, each a pipeline with its
            share of the shuffle buffer, and makes one global row order whatever the number of
            ranks (``shard``/``num_shards``) and ``num_workers``: K must be a multiple of
            ranks × workers. The state is keyed by shard: merge every rank's
            (:func:`hfstream.loader.elastic.merge_states`) and load it on any ranks × workers
            (see "Elastic runs" in the README). Needs a source that can be opened again per shard
            (a dataset name, a mixture).
        global_batch: with virtual shards and ``mix_by="tokens"``: rows per optimizer step, all
            ranks (default ``batch_size × ranks``); the batching method holds per global batch.
        schedule_ranks: with virtual shards and ``batching_method="device_per_stream"``: the
            ranks whose batches are each one stream (default: the ranks now; keep the run's
            first value on a resume with other ranks: the global batches stay the same).
        **corpus_options: passed to ``HuggingFaceStreamingCorpus`` when ``source`` is a name
            (``shard``/``num_shards`` also place a mixture under DDP, and the loader among the
            ranks with virtual shards).

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
                 batching_method: str = "random",
                 wrap_source: Callable[[DocumentSource], DocumentSource] | None = None,
                 token_cache: bool | str | os.PathLike[str] | TokenCache | None = True,
                 token_cache_bytes: int | str | None = None, record_docs: bool = False,
                 virtual_shards: int = 0, global_batch: int | None = None, schedule_ranks: int | None = None,
                 **corpus_options: Any):
        self.batch_size = check_int("batch_size", batch_size, 1)   # rows per batch (B)
        self.seq_len = check_int("seq_len", seq_len, 1)             # tokens per row (T)
        self.prefetch = check_int("prefetch", prefetch, 1)
        self.seed = check_int("seed", seed, hint="pass seed=0 (or any int)")
        self.num_workers = check_int("num_workers", num_workers, 0,
                                     "0 runs in a thread; N > 0 uses N DataLoader worker processes")
        self.shuffle_buffer_size = check_int("shuffle_buffer_size", shuffle_buffer_size, 0,
                                             "use 0 to disable shuffling, 10_000 is a good default")
        self.encoder = tokenizer if isinstance(tokenizer, TextEncoder) else \
            TextEncoder(tokenizer, backend=backend, eos_token=eos_token)
        if self.encoder.eos_id is None:
            raise ConfigError("the tokenizer has no end-of-text token to separate documents",
                              "pass eos_token='<|endoftext|>' (or whichever special token it has)")
        if pin_memory and not torch.cuda.is_available():
            log.warning("pin_memory=True but no CUDA device is available: batches stay in pageable memory")
            pin_memory = False
        self.pin_memory = pin_memory
        self.device = torch.device(device) if device is not None else None
        self.record_docs = bool(record_docs)
        pipeline_options = {"shuffle_buffer_size": shuffle_buffer_size, "shuffle_buffer_bytes": shuffle_buffer_bytes,
                            "shuffle_warmup": shuffle_warmup, "with_positions": with_positions,
                            "token_cache": _token_cache(token_cache, token_cache_bytes), "record_docs": record_docs}
        mixture = mixture_spec(source)
        self.virtual_shards = check_int("virtual_shards", virtual_shards, 0, "0 (off) or e.g. 240")
        if mixture is not None:
            _check_mixture_options(mix_by, batching_method, 0 if virtual_shards else num_workers)
        self.source: DocumentSource | None = None
        self.pipeline: Any = None     # the row source a thread runs (TokenPipeline or RowMixer)
        self.global_batch: int | None = None
        if self.virtual_shards:
            token_mixture = mixture["streams"] if mixture is not None and mix_by == "tokens" else None
            self.producer = self._elastic_producer(
                source, token_mixture, seed, pipeline_options, corpus_options, wrap_source=wrap_source,
                global_batch=global_batch, schedule_ranks=schedule_ranks, epoch_size=epoch_size, batching_method=batching_method,
                state_every=state_every, multiprocessing_context=multiprocessing_context)
        elif mixture is not None and mix_by == "tokens":
            self.pipeline = _row_mixer(mixture, self.encoder, self.batch_size, self.seq_len, seed, epoch_size,
                                       batching_method, wrap_source, pipeline_options, corpus_options)
            self.producer: Producer = ThreadProducer(self.pipeline, self.prefetch, pin_memory)
        elif num_workers:
            self.producer = WorkerProducer(source, self.encoder, self.batch_size, self.seq_len, seed,
                                           num_workers=num_workers, prefetch=self.prefetch, pin_memory=pin_memory,
                                           state_every=state_every, multiprocessing_context=multiprocessing_context,
                                           pipeline_options=pipeline_options, source_options=corpus_options)
        else:
            # Worker batches of 256 documents: tokenization starts sooner and overlaps reading more finely.
            self.source = open_source(source, corpus_defaults={"batch_size": 256},
                                      mixture_defaults=_mixture_defaults(seed, epoch_size), **corpus_options)
            self.pipeline = TokenPipeline(self.source, self.encoder, self.batch_size, self.seq_len,
                                          seed=seed, **pipeline_options)
            self.producer = ThreadProducer(self.pipeline, self.prefetch, pin_memory,
                                           close_source=self.source is not source)
        self._reset_metrics()

    def _elastic_producer(self, source: Any, streams: list[Any] | None, seed: int,
                          pipeline_options: dict[str, Any], corpus_options: dict[str, Any], **options: Any) -> Producer:
        producer, self.global_batch = elastic_producer(
            source, streams, self.encoder, self.batch_size, self.seq_len, seed, self.virtual_shards,
            num_workers=self.num_workers, prefetch=self.prefetch, pin_memory=self.pin_memory,
            pipeline_options=pipeline_options, corpus_options=corpus_options, **options)
        return producer

    # -- iteration ------------------------------------------------------------------------
    def __iter__(self) -> "StreamingTextDataLoader":
        return self

    def __next__(self) -> Batch:
        t0 = time.perf_counter()
        if self._t_first is None:
            self._t_first = t0
        batch = self.producer.next_batch()
        self._wait_s += time.perf_counter() - t0
        if batch is None:
            raise StopIteration
        self._batches += 1
        if self.device is not None:
            batch = batch.to(self.device)
        self._t_last = time.perf_counter()
        return batch

    def start(self) -> None:
        """Start preparing batches now, so that the first ``next()`` finds them ready."""
        self.producer.start()

    # -- state ----------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What a saved state must match: the data, the tokenizer and the shape settings."""
        common = {"source": self.producer.fingerprint(), "tokenizer": self.encoder.fingerprint,
                  "seq_len": self.seq_len, "seed": self.seed, "shuffle_buffer_size": self.shuffle_buffer_size}
        if self.virtual_shards:  # rows are made one by one: batch size, ranks and workers may change
            return {**common, "virtual_shards": self.virtual_shards, "global_batch": self.global_batch}
        return {**common, "batch_size": self.batch_size, "num_workers": self.num_workers}

    def state_dict(self) -> dict[str, Any]:
        """The exact state after the last batch returned: restoring it reproduces what follows.

        Batches already prepared ahead of the consumer are part of the state (as token rows),
        so the producer never has to be rewound. With ``load_state_dict`` this makes the loader
        a ``torch.distributed.checkpoint.stateful.Stateful``; in a DCP checkpoint, hold it as
        ``hfstream.loader.dcp.RankedState(loader)`` (each rank's state under its own key).
        """
        return {"version": STATE_VERSION, "fingerprint": self.fingerprint(), **self.producer.state_dict(),
                "batches": self._batches_before + self._batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where ``state`` was saved.

        Raises:
            StateError: a state of another dataset, tokenizer, seq_len, batch size or seed, or
                a malformed one (naming what is missing).
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise StateError("not a StreamingTextDataLoader state (or of another hfstream version)",
                             "pass the dict returned by StreamingTextDataLoader.state_dict()")
        mine, theirs = self.fingerprint(), state.get("fingerprint")
        if not isinstance(theirs, dict):
            raise StateError("the loader state is missing its fingerprint",
                             "pass the whole dict returned by StreamingTextDataLoader.state_dict()")
        diff = [k for k in mine if mine[k] != theirs.get(k)]
        if diff:
            detail = ", ".join(f"{k}: saved {theirs.get(k)!r}, now {mine[k]!r}" for k in diff)
            raise StateError(f"the loader state was saved for another setup ({detail})",
                             "restore into a loader with the same dataset, tokenizer, seq_len, seed, "
                             "shuffle_buffer_size and virtual_shards (without virtual shards, also the same "
                             "batch_size and num_workers)")
        self.producer.load_state_dict(state)
        self._batches_before = state.get("batches", 0)  # metrics count this process's batches only

    def docs_in_flight(self) -> DocsInFlight:
        """With ``record_docs``: the documents read and not all handed out in batches (shuffle buffer,
        packer, batches prepared ahead). The loader stops preparing batches until the next one is
        asked for: a ``state_dict()`` right after is taken at the same point."""
        if not self.record_docs:
            raise ConfigError("docs_in_flight() needs a loader made with record_docs=True",
                              "pass record_docs=True to StreamingTextDataLoader")
        return self.producer.docs_in_flight()

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
        tokens = self._batches * self.batch_size * self.seq_len
        stats = self.producer.stats()
        docs = stats.get("docs", 0)
        return {"batches": self._batches, "tokens": tokens, "docs": docs, "elapsed_s": elapsed,
                "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
                "docs_per_s": docs / elapsed if elapsed > 0 else 0.0,
                "buffer_fill": stats.get("buffer_fill"), "buffer_bytes": stats.get("buffer_bytes"),
                "data_wait_s": self._wait_s,
                "data_wait_frac": self._wait_s / elapsed if elapsed > 0 else 0.0,
                "stream_shares": stats.get("shares")}

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.encoder.vocab_size

    def close(self) -> None:
        """Stop the producer and the source's worker (if this loader created the source)."""
        self.producer.close()

    def __enter__(self) -> "StreamingTextDataLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _token_cache(cache: Any, budget: int | str | None) -> TokenCache | None:
    if isinstance(cache, TokenCache) or cache is False or cache is None:
        return cache or None
    return TokenCache(None if cache is True else cache, budget)


def _check_mixture_options(mix_by: str, batching_method: str, num_workers: int) -> None:
    if mix_by not in MIX_BY:
        raise ConfigError(f"mix_by={mix_by!r} is not valid", "use 'samples' (documents) or 'tokens'")
    if mix_by == "samples" and batching_method != "random":
        raise ConfigError(f"batching_method={batching_method!r} with mix_by='samples'",
                          "batch composition is defined on training rows: use mix_by='tokens' "
                          "(budgets in tokens), or batching_method='random'")
    if mix_by == "tokens" and num_workers:
        raise ConfigError(f"num_workers={num_workers} with mix_by='tokens'",
                          "a token mixture runs one pipeline per stream in this process: use num_workers=0")


def _mixture_defaults(seed: int, epoch_size: int | str | None) -> dict[str, Any]:
    return {"seed": seed, "epochs": 1, **({} if epoch_size is None else {"epoch_size": epoch_size})}


def _row_mixer(mixture: dict[str, Any], encoder: TextEncoder, batch_size: int, seq_len: int, seed: int,
               epoch_size: int | str | None, batching_method: str, wrap_source: Any,
               pipeline_options: dict[str, Any], options: dict[str, Any]) -> RowMixer:
    options = dict(options)
    rank, world_size = options.pop("shard", 0), options.pop("num_shards", 1)
    epochs = options.pop("epochs", None)
    if options:
        raise ConfigError(f"options {sorted(options)} do not apply to a mixture as a whole",
                          "put source options on each stream: Stream(dataset, text_column=...)")
    return RowMixer(mixture["streams"], encoder, batch_size, seq_len, epoch_size=epoch_size, seed=seed,
                    batching_method=batching_method, rank=rank, world_size=world_size, epochs=epochs,
                    wrap_source=wrap_source, **pipeline_options)
