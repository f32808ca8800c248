"""Training checkpoints: one ``checkpoint.pt`` per run, written atomically, checked when read.

A checkpoint holds everything an exact resume needs: the model and optimizer state, the step
(the learning-rate schedule is a function of it), every rank's loader state, the random
state, the resolved config, and the identity of the tokenizer and of the held-out set.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from hfstream.errors import ConfigError, StateError
from hfstream.rundir import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "hfstream-train"
VERSION = 1


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


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU, memory-mapped).

    Checkpoints are pickles: only load files you trust (your own runs).

    Raises:
        ConfigError: the file does not exist.
        StateError: the file is truncated, corrupt, or not an hfstream training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist",
                          "pass the checkpoint.pt of an earlier run, or its directory")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
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
