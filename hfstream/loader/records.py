"""Document records (``record_docs``): which documents, and which of their tokens, each row of a batch holds.

A document's tokens as the packer lays them out are its ids and then the EOS: ``total`` =
``len(ids) + 1`` positions. A :data:`Span` ``(doc, start, end, total)`` says that tokens
``[start, end)`` of the document ``doc`` (a :data:`~hfstream.source.base.DocId`) are in a row; a
document split across rows (or batches) has one span in each, and the spans of a document that
was trained on exactly once cover ``[0, total)`` exactly once.

With each batch come the :class:`Reads` since the batch before: the row ranges the reader went
over (at the point the pipeline's state moved past them, so that a restore neither loses nor
repeats one), and the rows in them that hold no training document. ``hfstream audit`` puts both
together: every document read is trained on exactly once, or is still inside the loader at the
end (:class:`DocsInFlight`).

Everything here only runs when records are asked for; it needs only the standard library.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from hfstream.errors import StateError
from hfstream.source.base import DocBatch, DocId, Read

#: tokens ``[start, end)`` of a document of ``total`` tokens (ids + EOS): ``(doc, start, end, total)``
Span = tuple[DocId, int, int, int]


@dataclass
class Reads:
    """What a reader went over, and the rows in it that hold no training document.

    Attributes:
        ranges: row ranges read (:data:`~hfstream.source.base.Read`).
        skipped: row ranges inside them that the reader filtered out (too short, null text; read
            from a token cache, held-out documents too: the cache holds the stream without them).
        held_out: documents the held-out filter dropped.
        empty: documents without tokens (the packer skips them).
    """

    ranges: list[Read] = field(default_factory=list)
    skipped: list[Read] = field(default_factory=list)
    held_out: list[DocId] = field(default_factory=list)
    empty: list[DocId] = field(default_factory=list)

    def copy(self) -> "Reads":
        return Reads(list(self.ranges), list(self.skipped), list(self.held_out), list(self.empty))

    def after(self, epoch: int, row: int) -> "Reads":
        """What lies at or after row ``row`` of ``epoch``: what a pipeline restored by making rows again
        read beyond what had been logged (the rest was logged with the rows it made the first time)."""
        def clip(r: Read) -> Read | None:
            if (r[3], r[5]) <= (epoch, row):
                return None
            return (*r[:4], row, r[5]) if r[3] == epoch and r[4] < row else r

        def kept(ranges: list[Read]) -> list[Read]:
            return [c for c in map(clip, ranges) if c is not None]

        def later(docs: list[DocId]) -> list[DocId]:
            return [d for d in docs if (d[3], d[4]) >= (epoch, row)]

        return Reads(kept(self.ranges), kept(self.skipped), later(self.held_out), later(self.empty))

    def add(self, other: "Reads") -> None:
        self.ranges += other.ranges
        self.skipped += other.skipped
        self.held_out += other.held_out
        self.empty += other.empty

    def to_plain(self, table: "StreamTable") -> dict[str, Any]:
        out = {"reads": [table.flat(r) for r in self.ranges], "skipped": [table.flat(r) for r in self.skipped],
               "held_out": [table.flat(d) for d in self.held_out], "empty": [table.flat(d) for d in self.empty]}
        return {key: value for key, value in out.items() if value}

    @classmethod
    def from_plain(cls, plain: dict[str, Any], names: Sequence[str]) -> "Reads":
        return cls(*([unflat(x, names) for x in plain.get(key, ())]
                     for key in ("reads", "skipped", "held_out", "empty")))


@dataclass
class BatchDocs:
    """The records of one batch: each row's spans, and what was read since the batch before."""

    rows: list[list[Span]]
    reads: Reads = field(default_factory=Reads)

    def to_plain(self) -> dict[str, Any]:
        """JSON-ready: ``streams`` (the names), ``rows`` (per row, spans as ``[stream index, shard,
        num_shards, epoch, row, start, end, total]``), ``reads``/``skipped`` (``[stream index, shard,
        num_shards, epoch, start, end]``), ``held_out``/``empty`` (``[stream index, shard, num_shards,
        epoch, row]``); empty lists left out."""
        table = StreamTable()
        rows = [[table.flat(span[0]) + list(span[1:]) for span in row] for row in self.rows]
        return {"rows": rows, **self.reads.to_plain(table), "streams": table.names}

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> "BatchDocs":
        names = plain["streams"]
        rows = [[_span(x, names) for x in row] for row in plain["rows"]]
        return cls(rows, Reads.from_plain(plain, names))

    @classmethod
    def joined(cls, parts: Iterable["BatchDocs"]) -> "BatchDocs":
        """One batch made of the rows of ``parts``, in order (a token mixture's rows)."""
        out = cls([])
        for part in parts:
            out.rows += part.rows
            out.reads.add(part.reads)
        return out


@dataclass
class DocsInFlight:
    """The documents inside a loader at a consistent point (its state's): read, not all handed out.

    Attributes:
        buffered: each such document's part not yet in a batch handed out (shuffle buffer, packer,
            batches prepared ahead).
        tail: the same, for a stream that ended: less than a batch, never handed out.
        reads: what was read since the last batch handed out.
    """

    buffered: list[Span] = field(default_factory=list)
    tail: list[Span] = field(default_factory=list)
    reads: Reads = field(default_factory=Reads)

    def add(self, other: "DocsInFlight") -> None:
        self.buffered += other.buffered
        self.tail += other.tail
        self.reads.add(other.reads)

    def add_batch(self, batch: BatchDocs) -> None:
        """A batch prepared but not handed out: its documents are still in flight."""
        self.buffered += [span for row in batch.rows for span in row]
        self.reads.add(batch.reads)

    def to_plain(self) -> dict[str, Any]:
        table = StreamTable()
        spans = lambda spans: [table.flat(s[0]) + list(s[1:]) for s in spans]  # noqa: E731
        return {"buffered": spans(self.buffered), "tail": spans(self.tail), **self.reads.to_plain(table),
                "streams": table.names}

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> "DocsInFlight":
        names = plain["streams"]
        return cls([_span(x, names) for x in plain["buffered"]], [_span(x, names) for x in plain["tail"]],
                   Reads.from_plain(plain, names))


class StreamTable:
    """Stream names by index, so that a record names each stream once."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def flat(self, item: tuple[Any, ...]) -> list[Any]:
        """A DocId or Read as a list, its stream replaced by the stream's index."""
        index = self._index.get(item[0])
        if index is None:
            index = self._index[item[0]] = len(self.names)
            self.names.append(item[0])
        return [index, *item[1:]]


def unflat(flat: Sequence[Any], names: Sequence[str]) -> tuple[Any, ...]:
    return (names[flat[0]], *flat[1:])


def _span(flat: Sequence[Any], names: Sequence[str]) -> Span:
    return (names[flat[0]], *flat[1:5]), flat[5], flat[6], flat[7]  # type: ignore[return-value]


class DocRecorder:
    """A token pipeline's records: each document's id as it is read, each batch's spans.

    Items are the pipeline's ``(ref, token ids, check, id)``.

    Args:
        stream: the name of the pipeline's stream (a source that does not name its documents'
            stream: a corpus, texts in memory).
        eos: 1 when an EOS follows every document, else 0.
    """

    def __init__(self, stream: str, eos: int):
        self.stream, self.eos = stream, eos
        self.pending = Reads()   # read since the last batch

    def _named(self, item: tuple[Any, ...]) -> tuple[Any, ...]:
        return item if item[0] is not None else (self.stream, *item[1:])

    def read(self, batch: DocBatch, arrays: Sequence[Any], num_docs: int) -> list[DocId]:
        """The ids of a batch's documents (numbered in arrival order when the source gives none,
        from ``num_docs``, the documents read before); notes what was read."""
        n, name = len(arrays), self.stream
        if batch.ids is None:
            ids = [(name, 0, 0, 0, num_docs + i) for i in range(n)]
            reads = [(name, 0, 0, 0, num_docs, num_docs + n)] if n else []
        else:
            ids = [self._named(d) for d in batch.ids]
            reads = [self._named(r) for r in batch.reads or ()]
        held = [self._named(d) for d in batch.held_out or ()]
        pending = self.pending
        pending.ranges += reads
        pending.held_out += held
        pending.empty += [doc for doc, array in zip(ids, arrays) if not len(array)]
        if batch.ids is not None:
            pending.skipped += _gaps(reads, ids + held)
        return ids  # type: ignore[return-value]

    def batch(self, packed: Iterable[Any], skip: int, num_rows: int, row_len: int) -> BatchDocs:
        """The spans of ``num_rows`` rows of ``row_len`` tokens packed from ``packed`` (the items in
        the packer, in order; the first ``skip`` tokens of the first are in rows before), with
        what was read since the batch before."""
        items, rows = iter(packed), []
        doc, total, offset = None, 0, 0
        for _ in range(num_rows):
            spans, need = [], row_len
            while need:
                if doc is None or offset == total:
                    item = next(items)
                    offset = skip if doc is None else 0
                    doc, total = item[3], len(item[1]) + self.eos
                take = min(need, total - offset)
                spans.append((doc, offset, offset + take, total))
                offset += take
                need -= take
            rows.append(spans)
        out, self.pending = BatchDocs(rows, self.pending), Reads()
        return out

    def in_flight(self, buffered: Sequence[Any], packed: Sequence[Any], skip: int, ended: bool) -> DocsInFlight:
        """The documents in the buffer (``buffered`` items) and the packer (``packed``, the first
        ``skip`` tokens of the first already handed out); ``ended``: the stream is done."""
        eos = self.eos
        in_packer = [(item[3], skip if i == 0 else 0, len(item[1]) + eos, len(item[1]) + eos)
                     for i, item in enumerate(packed)]
        in_buffer = [(item[3], 0, len(item[1]) + eos, len(item[1]) + eos) for item in buffered if len(item[1])]
        return DocsInFlight(in_buffer + ([] if ended else in_packer), in_packer if ended else [],
                            self.pending.copy())

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self, buffered: Sequence[Any], packed: Sequence[Any]) -> dict[str, Any]:
        """The ids of the buffered and packed items (and the packed ones' lengths: a state that
        keeps token arrays keeps the packer's tokens without documents), and the pending reads."""
        table = StreamTable()
        return {"buffer": [table.flat(item[3]) for item in buffered],
                "packer": [table.flat(item[3]) for item in packed],
                "packer_lengths": [len(item[1]) for item in packed],
                "pending": self.pending.to_plain(table), "streams": table.names}

    def load_state_dict(self, state: dict[str, Any] | None) -> tuple[list[DocId], list[DocId], list[int]]:
        """The ids of the buffered and packed items and the packed ones' lengths, from ``state_dict``.

        Raises:
            StateError: the state was saved without records.
        """
        if state is None:
            raise StateError("the loader state was saved without record_docs: the documents in its buffers have no ids",
                             "record documents from the first step of a run (train.record_docs), or resume "
                             "this run without it")
        names = state["streams"]
        self.pending = Reads.from_plain(state["pending"], names)
        return ([unflat(x, names) for x in state["buffer"]],  # type: ignore[misc]
                [unflat(x, names) for x in state["packer"]], list(state["packer_lengths"]))


def _gaps(reads: Sequence[Read], docs: Sequence[DocId]) -> list[Read]:
    """The row ranges in ``reads`` that hold none of ``docs``."""
    rows: dict[tuple[Any, ...], set[int]] = defaultdict(set)
    for doc in docs:
        rows[doc[:4]].add(doc[4])
    out = []
    for read in reads:
        have, start = rows.get(read[:4], set()), None
        for row in range(read[4], read[5]):
            if row not in have and start is None:
                start = row
            elif row in have and start is not None:
                out.append((*read[:4], start, row))
                start = None
        if start is not None:
            out.append((*read[:4], start, read[5]))
    return out
