"""A training state as one torch.distributed.checkpoint Stateful: model, optimizer, step, per-rank loader and RNG.

What ``checkpoint.pt`` holds for train-streaming, shaped for DCP (torchtitan's checkpoint
layout): model and optimizer states keyed by parameter name (``torch.distributed.checkpoint.
state_dict``, so DDP/FSDP wrappers and sharded tensors are handled by torch), the step and the
grad scaler, and -- per rank, under the rank's own key (:class:`hfstream.loader.dcp.RankedState`)
-- the loader's exact position and the torch random state::

    import torch.distributed.checkpoint as dcp
    state = TrainState(model, optimizer, loader)
    dcp.save({"train": state}, checkpoint_id="ckpt/step-1000")   # every rank calls it
    dcp.load({"train": state}, checkpoint_id="ckpt/step-1000")   # in a new job: same ranks, same batches next
    torch.save(state.state_dict(), "state.pt")                    # or a plain file (one process)
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.checkpoint.stateful import Stateful

from hfstream.loader.dcp import RankedState
from hfstream.train.runtime import rng_state


class RandomState(Stateful):
    """This process's torch random state (CPU, and CUDA when in use) as a Stateful."""

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


class TrainState(Stateful):
    """Model, optimizer, grad scaler, step, and this rank's loader and random state.

    Args:
        model: the module trained (a DDP/FSDP wrapper or the model itself).
        optimizer: its optimizer.
        loader: this rank's loader (any Stateful; its state is kept per rank, opaque).
        scaler: the grad scaler, if any.
        step: the optimizer steps taken; :attr:`step` is updated by :meth:`load_state_dict`.
        rank, world_size: default: ``torch.distributed``'s (0 of 1 without a process group).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
                 scaler: torch.amp.GradScaler | None = None, step: int = 0,
                 rank: int | None = None, world_size: int | None = None):
        self.model, self.optimizer, self.scaler, self.step = model, optimizer, scaler, step
        self.loader = RankedState(loader, rank, world_size)
        self.rng = RankedState(RandomState(), rank, world_size)

    def state_dict(self) -> dict[str, Any]:
        return {"model": get_model_state_dict(self.model),
                "optimizer": get_optimizer_state_dict(self.model, self.optimizer),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "step": self.step, "loader": self.loader.state_dict(), "rng": self.rng.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_model_state_dict(self.model, state["model"])
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.loader.load_state_dict(state["loader"])
        self.rng.load_state_dict(state["rng"])
