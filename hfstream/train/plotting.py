"""The training-curve PNG: train and eval loss against step, from ``metrics.jsonl`` records."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from hfstream.rundir import atomic_write_bytes


def plot_training_curve(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Draw train loss (``loss``) and eval loss (``eval_loss``) per step; None if nothing to draw.

    Needs no display; written atomically.
    """
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2, color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), label="eval loss", marker="o", markersize=3.5, linewidth=1.4,
                color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "training curve")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    path = Path(path)
    atomic_write_bytes(path, png.getvalue())  # a full disk is a DiskFullError, with no half file left
    return path
