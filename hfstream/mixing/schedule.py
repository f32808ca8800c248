"""Schedules: which stream each sample (or training row) of an epoch comes from, per batching method.

An epoch's labels are a pure function of ``(counts, method, seed, epoch, global batch, rank)``,
so a schedule's position is two ints (:class:`ScheduleCursor`): a restore regenerates the
epoch and skips to the index. Batching methods, as in MosaicML Streaming: ``random``
(proportions hold per epoch, and in expectation per batch), ``stratified`` (every global batch
holds them to within one sample), ``per_stream`` (each global batch from one stream),
``device_per_stream`` (each device's batch from one stream, global batches mixed).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator, Literal

import numpy as np

from hfstream.errors import ConfigError

BatchingMethod = Literal["random", "stratified", "per_stream", "device_per_stream"]
BATCHING_METHODS = ("random", "stratified", "per_stream", "device_per_stream")
_CHUNK = 4096


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
                self._labels = self._epoch_labels(self.epoch)
                for _ in range(self.index):  # resume inside an epoch: labels are cheap to skip
                    next(self._labels)
            label = next(self._labels, None)
            if label is not None:
                self.index += 1
                return label
            self.on_epoch_end(self.epoch)
            self.epoch, self.index, self._labels = self.epoch + 1, 0, None
        return None

    def _epoch_labels(self, epoch: int) -> Iterator[int]:
        return epoch_labels(self.counts, self.method, self.seed, epoch, self.global_batch, self.world_size, self.rank)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index, self._labels = state["epoch"], state["index"], None


def global_labels(counts: list[int], method: str, seed: int, epoch: int, global_batch: int,
                  schedule_ranks: int) -> Iterator[int]:
    """The stream of every row of ``epoch`` in the *global* row order of virtual shards.

    Position ``j`` of a global batch goes to rank ``j mod W`` (strided, see
    :mod:`hfstream.loader.shards`), so the labels are drawn for the whole global batch, the
    same whatever the number of ranks: ``random``, ``stratified`` and ``per_stream`` as with one
    rank. ``device_per_stream`` draws ``schedule_ranks`` blocks of one stream per global batch
    and gives block ``j mod schedule_ranks`` to position ``j``: each rank's batch is one stream
    when the run has ``schedule_ranks`` ranks (or a multiple); with fewer ranks a rank's batch
    holds several blocks. The global batches are the same in every case.
    """
    if method != "device_per_stream":
        yield from epoch_labels(counts, method, seed, epoch, global_batch)
        return
    check_schedule(method, global_batch, schedule_ranks)
    unit = global_batch // schedule_ranks
    blocks = np.repeat(np.arange(len(counts)), [c // unit for c in counts])
    _rng(seed, "labels", epoch).shuffle(blocks)
    slot = np.arange(global_batch) % schedule_ranks
    for start in range(0, len(blocks) // schedule_ranks * schedule_ranks, schedule_ranks):
        yield from blocks[start:start + schedule_ranks][slot].tolist()


class GlobalCursor(ScheduleCursor):
    """A ScheduleCursor over :func:`global_labels`: the labels of the global row order."""

    def __init__(self, counts: list[int], method: str, seed: int, global_batch: int, schedule_ranks: int,
                 epochs: int | None, on_epoch_end: Callable[[int], None] = lambda epoch: None):
        super().__init__(counts, method, seed, global_batch, 1, 0, epochs, on_epoch_end)
        self.schedule_ranks = schedule_ranks
        check_schedule(method, global_batch, schedule_ranks)

    def _epoch_labels(self, epoch: int) -> Iterator[int]:
        return global_labels(self.counts, self.method, self.seed, epoch, self.global_batch, self.schedule_ranks)
