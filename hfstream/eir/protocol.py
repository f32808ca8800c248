"""EIR's streaming protocol, version "1.0": message shapes, request validation, reply builders.

Every frame is one JSON object ``{"type": T, "payload": {...}}``; the handshake carries
``version`` at the top level. Client -> server requests and their replies (same connection):

=====================================================  ===============================================
``{"type": "handshake", "version": "1.0"}``            ``{"type": "handshake", "version": "1.0"}``
``{"type": "getInfo"}``                                ``{"type": "info", "payload": {"inputs": {},``
                                                       ``"outputs": {NAME: {"type": "sequence"}}}}``
``{"type": "getData", "payload": {"batch_size": N}}``  ``{"type": "data", "payload": [sample, ...]}``
                                                       or ``"payload": ["terminate"]`` at the end
``{"type": "setValidationIds", "payload":``            ``{"type": "validationIdsConfirmation",``
``{"validation_ids": [id, ...]}}``                     ``"payload": {"message": M}}``
``{"type": "reset"}``                                  ``resetConfirmation`` *and* a ``reset`` broadcast
``{"type": "status"}``                                 ``{"type": "status", "payload": {...}}``
``{"type": "heartbeat"}``                              ``{"type": "heartbeat"}``
=====================================================  ===============================================

Anything wrong gets ``{"type": "error", "payload": {"message": M}}``. A missing payload is
``{}``. A sample is ``{"inputs": {NAME: text}, "target_labels": {NAME: {NAME: text}},
"sample_id": ID}`` (EIR's language-model shape: the same raw text in both places).
See ``../shared/EIR_PROTOCOL.md`` for how EIR's client uses each message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import orjson

from hfstream.errors import HfStreamError

PROTOCOL_VERSION = "1.0"
TERMINATE = "terminate"

RequestType = Literal["handshake", "getInfo", "getData", "setValidationIds", "reset", "status",
                      "heartbeat"]
REQUEST_TYPES: tuple[str, ...] = ("handshake", "getInfo", "getData", "setValidationIds", "reset",
                                  "status", "heartbeat")
#: Server -> client message types.
REPLY_TYPES: tuple[str, ...] = ("handshake", "info", "data", "validationIdsConfirmation",
                                "resetConfirmation", "reset", "status", "heartbeat", "error")


class RequestError(HfStreamError, ValueError):
    """A client frame that breaks the protocol; the server answers it with an ``error`` message."""


@dataclass
class Request:
    """One validated client request.

    Args:
        type: the message type (one of ``REQUEST_TYPES``).
        payload: the payload object (``{}`` when the client sent none).
        version: the top-level ``version`` (handshakes only).
        batch_size: ``getData``'s requested number of samples.
        validation_ids: ``setValidationIds``' ids, as strings.
    """

    type: RequestType
    payload: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    batch_size: int = 0
    validation_ids: list[str] = field(default_factory=list)


def parse_request(frame: str | bytes, *, max_batch_size: int, max_ids: int) -> Request:
    """Decode and validate one client frame.

    Args:
        frame: the raw text (or binary) frame.
        max_batch_size: the largest ``getData`` batch the server agrees to build.
        max_ids: the most ids one ``setValidationIds`` may carry.

    Raises:
        RequestError: not JSON, not an object, an unknown type, or a bad payload; the message
            says which and the hint says what a valid frame looks like.
    """
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the frame is not valid JSON ({exc}): {_preview(frame)}",
                           'send one JSON object per frame, e.g. {"type": "getInfo"}') from None
    if not isinstance(message, dict):
        raise RequestError(f"the frame is JSON but not an object: {_preview(frame)}",
                           'send {"type": ..., "payload": {...}}')
    kind = message.get("type")
    if kind is None:
        raise RequestError(f'the message has no "type": {_preview(frame)}',
                           f"valid types: {', '.join(REQUEST_TYPES)}")
    if kind not in REQUEST_TYPES:
        raise RequestError(f"unknown message type {str(kind)[:60]!r}",
                           f"valid types: {', '.join(REQUEST_TYPES)}")
    payload = message.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise RequestError(f"{kind}: payload must be an object, got {type(payload).__name__}",
                           f'send {{"type": "{kind}", "payload": {{...}}}} or leave payload out')
    request = Request(type=kind, payload=payload)
    if kind == "handshake":
        version = message.get("version")
        request.version = version if isinstance(version, str) else repr(version)
    elif kind == "getData":
        request.batch_size = _batch_size(payload.get("batch_size"), max_batch_size)
    elif kind == "setValidationIds":
        request.validation_ids = _validation_ids(payload.get("validation_ids"), max_ids)
    return request


def _batch_size(value: Any, max_batch_size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"getData: batch_size must be an integer, got {str(value)[:40]!r}",
                           'send {"type": "getData", "payload": {"batch_size": 256}}')
    if not 1 <= value <= max_batch_size:
        raise RequestError(f"getData: batch_size={value} is out of range [1, {max_batch_size}]",
                           f"ask for at most {max_batch_size} samples per getData (the server's "
                           "--max-batch-size)")
    return value


def _validation_ids(value: Any, max_ids: int) -> list[str]:
    if not isinstance(value, list):
        raise RequestError(f"setValidationIds: validation_ids must be a list, got {type(value).__name__}",
                           'send {"type": "setValidationIds", "payload": {"validation_ids": ["sample_0"]}}')
    if len(value) > max_ids:
        raise RequestError(f"setValidationIds: {len(value):,} ids is more than the server keeps "
                           f"({max_ids:,})", "send fewer validation ids (EIR's valid_size)")
    ids = []
    for item in value:
        if isinstance(item, str):
            ids.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            ids.append(str(item))
        else:
            raise RequestError(f"setValidationIds: ids must be strings, got {str(item)[:40]!r}",
                               "send the sample_id values exactly as the server sent them")
    return ids


def _preview(frame: str | bytes, size: int = 60) -> str:
    return repr(frame[:size]) + ("..." if len(frame) > size else "")


# -- replies (server -> client) ------------------------------------------------------------
def encode(message: dict[str, Any]) -> bytes:
    """Encode a message as the UTF-8 JSON bytes of one text frame."""
    return orjson.dumps(message)


def handshake_reply() -> dict[str, Any]:
    return {"type": "handshake", "version": PROTOCOL_VERSION}


def info_reply(output_name: str) -> dict[str, Any]:
    """The dataset description for one text output (EIR derives the input from it)."""
    return {"type": "info", "payload": {"inputs": {}, "outputs": {output_name: {"type": "sequence"}}}}


def sample(output_name: str, text: str, sample_id: str) -> dict[str, Any]:
    """One sample in EIR's language-model shape: the raw text as input and as target."""
    return {"inputs": {output_name: text}, "target_labels": {output_name: {output_name: text}},
            "sample_id": sample_id}


def data_reply(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "data", "payload": samples}


def encode_data_reply(output_name: str, samples: Sequence[tuple[str, str]],
                      piece_bytes: int) -> Iterator[bytes]:
    """``encode(data_reply(...))`` of ``(sample_id, text)`` pairs, in pieces of about ``piece_bytes``.

    The pieces joined are the whole frame; each ends at a sample boundary, so each is valid
    UTF-8 by itself. The server sends them as the fragments of one message: a large reply is
    encoded while it is sent, never held whole in memory.
    """
    start, opening = 0, b'{"type":"data","payload":['
    while True:
        end, size = start, 0
        while end < len(samples) and (size < piece_bytes or end == start):
            size += 2 * len(samples[end][1]) + 100  # each text twice, and the JSON around it
            end += 1
        # One orjson call per piece (one per sample is ~7x slower); its brackets are cut off.
        body = orjson.dumps([sample(output_name, text, sid) for sid, text in samples[start:end]])
        closing = b"]}" if end == len(samples) else b""
        yield b"".join((opening, memoryview(body)[1:-1], closing))
        if closing:
            return
        start, opening = end, b","


def terminate_reply() -> dict[str, Any]:
    return {"type": "data", "payload": [TERMINATE]}


def validation_reply(num_ids: int, num_excluded: int) -> dict[str, Any]:
    return {"type": "validationIdsConfirmation",
            "payload": {"message": f"Received {num_ids} validation IDs; they replace any earlier set "
                                   f"({num_excluded} excluded)"}}


def reset_confirmation() -> dict[str, Any]:
    return {"type": "resetConfirmation", "payload": {"message": "Reset successful"}}


def reset_broadcast() -> dict[str, Any]:
    return {"type": "reset", "payload": {"message": "Reset command received"}}


def status_reply(status: dict[str, Any]) -> dict[str, Any]:
    return {"type": "status", "payload": status}


def heartbeat_reply() -> dict[str, Any]:
    return {"type": "heartbeat"}


def error_reply(message: str) -> dict[str, Any]:
    return {"type": "error", "payload": {"message": message}}


def is_terminate(payload: Any) -> bool:
    """True for the end-of-stream payload ``["terminate"]``."""
    return isinstance(payload, list) and len(payload) == 1 and payload[0] == TERMINATE
