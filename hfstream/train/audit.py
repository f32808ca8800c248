"""The exactly-once proof behind ``hfstream audit``: every rank's docs log, every segment, put together.

What was *expected* is what the readers read: the row ranges of each stream's shard in each epoch
(logged at the point the loader's state moved past them, so a resume neither repeats nor loses
one), minus the rows in them that hold no training document (filtered by the reader, held out,
without tokens). For an epoch the reader finished, that is every row of the shard: ranges must
start at row 0 and follow each other without a hole or an overlap. Each expected document must
then be covered token by token (``[0, total)``: its ids and the EOS) exactly once by the spans of
trained rows, or of what was still inside the loader when the run ended (its buffers, or the
tail of a stream that ended: less than a batch). Anything else is a problem: a token range
trained twice, a range never trained and not in a buffer, a trained document that was never read
(or was held out), rows never read, rows read twice.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from hfstream.errors import ConfigError, DataFormatError
from hfstream.mixing.streams import epoch_counts, parse_count, sorted_streams
from hfstream.rundir import read_metrics
from hfstream.train.config import load_config

EXIT_CLEAN, EXIT_PROBLEMS = 0, 1
RECORD_HINT = "set train.record_docs: true (or --record_docs true) for a new run, then audit its directory"
#: what a document's tokens were: trained, still in a buffer, the tail of an ended stream, fetched but not trained
KINDS = ("trained", "buffered", "tail", "dropped")
STATUSES = ("once", "repeated", "missing", "buffered", "tail")


@dataclass
class Piece:
    start: int
    end: int
    total: int
    kind: str
    where: str


@dataclass
class Cell:
    """One line of the report: an epoch of a stream (all its shards)."""

    expected: int = 0
    held_out: int = 0
    filtered: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    complete: bool = True
    numbered: bool = False   # a source that cannot say where its documents are


@dataclass
class Logs:
    """Every rank's records, parsed."""

    ranks: list[int] = field(default_factory=list)
    steps: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)
    micro_batches: int = 0
    pieces: dict[tuple, list[Piece]] = field(default_factory=lambda: defaultdict(list))
    reads: dict[tuple, list[tuple[int, int, str]]] = field(default_factory=lambda: defaultdict(list))
    skipped: set[tuple] = field(default_factory=set)
    held_out: set[tuple] = field(default_factory=set)
    empty: set[tuple] = field(default_factory=set)
    tokens: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _key(names: list[str], flat: list[Any], rank: int) -> tuple:
    """A document's (stream, shard, num_shards, epoch, row); numbered documents are the rank's own."""
    stream, shard, num_shards, epoch, row = names[flat[0]], *flat[1:5]
    return stream, rank if num_shards == 0 else shard, num_shards, epoch, row


def read_logs(run_dir: Path) -> Logs:
    """Parse every docs-rankR.jsonl of ``run_dir``.

    The segments are rank 0's (each says its world size). A rank's records count for the
    segments it took part in: when a resume changes the number of ranks (elastic), a rank that
    no longer runs keeps what it logged up to the resume's step, and its final line is stale
    (its documents in flight went on in the state the others loaded).

    Raises:
        ConfigError: no logs, or a log that does not cover its run (no final line, a missing step).
        DataFormatError: a line that is not a record of ``train.record_docs``.
    """
    if not run_dir.is_dir():
        raise ConfigError(f"{str(run_dir)!r} is not a directory", "pass a train-streaming output directory")
    paths = {int(re.sub(r"\D", "", p.name) or 0): p for p in run_dir.glob("docs-rank*.jsonl")}
    if 0 not in paths:
        raise ConfigError(f"{run_dir} has no docs-rank0.jsonl: the run did not record its documents", RECORD_HINT)
    logs = Logs()
    for rank, path in sorted(paths.items()):
        try:
            records = read_metrics(path)
            if rank == 0:
                logs.segments = [r["segment"] for r in records if "segment" in r]
                logs.steps = _final_step(records, path)
            _read_rank(logs, records, path, rank)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise DataFormatError(f"{path} holds a line that is not a record of train.record_docs ({exc!r})",
                                  "audit the directory train-streaming wrote, unedited") from exc
    reached = _steps_reached(run_dir)
    if reached > logs.steps:
        raise ConfigError(f"the docs logs end at step {logs.steps}, but the run reached step {reached} "
                          "(resumed without train.record_docs?)", "keep train.record_docs on for the whole run")
    return logs


def _final_step(records: list[dict[str, Any]], path: Path) -> int:
    finals = [r["step"] for r in records if r.get("final")]
    if not finals:
        raise ConfigError(f"{path.name} has no final line: the run's last segment did not end (it crashed, or is "
                          "still running)", "resume it (train-streaming --resume: the log is cut back to the "
                          "checkpoint), then audit it when it stops")
    return finals[-1]


def _steps_reached(run_dir: Path) -> int:
    """The steps the run's summary.json says it reached (0 when there is none to read)."""
    try:
        steps = json.loads((run_dir / "summary.json").read_text()).get("steps")
    except (OSError, ValueError, AttributeError):
        return 0
    return steps if isinstance(steps, int) else 0


def _read_rank(logs: Logs, records: list[dict[str, Any]], path: Path, rank: int) -> None:
    """Add one rank's records of the segments it took part in: steps ``(start, end]`` of each."""
    starts = [s["resumed_at"] or 0 for s in logs.segments]
    mine = [(a, b) for a, b, s in zip(starts, starts[1:] + [logs.steps], logs.segments) if s["world_size"] > rank]
    if not mine:
        return  # a rank of no segment of this run
    logs.ranks.append(rank)
    in_last = logs.segments[-1]["world_size"] > rank
    final, taken = None, set()
    for record in records:
        if "segment" in record:
            continue
        names = record["streams"]
        if record.get("final"):
            if not in_last:
                continue
            final = record
            _add_spans(logs, names, record["buffered"], "buffered", f"rank {rank} (in a buffer at the end)", rank)
            _add_spans(logs, names, record["tail"], "tail", f"rank {rank} (the stream's tail)", rank)
        else:
            step, micro = record["step"], record["micro"]
            if not any(a < step <= b for a, b in mine):
                continue  # after a resume this rank took no part in: redone by the others
            kind = "dropped" if record.get("dropped") else "trained"
            if kind == "trained":
                taken.add(step)
                logs.micro_batches += 1
            for r, row in enumerate(record["rows"]):
                _add_spans(logs, names, row, kind, f"step {step} rank {rank} micro {micro} row {r}", rank)
        _add_reads(logs, names, record, rank)
    if in_last and (final is None or final["step"] != logs.steps):
        raise ConfigError(f"{path.name} ends at step {None if final is None else final['step']}, rank 0's at step "
                          f"{logs.steps}", "audit a run whose every rank wrote its log to the end")
    missing = sorted({s for a, b in mine for s in range(a + 1, b + 1)} - taken)
    if missing:
        raise ConfigError(f"{path.name} has no records of step(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                          "it does not cover the run (record_docs turned on after its start?)", RECORD_HINT)


def _add_spans(logs: Logs, names: list[str], spans: Iterable[list[Any]], kind: str, where: str, rank: int) -> None:
    for flat in spans:
        doc = _key(names, flat, rank)
        logs.pieces[doc].append(Piece(flat[5], flat[6], flat[7], kind, where))
        if kind == "trained":
            logs.tokens[doc[0]] += flat[6] - flat[5]


def _add_reads(logs: Logs, names: list[str], record: dict[str, Any], rank: int) -> None:
    where = f"step {record['step']} rank {rank}" + (" (at the end)" if record.get("final") else "")
    for flat in record.get("reads", ()):
        stream, shard, num_shards, epoch = _key(names, flat[:4] + [0], rank)[:4]
        logs.reads[(stream, shard, num_shards, epoch)].append((flat[4], flat[5], where))
    for flat in record.get("skipped", ()):
        place = _key(names, flat[:4] + [0], rank)[:4]
        logs.skipped.update((*place, row) for row in range(flat[4], flat[5]))
    logs.held_out.update(_key(names, flat, rank) for flat in record.get("held_out", ()))
    logs.empty.update(_key(names, flat, rank) for flat in record.get("empty", ()))


@dataclass
class Audit:
    """The report: one :class:`Cell` per (epoch, stream), the tokens per stream, the problems."""

    logs: Logs
    cells: dict[tuple[int, str], Cell] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    num_problems: int = 0
    budgets: dict[str, float] | None = None   # a token mixture's target share of each stream

    @property
    def clean(self) -> bool:
        return self.num_problems == 0

    def problem(self, text: str, limit: int) -> None:
        self.num_problems += 1
        if len(self.problems) < limit:
            self.problems.append(text)


def audit(run_dir: str | Path, show: int = 10) -> Audit:
    """Audit the run in ``run_dir`` (see the module docs); ``show``: problems described at most."""
    run_dir = Path(run_dir)
    out = Audit(read_logs(run_dir))
    logs = out.logs
    expected = _expected(out, show)
    for doc in sorted(expected | logs.pieces.keys(), key=_order):
        cell = _cell(out, doc)
        pieces = logs.pieces.get(doc, [])
        if doc not in expected:
            if doc in logs.held_out or doc in logs.skipped:
                why = "held out" if doc in logs.held_out else "filtered out by the reader"
            else:
                why = "never read"
            out.problem(f"{_name(doc)} was {why}, yet trained: {_wheres(pieces)}", show)
            continue
        status, detail = _status(pieces, doc)
        cell.counts[status] += 1
        if status in ("repeated", "missing"):
            out.problem(f"{_name(doc)}: {detail}", show)
    for doc in logs.held_out:
        _cell(out, doc).held_out += 1
    for doc in logs.skipped | logs.empty:
        _cell(out, doc).filtered += 1
    out.budgets = _budgets(run_dir)
    return out


def _order(doc: tuple) -> tuple:
    return doc[3], doc[0], doc[1], doc[4]


def _cell(out: Audit, doc: tuple) -> Cell:
    key = (doc[3], doc[0])
    if key not in out.cells:
        out.cells[key] = Cell(numbered=doc[2] == 0)
    return out.cells[key]


def _expected(out: Audit, show: int) -> set[tuple]:
    """The documents read (rows read minus the filtered, held-out and empty ones); marks epochs
    complete (the reader went on to a later one) or partial, and reports holes and overlaps in
    what was read."""
    logs, expected = out.logs, set()
    last_epoch: dict[tuple, int] = defaultdict(lambda: -1)
    for (stream, shard, num_shards, epoch) in logs.reads:
        last_epoch[stream, shard, num_shards] = max(last_epoch[stream, shard, num_shards], epoch)
    for (stream, shard, num_shards, epoch), reads in sorted(logs.reads.items(), key=lambda kv: (kv[0][3], kv[0][:3])):
        place = (stream, shard, num_shards)
        reads = sorted(r for r in reads if r[1] > r[0])  # empty reads only say where a reader stopped
        if not reads:
            continue
        _cell(out, (*place, epoch, 0)).complete &= last_epoch[place] > epoch
        name, end = f"{stream} {_shard(shard, num_shards)} epoch {epoch}", 0
        for start, stop, where in reads:
            if start > end:
                out.problem(f"{name}: rows {end}-{start - 1} were never read (the next read, at {where}, "
                            f"starts at row {start})", show)
            elif start < end:
                out.problem(f"{name}: rows {start}-{min(stop, end) - 1} were read twice (again at {where})", show)
            expected.update((*place, epoch, row) for row in range(max(start, end), stop))
            end = max(end, stop)
    expected -= logs.skipped | logs.held_out | logs.empty
    for doc in expected:
        _cell(out, doc).expected += 1
    return expected


def _status(pieces: list[Piece], doc: tuple) -> tuple[str, str]:
    """A document's status from the pieces of its tokens, and what is wrong with it."""
    if not pieces:
        return "missing", "read, but none of its tokens were trained, and it is in no buffer"
    total = pieces[0].total
    if any(p.total != total for p in pieces):
        return "repeated", f"recorded with different lengths ({sorted({p.total for p in pieces})} tokens)"
    pos, twice, holes = 0, [], []
    for p in sorted(pieces, key=lambda p: (p.start, p.end)):
        if p.start < pos:
            twice.append(p)
        elif p.start > pos:
            holes.append((pos, p.start))
        pos = max(pos, p.end)
    if pos < total:
        holes.append((pos, total))
    if twice:
        first = twice[0]
        again = [p for p in pieces if p.start < first.end and first.start < p.end]  # the pieces that overlap
        return "repeated", f"tokens {first.start}-{first.end} of {total} more than once: {_wheres(again)}"
    if holes:
        gaps = ", ".join(f"{a}-{b}" for a, b in holes[:3])
        return "missing", f"tokens {gaps} of {total} were never trained and are in no buffer" + \
            (f" (the rest: {_wheres(pieces)})" if pieces else "")
    kinds = {p.kind for p in pieces}
    if kinds == {"trained"}:
        return "once", ""
    return ("buffered", "") if "buffered" in kinds else ("tail", "")


def _wheres(pieces: list[Piece]) -> str:
    return "; ".join(f"tokens {p.start}-{p.end} {'at ' if p.kind in ('trained', 'dropped') else 'in '}{p.where}"
                     f"{' (fetched, not trained)' if p.kind == 'dropped' else ''}" for p in pieces[:4]) + \
        (f"; and {len(pieces) - 4} more" if len(pieces) > 4 else "")


def _shard(shard: int, num_shards: int) -> str:
    return f"rank {shard} (numbered in arrival order)" if num_shards == 0 else f"shard {shard}/{num_shards}"


def _name(doc: tuple) -> str:
    stream, shard, num_shards, epoch, row = doc
    return f"document {stream} {_shard(shard, num_shards)} epoch {epoch} row {row}"


def _budgets(run_dir: Path) -> dict[str, float] | None:
    """A token mixture's share of rows per stream per epoch, from the run's config.yaml (else None)."""
    try:
        config = load_config(run_dir / "config.yaml")
    except Exception:  # noqa: BLE001 - no budget to compare with, nothing more
        return None
    d = config.data
    if not d.streams or d.mix_by != "tokens":
        return None
    streams = sorted_streams(d.streams)
    epoch_tokens = None if d.epoch_size is None else parse_count(d.epoch_size)
    rows = [c // (config.model.seq_len + 1) for c in epoch_counts(streams, [None] * len(streams), epoch_tokens,
                                                                   config.train.seed)]
    return {s.label: n / (sum(rows) or 1) for s, n in zip(streams, rows)}


# -- the report ---------------------------------------------------------------------------------
HEADER = ["epoch", "stream", "status", "expected", "seen once", "more than once", "missing", "held out",
          "filtered", "in buffers", "tail"]


def report_rows(out: Audit) -> list[list[Any]]:
    """The table: one row per (epoch, stream)."""
    rows = []
    for (epoch, stream), cell in sorted(out.cells.items()):
        status = "numbered" if cell.numbered else "complete" if cell.complete else "partial"
        c = cell.counts
        rows.append([epoch, stream, status, cell.expected, c["once"], c["repeated"], c["missing"], cell.held_out,
                     cell.filtered, c["buffered"], c["tail"]])
    return rows


def token_shares(out: Audit) -> dict[str, dict[str, Any]]:
    """Tokens trained per stream (rows, EOS included), their share, and a token mixture's budget share."""
    tokens, total = out.logs.tokens, sum(out.logs.tokens.values()) or 1
    return {stream: {"tokens": n, "share": round(n / total, 4),
                     "budget_share": None if out.budgets is None else round(out.budgets.get(stream, 0.0), 4)}
            for stream, n in sorted(tokens.items())}


def to_plain(out: Audit) -> dict[str, Any]:
    """Everything ``hfstream audit --json`` prints."""
    return {"clean": out.clean, "ranks": out.logs.ranks, "steps": out.logs.steps,
            "segments": out.logs.segments, "micro_batches": out.logs.micro_batches,
            "epochs": [dict(zip(["epoch", "stream", "status", "expected", "once", "repeated", "missing",
                                 "held_out", "filtered", "buffered", "tail"], row)) for row in report_rows(out)],
            "tokens": token_shares(out), "num_problems": out.num_problems, "problems": out.problems}


def report_text(out: Audit, run_dir: str | Path) -> str:
    """The report as a person reads it."""
    logs = out.logs
    resumes = [s["resumed_at"] for s in logs.segments if s.get("resumed_at") is not None]
    lines = [f"audit of {run_dir}: {len(logs.ranks)} rank(s), {logs.steps} steps in {len(logs.segments)} segment(s)"
             + (f" (resumed at step {', '.join(map(str, resumes))})" if resumes else "")
             + f", {logs.micro_batches:,} micro-batches trained", ""]
    cells = [HEADER] + [[str(c) for c in row] for row in report_rows(out)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(HEADER))]
    for row in cells:
        lines.append("  ".join(c.ljust(w) if j in (1, 2) else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
    lines.append("")
    lines.append("tokens trained per stream (rows of seq_len + 1, EOS included):")
    for stream, t in token_shares(out).items():
        budget = "" if t["budget_share"] is None else f", budget {t['budget_share']:.1%}"
        lines.append(f"  {stream}: {t['tokens']:,} ({t['share']:.1%}{budget})")
    if out.problems:
        lines += ["", f"problems ({out.num_problems}):"] + [f"  {p}" for p in out.problems]
        if out.num_problems > len(out.problems):
            lines.append(f"  ... and {out.num_problems - len(out.problems)} more (--show N)")
    lines.append("")
    lines.append("clean: every document read was trained on exactly once, or is still inside the loader"
                 if out.clean else f"NOT CLEAN: {out.num_problems} problem(s): documents lost or repeated")
    return "\n".join(lines)
