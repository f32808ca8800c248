"""Training checkpoints: one ``checkpoint.pt`` per run, written atomically, checked when read.

A checkpoint holds everything an exact resume needs: the model and optimizer state, the step
(the learning-rate schedule is a function of it), every rank's loader state, the random
state, the resolved config, and the identity of the tokenizer and of the held-out set.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from hfstream.errors import ConfigError, StateError
from hfstream.rundir import atomic_write_bytes, ensure_writable_dir
from hfstream.train.distributed import Ranks

log = logging.getLogger("hfstream.train")
CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "hfstream-train"
VERSION = 1
#: model keys added after version 1 was written, with the value older checkpoints implicitly had
MODEL_KEYS_ADDED = {"doc_mask": False, "name_or_path": None, "config_name": None}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format and version tags) to ``path`` atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())
    return path


def find_checkpoint(resume: str | os.PathLike[str] | bool, output_dir: str | Path) -> Path:
    """The checkpoint file meant by ``--resume`` (a file, a run directory, or True: the output dir).

    Raises:
        ConfigError: there is no checkpoint there.
    """
    where = Path(output_dir) if resume is True else Path(resume).expanduser()
    path = where / CHECKPOINT_NAME if where.is_dir() or where.suffix != ".pt" else where
    if not path.is_file():
        raise ConfigError(
            f"no checkpoint to resume from at {str(path)!r}",
            "--resume takes a checkpoint file or a run directory holding checkpoint.pt (written "
            "every train.save_steps steps and on Ctrl+C); leave --resume out to start a new run")
    return path


def open_checkpoint(resume: Any, overwrite: bool, output: Path, ddp: Ranks, max_steps: int,
                    virtual_shards: int = 0) -> dict[str, Any] | None:
    """The checkpoint a run continues (None for a fresh start), checked against this job.

    Raises:
        ConfigError: no checkpoint where ``--resume`` points; a fresh start in a directory that
            already holds a run (without ``overwrite``); an output directory that cannot be written.
        StateError: a corrupt checkpoint, or one written by another number of ranks (without
            virtual shards, or with others than ``virtual_shards``).
    """
    ckpt = None
    if resume:
        ckpt = load_checkpoint(find_checkpoint(resume, output))
    elif (output / CHECKPOINT_NAME).exists() and not overwrite:
        raise ConfigError(f"{str(output)!r} already holds a run (checkpoint.pt)",
                          "pass --resume to continue it, --overwrite to start over in it, or "
                          "choose another --output")
    if ckpt is not None:
        saved_shards = ckpt.get("config", {}).get("data", {}).get("virtual_shards", 0)
        if saved_shards != virtual_shards:
            raise StateError(f"the checkpoint's run has data.virtual_shards={saved_shards}, this run "
                             f"{virtual_shards}: the shards are fixed for the whole run",
                             f"resume with data.virtual_shards={saved_shards}")
        if not virtual_shards:
            check_matches(ckpt, "world_size", ddp.world_size)
    if ddp.is_main and (ckpt is None or ckpt["step"] < max_steps):
        ensure_writable_dir(output)
    return ckpt


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU, memory-mapped).

    Read with ``weights_only=True``: a checkpoint holds tensors and plain data only (loader states included).

    Raises:
        ConfigError: the file does not exist.
        StateError: the file is truncated, corrupt, or not an hfstream training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist",
                          "pass the checkpoint.pt of an earlier run, or its directory")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile, KeyError) as exc:
        raise StateError(f"checkpoint {str(path)!r} is corrupt or truncated: {exc}".split("\n")[0],
                         "it was probably cut short (disk full, killed while copying); resume from "
                         "an intact copy, or start a new run without --resume") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise StateError(f"{str(path)!r} is not an hfstream training checkpoint",
                         "pass a checkpoint.pt written by train-streaming")
    if state.get("version") != VERSION:
        raise StateError(f"checkpoint {str(path)!r} has format version {state.get('version')}, "
                         f"this hfstream reads version {VERSION}",
                         "resume it with the hfstream version that wrote it")
    return state


def check_matches(ckpt: dict[str, Any], key: str, now: Any, output: Path | None = None) -> None:
    """Raise a StateError that shows the difference when this run's ``key`` is not the checkpoint's.

    ``key`` is one of ``world_size``, ``heldout``, ``tokenizer`` (fingerprint and vocab size) and
    ``model_config``: what a resume must keep.
    """
    saved = ckpt[key]
    if key == "model_config":
        saved = {**MODEL_KEYS_ADDED, **saved}
    if saved == now:
        return
    if key == "world_size":
        raise StateError(f"the checkpoint was written by {saved} rank(s), this run has {now}",
                         "resume with the same torchrun --nproc_per_node (and nodes): each rank "
                         "continues its own shard of the stream (runs started with data.virtual_shards "
                         "resume on any number of ranks: README, Elastic runs)")
    if key == "heldout":
        raise StateError("the held-out documents differ from the checkpoint's (the dataset or "
                         "data.eval_docs changed)", "resume with the same data section")
    if key == "tokenizer":
        raise StateError(
            f"the tokenizer does not match the checkpoint: it was trained with tokenizer "
            f"{saved['fingerprint']} ({saved['vocab_size']:,} tokens), this run uses "
            f"{now['fingerprint']} ({now['vocab_size']:,} tokens)",
            f"resume with the run's own tokenizer ({Path(output or '.') / 'tokenizer.json'}), or start a new run")
    diff = ", ".join(f"{k}: saved {v}, now {now.get(k)}" for k, v in saved.items() if now.get(k) != v)
    raise StateError(f"the model section differs from the checkpoint's: {diff}",
                     "resume with the checkpoint's model settings (its config.yaml)")


def completed_summary(ckpt: dict[str, Any], output: Path, max_steps: int) -> dict[str, Any] | None:
    """When the checkpoint already reached ``max_steps``: the run's summary (``summary.json``, else
    what the checkpoint knows) with ``complete`` and a message saying how to train on; else None."""
    if ckpt["step"] < max_steps:
        return None
    path = output / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {
        "output_dir": str(output), "steps": ckpt["step"], "tokens": ckpt["tokens"]}
    return {**summary, "complete": True, "max_steps": max_steps,
            "message": f"the run in {output} is complete: it reached step {ckpt['step']} "
                       f"(max_steps={max_steps}); nothing was changed. To train on, resume with a larger "
                       f"--max_steps (e.g. --max_steps {2 * ckpt['step']}; pin optim.decay_steps to keep "
                       "the learning-rate schedule)"}


def keep_global_batch(ckpt: dict[str, Any], batch_size: int, accumulation: int, world_size: int,
                      adjust: bool) -> int:
    """The gradient accumulation that keeps the checkpoint's global batch (rows per optimizer step)
    on ``world_size`` ranks: ``accumulation`` when it already does, else (``adjust``) the one that does.

    Raises:
        StateError: the global batch would change, showing the arithmetic and the way out.
    """
    t = ckpt["config"]["train"]
    saved_world = ckpt["world_size"]
    saved = t["batch_size"] * t["gradient_accumulation_steps"] * saved_world
    now = batch_size * accumulation * world_size
    if now == saved:
        return accumulation
    was = (f"the checkpoint's global batch is {t['batch_size']} rows × {t['gradient_accumulation_steps']} "
           f"accumulation × {saved_world} ranks = {saved}; this run's would be {batch_size} × {accumulation} × "
           f"{world_size} = {now}")
    fits = saved % (batch_size * world_size) == 0
    if adjust and fits:
        log.info("resuming on %d rank(s) (the checkpoint had %d): gradient_accumulation_steps %d -> %d keeps the "
                 "global batch of %d rows", world_size, saved_world, accumulation, saved // (batch_size * world_size),
                 saved)
        return saved // (batch_size * world_size)
    if fits:
        raise StateError(was, f"pass --gradient_accumulation_steps {saved // (batch_size * world_size)} (or "
                              f"--adjust_accumulation) to keep it, so that every step trains on the same rows")
    divisors = [b for b in range(1, saved + 1) if saved % (b * world_size) == 0][:6]
    raise StateError(was + f", and no accumulation makes {batch_size} × N × {world_size} = {saved}",
                     f"pass a --per_device_train_batch_size that divides {saved // world_size} "
                     f"(e.g. {', '.join(map(str, divisors))}) with --adjust_accumulation, or use a number "
                     f"of ranks that divides {saved}")
