"""A synchronous client of EIR's streaming protocol: connect, handshake, and one method per request.

It speaks to any EIR-protocol server (``hfstream serve``, EIR's tutorial server) the way EIR's
own training client does, and is what the ``ws://`` source runs inside the worker. Failures
come in two kinds: transient ones (connection refused or dropped, reply timeout, HTTP 503) are
built-in ``ConnectionError`` / ``TimeoutError`` subclasses a caller may retry; permanent ones
(bad URL, wrong token, protocol mismatch) are ``hfstream.errors`` exceptions with a hint.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from hfstream.eir import protocol
from hfstream.errors import ConfigError, DataFormatError, HfStreamError

log = logging.getLogger("hfstream.eir.client")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class EirServerError(HfStreamError, RuntimeError):
    """The server answered a request with an ``error`` message (its text is the message)."""


class ServerUnavailable(ConnectionError):
    """The server cannot be reached right now (refused, dropped, overloaded): worth a retry."""


def redact(url: str) -> str:
    """The URL with any ``token=`` value hidden, for logs and error messages."""
    return re.sub(r"(token=)[^&]*", r"\1***", url)


class EirClient:
    """One connection to an EIR-protocol server.

    Args:
        url: ``ws://host:port/path`` (or ``wss://``); a ``?token=`` in it is sent as is.
        token: shared secret, sent as ``Authorization: Bearer``.
        timeout: seconds to wait for each reply (EIR's client waits 30 s).
        worker_id: sent in the handshake when set (EIR 0.25 sends 0).
        max_reply_bytes: largest server frame accepted.

    Example::

        with EirClient("ws://127.0.0.1:8000/ws") as client:
            while (samples := client.get_data(256)) is not None:
                texts = [s["inputs"]["text_output"] for s in samples]
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0,
                 worker_id: int | None = None, max_reply_bytes: int = 256 << 20):
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"{url!r} is not a WebSocket URL",
                              "use ws://host:port/path, e.g. ws://127.0.0.1:8000/ws")
        self.url, self.token, self.timeout, self.worker_id = url, token, timeout, worker_id
        self.max_reply_bytes = max_reply_bytes
        self.num_broadcast_resets = 0  # `reset` notices caused by other clients
        self.reset_confirmed = False    # the server confirmed a reset of ours (it rewound)
        self.num_bytes_received = 0     # frame bytes, for throughput figures
        self._ws: ClientConnection | None = None

    # -- connection -----------------------------------------------------------------------
    def connect(self) -> "EirClient":
        """Open the connection and handshake.

        Raises:
            ServerUnavailable: refused, dropped or overloaded (retry later).
            ConfigError: a malformed URL, a missing or wrong token, no endpoint at that path.
            DataFormatError: the server speaks another protocol version.
        """
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        host = re.sub(r"^wss?://([^/:?]+|\[[^\]]+\]).*$", r"\1", self.url)
        try:
            # __enter__: the context-manager form, the only one without a deprecation warning
            # from websockets 17 on; the connection outlives this call and close() ends it.
            self._ws = connect(self.url, additional_headers=headers, open_timeout=self.timeout,
                               ping_interval=None, compression=None, max_size=self.max_reply_bytes,
                               proxy=None if host in LOOPBACK else True).__enter__()
        except InvalidURI as exc:
            raise ConfigError(f"{redact(self.url)!r} is not a valid WebSocket URL ({exc})",
                              "use ws://host:port/path, e.g. ws://127.0.0.1:8000/ws") from None
        except InvalidStatus as exc:
            raise _status_error(self.url, exc.response.status_code, exc.response.body) from None
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
            raise ServerUnavailable(f"cannot connect to {redact(self.url)}: "
                                    f"{type(exc).__name__}: {exc}") from exc
        reply = self._exchange(self._handshake_message(), ("handshake",))
        if reply.get("version") != protocol.PROTOCOL_VERSION:
            self.close()
            raise DataFormatError(f"the server at {redact(self.url)} speaks protocol version "
                                  f"{reply.get('version')!r}, this client {protocol.PROTOCOL_VERSION!r}",
                                  "use a server and client of the same EIR protocol version")
        return self

    def _handshake_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "handshake", "version": protocol.PROTOCOL_VERSION}
        if self.worker_id is not None:
            message["worker_id"] = self.worker_id
        return message

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone anyway
                pass
            self._ws = None

    def __enter__(self) -> "EirClient":
        return self if self._ws is not None else self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """``getInfo``: ``{"inputs": {...}, "outputs": {...}}``."""
        payload = self._exchange({"type": "getInfo"}, ("info",)).get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("outputs"), dict) \
                or not isinstance(payload.get("inputs"), dict):
            raise DataFormatError(f"the server's info reply lacks inputs/outputs: {str(payload)[:200]}",
                                  "the server does not follow EIR's protocol v1.0")
        return payload

    def get_data(self, batch_size: int) -> list[dict[str, Any]] | None:
        """``getData``: a list of samples, or None when the server says ``terminate``.

        Raises:
            EirServerError: the server replied with an error (EIR logs it and asks again).
        """
        payload = self._exchange({"type": "getData", "payload": {"batch_size": batch_size}},
                                 ("data",)).get("payload")
        if protocol.is_terminate(payload):
            return None
        if not isinstance(payload, list):
            raise DataFormatError(f"the server's data payload is not a list: {str(payload)[:200]}",
                                  "the server does not follow EIR's protocol v1.0")
        return payload

    def set_validation_ids(self, ids: list[str]) -> str:
        """``setValidationIds``: the server never sends these ids again. Returns its message."""
        reply = self._exchange({"type": "setValidationIds", "payload": {"validation_ids": list(ids)}},
                               ("validationIdsConfirmation",))
        return str((reply.get("payload") or {}).get("message", ""))

    def reset(self) -> None:
        """``reset``: rewind the server's stream; waits for both replies EIR waits for.

        Sent once, never again: each ``reset`` rewinds the stream for all the server's clients.

        Raises:
            DataFormatError: a reply is still missing after ``timeout`` seconds (the server breaks
                the protocol; EIR's client would crash). Not worth a retry, so not a TimeoutError.
        """
        self._send({"type": "reset", "payload": {}})
        replies = ("resetConfirmation", "reset")
        seen: set[str] = set()
        deadline = time.monotonic() + self.timeout
        while len(seen) < len(replies):
            try:
                kind = self._receive(replies, deadline)["type"]
            except TimeoutError:
                raise _reset_error(self.url, seen, self.timeout) from None
            seen.add(kind)
            self.reset_confirmed = self.reset_confirmed or kind == "resetConfirmation"

    def status(self) -> dict[str, Any]:
        return self._exchange({"type": "status", "payload": {}}, ("status",)).get("payload") or {}

    def heartbeat(self) -> None:
        self._exchange({"type": "heartbeat"}, ("heartbeat",))

    # -- frames ---------------------------------------------------------------------------
    def _exchange(self, message: dict[str, Any], want: tuple[str, ...]) -> dict[str, Any]:
        self._send(message)
        return self._receive(want, time.monotonic() + self.timeout)

    def _send(self, message: dict[str, Any]) -> None:
        if self._ws is None:
            self.connect()
        try:
            self._ws.send(orjson.dumps(message), text=True)  # type: ignore[union-attr]
        except (ConnectionClosed, OSError) as exc:
            self.close()
            raise ServerUnavailable(f"the connection to {redact(self.url)} was lost: {exc}") from exc

    def _receive(self, want: tuple[str, ...], deadline: float) -> dict[str, Any]:
        """The next message of a wanted type; skips other clients' reset notices and echoes."""
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                frame = self._ws.recv(remaining, decode=False)  # type: ignore[union-attr]
            except TimeoutError:
                self.close()  # a late reply would be taken for the answer to the next request
                raise TimeoutError(f"no {'/'.join(want)} reply from {redact(self.url)} within "
                                   f"{self.timeout:.0f}s") from None
            except (ConnectionClosed, OSError) as exc:
                self.close()
                raise ServerUnavailable(f"the connection to {redact(self.url)} was lost: {exc}") from exc
            self.num_bytes_received += len(frame)
            message = _decode(frame, self.url)
            kind = message.get("type")
            if kind in want:
                return message
            if kind == "error":
                payload = message.get("payload")
                text = payload.get("message") if isinstance(payload, dict) else payload
                raise EirServerError(f"the server at {redact(self.url)} answered with an error: {text}",
                                     "see the server's log")
            if kind == "reset":
                self.num_broadcast_resets += 1
                log.info("%s: another client reset the stream", redact(self.url))
            elif kind != "heartbeat":
                log.debug("%s: ignoring an unexpected %r message", redact(self.url), kind)


def _decode(frame: str | bytes, url: str) -> dict[str, Any]:
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError:
        message = None
    if not isinstance(message, dict):
        raise DataFormatError(f"the server at {redact(url)} sent a frame that is not a JSON object: "
                              f"{frame[:80]!r}", "the server does not follow EIR's protocol v1.0")
    return message


def _reset_error(url: str, seen: set[str], timeout: float) -> DataFormatError:
    where = redact(url)
    if "resetConfirmation" in seen:
        what = (f"the server at {where} confirmed the reset (resetConfirmation), so its stream was "
                f"rewound, but it sent no 'reset' broadcast within {timeout:.0f}s")
    elif "reset" in seen:
        what = (f"the server at {where} sent the 'reset' broadcast but no resetConfirmation within "
                f"{timeout:.0f}s")
    else:
        what = (f"the server at {where} answered reset with neither resetConfirmation nor a 'reset' "
                f"broadcast within {timeout:.0f}s")
    return DataFormatError(what, "the server does not follow EIR's protocol v1.0, which answers reset "
                                 "with both messages (EIR's own client crashes without either); the "
                                 "reset is not sent again, since each one rewinds the stream for every client")


def _status_error(url: str, status: int, body: bytes | None) -> Exception:
    detail = (body or b"").decode("utf-8", "replace").strip()[:200]
    where = redact(url)
    if status in (401, 403):
        return ConfigError(f"the server at {where} refused the connection: HTTP {status} ({detail})",
                           "pass the server's token: HFSTREAM_WS_TOKEN=... in the environment, or "
                           "?token=... in the URL")
    if status == 404:
        return ConfigError(f"the server at {where} has no WebSocket endpoint at that path: HTTP 404 ({detail})",
                           "check the path of the URL (hfstream serve and EIR's tutorial use /ws)")
    if status in (429, 502, 503, 504):
        return ServerUnavailable(f"the server at {where} is busy: HTTP {status} ({detail})")
    return ConfigError(f"the server at {where} refused the WebSocket upgrade: HTTP {status} ({detail})",
                       "check that the URL points at an EIR-protocol WebSocket server")
