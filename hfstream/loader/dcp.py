"""The loader in a torch.distributed.checkpoint (DCP) checkpoint: each rank's state under its own key.

:class:`~hfstream.loader.loader.StreamingTextDataLoader` is a ``Stateful`` already
(``state_dict()`` / ``load_state_dict()``), so ``torch.save`` takes its state as it is. DCP
needs one more thing: it keeps one value per key across all ranks (a non-tensor value that
several ranks save under the same key is written once), while each rank's loader is at its own
place in its own shard. :class:`RankedState` puts the state under the rank's key, as one bytes
blob (torchtitan's ``ParallelAwareDataloader`` does the same), whatever the loader's state
holds::

    import torch.distributed.checkpoint as dcp
    from hfstream.loader.dcp import RankedState

    state = {"model": model_state, "dataloader": RankedState(loader)}   # rank, world size: torch.distributed
    dcp.save(state, checkpoint_id="ckpt/step-1000")
    ...                                                                 # a new process, the same ranks
    dcp.load(state, checkpoint_id="ckpt/step-1000")                     # each rank's loader continues exactly

Restoring needs the same number of ranks (each rank continues its own shard); DCP itself
reports a rank whose key the checkpoint lacks. The blob is a pickle: load checkpoints you trust.
"""

from __future__ import annotations

import pickle
from typing import Any

import torch.distributed as dist
from torch.distributed.checkpoint.stateful import Stateful

from hfstream.errors import StateError

__all__ = ["RankedState", "Stateful"]


class RankedState(Stateful):
    """Any ``Stateful`` (a loader, a random state) saved under this rank's key: ``{"rank_R": blob, "world_size": N}``.

    Args:
        inner: what is saved and restored (its ``state_dict()`` is treated as opaque).
        rank, world_size: this process's place; default: ``torch.distributed``'s, or 0 of 1
            when no process group is initialized.
    """

    def __init__(self, inner: Any, rank: int | None = None, world_size: int | None = None):
        initialized = dist.is_available() and dist.is_initialized()
        self.inner = inner
        self.rank = rank if rank is not None else (dist.get_rank() if initialized else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if initialized else 1)
        self.key = f"rank_{self.rank}"

    def state_dict(self) -> dict[str, Any]:
        return {self.key: pickle.dumps(self.inner.state_dict(), protocol=pickle.HIGHEST_PROTOCOL),
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's part of ``state`` (what :meth:`state_dict` returned, on every rank).

        Raises:
            StateError: the state was saved by another number of ranks, or lacks this rank's part.
        """
        if state.get("world_size") != self.world_size:
            raise StateError(f"the state was saved by {state.get('world_size')} rank(s), this job has "
                             f"{self.world_size}", "restore with the same number of ranks: each rank "
                             "continues its own shard of the stream")
        if self.key not in state:
            raise StateError(f"the state holds no part for rank {self.rank} (it has {sorted(state)})",
                             "pass the dict that RankedState.state_dict() returned, loaded through DCP")
        self.inner.load_state_dict(pickle.loads(state[self.key]))
