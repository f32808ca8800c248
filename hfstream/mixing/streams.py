"""Dataset mixing with MosaicML Streaming's semantics, over raw streams: Stream, schedules, MixedSource.

Vocabulary (as in ``streaming.Stream`` / ``StreamingDataset``):

* ``Stream(dataset, proportion=|repeat=|choose=, **source_options)``: at most one weight per
  stream, and every stream uses the same kind: relative (``proportion``, normalized) or
  absolute (``repeat`` x the stream's size, ``choose`` samples, or nothing = its size).
* ``epoch_size``: samples per epoch for relative weights (default: the total of unique
  samples); ``int(epoch_size * p)`` per stream, the rounding shortfall given +1 each to streams
  drawn by ``numpy.random.default_rng(seed)`` without replacement. Absolute weights take
  ``int(repeat * size)`` and reject ``epoch_size``.
* Batching methods: ``random`` (stream order shuffled per epoch; proportions hold in
  expectation per batch, exactly per epoch), ``stratified`` (every global batch holds the
  proportions to within one sample), ``per_stream`` (each global batch from one stream),
  ``device_per_stream`` (each device's batch from one stream, global batches mixed).

On raw streams there is no random access, so a stream's samples in an epoch are the *next*
ones of its endless, reshuffled-per-pass sequence: ``repeat=3`` reads it three times,
``repeat=0.25`` the next quarter (a different quarter each epoch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from typing import Any, Callable, Iterator, Literal

import numpy as np

from hfstream.errors import ConfigError, StateError

log = logging.getLogger("hfstream.mixing")
BatchingMethod = Literal["random", "stratified", "per_stream", "device_per_stream"]
BATCHING_METHODS = ("random", "stratified", "per_stream", "device_per_stream")
STATE_VERSION = 1
_CHUNK = 4096


# -- streams and the registry --------------------------------------------------------------

@dataclasses.dataclass
class Stream:
    """One data source of a mixture, with at most one of proportion / repeat / choose.

    Args:
        dataset: anything a single dataset can be (hub id, path/glob, builtin:..., ws://...).
        proportion: relative weight (normalized over all streams).
        repeat: absolute: this many passes over the stream per epoch (0.25: a quarter).
        choose: absolute: this many samples (or tokens, with ``mix_by="tokens"``) per epoch.
        label: the stream's name: seeds, states and logs use it, never its list position
            (default: the dataset string).
        size: the stream's number of samples, if known (else counted when needed).
        **source_options: HuggingFaceStreamingCorpus options (``text_column``, ``split``, the hub
            config ``name``, ``min_length``, ...).
    """

    dataset: str
    proportion: float | None = None
    repeat: float | None = None
    choose: int | None = None
    label: str = ""
    size: int | None = None
    source_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __init__(self, dataset: str, *, proportion: float | None = None, repeat: float | None = None,
                 choose: int | str | None = None, label: str | None = None, size: int | None = None,
                 **source_options: Any):
        self.dataset, self.proportion, self.repeat = dataset, proportion, repeat
        self.choose = None if choose is None else parse_count(choose, "choose")
        self.label, self.size, self.source_options = label or dataset, size, source_options
        weights = [k for k in ("proportion", "repeat", "choose") if getattr(self, k) is not None]
        if len(weights) > 1:
            raise ConfigError(f"stream {self.label!r} sets {' and '.join(weights)}",
                              "give each stream at most one of proportion, repeat or choose")
        for key in ("proportion", "repeat"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(f"stream {self.label!r}: {key} must be a number >= 0, got {value!r}",
                                  f"pass {key}=0.5 for example")

    @property
    def relative(self) -> bool:
        return self.proportion is not None

    def open(self, **overrides: Any) -> Any:
        """The stream's document source (a HuggingFaceStreamingCorpus unless a registered class)."""
        from hfstream.source.corpus import HuggingFaceStreamingCorpus

        return HuggingFaceStreamingCorpus(self.dataset, **{**self.source_options, **overrides})


_REGISTRY: dict[str, type] = {"stream": Stream}


def register_stream(name: str, cls: type | None = None) -> Any:
    """Register a custom Stream class under ``name`` (also usable as a class decorator).

    The class must accept ``Stream``'s arguments and provide ``open(**overrides)`` returning a
    source with ``stream_batches()`` / ``state_dict()`` / ``load_state_dict()``.
    """
    def add(klass: type) -> type:
        if not (isinstance(klass, type) and hasattr(klass, "open")):
            raise ConfigError(f"cannot register {klass!r} as stream {name!r}",
                              "register a class with an open(**overrides) method (subclass hfstream.Stream)")
        _REGISTRY[name] = klass
        return klass

    return add if cls is None else add(cls)


def sorted_streams(streams: list[Any]) -> list[Stream]:
    """Streams built from configs and sorted by label: list order never changes a mixture."""
    built = [make_stream(s) for s in streams]
    if not built:
        raise ConfigError("a mixture needs at least one stream", "pass streams=[Stream(...), ...]")
    labels = [s.label for s in built]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"stream labels repeat: {labels}", "give streams distinct label=...")
    return sorted(built, key=lambda s: s.label)


def make_stream(config: Stream | dict[str, Any]) -> Stream:
    """A Stream from a Stream or a config dict (``{"dataset": ..., "stream_name": "my_stream", ...}``)."""
    if isinstance(config, Stream) or hasattr(config, "open"):
        return config  # type: ignore[return-value]
    if not isinstance(config, dict) or "dataset" not in config:
        raise ConfigError(f"a stream must be a Stream or a dict with a 'dataset' key, got {config!r}",
                          "write streams as [{dataset: ..., proportion: ...}, ...]")
    options = dict(config)
    kind = options.pop("stream_name", "stream")
    extra = options.pop("stream_config", {}) or {}
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown stream_name {kind!r}", f"registered: {', '.join(sorted(_REGISTRY))}; "
                          "add yours with hfstream.register_stream(name, cls)")
    return _REGISTRY[kind](options.pop("dataset"), **options, **extra)


# -- counts per epoch (mosaic's arithmetic) -------------------------------------------------

_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_count(value: int | str, key: str = "epoch_size") -> int:
    """``100000``, ``"100k"``, ``"64M"``, ``"1.5B"`` -> int."""
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a count, got {value!r}", f"pass {key}=100000 or '100k'")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}", f"pass {key}=100000 or '100k'")
        return value
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbBgGtT]?)\s*", str(value))
    if not match:
        raise ConfigError(f"{key}={value!r} is not a count", f"use an int or a string like '100k', '64M', '1.5B'")
    number, suffix = float(match.group(1)), match.group(2).lower()
    return int(round(number * _SUFFIXES.get(suffix, 1)))


def epoch_counts(streams: list[Stream], sizes: list[int | None], epoch_size: int | None,
                 seed: int) -> list[int]:
    """Samples per stream per epoch, exactly as mosaic's ``Stream.apply_weights``.

    Raises:
        ConfigError: mixed relative/absolute weights (naming the streams), epoch_size with
            absolute weights, or a size that is needed but unknown.
    """
    relative = [s for s in streams if s.relative]
    if relative and len(relative) != len(streams):
        absolute = [s.label for s in streams if not s.relative]
        raise ConfigError(
            f"relative (proportion) and absolute (repeat/choose/none) weights are mixed: "
            f"{', '.join(s.label for s in relative)} use proportion, {', '.join(absolute)} do not",
            "give every stream a proportion, or none of them")
    if relative:
        if not epoch_size:
            epoch_size = sum(_need_size(s, n, "the default epoch_size (the total of unique samples)")
                             for s, n in zip(streams, sizes))
        p = np.array([s.proportion for s in streams], np.float64)
        if p.sum() <= 0:
            raise ConfigError("all proportions are 0", "give at least one stream a positive proportion")
        p /= p.sum()
        counts = (epoch_size * p).astype(np.int64)
        shortfall = int(epoch_size - counts.sum())
        counts[np.random.default_rng(seed).choice(len(streams), shortfall, replace=False)] += 1
        return counts.tolist()
    if epoch_size:
        raise ConfigError(f"epoch_size={epoch_size} is given with absolute weights (repeat/choose)",
                          "use proportion=... on every stream to scale to an epoch_size, or drop epoch_size")
    counts = []
    for s, n in zip(streams, sizes):
        if s.choose is not None:
            counts.append(s.choose)
        elif s.repeat is not None:
            counts.append(int(s.repeat * _need_size(s, n, "repeat")))
        else:
            counts.append(_need_size(s, n, "a stream without a weight (its size is its share)"))
    return counts


def _need_size(stream: Stream, size: int | None, why: str) -> int:
    if size is None:
        raise ConfigError(f"the size of stream {stream.label!r} is unknown, and {why} needs it",
                          "pass size=N on the stream (e.g. from its dataset card), use choose=N, "
                          "or proportion=... with an explicit epoch_size")
    return size


# -- label schedules ------------------------------------------------------------------------

def _rng(seed: int, *keys: Any) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, (seed, *keys))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def check_schedule(method: str, global_batch: int, world_size: int) -> None:
    """Raise ConfigError for an unknown batching method or a batch that does not split over ranks."""
    if method not in BATCHING_METHODS:
        raise ConfigError(f"batching_method={method!r} is not valid", f"choose one of {', '.join(BATCHING_METHODS)}")
    if global_batch < 1 or global_batch % world_size:
        raise ConfigError(f"the global batch ({global_batch}) is not divisible by world_size={world_size}",
                          "use a device batch size times the number of ranks")


def epoch_labels(counts: list[int], method: str, seed: int, epoch: int, global_batch: int,
                 world_size: int = 1, rank: int = 0) -> Iterator[int]:
    """The stream index of each of this rank's samples in ``epoch``, lazily.

    Global batches hold ``global_batch`` samples, ``global_batch // world_size`` per rank; with
    several ranks an epoch is cut to whole global batches, so every rank gets the same count.
    """
    check_schedule(method, global_batch, world_size)
    rng = _rng(seed, "labels", epoch)
    device = global_batch // world_size
    if method in ("per_stream", "device_per_stream"):
        unit = global_batch if method == "per_stream" else device
        blocks = np.repeat(np.arange(len(counts)), [c // unit for c in counts])
        rng.shuffle(blocks)
        if method == "device_per_stream":
            blocks = blocks[: len(blocks) // world_size * world_size]
            mine = blocks[rank::world_size]               # rank r takes slot r of each global batch
            for label in mine.tolist():
                yield from [label] * device
            return
        for label in blocks.tolist():                     # every rank's share of the batch: one stream
            yield from [label] * device
        return
    total = sum(counts)
    if world_size > 1:
        total = total // global_batch * global_batch
    remaining = np.array(counts, np.int64)
    produced = 0
    while produced < total:
        n = min(global_batch if method == "stratified" else _CHUNK * global_batch, total - produced)
        take = _stratified(remaining, n) if method == "stratified" else rng.multivariate_hypergeometric(remaining, n)
        remaining -= take
        block = np.repeat(np.arange(len(counts)), take)
        rng.shuffle(block)
        for start in range(0, n, global_batch):           # this rank's slice of each global batch
            piece = block[start:start + global_batch]
            if world_size > 1:
                piece = piece[rank * device:(rank + 1) * device]
            yield from piece.tolist()
        produced += n


def _stratified(remaining: np.ndarray, n: int) -> np.ndarray:
    """Split n samples over streams in proportion to what each has left (largest remainder)."""
    total = remaining.sum()
    exact = remaining * n / total
    take = np.minimum(np.floor(exact).astype(np.int64), remaining)
    order = np.argsort(-(exact - take), kind="stable")
    for i in order[: n - int(take.sum())]:
        take[i] += 1
    return take


class ScheduleCursor:
    """Where a mixture is in its schedule: epoch, index in the epoch, and the lazy label stream.

    Shared by the document mixture and the row mixture; its state is two ints, because the
    labels of an epoch are regenerated from (seed, epoch) and skipped to the index on restore.
    """

    def __init__(self, counts: list[int], method: str, seed: int, global_batch: int, world_size: int,
                 rank: int, epochs: int | None, on_epoch_end: Callable[[int], None] = lambda epoch: None):
        self.counts, self.method, self.seed = counts, method, seed
        self.global_batch, self.world_size, self.rank, self.epochs = global_batch, world_size, rank, epochs
        self.on_epoch_end = on_epoch_end
        self.epoch, self.index = 0, 0
        self._labels: Iterator[int] | None = None
        check_schedule(method, global_batch, world_size)

    def next(self) -> int | None:
        """The stream of the next sample, or None after the last epoch."""
        while self.epochs is None or self.epoch < self.epochs:
            if self._labels is None:
                self._labels = epoch_labels(self.counts, self.method, self.seed, self.epoch,
                                            self.global_batch, self.world_size, self.rank)
                for _ in range(self.index):  # resume inside an epoch: labels are cheap to skip
                    next(self._labels)
            label = next(self._labels, None)
            if label is not None:
                self.index += 1
                return label
            self.on_epoch_end(self.epoch)
            self.epoch, self.index, self._labels = self.epoch + 1, 0, None
        return None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index, self._labels = state["epoch"], state["index"], None


# -- the mixed document source ----------------------------------------------------------------

class MixedSource:
    """Several streams mixed into one resumable document stream (a drop-in for a corpus).

    Args:
        streams: Streams or stream config dicts.
        epoch_size: samples per epoch (relative weights); int or "100k"/"64M".
        seed: seeds the rounding and the per-epoch order.
        batching_method: see module docs; batches are counted in documents here.
        batch_size: documents per device batch (for stratified/per_stream/device_per_stream).
        rank, world_size: this process's place under DDP: each stream is read on shard
            ``rank`` of ``world_size``, and the global schedule is the same on every rank.
        epochs: epochs to run; None: forever.
    """

    def __init__(self, streams: list[Any], *, epoch_size: int | str | None = None, seed: int = 0,
                 batching_method: str = "random", batch_size: int = 1, rank: int = 0, world_size: int = 1,
                 epochs: int | None = 1):
        self.streams = sorted_streams(streams)
        self.seed, self.batching_method, self.epochs = seed, batching_method, epochs
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.epoch_size = None if epoch_size is None else parse_count(epoch_size)
        sizes = [s.size if s.size is not None else _count_if_needed(s, self.streams, self.epoch_size)
                 for s in self.streams]
        self.counts = epoch_counts(self.streams, sizes, self.epoch_size, seed)
        self.sources = [s.open(epochs=None, shard=rank, num_shards=world_size) for s in self.streams]
        self.cursor = ScheduleCursor(self.counts, batching_method, seed, batch_size * world_size, world_size,
                                     rank, epochs, on_epoch_end=self._log_epoch)
        self._iters: list[Iterator[str] | None] = [None] * len(self.sources)
        self.realized = [0] * len(self.streams)  # samples taken per stream (this rank, all epochs)
        log.info("mixture: %s; %s per epoch", ", ".join(f"{s.label}={c}" for s, c in zip(self.streams, self.counts)),
                 sum(self.counts))

    def fingerprint(self) -> str:
        ident = [(s.label, s.dataset, c) for s, c in zip(self.streams, self.counts)]
        raw = f"{ident}|{self.seed}|{self.batching_method}|{self.batch_size}|{self.rank}/{self.world_size}"
        return "mix:" + hashlib.sha1(raw.encode()).hexdigest()[:16]

    def _log_epoch(self, epoch: int) -> None:
        total = sum(self.realized) or 1
        log.info("epoch %d done; realized proportions: %s", epoch,
                 ", ".join(f"{s.label} {n / total:.3f}" for s, n in zip(self.streams, self.realized)))

    def stream(self) -> Iterator[str]:
        """Documents of the mixture, each tagged internally with its stream."""
        for text, _ in self.stream_tagged():
            yield text

    def stream_tagged(self) -> Iterator[tuple[str, int]]:
        while True:
            label = self.cursor.next()
            if label is None:
                return
            if self._iters[label] is None:
                self._iters[label] = self.sources[label].stream()
            text = next(self._iters[label])  # endless: epochs=None on every stream
            self.realized[label] += 1
            yield text, label

    def stream_batches(self, size: int = 256) -> Iterator[list[str]]:
        batch: list[str] = []
        for text in self.stream():
            batch.append(text)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __iter__(self) -> Iterator[str]:
        return self.stream()

    def proportions(self) -> dict[str, float]:
        """Realized share of each stream so far (this rank)."""
        total = sum(self.realized) or 1
        return {s.label: n / total for s, n in zip(self.streams, self.realized)}

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "fingerprint": self.fingerprint(), **self.cursor.state_dict(),
                "realized": list(self.realized),
                "sources": {s.label: src.state_dict() for s, src in zip(self.streams, self.sources)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION or state.get("fingerprint") != self.fingerprint():
            raise StateError("the mixture state was saved for other streams, weights, seed or batching",
                             "restore into a MixedSource built with the same streams and options")
        for s, src in zip(self.streams, self.sources):
            src.load_state_dict(state["sources"][s.label])
        self.cursor.load_state_dict(state)
        self.realized = list(state["realized"])
        self._iters = [None] * len(self.sources)

    def start(self) -> None:
        for src in self.sources:
            getattr(src, "start", lambda: None)()

    def close(self) -> None:
        for src in self.sources:
            getattr(src, "close", lambda: None)()

    def __enter__(self) -> "MixedSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _count_if_needed(stream: Stream, streams: list[Stream], epoch_size: int | None) -> int | None:
    """Count a stream's samples only when its weights need the size."""
    relative = any(s.relative for s in streams)
    if (relative and epoch_size) or stream.choose is not None:
        return None
    return count_documents(stream)


def count_documents(stream: Stream) -> int:
    """The number of documents a stream yields in one pass (all shards), by a counting pass.

    Raises:
        ConfigError: hub and ws:// streams cannot be counted here (pass ``size=``).
    """
    from hfstream.source.spec import make_spec, resolve

    spec = make_spec(stream.dataset, **{k: v for k, v in stream.source_options.items()
                                        if k not in ("shard", "num_shards", "epochs", "max_samples")})
    if resolve(spec).kind != "local":
        raise ConfigError(f"the size of stream {stream.label!r} ({stream.dataset}) is unknown and it is not "
                          "local files, so it cannot be counted here",
                          "pass size=N on the stream (its dataset card gives it), use choose=N, "
                          "or proportion=... with an explicit epoch_size")
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    with HuggingFaceStreamingCorpus(stream.dataset, **{**stream.source_options, "epochs": 1,
                                                       "shard": 0, "num_shards": 1}) as corpus:
        return sum(len(batch) for batch in corpus.stream_batches())
