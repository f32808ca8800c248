"""The process a run lives in: its device and precision, its random state, and the signals that stop it."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import torch

from hfstream.errors import ConfigError
from hfstream.train.distributed import Ranks

log = logging.getLogger("hfstream.train")


def choose_device(pref: str, ddp: Ranks) -> torch.device:
    """``auto``: CUDA (this rank's GPU), else Apple MPS, else the CPU."""
    mps = torch.backends.mps.is_available()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available",
                              "use train.device=auto (or cpu)")
        return torch.device("cuda", ddp.local_rank)
    if pref == "mps" and not mps:
        raise ConfigError("train.device=mps but MPS is not available", "use train.device=auto (or cpu)")
    return torch.device(pref)


def choose_dtype(pref: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 autocast on CUDA GPUs that support it, float32 elsewhere."""
    if pref == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if pref != "float32" and device.type == "cpu":
        log.warning("train.dtype=%s on the CPU: autocast there is slow; float32 is usual", pref)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[pref]


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Deterministic algorithms when asked; TF32 matmuls on CUDA."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def rng_state() -> dict[str, Any]:
    """This process's torch random state (CPU, and CUDA when in use)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(rank_state: dict[str, Any]) -> None:
    rng = rank_state["rng"]
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


class GracefulStop:
    """SIGINT / SIGTERM ask the loop to finish the current step, checkpoint and exit.

    A second Ctrl+C aborts at once (checkpoints are written atomically, so nothing is left
    half-written) -- except under torchrun, whose agent forwards the signal a second time and
    kills stragglers itself after 30 s.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        self._under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            if signum == signal.SIGINT and not self._under_torchrun:
                raise KeyboardInterrupt
            return
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, then writing a checkpoint "
              "(Ctrl+C again to abort without one)", file=sys.stderr, flush=True)

    @property
    def name(self) -> str | None:
        """``SIGINT`` or ``SIGTERM`` once one arrived, else None."""
        return None if self.signal is None else signal.Signals(self.signal).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
