"""The virtual-shard plan: which shard fills each row of the global row order, and who runs it.

With ``virtual_shards=K`` the source is split once, at the start of the run, into K fixed
shards (files, row groups or rows, as ``shard``/``num_shards`` split it), each a complete
token pipeline. Training rows form one *global row order*: row ``u`` (counting every rank's
rows, step after step) is the next row of shard ``u mod K``. A global batch of G rows is rows
``g*G .. g*G + G - 1``; rank ``r`` of W takes the rows ``u ≡ r (mod W)``, so its ``c``-th row is
``u = c*W + r``, from shard ``W*(c mod K/W) + r``: the shards ``s ≡ r (mod W)`` are rank r's.
Within a rank, DataLoader worker ``w`` of N (a *lane*; no workers is one lane) makes the rows
``c ≡ w (mod N)``, from the shards ``W*m + r`` with ``m ≡ w (mod N)``.

Nothing in the order depends on W or N: every global batch is the same rows in the same order
whatever the number of ranks and workers, as long as ``W*N`` divides K. A shard's state is its
own, so a checkpoint's shard states go to whichever rank and worker own them after a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hfstream.errors import ConfigError, check_int

#: a K that covers 1-8 ranks × 1-6 workers (and 10, 12, 15, 16, 20, 24, 30, 40, 48, 60, 80, 120, 240 lanes)
SUGGESTED_SHARDS = 240


def suggest_shards(lanes: int, at_least: int = 1) -> int:
    """The smallest multiple of ``lanes`` (ranks × workers) that is at least ``at_least``."""
    return max(1, math.ceil(at_least / lanes)) * lanes


@dataclass(frozen=True)
class ShardPlan:
    """K virtual shards over ``world_size`` ranks × ``num_workers`` lanes per rank.

    Args:
        num_shards: K.
        world_size, rank: this process's place (W, r).
        num_workers: DataLoader workers per rank (0: one lane, in a thread).

    Raises:
        ConfigError: K not a multiple of W × N (with the K to use instead).
    """

    num_shards: int
    world_size: int = 1
    rank: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_int("virtual_shards", self.num_shards, 1, f"e.g. virtual_shards={SUGGESTED_SHARDS}")
        check_int("world_size", self.world_size, 1)
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is not in 0..{self.world_size - 1}",
                              "pass shard=rank and num_shards=world_size")
        lanes = self.world_size * self.lanes
        if self.num_shards % lanes:
            raise ConfigError(
                f"virtual_shards={self.num_shards} is not a multiple of ranks × workers = {self.world_size} × "
                f"{self.lanes} = {lanes}: each rank and worker must own the same number of shards",
                f"use virtual_shards={suggest_shards(lanes, self.num_shards)} (or {SUGGESTED_SHARDS}, which "
                f"covers 1-8 ranks × 1-6 workers); the number of shards is fixed for the whole run, so "
                f"choose it for every ranks × workers the run may use")

    @property
    def lanes(self) -> int:
        """Row makers on this rank: the DataLoader workers, or one thread."""
        return max(self.num_workers, 1)

    @property
    def per_rank(self) -> int:
        return self.num_shards // self.world_size

    def shard_of(self, c: int) -> int:
        """The shard of this rank's ``c``-th row (global row ``c*W + r``)."""
        return self.world_size * (c % self.per_rank) + self.rank

    def lane_of(self, c: int) -> int:
        return c % self.lanes

    def shards(self, lane: int) -> list[int]:
        """The shards lane ``lane`` of this rank runs."""
        return [self.world_size * m + self.rank for m in range(self.per_rank) if m % self.lanes == lane]

    def all_shards(self) -> list[int]:
        """Every shard this rank owns."""
        return [self.world_size * m + self.rank for m in range(self.per_rank)]
