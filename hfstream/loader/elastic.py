"""ElasticProducer: the loader's producer with virtual shards, a state keyed by shard, resumable on any ranks × workers.

The rank's lanes (:mod:`hfstream.loader.lanes`) run in a background thread (``num_workers=0``)
or in torch DataLoader workers; :class:`ElasticTracker` takes the rank's rows in the global
order (row ``c`` from lane ``c mod N``), makes batches of B rows, and keeps the state: the global
rows consumed, each unit's last anchor and rows consumed, and (token mixture) the schedule's
position. The states of every rank merge (:func:`merge_states`) into one state that any
number of ranks and workers can load: each takes the units of the shards it now owns.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import queue
import threading
from typing import Any, Iterator

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hfstream.errors import ConfigError, HfStreamError, StateError
from hfstream.loader.batch import Batch, Rows, rows_to_batch
from hfstream.loader.lanes import ElasticSpec, Lane, Unit
from hfstream.loader.records import BatchDocs, DocsInFlight
from hfstream.loader.shards import ShardPlan
from hfstream.mixing.schedule import check_schedule
from hfstream.mixing.streams import epoch_counts, parse_count, sorted_streams
from hfstream.source.base import require_keys
from hfstream.sources import open_source

log = logging.getLogger("hfstream.loader.elastic")
STATE_VERSION = 1
_STATE_HINT = "pass the dict returned by StreamingTextDataLoader.state_dict() (every rank's, merged)"


def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One loader state from every rank's ``StreamingTextDataLoader.state_dict()`` (virtual shards):
    what a resume on any number of ranks and workers loads, on every rank.

    Raises:
        StateError: states of other runs, or taken at different points (not after the same step).
    """
    if not states:
        raise StateError("no loader states to merge", "pass every rank's state_dict()")
    first = states[0]
    parts = [require_keys(s.get("elastic"), ("rows", "units", "shards", "labels"), "virtual-shard loader state",
                          "StreamingTextDataLoader(..., virtual_shards=K).state_dict()") for s in states]
    for state, part in zip(states, parts):
        if state.get("fingerprint") != first.get("fingerprint"):
            raise StateError("the loader states to merge come from different runs (their fingerprints differ)",
                             "merge the states of one checkpoint, every rank's")
        if part["rows"] != parts[0]["rows"] or part["labels"] != parts[0]["labels"]:
            raise StateError(f"the ranks' loader states were saved at different points ({part['rows']:,} vs "
                             f"{parts[0]['rows']:,} global rows)", "merge states saved after the same step")
    units = {(u["shard"], u["stream"]): u for part in parts for u in part["units"]}
    shards = sorted({s for part in parts for s in part["shards"]})
    merged = {"rows": parts[0]["rows"], "labels": parts[0]["labels"], "shards": shards,
              "units": [units[k] for k in sorted(units, key=lambda k: (k[0], str(k[1])))],
              "docs": sum(p.get("docs", 0) for p in parts)}
    return {**first, "elastic": merged, "batches": max(s.get("batches", 0) for s in states)}


class ElasticTracker:
    """The consumer's side: rows in the global order, batches, and the state keyed by unit."""

    def __init__(self, spec: ElasticSpec, plan: ShardPlan):
        self.spec, self.plan = spec, plan
        self.rows = 0                      # global rows consumed (every rank's); this rank's: rows // W
        self.units: dict[Unit, dict[str, Any]] = {}
        self.cursor = spec.cursor() if spec.streams is not None else None
        self.lane_docs: dict[int, int] = {}
        self.docs_before = 0
        self._held: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self._current: dict[int, tuple[dict[str, Any], int]] = {}
        self._ended: set[int] = set()

    def point(self) -> dict[str, Any] | None:
        """Where the lanes start: None at the very start, else this state."""
        return None if self.rows == 0 and not self.units else self.state_dict()

    def take_row(self, items: Iterator[dict[str, Any]], ahead: int) -> tuple[dict[str, Any], int] | None:
        """The rank's row ``ahead`` rows after the last consumed, as (its group, its offset) (rows are
        taken in order); None when its lane's shard ended."""
        lane = self.plan.lane_of(self.rows // self.plan.world_size + ahead)
        if lane in self._ended:
            return None
        group, k = self._current.pop(lane, (None, 0))
        if group is None:
            held = self._held[lane]
            group = held.popleft() if held else self._receive(items, lane)
            if group.get("end"):
                self._ended.add(lane)
                return None
            self.lane_docs[lane] = group["docs"]
        if k + 1 < len(group["rows"]):
            self._current[lane] = (group, k + 1)
        return group, k

    def consume(self, group: dict[str, Any], k: int) -> None:
        """Row ``k`` of ``group`` was handed out (part of a batch returned to the caller)."""
        for offset, shard, stream, index, state in group["anchors"]:
            if offset == k:
                before = self.units.get((shard, stream), {})
                self.units[(shard, stream)] = {"shard": shard, "stream": stream, "anchor_index": index,
                                               "anchor": state, "next_index": index,
                                               **({"logged": before["logged"]} if "logged" in before else {})}
        shard, stream = group["units"][k]
        entry = self.units[(shard, stream)]
        entry["next_index"] += 1
        if group["records"] is not None:  # how far this unit's reads are logged (see Lane._restore)
            ends = [(r[3], r[5]) for r in group["records"][k].get("reads", ())]
            if ends:
                entry["logged"] = list(max([tuple(entry.get("logged", (0, 0))), *ends]))
        self.rows += self.plan.world_size
        if self.cursor is not None:  # the schedule moves over every rank's rows
            for _ in range(self.plan.world_size):
                self.cursor.next()

    def _receive(self, items: Iterator[dict[str, Any]], lane: int) -> dict[str, Any]:
        for item in items:
            if item["lane"] == lane:
                return item
            self._held[item["lane"]].append(item)
        raise HfStreamError(f"the loader's lanes stopped before lane {lane} sent its last row",
                            "a DataLoader worker died: look for its error above, then resume from the last state")

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "shards": self.plan.all_shards(),
                "units": [dict(u) for u in self.units.values()],
                "labels": None if self.cursor is None else self.cursor.state_dict(),
                "docs": self.docs()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        require_keys(state, ("rows", "units", "shards", "labels"), "virtual-shard loader state", _STATE_HINT)
        plan = self.plan
        missing = sorted(set(plan.all_shards()) - set(state["shards"]))
        if missing:
            raise StateError(f"the loader state has no position for virtual shard(s) {missing[:8]} (it holds "
                             f"{len(state['shards'])} of {plan.num_shards}): it is one rank's state, and the "
                             f"shards moved to other ranks",
                             "load hfstream.loader.elastic.merge_states([every rank's state_dict()]) on every rank")
        if state["rows"] % plan.world_size:
            raise StateError(f"the state was saved after {state['rows']:,} global rows, not a whole number of "
                             f"rows for each of {plan.world_size} ranks",
                             "resume from a state saved after a whole global batch (a checkpoint's step)")
        mine = set(plan.all_shards())
        self.units = {(u["shard"], u["stream"]): dict(u) for u in state["units"] if u["shard"] in mine}
        self.rows = state["rows"]
        if self.cursor is not None and state["labels"] is not None:
            self.cursor.load_state_dict(state["labels"])
        self.docs_before, self.lane_docs = state.get("docs", 0), {}
        self.forget_received()

    def forget_received(self) -> None:
        """Drop the rows received and not consumed (the lanes stop: they make them again from the state)."""
        self._held.clear()
        self._current.clear()
        self._ended.clear()

    def docs(self) -> int:
        """Documents the lanes have read (this process's, plus those of the restored state)."""
        return self.docs_before + sum(self.lane_docs.values())


class LaneDataset(IterableDataset):
    """The lanes of one rank as a DataLoader dataset: worker ``w`` runs lane ``w``."""

    def __init__(self, spec: ElasticSpec, plan: ShardPlan, state_every: int):
        super().__init__()
        self.spec, self.plan, self.state_every = spec, plan, state_every
        self.point: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        lane = info.id if info is not None else 0
        if info is not None:  # the tokenizer threads are shared out between the workers
            self.spec.encoder.num_threads = max(1, self.spec.encoder.num_threads // info.num_workers)
        runner = Lane(self.spec, self.plan, lane, self.point, self.state_every)
        try:
            yield from runner.groups(self.spec.seq_len)
        finally:
            runner.close()


def _as_is(item: dict[str, Any]) -> dict[str, Any]:
    return item


class ThreadLane:
    """Lane 0 run in a background thread; its groups come out of a bounded queue."""

    def __init__(self, lane: Lane, seq_len: int, prefetch: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(lane, seq_len), daemon=True, name="hfstream-lane")
        self._thread.start()

    def _run(self, lane: Lane, seq_len: int) -> None:
        try:
            for group in lane.groups(seq_len):
                while not self._stop.is_set():
                    try:
                        self._queue.put(group, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._queue.put(exc)
        finally:
            lane.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


class ElasticProducer:
    """The loader's producer with virtual shards (see the module docs).

    Args:
        spec: what the lanes open.
        plan: K shards, this rank's place, its workers.
        batch_size: rows per batch (B; may differ between segments of a run).
        prefetch, pin_memory, multiprocessing_context: as for the other producers.
        state_every: rows of a unit between two anchors (a restore remakes at most that many per unit).
    """

    def __init__(self, spec: ElasticSpec, plan: ShardPlan, batch_size: int, *, prefetch: int, pin_memory: bool,
                 state_every: int, multiprocessing_context: str | None, fingerprint: str):
        self.spec, self.plan, self.batch_size = spec, plan, batch_size
        self.prefetch, self.pin_memory, self.state_every = prefetch, pin_memory, state_every
        self.multiprocessing_context = multiprocessing_context
        self.tracker = ElasticTracker(spec, plan)
        self._fingerprint = fingerprint
        self._stream_ids = {s.label: i for i, s in enumerate(spec.streams or [])}  # a row's stream -> its id
        self._items: Any = None
        self._thread: ThreadLane | None = None

    def start(self) -> None:
        if self._items is not None:
            return
        point = self.tracker.point()
        if self.plan.num_workers == 0:
            self._thread = ThreadLane(Lane(self.spec, self.plan, 0, point, self.state_every), self.spec.seq_len,
                                      self.prefetch)
            self._items = iter(self._thread)
        else:
            dataset = LaneDataset(self.spec, self.plan, self.state_every)
            dataset.point = point
            self._items = iter(DataLoader(dataset, batch_size=None, num_workers=self.plan.num_workers,
                                          prefetch_factor=max(2, self.prefetch // 4), collate_fn=_as_is,
                                          multiprocessing_context=self.multiprocessing_context))

    def next_batch(self) -> Batch | None:
        self.start()
        taken = []
        for i in range(self.batch_size):
            row = self.tracker.take_row(self._items, i)
            if row is None:  # a shard ended: a batch that cannot be completed is not handed out
                return None
            taken.append(row)
        for group, k in taken:
            self.tracker.consume(group, k)
        tokens = np.stack([g["rows"][k] for g, k in taken])
        positions = None if taken[0][0]["positions"] is None else np.stack([g["positions"][k] for g, k in taken])
        ids = None
        if self.spec.streams is not None:
            ids = np.array([self._stream_ids[g["units"][k][1]] for g, k in taken], dtype=np.int64)
        docs = None
        if taken[0][0]["records"] is not None:
            docs = BatchDocs.joined(BatchDocs.from_plain(g["records"][k]) for g, k in taken)
        return rows_to_batch(Rows(tokens, positions, ids, docs), self.pin_memory)

    def docs_in_flight(self) -> DocsInFlight:
        """Every lane's documents in flight at the state's point: its units restored there."""
        self.halt()
        out = DocsInFlight()
        point = self.tracker.point()
        for lane in range(self.plan.lanes):
            runner = Lane(self.spec, self.plan, lane, point, self.state_every)
            try:
                out.add(runner.docs_in_flight())
            finally:
                runner.close()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"elastic": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        require_keys(state, ("elastic",), "loader state (virtual shards)", _STATE_HINT)
        self.halt()
        self.tracker.load_state_dict(state["elastic"])

    def stats(self) -> dict[str, Any]:
        return {"docs": self.tracker.docs()}

    def fingerprint(self) -> str:
        return self._fingerprint

    def halt(self) -> None:
        if self._thread is not None:
            self._thread.close()
            self._thread = None
        elif self._items is not None:
            self._items._shutdown_workers()
        self._items = None
        self.tracker.forget_received()

    def close(self) -> None:
        self.halt()


def elastic_producer(source: Any, streams: list[Any] | None, encoder: Any, batch_size: int, seq_len: int, seed: int,
                     num_shards: int, *, num_workers: int, prefetch: int, pin_memory: bool,
                     pipeline_options: dict[str, Any], corpus_options: dict[str, Any], wrap_source: Any,
                     global_batch: int | None, schedule_ranks: int | None, epoch_size: Any, batching_method: str,
                     state_every: int, multiprocessing_context: str | None) -> tuple[ElasticProducer, int | None]:
    """The loader's ElasticProducer, its options checked; and the global batch a token mixture is drawn in.

    A shard's anchor (its full state) comes every ``state_every // 4`` of its rows (64 by default):
    a restore makes at most that many rows per shard again.
    """
    options = dict(corpus_options)
    rank, world_size = options.pop("shard", 0), options.pop("num_shards", 1)
    plan = ShardPlan(num_shards, world_size, rank, num_workers)
    if not isinstance(source, (str, list, tuple, dict)):
        raise ConfigError(f"virtual_shards needs a dataset name, path or mixture as source, got {type(source).__name__}",
                          "each virtual shard opens the source again on its part: pass the dataset name and "
                          "corpus options (texts in memory and ready-made sources cannot be split)")
    spec = ElasticSpec(source, encoder, seq_len, seed, num_shards, pipeline_options, {}, wrap=wrap_source)
    if streams is None:
        spec.source_options = options
        with open_source(source, mixture_defaults={"seed": seed, "epochs": 1}, shard=0, num_shards=num_shards,
                         **options) as probe:  # validates the options here, in the caller
            fingerprint = f"vshards:{num_shards}:{probe.fingerprint()}"
        global_batch = None
    else:
        global_batch = global_batch or batch_size * world_size
        spec.streams, spec.labels, fingerprint = _token_labels(streams, seq_len, seed, options, global_batch,
                                                               schedule_ranks or world_size, epoch_size,
                                                               batching_method, world_size)
    return ElasticProducer(spec, plan, batch_size, prefetch=prefetch, pin_memory=pin_memory,
                           state_every=max(1, state_every // 4), multiprocessing_context=multiprocessing_context,
                           fingerprint=fingerprint), global_batch


def _token_labels(streams: list[Any], seq_len: int, seed: int, options: dict[str, Any], global_batch: int,
                  schedule_ranks: int, epoch_size: Any, method: str, world_size: int
                  ) -> tuple[list[Any], dict[str, Any], str]:
    """A token mixture's streams, its global schedule and its fingerprint (budgets in rows of T+1 tokens)."""
    epochs = options.pop("epochs", None)
    if options:
        raise ConfigError(f"options {sorted(options)} do not apply to a mixture as a whole",
                          "put source options on each stream: Stream(dataset, text_column=...)")
    check_schedule(method, global_batch, world_size)
    ordered = sorted_streams(streams)
    budgets = epoch_counts(ordered, [None] * len(ordered), None if epoch_size is None else parse_count(epoch_size),
                           seed)
    counts = [b // (seq_len + 1) for b in budgets]
    labels = {"counts": counts, "method": method, "global_batch": global_batch,
              "schedule_ranks": schedule_ranks if method == "device_per_stream" else 1, "epochs": epochs}
    ident = [(s.label, s.dataset, b) for s, b in zip(ordered, budgets)]
    digest = hashlib.sha1(f"{ident}|{labels}".encode()).hexdigest()[:16]
    return ordered, labels, f"vrows:{digest}"
