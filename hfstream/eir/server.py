"""The EIR-compatible WebSocket server: connections, the message set, limits, start and shutdown.

EIR (``eirtrain``) trains from it unchanged: point ``output_source`` at the server's URL. The
server reads any ``DocumentSource`` (a ``HuggingFaceStreamingCorpus``, a mixture) through one
shared ``SampleFeed``, so every connection receives disjoint samples, and answers the whole
protocol of ``hfstream.eir.protocol``. Bad clients get an ``error`` reply or a clean close;
they never take the server or other connections down. ``hfstream.eir.access`` decides who
may connect, ``hfstream.eir.replies`` answers ``getData`` (within the memory budget of
``hfstream.eir.budget``), ``hfstream.eir.state`` keeps validation ids across restarts;
``hfstream.eir.runner`` runs it.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import time
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from hfstream.eir import protocol
from hfstream.eir.access import AccessPolicy, Refusal, is_loopback
from hfstream.eir.config import ServerConfig
from hfstream.eir.feed import SampleFeed
from hfstream.eir.replies import Client, DataReplies, send
from hfstream.eir.state import SavedState, StateFile, StateKeeper, stream_fingerprint
from hfstream.errors import ConfigError
from hfstream.source.base import DocumentSource

__all__ = ["EirServer", "ServerConfig"]

log = logging.getLogger("hfstream.eir.server")


class EirServer:
    """A WebSocket server speaking EIR's streaming protocol v1.0 over a document source.

    Args:
        source: the documents; the server rewinds it with ``load_state_dict`` on ``reset`` but
            never closes it (it belongs to the caller).
        config: listening address, sample shape and limits.
        name: what is served, for logs and ``status`` (e.g. the dataset).

    Example::

        server = EirServer(corpus, ServerConfig(port=8000), name="builtin:python-docs")
        await server.start()          # binds; logs the URL
        await server.wait_closed()    # until server.close()
    """

    def __init__(self, source: DocumentSource, config: ServerConfig | None = None, name: str = ""):
        self.config = config or ServerConfig()
        self.name = name or type(source).__name__
        c = self.config
        self.feed = SampleFeed(source, sequence_length=c.sequence_length, separator=c.separator,
                               max_samples=c.max_iterations, buffer_samples=c.buffer_samples,
                               buffer_chars=c.buffer_chars, replay_samples=c.buffer_samples,
                               replay_chars=c.buffer_chars)
        self.access = AccessPolicy(c.path, c.host, c.token, c.allowed_origins, c.allowed_hosts)
        self.replies = DataReplies(self.feed, c)
        self.validation_ids: frozenset[str] = frozenset()
        self._state = self._open_state_file()
        self._clients: dict[ServerConnection, Client] = {}
        self._num_handlers = 0
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._started = 0.0
        self.num_connections = 0

    def _open_state_file(self) -> StateKeeper | None:
        """Read the state file, if any: the validation ids and the cursor of a previous run."""
        c = self.config
        if c.state_file is None:
            return None
        stream = stream_fingerprint(self.feed.initial_state, c.sequence_length, c.separator)
        keeper = StateKeeper(StateFile(c.state_file, stream, self.name),
                             lambda: SavedState(sorted(self.validation_ids), self.feed.next_position))
        saved = keeper.file.load_or_create()
        if saved.validation_ids or saved.position:
            self.validation_ids = frozenset(saved.validation_ids)
            self.feed.start_at(saved.position)
            log.info("state file %s: %d validation ids are left out; the stream resumes at sample %d "
                     "(the samples before it are read again, not served)", c.state_file,
                     len(self.validation_ids), saved.position)
        return keeper

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start serving.

        Raises:
            ConfigError: the port is in use, or the host cannot be bound.
        """
        c = self.config
        try:
            self._server = await serve(
                self._handle, c.host, c.port, process_request=self._check_request,
                max_size=c.max_message_bytes, max_queue=4,
                ping_interval=None,  # idle connections only: see _next_frame
                compression=None,  # EIR's client never asks for it; it only costs CPU and memory
                ping_timeout=None, open_timeout=min(c.handshake_timeout, 10.0), close_timeout=5)
        except OSError as exc:
            raise _bind_error(exc, c.host, c.port) from None
        self.feed.start()
        if self._state is not None:
            self._state.start()
        self._started = time.monotonic()
        auth = "token required" if c.token else "no token"
        log.info("serving %s at %s (%s as %r, %s)", self.name, self.url, c.mode, c.output_name, auth)
        if not is_loopback(c.host) and not c.token:
            log.warning("listening on %s without a token: anyone who can reach port %d can read the "
                        "data; pass --token (or HFSTREAM_WS_TOKEN) to require one. Clients must name "
                        "the server by IP address or as %s, or by a name given with --allow-host",
                        c.host, self.port, "/".join(sorted(self.access.host_names)))

    @property
    def port(self) -> int:
        """The bound port (the real one when the config asked for port 0)."""
        assert self._server is not None, "start() the server first"
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self.port}{self.config.path}"

    def close(self) -> None:
        """Stop accepting connections and close the open ones (code 1001, going away)."""
        self.feed.stop()  # a getData waiting on the source returns now
        if self._state is not None:
            self._state.stop()
        if self._server is not None:
            self._server.close()

    async def wait_closed(self, grace_s: float = 5.0) -> None:
        """Wait until the server is closed; connections still open ``grace_s`` seconds after
        ``close()`` (e.g. a peer that never finishes its upgrade) are cut."""
        assert self._server is not None
        server = self._server
        try:
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), grace_s)
        except asyncio.TimeoutError:
            log.warning("%d connections did not close within %.0fs: cutting them",
                        len(server.handler_tasks), grace_s)
            for task in list(server.handler_tasks):
                task.cancel()
            await server.wait_closed()
        self.feed.close()
        await self._save_state()
        log.info("stopped after %.0fs: %d samples served over %d connection%s", time.monotonic() - self._started,
                 self.feed.num_served, self.num_connections, "" if self.num_connections == 1 else "s")

    async def stop(self) -> None:
        self.close()
        await self.wait_closed()

    # -- HTTP upgrade: path, Host, Origin, token, connection cap ---------------------------
    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        refusal = self.access.check(request.path, request.headers)
        if refusal is None and self._num_handlers >= self.config.max_connections:
            refusal = Refusal(503, "too many connections\n",
                              f"{self._num_handlers} connections open (--max-connections)")
        if refusal is None:
            return None
        log.warning("refused %s: %s (HTTP %d)", _peer(connection), refusal.reason, refusal.status)
        return connection.respond(refusal.status, refusal.body)

    # -- one connection -------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        client = Client(next(self._ids), _peer(ws))
        self._num_handlers += 1
        self.num_connections += 1
        log.debug("connection %d from %s opened", client.id, client.peer)
        try:
            if await self._handshake(ws, client):
                self._clients[ws] = client
                await self._serve_messages(ws, client)
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - one connection's bug must not reach the others
            log.exception("connection %d from %s failed", client.id, client.peer)
            await ws.close(1011, "internal server error")
        finally:
            self._clients.pop(ws, None)
            self._num_handlers -= 1
            log.debug("connection %d from %s closed (code %s): %d messages, %d samples, %.1f MB sent",
                      client.id, client.peer, ws.close_code, client.num_messages, client.num_samples,
                      client.num_bytes / 1e6)

    async def _handshake(self, ws: ServerConnection, client: Client) -> bool:
        c = self.config
        try:
            frame = await asyncio.wait_for(ws.recv(), c.handshake_timeout)
        except asyncio.TimeoutError:
            await ws.close(1008, f"no handshake within {c.handshake_timeout:.0f}s")
            return False
        try:
            request = protocol.parse_request(frame, max_batch_size=c.max_batch_size,
                                             max_ids=c.max_validation_ids)
        except protocol.RequestError as exc:
            return await self._refuse(ws, client, str(exc))
        if request.type != "handshake":
            first = f'{{"type": "handshake", "version": "{protocol.PROTOCOL_VERSION}"}}'
            return await self._refuse(ws, client, f"the first message must be a handshake, got "
                                      f"{request.type!r}\nHINT: send {first} first")
        if request.version != protocol.PROTOCOL_VERSION:
            return await self._refuse(ws, client, f"Incompatible protocol version: the client speaks "
                                      f"{request.version}, this server {protocol.PROTOCOL_VERSION}")
        await send(ws, client, protocol.handshake_reply())
        log.debug("connection %d: handshake (worker_id %s)", client.id, request.payload.get("worker_id",
                                                                                              "-"))
        return True

    async def _refuse(self, ws: ServerConnection, client: Client, message: str) -> bool:
        log.debug("connection %d from %s refused: %s", client.id, client.peer, message.splitlines()[0])
        await send(ws, client, protocol.error_reply(message))
        await ws.close(1008, "handshake failed")
        return False

    async def _serve_messages(self, ws: ServerConnection, client: Client) -> None:
        c = self.config
        while True:
            frame = await self._next_frame(ws)
            client.num_messages += 1
            try:
                request = protocol.parse_request(frame, max_batch_size=c.max_batch_size,
                                                 max_ids=c.max_validation_ids)
            except protocol.RequestError as exc:
                client.bad_in_a_row += 1
                log.debug("connection %d: bad frame: %s", client.id, exc.message)
                await send(ws, client, protocol.error_reply(str(exc)))
                if client.bad_in_a_row >= c.max_bad_frames:
                    await ws.close(1008, f"{client.bad_in_a_row} malformed messages in a row")
                    return
                continue
            client.bad_in_a_row = 0
            await self._dispatch(ws, client, request)

    async def _next_frame(self, ws: ServerConnection) -> str | bytes:
        """The client's next frame; a ping each ``ping_interval`` seconds it stays silent.

        Only an idle connection is pinged (nothing is being answered): a ping restarts the
        socket timeout of a client waiting for a reply (EIR's 30 s), so pinging it then would
        turn a missing reply into a wait without end.
        """
        while True:
            try:  # websockets' recv() may be cancelled without losing a frame
                return await asyncio.wait_for(ws.recv(), self.config.ping_interval)
            except asyncio.TimeoutError:
                await ws.ping()  # the pong is never awaited: EIR answers only inside recv()

    async def _dispatch(self, ws: ServerConnection, client: Client, request: protocol.Request) -> None:
        kind = request.type
        if kind == "getData":
            await self.replies.answer(ws, client, request.batch_size, self.validation_ids)
        elif kind == "heartbeat":
            await send(ws, client, protocol.heartbeat_reply())
        elif kind == "getInfo":
            await send(ws, client, protocol.info_reply(self.config.output_name))
        elif kind == "setValidationIds":
            await self._set_validation_ids(ws, client, request.validation_ids)
        elif kind == "reset":
            await self._reset(ws, client)
        elif kind == "status":
            await send(ws, client, protocol.status_reply(self.status()))
        elif kind == "handshake":  # a repeated handshake is harmless: answer it again
            reply = (protocol.handshake_reply() if request.version == protocol.PROTOCOL_VERSION else
                     protocol.error_reply(f"Incompatible protocol version {request.version}"))
            await send(ws, client, reply)

    async def _set_validation_ids(self, ws: ServerConnection, client: Client, ids: list[str]) -> None:
        """The ids replace the previous set: EIR sends its whole set once per run, so a long-lived
        server does not carry one run's ids into the next (EIR's tutorial server does the same)."""
        previous, self.validation_ids = len(self.validation_ids), frozenset(ids)
        log.info("connection %d: %d validation ids received; they replace the previous set of %d and are "
                 "left out of every batch%s", client.id, len(self.validation_ids), previous,
                 f" (kept in {self.config.state_file})" if self._state else " until the next "
                 "setValidationIds or a restart (--state-file keeps them across restarts)")
        await self._save_state()  # before confirming: a crash after the confirmation keeps them
        await send(ws, client, protocol.validation_reply(len(ids), len(self.validation_ids)))

    async def _reset(self, ws: ServerConnection, client: Client) -> None:
        self.feed.rewind()
        await self._save_state()
        log.info("connection %d: reset: the stream starts again at sample 0 (%d resets)", client.id,
                 self.feed.num_rewinds)
        await send(ws, client, protocol.reset_confirmation())
        note = protocol.encode(protocol.reset_broadcast())
        await send(ws, client, note)  # the requester waits for it: never skipped
        # Others get it without backpressure: a stalled client must not hold this one up.
        broadcast([other for other, info in self._clients.items() if other is not ws and not info.fragmenting],
                  note, text=True)

    def status(self) -> dict[str, Any]:
        c = self.config
        status: dict[str, Any] = {"dataset": self.name, "active_connections": len(self._clients),
                                  "validation_ids_count": len(self.validation_ids),
                                  "mode": "documents" if c.sequence_length == 0 else "chunks",
                                  "sequence_length": c.sequence_length, "output_name": c.output_name,
                                  "pending_reply_bytes": self.replies.budget.used, **self.feed.status()}
        if c.max_iterations is not None:
            status["max_iterations"] = c.max_iterations
            status["remaining_iterations"] = max(0, c.max_iterations - self.feed.next_position)
        return status

    async def _save_state(self) -> None:
        if self._state is not None:
            await self._state.save()


def _peer(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError, OSError):
        return "?"


def _bind_error(exc: OSError, host: str, port: int) -> ConfigError:
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"port {port} on {host} is already in use",
                           f"pick another port with --port (e.g. --port {port + 1}), or stop the other "
                           f"server (see: lsof -i :{port})")
    if exc.errno == errno.EACCES:
        return ConfigError(f"no permission to bind port {port} on {host}",
                           "ports below 1024 need privileges: use --port 8000 or higher")
    return ConfigError(f"cannot listen on {host}:{port}: {exc}",
                       "check --host (an address of this machine, e.g. 127.0.0.1 or 0.0.0.0) and --port")
