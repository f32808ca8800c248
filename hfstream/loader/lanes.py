"""Lanes: the pipelines of the virtual shards one rank (× DataLoader worker) runs, making its rows in order.

A lane (:mod:`hfstream.loader.shards`) runs one :class:`~hfstream.loader.pipeline.TokenPipeline`
per *unit*: a shard, or (token mixture) a shard of one stream. A pipeline packs
:data:`CHUNK_ROWS` rows at a time (the same rows as one at a time: packing is a cut of the
document stream) and the lane hands them out one by one; it makes its rows in the global order
and sends them in *groups* (1, 2, 4, ... rows up to about ``GROUP_BYTES``), with an *anchor*
(the unit's full state before a chunk, compact when the source can seek) every ``state_every``
rows of each unit. The consumer keeps, per
unit, the last anchor it consumed and how many of the unit's rows it has consumed: that is
the unit's resume point, whichever rank and worker run the unit next (load the anchor, make
the rows in between again: deterministic). Torch-free, like the pipeline.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from hfstream.errors import StateError
from hfstream.loader.pipeline import DEFAULT_WARMUP, TokenPipeline, derive_seed
from hfstream.loader.batch import Rows
from hfstream.loader.records import BatchDocs, DocsInFlight, Reads
from hfstream.loader.shards import ShardPlan
from hfstream.mixing.schedule import GlobalCursor
from hfstream.sources import open_source

GROUP_BYTES = 1 << 20       # rows per group sent by a lane (int64 bytes)
CHUNK_ROWS = 8              # rows a unit's pipeline packs per call (its last partial chunk is its end)
DOCS_PER_MESSAGE = 64       # a shard reader's documents per message
UNIT_LOOKAHEAD = 4          # messages a unit keeps tokenizing ahead (the units take turns: keep the threads busy)
QUEUE_BYTES = 64 << 20      # the read-ahead text a corpus keeps, shared out between a lane's shards
#: a unit: (shard, stream label or None)
Unit = tuple[int, Any]


@dataclass
class ElasticSpec:
    """What a lane needs to open its units (picklable: it travels to DataLoader workers).

    Args:
        data: a dataset name/path or a document mixture (``open_source`` opens shard s of K).
        streams: a token mixture's sorted Streams (then ``data`` is unused).
        encoder: the TextEncoder.
        seq_len, seed, num_shards: T, the run's seed, K.
        pipeline_options: the loader's TokenPipeline options (the whole loader's shuffle buffer:
            each unit gets its share).
        source_options: ``open_source`` options for the dataset (not shard/num_shards).
        wrap: applied to each unit's source (e.g. held-out exclusion); picklable for workers.
        labels: a token mixture's schedule: ``counts``, ``method``, ``global_batch``,
            ``schedule_ranks``, ``epochs``.
    """

    data: Any
    encoder: Any
    seq_len: int
    seed: int
    num_shards: int
    pipeline_options: dict[str, Any] = field(default_factory=dict)
    source_options: dict[str, Any] = field(default_factory=dict)
    streams: list[Any] | None = None
    wrap: Callable[[Any], Any] | None = None
    labels: dict[str, Any] | None = None

    def cursor(self) -> GlobalCursor:
        lab = self.labels
        assert lab is not None
        return GlobalCursor(lab["counts"], lab["method"], self.seed, lab["global_batch"], lab["schedule_ranks"],
                            lab["epochs"])

    def unit_options(self) -> dict[str, Any]:
        """A unit's share of the loader's shuffle buffer (documents, bytes, warm-up)."""
        opts = dict(self.pipeline_options)
        k = self.num_shards
        size = opts.get("shuffle_buffer_size", 10_000)
        warmup = opts.get("shuffle_warmup")
        warmup = min(DEFAULT_WARMUP, max(size, 1)) if warmup is None else warmup
        opts["shuffle_buffer_size"] = size if size <= 1 else max(2, math.ceil(size / k))
        opts["shuffle_buffer_bytes"] = max(1 << 20, opts.get("shuffle_buffer_bytes", 256 << 20) // k)
        opts["shuffle_warmup"] = min(opts["shuffle_buffer_size"], max(1, math.ceil(warmup / k)))
        return opts

    def open_unit(self, unit: Unit, units_per_lane: int) -> TokenPipeline:
        shard, label = unit
        if label is None:
            queue = max(4 << 20, QUEUE_BYTES // max(units_per_lane, 1))
            source = open_source(self.data, corpus_defaults={"batch_size": DOCS_PER_MESSAGE, "queue_bytes": queue,
                                                                  "fork_server": True},
                                 mixture_defaults={"seed": self.seed, "epochs": 1}, shard=shard,
                                 num_shards=self.num_shards, **self.source_options)
            seed, stream = derive_seed(self.seed, f"shard{shard}"), None
        else:
            spec = next(s for s in self.streams or [] if s.label == label)
            source = spec.open_source(epochs=None, shard=shard, num_shards=self.num_shards)
            seed, stream = derive_seed(self.seed, f"{label}/shard{shard}"), label
        if self.wrap is not None:
            source = self.wrap(source)
        return TokenPipeline(source, self.encoder, CHUNK_ROWS, self.seq_len, seed=seed, stream=stream,
                             lookahead=UNIT_LOOKAHEAD,
                             **self.unit_options())


def _split(rows: Rows) -> list[Rows]:
    """A chunk's rows one by one; what was read for the chunk goes with its first row."""
    docs = rows.docs
    return [Rows(rows.tokens[j:j + 1], None if rows.positions is None else rows.positions[j:j + 1], None,
                 None if docs is None else BatchDocs([docs.rows[j]], docs.reads if j == 0 else Reads()))
            for j in range(len(rows.tokens))]


def unit_key(unit: Unit) -> list[Any]:
    return [unit[0], unit[1]]


class Lane:
    """One lane's units and its rows, from a resume point (None: the start).

    Args:
        spec: what to open.
        plan: the shard plan (this rank's place in it).
        lane: which lane of the rank (DataLoader worker id, 0 in a thread).
        point: the consumer's state (:meth:`hfstream.loader.elastic.ElasticTracker.state_dict`,
            merged over ranks): ``rows`` (global rows consumed), ``units``, ``labels``.
        state_every: rows of a unit between two anchors.
    """

    def __init__(self, spec: ElasticSpec, plan: ShardPlan, lane: int, point: dict[str, Any] | None,
                 state_every: int = 64):
        self.spec, self.plan, self.lane, self.state_every = spec, plan, lane, state_every
        self.units: dict[Unit, TokenPipeline] = {}
        self.index: dict[Unit, int] = {}
        self._chunk: dict[Unit, collections.deque] = {}   # rows of a unit's last chunk not handed out
        self._anchored: dict[Unit, int] = {}
        self._every: dict[Unit, int] = {}
        self.rows_before = 0 if point is None else point["rows"]
        self._labels_state = None if point is None else point.get("labels")
        self._per_lane = len(plan.shards(lane)) * (1 if spec.streams is None else len(spec.streams))
        mine = set(plan.shards(lane))
        for entry in [] if point is None else point["units"]:
            unit = (entry["shard"], entry["stream"])
            if unit[0] in mine:
                self._restore(unit, entry)
        for shard in plan.shards(lane):  # every reader starts now, side by side
            for stream in [None] if spec.streams is None else [s.label for s in spec.streams]:
                self._unit((shard, stream))
        for pipeline in self.units.values():  # and every shard's first texts are being tokenized
            pipeline.prefetch()

    def _unit(self, unit: Unit) -> TokenPipeline:
        pipeline = self.units.get(unit)
        if pipeline is None:
            pipeline = self.units[unit] = self.spec.open_unit(unit, self._per_lane)
            pipeline.start()
            self.index[unit] = 0
            self._chunk[unit] = collections.deque()
            # an anchor costs the unit's buffer (refs): a big buffer is anchored less often
            self._every[unit] = max(self.state_every, pipeline.buffer.capacity // 8)
        return pipeline

    def _next_row(self, unit: Unit) -> Any:
        """The unit's next row as a 1-row ``Rows`` (its chunk's reads on the chunk's first row), or None."""
        chunk = self._chunk[unit]
        if not chunk:
            out = self.units[unit].next_batch()
            if out is None:
                return None
            chunk.extend(_split(out))
        return chunk.popleft()

    def _restore(self, unit: Unit, entry: dict[str, Any]) -> None:
        pipeline = self._unit(unit)
        pipeline.load_state_dict(entry["anchor"])
        self._chunk[unit].clear()
        reads = Reads()
        for _ in range(entry["next_index"] - entry["anchor_index"]):
            out = self._next_row(unit)
            if out is None:
                raise StateError(f"replaying virtual shard {unit[0]} to its saved position ran out of data",
                                 "the dataset changed since the state was saved")
            if out.docs is not None:
                reads.add(out.docs.reads)
        self.index[unit] = entry["next_index"]
        recorder, logged = pipeline.recorder, entry.get("logged")
        if recorder is not None and logged is not None:
            # Making the rows again may read further than the first time did (the token cache filled
            # since, reads come in other sizes): what lies past what was logged is read now.
            reads.add(recorder.pending)
            recorder.pending = reads.after(*logged)

    def row_units(self) -> Iterator[Unit]:
        """The unit of each of this lane's rows, in order (ends with a token mixture's last epoch)."""
        plan, lanes = self.plan, self.plan.lanes
        first = self.rows_before // plan.world_size     # this rank's rows consumed
        if self.spec.streams is None:
            c = first + (self.lane - first) % lanes
            while True:
                yield plan.shard_of(c), None
                c += lanes
        cursor = self.spec.cursor()
        if self._labels_state is not None:
            cursor.load_state_dict(self._labels_state)
        labels = [s.label for s in self.spec.streams]
        u = self.rows_before
        while (label := cursor.next()) is not None:
            c, rank = divmod(u, plan.world_size)
            if rank == plan.rank and c % lanes == self.lane:
                yield plan.shard_of(c), labels[label]
            u += 1

    def groups(self, seq_len: int) -> Iterator[dict[str, Any]]:
        """Groups of rows: ``rows`` (n, T+1) int64, ``positions``, ``units``, ``anchors`` (``[offset,
        shard, stream, index, state]``), ``records`` (record_docs), ``docs``; a last ``{"end": True}``."""
        most = max(1, GROUP_BYTES // (8 * (seq_len + 1)))
        size = 1
        units = self.row_units()
        while True:
            rows: list[Any] = []
            taken: list[Unit] = []
            anchors: list[list[Any]] = []
            ended = False
            while len(rows) < size:
                unit = next(units, None)
                if unit is None:
                    ended = True
                    break
                pipeline = self._unit(unit)
                index = self.index[unit]
                due = unit not in self._anchored or index - self._anchored[unit] >= self._every[unit]
                if due and not self._chunk[unit]:  # anchors fall between chunks
                    anchors.append([len(rows), *unit_key(unit), index, pipeline.state_dict()])
                    self._anchored[unit] = index
                out = self._next_row(unit)
                if out is None:
                    ended = True
                    break
                self.index[unit] = index + 1
                rows.append(out)
                taken.append(unit)
            if rows:
                yield self._group(rows, taken, anchors)
            if ended:
                yield {"lane": self.lane, "end": True}
                return
            size = min(2 * size, most)

    def _group(self, rows: list[Any], taken: list[Unit], anchors: list[list[Any]]) -> dict[str, Any]:
        tokens = np.concatenate([r.tokens for r in rows])          # n x (1, T+1) -> (n, T+1)
        positions = None if rows[0].positions is None else np.concatenate([r.positions for r in rows])
        records = None if rows[0].docs is None else [r.docs.to_plain() for r in rows]
        return {"lane": self.lane, "rows": tokens, "positions": positions, "units": [unit_key(u) for u in taken],
                "anchors": anchors, "records": records, "docs": sum(p.num_docs for p in self.units.values())}

    def docs_in_flight(self) -> DocsInFlight:
        """The units' documents in flight, the rows of their chunks not handed out included."""
        out = DocsInFlight()
        for unit, pipeline in self.units.items():
            out.add(pipeline.docs_in_flight())
            for row in self._chunk[unit]:
                out.add_batch(row.docs)
        return out

    def close(self) -> None:
        for pipeline in self.units.values():
            pipeline.close()
        self.units.clear()
