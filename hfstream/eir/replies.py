"""Answering ``getData``: samples from the shared feed within the memory budget, the stream's ends.

A reply first holds its room in the ``ReplyBudget`` (an estimate, then the real size), takes
its samples from the ``SampleFeed``, and goes out as one frame, or as fragments encoded while
they are sent when it is over ``PIECE_BYTES``. An empty take becomes ``terminate`` (the end:
logged when the first client is told), the source's failure (an ``error``, at most one a second
per connection), or "not ready, ask again". When replies that held a lot are gone, the freed
memory goes back to the system.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Any, Iterator

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from hfstream.eir import protocol
from hfstream.eir.budget import ReplyBudget, trim_memory
from hfstream.eir.config import ServerConfig
from hfstream.eir.feed import SampleFeed, held_bytes

log = logging.getLogger("hfstream.eir.server")
PIECE_BYTES = 1 << 20          # a larger data reply goes out as fragments of about this size
FAILURE_REPLY_INTERVAL = 1.0   # seconds between two "the source failed" errors to one connection
TRIM_AFTER_BYTES = 32 << 20    # give memory back once replies that held this much are gone


@dataclass
class Client:
    """Per-connection bookkeeping (for logs and ``status``)."""

    id: int
    peer: str
    num_messages: int = 0
    num_samples: int = 0
    num_bytes: int = 0
    bad_in_a_row: int = 0
    next_failure_reply: float = 0.0  # loop time before which no further "source failed" error goes
    fragmenting: bool = False  # a fragmented reply is being sent: nothing else may interleave


async def send(ws: ServerConnection, client: Client, message: dict[str, Any] | bytes) -> None:
    """Send one message (a dict, or its encoded bytes) as a text frame, counting its bytes."""
    data = message if isinstance(message, bytes) else protocol.encode(message)
    client.num_bytes += len(data)
    await ws.send(data, text=True)


class DataReplies:
    """The server's ``getData`` answers.

    Args:
        feed: the shared cursor the samples come from.
        config: the server's configuration (output name, limits, deadlines).
    """

    def __init__(self, feed: SampleFeed, config: ServerConfig):
        self.feed, self.config = feed, config
        self.budget = ReplyBudget(config.max_pending_bytes)

    async def answer(self, ws: ServerConnection, client: Client, batch_size: int,
                     excluded: frozenset[str]) -> None:
        """Answer one ``getData(batch_size)``, leaving out the ids in ``excluded``."""
        c, loop = self.config, asyncio.get_running_loop()
        deadline = loop.time() + c.reply_deadline
        estimate = _with_pieces(self.feed.estimate_bytes(batch_size))
        held = await self.budget.acquire(estimate, c.reply_deadline)
        if not held:
            log.debug("connection %d: getData(%d) waited %.0fs for memory: busy", client.id, batch_size,
                      c.reply_deadline)
            await send(ws, client, protocol.error_reply(
                f"the server is busy: {self.budget.used / 2**20:.0f} MiB of replies wait for clients that "
                f"do not read them (--max-pending-bytes {c.max_pending_bytes}); ask again"))
            return
        try:
            if ws.state is not State.OPEN:  # the client left while the reply waited for memory
                return
            taken = await self.feed.take(batch_size, excluded, deadline - loop.time())
            held = self.budget.resize(held, _with_pieces(held_bytes(taken.samples)))
            if taken.samples:
                client.num_samples += len(taken.samples)
                await self._send_samples(ws, client, taken.samples)
                return
        finally:
            self.budget.release(held)
            self._give_memory_back()
        if taken.error is not None:
            await self._send_failure(ws, client, taken.error)
        elif taken.ended:
            if taken.first_end:
                self._log_end(client)
            await send(ws, client, protocol.terminate_reply())
        else:
            await send(ws, client, protocol.error_reply(
                f"no sample was ready within {c.reply_deadline:.0f}s (the source is slow or "
                "still starting); ask again"))

    async def _send_samples(self, ws: ServerConnection, client: Client,
                            samples: list[tuple[str, str]]) -> None:
        """One ``data`` reply; one frame, or fragments encoded as they go when it is large."""
        pieces = protocol.encode_data_reply(self.config.output_name, samples, PIECE_BYTES)
        first, second = next(pieces), next(pieces, None)
        if second is None:
            await send(ws, client, first)
            return
        client.fragmenting = True
        try:
            await ws.send(_counted(client, itertools.chain((first, second), pieces)), text=True)
        finally:
            client.fragmenting = False

    async def _send_failure(self, ws: ServerConnection, client: Client, failure: str) -> None:
        """Every getData past a source failure gets this error, at most one a second per
        connection: EIR asks again at once after an error, and would spin."""
        loop = asyncio.get_running_loop()
        wait = client.next_failure_reply - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        client.next_failure_reply = loop.time() + FAILURE_REPLY_INTERVAL
        await send(ws, client, protocol.error_reply(
            f"the data source failed {failure}\nHINT: the server's log has the details; fix the data "
            "and restart the server (a reset serves the samples before the failure again)"))

    def _log_end(self, client: Client) -> None:
        feed, limit = self.feed, self.config.max_iterations
        why = ("--max-iterations" if limit is not None and feed.end_position == limit else
               "the end of the source; --epochs 0 repeats it")
        log.info("the stream ended at sample %s (%s): connection %d is the first to get terminate, after "
                 "%d samples served in this pass (%d left out as validation ids); every getData gets "
                 "terminate until a reset", feed.end_position, why, client.id, feed.pass_served,
                 feed.pass_excluded)

    def _give_memory_back(self) -> None:
        """After replies that held a lot are gone, return the freed pages to the system."""
        if self.budget.peak >= TRIM_AFTER_BYTES and self.budget.used <= self.budget.peak // 4:
            self.budget.reset_peak()
            asyncio.get_running_loop().run_in_executor(None, trim_memory)


def _with_pieces(text_bytes: int) -> int:
    """What a reply holding ``text_bytes`` of samples takes while it is sent: the samples, plus
    an encoded piece (each text twice, in JSON) and its copy in the socket's write buffer."""
    return text_bytes + 2 * min(PIECE_BYTES, 2 * text_bytes)


def _counted(client: Client, pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        client.num_bytes += len(piece)
        yield piece
