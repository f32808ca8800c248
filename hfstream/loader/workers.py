"""WorkerProducer: token pipelines in torch DataLoader worker processes, disjoint shards, exact resume.

Each DataLoader worker opens its own source (:func:`hfstream.sources.open_source`; a corpus
runs its own worker subprocess) on a disjoint shard, and its own TokenPipeline with its share
of the tokenizer threads. Batches cross the process boundary in *groups*: one (K, B, T+1)
tensor per item (K grows 1, 2, 4, ... up to about :data:`GROUP_BYTES`), because torch's transfer
costs about a millisecond per item whatever its size. Resume is exact without shipping a full
state with every batch: a worker sends an *anchor* (its pipeline state, compact when the source
can seek) with the first group after every ``state_every`` batches; the parent keeps, per
worker, the last anchor it consumed and how many of that worker's batches it has consumed
since. Restoring loads the anchor and replays the difference (deterministic).

The parent hands batches out in one fixed order, round-robin over the logical workers whose
shard is not done, whatever order torch delivers them in (it holds a batch that comes early).
Torch's own order cannot be restored once a shard is done: its round-robin then skips slots
that depend on how far ahead it had asked the finished worker. Restores rotate the workers'
roles so that torch's order matches the fixed one and nothing needs holding.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hfstream.errors import ConfigError, HfStreamError, StateError
from hfstream.loader.batch import Batch, Rows
from hfstream.loader.pipeline import TokenPipeline, derive_seed
from hfstream.loader.records import BatchDocs, DocsInFlight
from hfstream.source.base import DocumentSource, require_keys
from hfstream.sources import open_source

log = logging.getLogger("hfstream.loader.workers")
GROUP_BYTES = 1 << 20   # rows per item sent from a DataLoader worker (int64 bytes)


class StreamingTextDataset(IterableDataset):
    """Batches of one DataLoader worker's shard; use inside ``DataLoader(ds, batch_size=None)``.

    Each item is a dict: ``rows`` (K, B, T+1) int64 (K consecutive batches), ``positions`` (the
    same shape, if asked), ``worker`` (logical worker id), ``index`` (the worker's number of the
    first batch), ``anchor`` (the pipeline state before it, after every ``state_every`` batches,
    else None), ``docs``, ``records`` (with ``record_docs``: each batch's ``BatchDocs.to_plain()``, else
    None), and a final ``{"worker": w, "end": True}`` item when the shard is exhausted (with
    ``record_docs``, its ``in_flight`` documents: the stream's tail).
    ``StreamingTextDataLoader(..., num_workers=N)`` consumes these and keeps the state.
    """

    def __init__(self, data: Any, tokenizer: Any, batch_size: int, seq_len: int, seed: int = 0, *,
                 state_every: int = 256, pipeline_options: dict[str, Any] | None = None,
                 source_options: dict[str, Any] | None = None):
        super().__init__()
        self.data, self.tokenizer = data, tokenizer  # a name or a mixture, and a TextEncoder: picklable
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.state_every = state_every
        self.pipeline_options = pipeline_options or {}
        self.source_options = source_options or {}
        self.resume: dict[int, dict[str, Any]] = {}   # logical worker -> resume point
        self.rotation = 0                              # physical worker i plays logical (i + rotation) % n

    def open_source(self, worker: int = 0, num_workers: int = 1) -> DocumentSource:
        """Worker ``worker``'s source: shard ``rank * num_workers + worker`` of ``world * num_workers``."""
        options = dict(self.source_options)
        base_shard, base_num = options.pop("shard", 0), options.pop("num_shards", 1)
        return open_source(self.data, corpus_defaults={"batch_size": 256},
                           mixture_defaults={"seed": self.seed, "epochs": 1},
                           shard=base_shard * num_workers + worker, num_shards=base_num * num_workers, **options)

    def _pipeline(self, logical: int, num_workers: int) -> TokenPipeline:
        return TokenPipeline(self.open_source(logical, num_workers), self.tokenizer, self.batch_size,
                             self.seq_len, seed=derive_seed(self.seed, logical), **self.pipeline_options)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        logical = (physical + self.rotation) % num_workers
        if info is not None:  # the tokenizer threads are shared out between the workers
            self.tokenizer.num_threads = max(1, self.tokenizer.num_threads // num_workers)
        pipeline = self._pipeline(logical, num_workers)
        try:
            index = self._restore(pipeline, self.resume.get(logical))
            if index is None:
                yield {"worker": logical, "end": True}
                return
            yield from self._groups(pipeline, logical, index)
            tail = None if pipeline.recorder is None else pipeline.docs_in_flight().to_plain()
            yield {"worker": logical, "end": True, "in_flight": tail}
        finally:
            pipeline.close()

    def _groups(self, pipeline: TokenPipeline, logical: int, index: int) -> Iterator[dict[str, Any]]:
        """Groups of batches from ``index`` on; the group size doubles up to GROUP_BYTES."""
        most = max(1, GROUP_BYTES // (8 * self.batch_size * (self.seq_len + 1)))
        size, anchored = 1, None
        while True:
            due = anchored is None or index - anchored >= self.state_every
            anchor = pipeline.state_dict() if due else None
            anchored = index if due else anchored
            group: list[Rows] = []
            while len(group) < size and (out := pipeline.next_batch()) is not None:
                group.append(out)
            if not group:
                return
            positions = None if group[0].positions is None else torch.from_numpy(np.stack([r.positions for r in group]))
            records = None if pipeline.recorder is None else [r.docs.to_plain() for r in group]  # type: ignore[union-attr]
            yield {"rows": torch.from_numpy(np.stack([r.tokens for r in group])),  # K x (B, T+1) -> (K, B, T+1)
                   "positions": positions, "worker": logical, "index": index, "anchor": anchor,
                   "docs": pipeline.num_docs, "records": records}
            index += len(group)
            if len(group) < size:
                return
            size = min(2 * size, most)

    def docs_in_flight(self, logical: int, num_workers: int, point: dict[str, Any] | None) -> DocsInFlight:
        """Worker ``logical``'s documents in flight at ``point`` (a resume point of the state):
        its pipeline restored there, as a resume would (records)."""
        pipeline = self._pipeline(logical, num_workers)
        try:
            self._restore(pipeline, point)
            return pipeline.docs_in_flight()
        finally:
            pipeline.close()

    @staticmethod
    def _restore(pipeline: TokenPipeline, point: dict[str, Any] | None) -> int | None:
        """Load the anchor and replay up to the next batch; returns its index (None: exhausted)."""
        if point is None:
            return 0
        if point.get("ended"):
            return None
        pipeline.load_state_dict(point["anchor"])
        for _ in range(point["next_index"] - point["anchor_index"]):
            if pipeline.next_batch() is None:
                raise StateError("replaying to the saved position ran out of data",
                                 "the dataset changed since the state was saved")
        return point["next_index"]


def as_is(item: dict[str, Any]) -> dict[str, Any]:
    """The DataLoader's collate function: an item is passed on unchanged (picklable, for spawn)."""
    return item


class WorkerTracker:
    """The parent's bookkeeping of consumed batches per logical worker (the aggregate state).

    ``cursor`` is the logical worker whose batch comes next (finished workers are skipped).
    Groups are handed out one batch at a time; batches received but not handed out are not
    in the state (a restore makes them again).
    """

    def __init__(self, num_workers: int):
        self.num_workers = num_workers
        self.anchors: dict[int, tuple[int, dict[str, Any]]] = {}
        self.next_index: dict[int, int] = {}
        self.ended: set[int] = set()
        self.docs: dict[int, int] = {}
        self.tails: dict[int, dict[str, Any]] = {}  # ended worker -> its documents in flight (records)
        self.total = 0
        self.cursor = 0
        self._held: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self._current: dict[int, tuple[dict[str, Any], int]] = {}   # worker -> (group, next batch in it)

    def next_batch(self, items: Iterator[dict[str, Any]]) -> tuple[dict[str, Any], int] | None:
        """The next batch in the fixed order, as (its group, its number in the group); None when all are done."""
        while True:
            worker = self._turn()
            if worker is None:
                return None
            group, k = self._current.pop(worker, (None, 0))
            if group is None:
                held = self._held[worker]
                group = held.popleft() if held else self._receive(items, worker)
                if group.get("end"):
                    self.ended.add(worker)
                    if group.get("in_flight") is not None:
                        self.tails[worker] = group["in_flight"]
                    continue
            if k + 1 < len(group["rows"]):
                self._current[worker] = (group, k + 1)
            self._consume(group, k)
            return group, k

    def _turn(self) -> int | None:
        for k in range(self.num_workers):
            worker = (self.cursor + k) % self.num_workers
            if worker not in self.ended:
                return worker
        return None

    def _receive(self, items: Iterator[dict[str, Any]], worker: int) -> dict[str, Any]:
        for item in items:
            if item["worker"] == worker:
                return item
            if not (item.get("end") and item["worker"] in self.ended):  # a restored worker's end again
                self._held[item["worker"]].append(item)
        raise HfStreamError(f"the DataLoader workers stopped before worker {worker} sent its last batch",
                            "a worker process died: look for its error above, then resume from the last state")

    def _consume(self, group: dict[str, Any], k: int) -> None:
        worker, index = group["worker"], group["index"] + k
        if k == 0 and group["anchor"] is not None:
            self.anchors[worker] = (index, group["anchor"])
        self.next_index[worker] = index + 1
        self.docs[worker] = group["docs"]
        self.total += 1
        self.cursor = (worker + 1) % self.num_workers

    def state_dict(self) -> dict[str, Any]:
        workers = {}
        for w in range(self.num_workers):
            if w in self.ended:
                workers[w] = {"ended": True}
            elif w in self.anchors:
                index, anchor = self.anchors[w]
                workers[w] = {"anchor_index": index, "anchor": anchor, "next_index": self.next_index[w]}
        return {"num_workers": self.num_workers, "workers": workers, "total": self.total,
                "ended": sorted(self.ended), "docs": dict(self.docs), "cursor": self.cursor,
                **({"tails": dict(self.tails)} if self.tails else {})}

    def load_state_dict(self, state: dict[str, Any], dataset: StreamingTextDataset) -> None:
        require_keys(state, ("num_workers", "workers", "total", "ended", "docs"), "DataLoader workers state",
                     "StreamingTextDataLoader.state_dict()")
        if state["num_workers"] != self.num_workers:
            raise StateError(f"the state was saved with num_workers={state['num_workers']}, "
                             f"this loader has num_workers={self.num_workers}",
                             "resume with the same num_workers (each worker owns a shard)")
        workers = {int(w): point for w, point in state["workers"].items()}
        self.cursor = state.get("cursor", state["total"] % self.num_workers)
        dataset.resume = workers
        dataset.rotation = self.cursor  # physical worker 0, asked first by torch, plays the cursor
        self.anchors = {w: (p["anchor_index"], p["anchor"]) for w, p in workers.items() if "anchor" in p}
        self.next_index = {w: p["next_index"] for w, p in workers.items() if "next_index" in p}
        self.ended = {int(w) for w in state["ended"]}
        self.docs = {int(w): n for w, n in state["docs"].items()}
        self.tails = {int(w): tail for w, tail in state.get("tails", {}).items()}
        self.total = state["total"]
        self._held.clear()
        self._current.clear()


class WorkerProducer:
    """The loader's producer with ``num_workers`` DataLoader worker processes (see the module docs).

    Args:
        data: what each worker opens again on its shard: a dataset name or a mixture (Streams,
            a mixture file). Ready-made sources and texts in memory cannot be split.
        encoder: the TextEncoder (pickled into each worker).
        num_workers, prefetch, pin_memory, multiprocessing_context: the DataLoader's.
        state_every: each worker attaches its full state to every ``state_every``-th batch.
        pipeline_options: TokenPipeline options (shuffle buffer, warm-up, positions).
        source_options: ``open_source`` options (corpus options; ``shard``/``num_shards`` place
            the whole loader, each worker takes a slice of that shard).
    """

    def __init__(self, data: Any, encoder: Any, batch_size: int, seq_len: int, seed: int, *, num_workers: int,
                 prefetch: int, pin_memory: bool, state_every: int, multiprocessing_context: str | None,
                 pipeline_options: dict[str, Any], source_options: dict[str, Any]):
        if not isinstance(data, (str, list, tuple, dict)):
            raise ConfigError(f"num_workers={num_workers} needs a dataset name or path as source, "
                              f"got {type(data).__name__}",
                              "each worker process opens its own shard: pass the dataset name and corpus options")
        self.dataset = StreamingTextDataset(data, encoder, batch_size, seq_len, seed, state_every=state_every,
                                            pipeline_options=pipeline_options, source_options=source_options)
        with self.dataset.open_source() as probe:  # validates the options here, in the caller
            self._fingerprint = probe.fingerprint()
        self.tracker = WorkerTracker(num_workers)
        self.num_workers, self.prefetch, self.pin_memory = num_workers, prefetch, pin_memory
        self.multiprocessing_context = multiprocessing_context
        self._items: Any = None

    def start(self) -> None:
        if self._items is None:
            # The tokenizer's backend is chosen here, once: the workers inherit the choice (instead
            # of each building the tiktoken twin), and a fork never copies a choice half made.
            log.debug("DataLoader workers tokenize with the %s backend", self.dataset.tokenizer.backend)
            # as_is: items are tensors already (and anchor states plain data): nothing to convert.
            # Batches are pinned one by one in next_batch (a group's slices would not stay pinned).
            self._items = iter(DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers,
                                          prefetch_factor=max(2, self.prefetch // 4), collate_fn=as_is,
                                          multiprocessing_context=self.multiprocessing_context))

    def next_batch(self) -> Batch | None:
        self.start()
        out = self.tracker.next_batch(self._items)
        if out is None:  # every worker's shard is done
            return None
        group, k = out
        rows, positions = group["rows"][k], group["positions"]
        # (B, T+1) -> 2 x (B, T)
        tensors = [rows[:, :-1].contiguous(), rows[:, 1:].contiguous(),
                   None if positions is None else positions[k][:, :-1].contiguous()]
        if self.pin_memory:
            tensors = [None if t is None else t.pin_memory() for t in tensors]
        records = group.get("records")
        return Batch(*tensors, docs=None if records is None else BatchDocs.from_plain(records[k]))

    def docs_in_flight(self) -> DocsInFlight:
        """Each worker's documents in flight at the state's point: an ended worker's tail as it sent
        it; the others' by restoring their pipelines there, as a resume would (a few seconds)."""
        out = DocsInFlight()
        tracker, state = self.tracker, self.tracker.state_dict()["workers"]
        for worker in range(self.num_workers):
            if worker in tracker.tails:
                out.add(DocsInFlight.from_plain(tracker.tails[worker]))
            elif worker not in tracker.ended:
                out.add(self.dataset.docs_in_flight(worker, self.num_workers, state.get(worker)))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"workers": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        require_keys(state, ("workers",), "loader state (DataLoader workers)", "StreamingTextDataLoader.state_dict()")
        self.halt()
        self.tracker.load_state_dict(state["workers"], self.dataset)

    def stats(self) -> dict[str, Any]:
        return {"docs": sum(self.tracker.docs.values())}

    def fingerprint(self) -> str:
        return self._fingerprint

    def halt(self) -> None:
        """End the worker processes (and their corpus subprocesses); the tracker keeps the state."""
        if self._items is not None:
            self._items._shutdown_workers()
            self._items = None

    def close(self) -> None:
        self.halt()
