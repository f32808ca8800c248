"""Producers: what makes the loader's batches. The loader picks one at construction and only calls this interface.

* :class:`ThreadProducer` runs a row source (a :class:`~hfstream.loader.pipeline.TokenPipeline`,
  or a :class:`~hfstream.loader.row_mixer.RowMixer` for token mixtures) in a background thread
  of this process and keeps ``prefetch`` batches ready.
* :class:`~hfstream.loader.workers.WorkerProducer` runs pipelines in torch DataLoader worker
  processes.

Both expose ``start``, ``next_batch`` (a Batch, or None at the end), ``state_dict``,
``load_state_dict``, ``stats``, ``fingerprint``, ``close``, and ``docs_in_flight`` (records).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Protocol

from hfstream.loader.batch import Batch, Rows, rows_to_batch
from hfstream.loader.records import DocsInFlight
from hfstream.source.base import require_keys

_END = object()


class Stage(Protocol):
    """What every stage of the loader has: an exact state, counters, an identity, a lifetime."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def fingerprint(self) -> str: ...
    def start(self) -> None: ...
    def close(self) -> None: ...
    def docs_in_flight(self) -> DocsInFlight:
        """With ``record_docs``: the documents read and not all handed out, at the state's point."""
        ...


class RowSource(Stage, Protocol):
    """What a ThreadProducer runs: a deterministic, resumable maker of (B, T+1) rows."""

    def next_batch(self) -> Rows | None: ...


class Producer(Stage, Protocol):
    """The loader's one view of whatever makes its batches."""

    def next_batch(self) -> Batch | None: ...


class ThreadProducer:
    """A row source run in a background thread, ``prefetch`` batches kept ready.

    Batches already prepared ahead of the consumer are part of the state (as token rows), so
    the row source never has to be rewound.

    Args:
        rows: the row source.
        prefetch: batches kept ready; the thread refills from half-empty in one go.
        pin_memory: put batches in pinned memory.
        close_source: ``close()`` also closes the row source (and its document source): False
            when the caller handed in a source it keeps using.
    """

    def __init__(self, rows: RowSource, prefetch: int, pin_memory: bool, close_source: bool = True):
        self.rows, self.prefetch, self.pin_memory = rows, prefetch, pin_memory
        self.close_source = close_source
        self._ready: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._low_water = prefetch // 2    # the thread refills once the queue is this low
        self._consumer_waiting = False
        self._work = threading.Lock()      # held by the thread while it advances the row source
        self._thread: threading.Thread | None = None
        self._stop = False
        rows.start()  # e.g. the worker opens the dataset while the tokenizer loads

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._produce, daemon=True, name="hfstream-loader")
            self._thread.start()

    def next_batch(self) -> Batch | None:
        self.start()
        with self._cond:
            while not self._ready:
                self._consumer_waiting = True
                self._cond.wait()
                self._consumer_waiting = False
            item = self._ready[0]
            if item is not _END and not isinstance(item, BaseException):
                self._ready.popleft()
                if len(self._ready) <= self._low_water:  # wake the thread only to refill
                    self._cond.notify_all()
        if isinstance(item, BaseException):
            raise item
        return None if item is _END else item

    def _produce(self) -> None:
        # Hysteresis: once the queue is full, wait until it is down to the low-water mark and
        # then refill it in one go, instead of waking up (and trading the GIL) for every batch.
        try:
            while True:
                with self._cond:
                    if len(self._ready) >= self.prefetch:
                        while len(self._ready) > self._low_water and not self._stop:
                            self._cond.wait()
                if self._stop:
                    return
                with self._work:
                    if self._stop:
                        return
                    out = self.rows.next_batch()
                    item = _END if out is None else rows_to_batch(out, self.pin_memory)
                    with self._cond:
                        self._ready.append(item)
                        if self._consumer_waiting or item is _END:
                            self._cond.notify_all()
                if item is _END:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, with its context
            with self._cond:
                self._ready.append(exc)
                self._cond.notify_all()

    def halt(self) -> None:
        """Stop the thread at its next consistent point (batches ready are kept)."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        thread.join()
        self._thread = None

    def state_dict(self) -> dict[str, Any]:
        with self._work, self._cond:
            queued = [item.source_rows.state() for item in self._ready if isinstance(item, Batch)]
            ended = any(item is _END for item in self._ready)
            return {"pipeline": self.rows.state_dict(), "queued": queued, "ended": ended}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        require_keys(state, ("pipeline", "queued", "ended"), "loader state", "StreamingTextDataLoader.state_dict()")
        self.halt()
        self.rows.load_state_dict(state["pipeline"])
        with self._cond:
            self._ready.clear()
            for rows in state["queued"]:
                self._ready.append(rows_to_batch(Rows.from_state(rows), self.pin_memory))
            if state["ended"]:
                self._ready.append(_END)

    def stats(self) -> dict[str, Any]:
        return self.rows.stats()

    def docs_in_flight(self) -> DocsInFlight:
        """The row source's, and the batches made ahead. Halts the thread (the next batch starts it
        again), so that a ``state_dict()`` right after is taken at the same point."""
        self.halt()
        with self._work, self._cond:
            out = self.rows.docs_in_flight()
            for item in self._ready:
                if isinstance(item, Batch) and item.docs is not None:
                    out.add_batch(item.docs)
            return out

    def fingerprint(self) -> str:
        return self.rows.fingerprint()

    def close(self) -> None:
        self.halt()
        if self.close_source:
            self.rows.close()
