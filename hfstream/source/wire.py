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

from typing import Any, Callable

import orjson

from hfstream.errors import HfStreamError

PROTOCOL_VERSION = 1

#: The message kinds, by their distinguishing key.
KINDS = ("status", "batch", "heartbeat", "done", "error")


def encode(message: dict[str, Any]) -> bytes:
    """Encode one message as a protocol line (bytes, newline-terminated)."""
    return orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE)


def decode(line: bytes) -> dict[str, Any]:
    """Decode one protocol line, checking that it has every field of its kind, of the right type.

    Raises:
        ValueError: the line is not a JSON object of exactly one known kind with that kind's
            fields (a truncated or garbled line, or one of the wrong shape: the parent treats it
            as a worker failure and restarts from the last good batch).
    """
    message = orjson.loads(line)
    kinds = [kind for kind in KINDS if kind in message] if isinstance(message, dict) else []
    if len(kinds) != 1:
        raise ValueError(f"not a protocol message: {line[:120]!r}")
    problem = shape_problem(kinds[0], message)
    if problem is not None:
        raise ValueError(f"a {kinds[0]!r} message {problem}: {line[:120]!r}")
    return message


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _counts(value: Any) -> bool:
    return type(value) is dict and all(type(k) is str and _count(n) for k, n in value.items())


def _is_error(value: Any) -> bool:
    return (type(value) is dict and type(value.get("type")) is str and type(value.get("message")) is str
            and (value.get("hint") is None or type(value["hint"]) is str))


#: kind -> field -> check, for the fields a message of that kind must have ...
REQUIRED: dict[str, dict[str, Callable[[Any], bool]]] = {
    "status": {"status": lambda v: type(v) is str},
    "batch": {"batch": lambda v: type(v) is list and all(type(t) is str for t in v),
              "epoch": _count, "rows": lambda v: type(v) is list and all(type(r) is int for r in v),
              "end": _count},
    "heartbeat": {"heartbeat": lambda v: type(v) in (int, float)},
    "done": {"done": lambda v: v is True, "total": _count, "epoch": _count, "end": _count},
    "error": {"error": _is_error},
}
#: ... and for those it may have.
OPTIONAL: dict[str, dict[str, Callable[[Any], bool]]] = {
    "status": {"v": lambda v: v == PROTOCOL_VERSION}, "batch": {"skipped": _counts}, "done": {"skipped": _counts},
}


def shape_problem(kind: str, message: dict[str, Any]) -> str | None:
    """What is wrong with a message of ``kind`` (a missing field, a wrong type), or None."""
    for name, check in REQUIRED[kind].items():
        if name not in message:
            return f"without {name!r}"
        if not check(message[name]):
            return f"with a bad {name!r}"
    for name, check in OPTIONAL.get(kind, {}).items():
        if name in message and not check(message[name]):
            return f"with a bad {name!r}"
    if kind == "batch":
        rows, end = message["rows"], message["end"]
        if len(rows) != len(message["batch"]):
            return f"with {len(rows)} rows for {len(message['batch'])} documents"
        if rows and (rows[0] < 0 or end <= rows[-1] or any(a >= b for a, b in zip(rows, rows[1:]))):
            return "whose rows do not increase from 0 up to its end"
    return None


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
