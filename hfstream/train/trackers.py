"""Experiment trackers (``train.report_to``: TensorBoard, Weights & Biases): what metrics.jsonl gets, there too.

The run calls :class:`Trackers` where it writes ``metrics.jsonl`` and ``samples.jsonl``, on
rank 0 only; ``metrics.jsonl`` stays the record of the run. Names follow HF Trainer's
(:data:`NAMES`): ``loss`` -> ``train/loss``, ``lr`` -> ``train/learning_rate``, ...,
``eval_loss`` -> ``eval/loss``, a mixture's ``stream_shares`` -> ``stream_shares/LABEL``; the
samples go to TensorBoard as text (``samples/N``) and to W&B as a table (``samples``).

TensorBoard writes ``OUTPUT/tensorboard/``; W&B runs in ``OUTPUT/wandb/`` under the project
``$WANDB_PROJECT`` (default ``hfstream``), named after the output directory; a resumed run
continues the same W&B run (its id is kept in ``OUTPUT/wandb_run_id``) and TensorBoard drops
the events after the checkpoint's step, as ``metrics.jsonl`` does. ``WANDB_MODE=offline``
works without network (``wandb sync`` uploads later).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Protocol

from hfstream.rundir import atomic_write_text
from hfstream.train import extras
from hfstream.train.config import Config, config_to_dict

#: metrics.jsonl key -> tracker name
NAMES = {"loss": "train/loss", "lr": "train/learning_rate", "tokens": "train/tokens",
         "tokens_per_s": "train/tokens_per_s", "data_wait_pct": "train/data_wait_pct",
         "eval_loss": "eval/loss", "eval_ppl": "eval/perplexity"}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record as tracker scalars (``step`` aside)."""
    out = {NAMES[key]: value for key, value in record.items() if key in NAMES and value is not None}
    for label, share in (record.get("stream_shares") or {}).items():
        out[f"stream_shares/{label}"] = share
    return out


class Tracker(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def log_samples(self, step: int, samples: list[tuple[str, str]]) -> None: ...

    def close(self) -> None: ...


class TensorBoard:
    """Scalars and sample texts in ``OUTPUT/tensorboard/`` (torch's ``SummaryWriter``)."""

    def __init__(self, output: Path, config: Config, resumed_at: int | None):
        extras.require("tensorboard", "--report_to tensorboard (train.report_to)")
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        # purge_step: events after the checkpoint's step belong to the redone part of the run
        self.writer = SummaryWriter(str(output / "tensorboard"),
                                    purge_step=None if resumed_at is None else resumed_at + 1)

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def log_samples(self, step: int, samples: list[tuple[str, str]]) -> None:
        for i, (prompt, text) in enumerate(samples):
            self.writer.add_text(f"samples/{i}", f"prompt: `{prompt}`\n\n```\n{prompt}{text}\n```", step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A Weights & Biases run in ``OUTPUT/wandb/``; the same run again after a resume."""

    def __init__(self, output: Path, config: Config, resumed_at: int | None):
        self.wandb = extras.require("wandb", "--report_to wandb (train.report_to)")
        id_file = output / "wandb_run_id"
        resuming = resumed_at is not None and id_file.is_file()
        run_id = id_file.read_text().strip() if resuming else uuid.uuid4().hex[:12]
        atomic_write_text(id_file, run_id + "\n")
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "hfstream"), name=output.name,
                                   id=run_id, resume="allow", dir=str(output), config=config_to_dict(config))
        self.rows: list[list[Any]] = []

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_samples(self, step: int, samples: list[tuple[str, str]]) -> None:
        self.rows += [[step, prompt, text] for prompt, text in samples]  # the table grows with the run
        self.run.log({"samples": self.wandb.Table(columns=["step", "prompt", "text"], data=self.rows)}, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS: dict[str, type] = {"tensorboard": TensorBoard, "wandb": WandB}


class Trackers:
    """The trackers ``report_to`` names (``none`` or an empty list: none), fed metrics.jsonl's records.

    Args:
        report_to: tracker names (``tensorboard``, ``wandb``; ``none`` is ignored).
        output: the run directory.
        config: the run's config (W&B records it).
        resumed_at: the checkpoint's step when resuming, else None.
    """

    def __init__(self, report_to: list[str], output: Path, config: Config, resumed_at: int | None):
        self.trackers: list[Tracker] = []
        try:
            for name in dict.fromkeys(n for n in report_to if n != "none"):
                self.trackers.append(TRACKERS[name](output, config, resumed_at))
        except BaseException:
            self.close()
            raise

    def log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record (a log window or an evaluation)."""
        values = scalars(record)
        for tracker in self.trackers:
            tracker.log(record["step"], values)

    def log_samples(self, step: int, samples: list[tuple[str, str]]) -> None:
        """The (prompt, text) pairs generated at ``step``."""
        for tracker in self.trackers:
            tracker.log_samples(step, samples)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
