"""Running an ``EirServer``: in the foreground until Ctrl+C, or on a background thread."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

from hfstream.source.base import DocumentSource
from hfstream.eir.server import EirServer, ServerConfig

log = logging.getLogger("hfstream.eir.server")


def run_server(source: DocumentSource, config: ServerConfig, name: str = "") -> None:
    """Serve until Ctrl+C or SIGTERM, then close connections and return (a second Ctrl+C aborts).

    Raises:
        ConfigError: the address cannot be bound.
    """

    async def main() -> None:
        server = EirServer(source, config, name)
        await server.start()
        t0 = time.monotonic()
        failure = await server.feed.wait_ready()
        if failure is not None:  # no valid sample: a bad dataset fails the command
            await server.stop()
            raise failure
        if server.feed.status()["source_error"]:
            log.warning("ready, serving only the samples read before the source failed (see above); "
                        "Ctrl+C stops")
        else:
            log.info("ready: first sample read in %.1fs; Ctrl+C stops", time.monotonic() - t0)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            log.info("shutting down (Ctrl+C again to abort)")
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


class ServerThread:
    """An ``EirServer`` on an event loop in a background thread (tests, benchmarks, notebooks).

    Example::

        with ServerThread(corpus, ServerConfig(port=0)) as server:
            train_from(server.url)
    """

    def __init__(self, source: DocumentSource, config: ServerConfig | None = None, name: str = ""):
        self.server = EirServer(source, config, name)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="hfstream-eir-server")

    @property
    def url(self) -> str:
        return self.server.url

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> "ServerThread":
        self._thread.start()
        try:
            self.run(self.server.start())
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self.run(self.server.stop())
            finally:
                self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
