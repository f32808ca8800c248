"""Rows and batches: the packer's (B, T+1) token rows, and the (B, T) tensors a training step takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from hfstream.loader.plain import pack, unpack
from hfstream.loader.records import BatchDocs


@dataclass
class Rows:
    """One batch as the token pipelines produce it (numpy, before any tensor is made).

    Attributes:
        tokens: int64 (B, T+1): each row is a training sequence plus its last target.
        positions: int64 (B, T+1) position ids restarting at each document, or None.
        stream_ids: int64 (B,): each row's stream in a token mixture, or None.
        docs: the documents each row holds (``record_docs``), or None.
    """

    tokens: np.ndarray
    positions: np.ndarray | None = None
    stream_ids: np.ndarray | None = None
    docs: BatchDocs | None = None

    def state(self) -> tuple[Any, ...]:
        """The rows as plain data for a state dict (bytes: ``torch.load``'s defaults read them)."""
        arrays = (pack(self.tokens), pack(self.positions), pack(self.stream_ids))
        return arrays if self.docs is None else (*arrays, self.docs.to_plain())

    @classmethod
    def from_state(cls, state: Any) -> "Rows":
        tokens, positions, ids = state[:3]
        docs = BatchDocs.from_plain(state[3]) if len(state) > 3 else None
        return cls(*(unpack(a, np.int64) for a in (tokens, positions, ids)), docs)


class Batch:
    """One training batch: ``inputs, targets = batch`` (int64, (B, T)); ``positions`` optional."""

    __slots__ = ("inputs", "targets", "positions", "stream_ids", "source_rows", "docs")

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None,
                 source_rows: Rows | None = None, stream_ids: torch.Tensor | None = None,
                 docs: BatchDocs | None = None):
        self.inputs, self.targets, self.positions = inputs, targets, positions
        self.stream_ids = stream_ids    # (B,): each row's stream, with a token mixture
        self.source_rows = source_rows  # the packer's rows it came from (kept for the loader's state)
        self.docs = docs                # the documents of each row (record_docs)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.inputs, self.targets))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> torch.Tensor:
        return (self.inputs, self.targets)[i]

    def to(self, device: Any, non_blocking: bool = True) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(move(self.inputs), move(self.targets), move(self.positions), self.source_rows,
                     self.stream_ids, self.docs)

    def __repr__(self) -> str:
        return f"Batch(inputs={tuple(self.inputs.shape)}, targets={tuple(self.targets.shape)})"


def rows_to_batch(rows: Rows, pin_memory: bool = False) -> Batch:
    """(B, T+1) rows -> inputs (B, T) = rows[:, :-1], targets (B, T) = rows[:, 1:]."""
    tokens = rows.tokens
    # (B, T+1) -> 2 x (B, T); numpy copies cost half of torch's slicing + contiguous()
    inputs = torch.from_numpy(np.ascontiguousarray(tokens[:, :-1]))
    targets = torch.from_numpy(np.ascontiguousarray(tokens[:, 1:]))
    pos = None if rows.positions is None else torch.from_numpy(rows.positions[:, :-1].copy())
    if pin_memory:
        inputs, targets = inputs.pin_memory(), targets.pin_memory()
        pos = None if pos is None else pos.pin_memory()
    ids = None if rows.stream_ids is None else torch.from_numpy(rows.stream_ids)
    return Batch(inputs, targets, pos, source_rows=rows, stream_ids=ids, docs=rows.docs)
