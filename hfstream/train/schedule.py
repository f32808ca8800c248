"""The learning-rate schedule: linear warmup, then cosine decay; a pure function of the step."""

from __future__ import annotations

import math
from typing import Any

from hfstream.train.config import OptimConfig


def learning_rate(step: int, o: OptimConfig, max_steps: int) -> float:
    """Linear warmup to ``learning_rate``, then cosine decay to ``learning_rate * min_lr_ratio``."""
    decay_steps = o.decay_steps or max_steps
    min_lr = o.learning_rate * o.min_lr_ratio
    if step < o.warmup_steps:
        return o.learning_rate * (step + 1) / o.warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - o.warmup_steps) / max(decay_steps - o.warmup_steps, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (o.learning_rate - min_lr)


def schedule_state(o: OptimConfig, max_steps: int, step: int) -> dict[str, Any]:
    """The scheduler's state: a pure function of the step, so these fields are all of it."""
    return {"kind": "warmup_cosine", "step": step, "learning_rate": o.learning_rate,
            "warmup_steps": o.warmup_steps, "decay_steps": o.decay_steps or max_steps,
            "min_lr_ratio": o.min_lr_ratio}
