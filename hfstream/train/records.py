"""docs-rankR.jsonl (``train.record_docs``): each rank's record of the documents in every micro-batch, for ``hfstream audit``.

One JSON line per micro-batch: ``{"step", "micro", "rank", "rows", "reads", ...}`` with the
loader's :class:`~hfstream.loader.records.BatchDocs` (``to_plain()``: per row, the spans
``[stream, shard, num_shards, epoch, row, start, end, total]`` of the documents packed into it,
and the source rows read since the micro-batch before). Micro-batches fetched but not trained
(the stream ended within a step, or on another rank) are logged with ``"dropped": true``. A
segment starts with a ``{"step", "segment": {...}}`` line; it ends (a finished run, Ctrl+C,
SIGTERM) with a ``{"step", "final": true, ...}`` line: the documents still inside the loader
(``docs_in_flight``), at the point of the checkpoint written with it.

On resume, lines after the checkpoint's step and the last segment's final line are dropped, as
``metrics.jsonl`` drops its lines: the file reads like one uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from hfstream.loader.batch import Batch
from hfstream.loader.loader import StreamingTextDataLoader
from hfstream.rundir import MetricsLog, atomic_write_text, read_metrics
from hfstream.train.config import Config

FILE_PATTERN = "docs-rank*.jsonl"


class DocsLog:
    """A rank's docs-rankR.jsonl.

    Args:
        path: the file.
        rank: this rank.
        resume_step: the checkpoint's step when resuming (later lines are dropped), else None.
        segment: what the segment's first line says (world size, accumulation, batch shape).
    """

    def __init__(self, path: Path, rank: int, resume_step: int | None, segment: dict[str, Any]):
        self.rank = rank
        if resume_step is not None:  # the last segment's final line goes (MetricsLog drops later steps)
            kept = [r for r in read_metrics(path) if not r.get("final")]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self.log = MetricsLog(path, resume_step=resume_step)
        self.log.write({"step": resume_step or 0, "rank": rank, "segment": segment})

    def write(self, step: int, micro: int, batch: Batch, dropped: bool = False) -> None:
        """The documents of micro-batch ``micro`` of ``step`` (``dropped``: fetched, not trained)."""
        record = {"step": step, "micro": micro, "rank": self.rank, **batch.docs.to_plain()}  # type: ignore[union-attr]
        if dropped:
            record["dropped"] = True
        self.log.write(record)

    def dropped(self, step: int, micro: Sequence[Batch]) -> None:
        """Micro-batches fetched at the end but not trained: logged at ``step``, the last one taken
        (kept on resume: the checkpoint's loader state is past them)."""
        for i, batch in enumerate(micro):
            self.write(step, i, batch, dropped=True)

    def finish(self, step: int, loader: StreamingTextDataLoader) -> None:
        """The last line: the documents inside the loader now (the point of the checkpoint just saved)."""
        self.log.write({"step": step, "rank": self.rank, "final": True, **loader.docs_in_flight().to_plain()})

    def close(self) -> None:
        self.log.close()


def open_docs_log(config: Config, output: Path, rank: int, world_size: int, resume_step: int | None) -> DocsLog | None:
    """This rank's docs log when ``train.record_docs`` is set, else None."""
    t = config.train
    if not t.record_docs:
        return None
    segment = {"resumed_at": resume_step, "world_size": world_size, "accumulation": t.gradient_accumulation_steps,
               "batch_size": t.batch_size, "seq_len": config.model.seq_len}
    return DocsLog(output / f"docs-rank{rank}.jsonl", rank, resume_step, segment)
