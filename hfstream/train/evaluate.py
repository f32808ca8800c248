"""Held-out evaluation: the evaluation rows packed from the held-out documents, and the mean loss on them."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from hfstream.train.distributed import Ranks
from hfstream.train.model import CausalLM


def pack_rows(token_arrays: Sequence[np.ndarray], eos_id: int, seq_len: int,
              max_rows: int | None = None) -> np.ndarray:
    """Documents joined with EOS after each, cut into rows of ``seq_len + 1`` (stride seq_len).

    Deterministic and unshuffled: the evaluation batches are the same at every evaluation.
    Returns an int64 array (N, T+1); the tail shorter than a row is dropped.
    """
    parts = []
    for ids in token_arrays:
        parts.append(np.asarray(ids, dtype=np.int64))
        parts.append(np.array([eos_id], dtype=np.int64))
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    num_rows = max((len(stream) - 1) // seq_len, 0)
    if max_rows is not None:
        num_rows = min(num_rows, max_rows)
    # rows overlap by one token: row i covers stream[i*T : i*T + T + 1]
    index = np.arange(num_rows)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return stream[index] if num_rows else np.zeros((0, seq_len + 1), dtype=np.int64)


def document_positions(rows: np.ndarray, eos_id: int | None) -> np.ndarray:
    """Position ids (N, T+1) for packed rows: 0 on a row's first token and after each EOS, as
    the packer gives them with ``with_positions`` (the EOS ends its document)."""
    N, width = rows.shape
    t = np.arange(width)
    starts = np.zeros(rows.shape, dtype=bool)
    starts[:, 0] = True
    if eos_id is not None:
        starts[:, 1:] = rows[:, :-1] == eos_id
    start_at = np.maximum.accumulate(np.where(starts, t, 0), axis=1)  # (N, T+1) its document's first index
    return (t - start_at).astype(np.int64)


@torch.no_grad()
def evaluate(model: CausalLM, rows: np.ndarray, batch_size: int, device: torch.device, autocast: Any,
             ddp: Ranks, positions: np.ndarray | None = None) -> float | None:
    """Mean loss per token over the held-out rows (each rank takes its share).

    ``positions`` (N, T+1) make a document-masked model attend within documents, as in training.
    """
    if len(rows) == 0 and not ddp.enabled:
        return None
    total = torch.zeros(2, dtype=torch.float64)  # (sum of token losses, tokens)
    model.eval()
    for i in range(0, len(rows), batch_size):
        chunk = torch.from_numpy(rows[i:i + batch_size]).to(device)
        pos = None if positions is None else torch.from_numpy(positions[i:i + batch_size, :-1]).to(device)
        with autocast:
            _, loss = model(chunk[:, :-1], chunk[:, 1:], pos)  # (b, T+1) -> inputs, targets (b, T)
        total[0] += loss.item() * chunk[:, 1:].numel()
        total[1] += chunk[:, 1:].numel()
    model.train()
    if ddp.enabled:
        if ddp.backend == "nccl":
            total = total.to(device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total[0] / total[1]) if total[1] > 0 else None
