"""The worker ⇄ parent wire protocol: one JSON object per line on the worker's stdout.

Version 1. Every stdout line of the worker is exactly one of these objects (orjson-encoded,
``\\n``-terminated); nothing else is ever written to stdout:

==========================================================  ==========================================
``{"v": 1, "status": "loading", "dataset": D}``             first line; the dataset is being opened
``{"status": "ready", "reader": "fast"|"datasets", ...}``   opened; documents follow (also
                                                            ``shard_mode`` and the hub commit
                                                            ``revision``, kept by the parent)
``{"batch": [t, ...], "epoch": E, "rows": [r, ...],``       documents; ``rows[i]`` is the shard row
``"end": R}``                                               index of ``batch[i]`` in epoch E, ``end``
                                                            the row to resume from after the batch
``{"heartbeat": T}``                                        liveness, sent when idle for a while
``{"done": true, "total": N, "epoch": E, "end": R,``        the stream ended normally (N documents
``"skipped": {...}}``                                       sent by this process)
``{"error": {"type": NAME, "message": M, "hint": H}}``      sent right before any non-zero exit
==========================================================  ==========================================

Progress goes to stderr as ``{"progress": docs, "bytes": B, "docs_per_s": R, "mb_per_s": M}``
lines, mixed with human-readable log lines (the parent forwards those to ``logging``).

A *position* is ``(epoch, row)``: ``row`` counts rows of the shard's row stream in that epoch,
before filtering, so resuming at a position skips filtered rows exactly as the first run did.
"""

from __future__ import annotations

from typing import Any

import orjson

from hfstream.errors import HfStreamError

PROTOCOL_VERSION = 1

#: The message kinds, by their distinguishing key.
KINDS = ("status", "batch", "heartbeat", "done", "error")


def encode(message: dict[str, Any]) -> bytes:
    """Encode one message as a protocol line (bytes, newline-terminated)."""
    return orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE)


def decode(line: bytes) -> dict[str, Any]:
    """Decode one protocol line.

    Raises:
        ValueError: the line is not a JSON object of a known kind (a truncated or garbled
            line; the parent treats it as a worker failure and restarts from the last good batch).
    """
    message = orjson.loads(line)
    if not isinstance(message, dict) or not any(kind in message for kind in KINDS):
        raise ValueError(f"not a protocol message: {line[:120]!r}")
    return message


def kind_of(message: dict[str, Any]) -> str:
    """Return the kind of a decoded message (one of KINDS)."""
    for kind in KINDS:
        if kind in message:
            return kind
    raise ValueError(f"not a protocol message: {message!r:.120}")


def batch_message(texts: list[str], epoch: int, rows: list[int], end: int) -> dict[str, Any]:
    """Build a batch message; ``rows[i]`` is the shard row of ``texts[i]``."""
    return {"batch": texts, "epoch": epoch, "rows": rows, "end": end}


def error_message(exc: BaseException) -> dict[str, Any]:
    """Build the structured error sent before a non-zero exit."""
    if isinstance(exc, HfStreamError):
        return {"error": {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}}
    return {"error": {"type": type(exc).__name__, "message": str(exc), "hint": None}}
