"""The server's configuration: how it listens, what it sends, what it tolerates.

``hfstream serve`` builds one from its flags; each field is documented once, here.
"""

from __future__ import annotations

from dataclasses import dataclass

from hfstream.eir.samples import DEFAULT_SEPARATOR
from hfstream.errors import ConfigError


@dataclass
class ServerConfig:
    """How the server listens, what it sends and what it tolerates.

    Args:
        host: interface to bind; loopback unless told otherwise.
        port: TCP port (0 picks a free one; see ``EirServer.url``).
        path: the WebSocket endpoint's path (EIR's tutorial: ``/ws``).
        output_name: the sequence output's name in ``info`` and in every sample; must match
            ``output_name`` of the EIR output config.
        sequence_length: words per sample (chunk mode); 0 sends one sample per document.
        separator: chunk mode's word between two documents.
        max_iterations: the stream ends (``["terminate"]``) after this many samples per pass,
            validation samples included; None streams until the source ends.
        token: shared secret clients must send as ``?token=`` in the URL (raw or
            percent-encoded) or as an ``Authorization: Bearer`` header; None accepts everyone
            who can reach the port.
        max_batch_size: largest ``getData`` batch served.
        max_message_bytes: largest client frame accepted (``setValidationIds`` is the big one).
        max_connections: further connections are refused with HTTP 503.
        allowed_origins: browser origins allowed besides the server's own (``*``: any). Requests
            from other origins get HTTP 403, so a web page cannot read the data.
        allowed_hosts: Host names accepted besides this server's own (``*``: any); others get
            HTTP 403 (DNS rebinding; see ``hfstream.eir.access`` for the rule).
        max_validation_ids: most ids one ``setValidationIds`` may carry.
        max_pending_bytes: memory all replies not yet read by their clients may hold together;
            a ``getData`` that does not fit waits, then gets a "busy" ``error``.
        ping_interval: a connection whose client has sent nothing for this many seconds gets a
            ping (None: never). Only idle connections are pinged, so a client waiting for a
            reply never gets one; pings never time out (EIR answers them only inside recv).
        reply_deadline: seconds a ``getData`` waits for a slow source before replying with
            what it has, or with an ``error`` ("not ready, ask again") when it has nothing.
        handshake_timeout: seconds a new connection has to send its handshake.
        max_bad_frames: malformed frames in a row before the connection is closed.
        buffer_samples: read-ahead bound, in samples; also the stream's first samples kept
            so that a ``reset`` is answered from memory while the source restarts.
        buffer_chars: the same two bounds, in characters.
        state_file: where the validation ids and the cursor are kept across restarts (None:
            in memory only); see ``hfstream.eir.state``.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    path: str = "/ws"
    output_name: str = "text_output"
    sequence_length: int = 512
    separator: str = DEFAULT_SEPARATOR
    max_iterations: int | None = None
    token: str | None = None
    max_batch_size: int = 4096
    max_message_bytes: int = 4 << 20
    max_connections: int = 128
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_validation_ids: int = 1_000_000
    max_pending_bytes: int = 256 << 20
    ping_interval: float | None = 45.0
    reply_deadline: float = 20.0
    handshake_timeout: float = 30.0
    max_bad_frames: int = 20
    buffer_samples: int = 4096
    buffer_chars: int = 16 << 20
    state_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port={self.port!r} is not a TCP port",
                              "pass --port in [1, 65535] (0: any free port)")
        if not self.path.startswith("/"):
            raise ConfigError(f"path={self.path!r} must start with '/'", "pass e.g. --path /ws")
        if not self.output_name:
            raise ConfigError("output_name is empty",
                              "pass the EIR output config's output_name, e.g. text_output")
        for key in ("sequence_length", "max_batch_size", "max_message_bytes", "max_connections",
                    "max_validation_ids", "max_bad_frames", "buffer_samples", "buffer_chars",
                    "max_pending_bytes"):
            value, low = getattr(self, key), 0 if key == "sequence_length" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}",
                                  f"pass --{key.replace('_', '-')} >= {low}")
        limit = self.max_iterations
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"max_iterations must be a positive integer, got {self.max_iterations!r}",
                              "pass --max-iterations >= 1, or leave it out to stream without a limit")
        if self.ping_interval is not None and not self.ping_interval > 0:
            raise ConfigError(f"ping_interval must be > 0 or None, got {self.ping_interval!r}",
                              "pass --ping-interval 45 (seconds), or 0 for no pings")
        if self.token is not None and not self.token:
            raise ConfigError("the token is empty", "pass a non-empty --token, or none at all")

    @property
    def mode(self) -> str:
        if self.sequence_length == 0:
            return "one sample per document"
        return f"chunks of {self.sequence_length} words"
