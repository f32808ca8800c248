"""torchrun's process group for the trainer: this process's rank, and the few collectives it needs."""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass
class Ranks:
    """Where this process sits in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    object_group: Any = None  # gloo, patient: Python objects (held-out docs, tokenizer, states)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> Ranks:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, else gloo)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Ranks()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_pref in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    # Python objects travel on a CPU (gloo) side group. It is patient because the other ranks
    # wait on it while rank 0 trains the tokenizer, which can outlast the default collective
    # timeout (10 minutes); the training group keeps its timeout, to catch real hangs.
    object_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=6))
    return Ranks(rank, local_rank, world_size, backend, object_group)


def broadcast_object(ddp: Ranks, value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not ddp.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=ddp.object_group)
    return box[0]


def gather_objects(ddp: Ranks, value: Any) -> list[Any] | None:
    """Every rank's ``value``, in rank order, on rank 0 (None elsewhere)."""
    if not ddp.enabled:
        return [value]
    out = [None] * ddp.world_size if ddp.is_main else None
    dist.gather_object(value, out, dst=0, group=ddp.object_group)
    return out


def agree(ddp: Ranks, device: torch.device, *flags: bool) -> list[bool]:
    """Each flag OR-ed across ranks, so that all ranks stop at the same step."""
    if not ddp.enabled:
        return list(flags)
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32,
                     device=device if ddp.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]
