"""The server's memory for replies: one byte budget for all connections, and handing freed memory back.

A ``getData`` reply lives in memory until its client reads it: the sample texts, and the
encoded pieces waiting in the socket's write buffer. A client that asks and never reads holds
its reply for as long as its connection lives, so the server counts what every reply holds
against one ``ReplyBudget`` (``--max-pending-bytes``); a reply that does not fit waits for
room, and after the reply deadline its client gets an ``error`` "busy, ask again" instead.

When a burst of replies is gone, glibc's malloc keeps the freed pages in its arenas (the
texts come from the reader thread's arena, the encoded pieces from the event loop's);
``trim_memory`` returns them to the system (``malloc_trim``), elsewhere it does nothing.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import functools
import sys


class ReplyBudget:
    """At most ``limit`` bytes held by replies, all connections together; first come, first served.

    A reply larger than the whole budget is admitted alone, when nothing else is held.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.peak = 0  # the most held at once since the last ``reset_peak``
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, num_bytes: int, timeout: float) -> int:
        """Hold ``num_bytes`` (at most ``limit``); returns the amount held, 0 if none was free in time."""
        wanted = max(1, min(num_bytes, self.limit))
        if not self._waiters and self.used + wanted <= self.limit:
            self._hold(wanted)
            return wanted
        waiter = asyncio.get_running_loop().create_future()
        entry = (wanted, waiter)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), max(timeout, 0.0))
            return wanted
        except asyncio.TimeoutError:
            if waiter.done():  # granted as the time ran out: give it back
                self.release(wanted)
            else:
                self._waiters.remove(entry)
                self._grant()  # the next waiters may fit now that this one left the queue
            return 0
        except asyncio.CancelledError:
            if waiter.done():
                self.release(wanted)
            else:
                self._waiters.remove(entry)
                self._grant()
            raise

    def resize(self, held: int, num_bytes: int) -> int:
        """Turn a holding of ``held`` bytes (an estimate) into one of ``num_bytes`` (the real size).

        Growing never waits: the budget is exceeded by at most one reply's estimation error.
        """
        self.release(held)
        self._hold(num_bytes)
        return num_bytes

    def release(self, num_bytes: int) -> None:
        self.used -= num_bytes
        self._grant()

    def reset_peak(self) -> int:
        peak, self.peak = self.peak, self.used
        return peak

    def _hold(self, num_bytes: int) -> None:
        self.used += num_bytes
        self.peak = max(self.peak, self.used)

    def _grant(self) -> None:
        while self._waiters:
            wanted, waiter = self._waiters[0]
            if self.used and self.used + wanted > self.limit:
                return
            self._waiters.popleft()
            self._hold(wanted)
            waiter.set_result(None)


def trim_memory() -> bool:
    """Give the pages malloc keeps free back to the system (glibc only). True if it could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.lru_cache(maxsize=None)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return None
    function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return function
