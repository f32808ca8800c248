"""The shared cursor: one reader thread turns a document source into samples, connections take them.

The source's ``stream()`` blocks (it waits on the corpus' worker subprocess), so it runs on a
thread that fills a buffer bounded in samples and in characters; the event loop only ever
pops from that buffer, so a slow read never blocks other connections. One ``asyncio.Lock``
serialises takers, so concurrent connections receive disjoint samples in stream order.

A rewind (EIR's ``reset``) is logical and immediate: the buffer is emptied and a generation
counter bumped; the reader thread notices, restores the source to the state it had when the
feed was created (``load_state_dict``) and starts again, so position ``p`` names the same
sample in every pass. The first samples of the stream (the *head*, up to ``replay_samples``)
are kept, so after a rewind they are served from memory at once while the source restarts
(EIR 0.25 resets on every connection and wants replies within 5 s); the reader skips them.

A source that fails mid-pass leaves the samples read before the failure servable: takers get
them, then ``Taken.error`` (a one-line summary) on every later take until a rewind, and the
failure is logged once, in full. A feed started ``start_at`` a position (a restarted server)
re-reads the stream up to that position without serving it, so ids keep their meaning.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from hfstream.eir.samples import DEFAULT_SEPARATOR, sample_id, sample_texts
from hfstream.source.base import DocumentSource, as_document_source
from hfstream.source.memory import IterableSource

log = logging.getLogger("hfstream.eir.feed")
SAMPLE_OVERHEAD = 128  # bytes a taken sample holds besides its text: its id, its tuple, list slots


#: Texts in memory, repeated ``epochs`` times (None: forever): a DocumentSource for tests and notebooks.
ListSource = IterableSource


@dataclass
class Taken:
    """The result of one ``take``: ``(sample_id, text)`` pairs, and why there are not more.

    ``ended``: the stream is over until the next rewind. ``error``: the source failed (the
    stream is over too). Neither, with fewer samples than asked: the deadline passed.
    ``first_end``: this is the first take of the pass to come back empty because the stream is over.
    """

    samples: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False
    error: str | None = None
    first_end: bool = False


class SampleFeed:
    """A shared, rewindable cursor over the samples of a document source.

    Args:
        source: the documents: a DocumentSource, or any object with ``stream()``,
            ``state_dict()`` and ``load_state_dict()``.
        sequence_length: words per sample; 0 for one sample per document.
        separator: word put between documents in chunk mode.
        max_samples: the stream ends after this many positions (EIR tutorial's
            ``MAX_ITERATIONS``); None for no limit.
        buffer_samples: read-ahead bound, in samples.
        buffer_chars: read-ahead bound, in characters of text.
        replay_samples: the stream's first samples kept for rewinds (0: none).
        replay_chars: bound on the characters kept for rewinds.
    """

    def __init__(self, source: DocumentSource, *, sequence_length: int = 512,
                 separator: str = DEFAULT_SEPARATOR, max_samples: int | None = None,
                 buffer_samples: int = 4096, buffer_chars: int = 16 << 20,
                 replay_samples: int = 4096, replay_chars: int = 16 << 20):
        self.source = as_document_source(source)
        self.sequence_length, self.separator, self.max_samples = sequence_length, separator, max_samples
        self.buffer_samples, self.buffer_chars = buffer_samples, buffer_chars
        self.replay_samples, self.replay_chars = replay_samples, replay_chars
        self.initial_state = source.state_dict()  # what a rewind returns to
        self._cond = threading.Condition()
        self._buffer: collections.deque[tuple[int, str]] = collections.deque()
        self._chars = 0
        self._head: list[str] = []   # texts of positions 0..len-1, kept for rewinds
        self._head_chars = 0
        self._replay_end = 0         # this pass serves positions < _replay_end from _head
        self._replay_next = 0        # the next of them to serve
        self._generation = 0
        self._resume_at = 0          # the first pass (generation 0) starts here: see start_at
        self._ended = False
        self._end_reported = False   # a take of this pass has already found the stream over
        self._failure: str | None = None
        self._failure_exc: BaseException | None = None
        self._failures_logged: set[str] = set()
        self._num_read = 0           # samples read from the source (all passes): for readiness
        self._read_bytes = 0         # their sys.getsizeof, for reply size estimates
        self._closed = False
        self._waiting = False
        self._lock: asyncio.Lock | None = None
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.next_position = 0       # the position the next take starts at
        self.end_position: int | None = None  # where the pass ended (read-ahead reached the end)
        self.num_served = 0          # samples handed out since the start (all passes)
        self.num_excluded = 0        # samples skipped because their id is a validation id
        self.pass_served = 0         # the same two counts for the current pass
        self.pass_excluded = 0
        self.num_rewinds = 0

    # -- lifecycle (event loop side) ------------------------------------------------------
    def start(self) -> None:
        """Start the reader thread; call from the event loop that will ``take``."""
        self._loop = asyncio.get_running_loop()
        self._lock, self._ready = asyncio.Lock(), asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="hfstream-eir-reader")
        self._thread.start()

    def start_at(self, position: int) -> None:
        """Begin the first pass at ``position`` (a restarted server's cursor): the reader reads
        the samples before it again, without serving them. Call before ``start``."""
        assert self._thread is None, "start_at() comes before start()"
        self._resume_at = self.next_position = position

    def stop(self) -> None:
        """Stop handing out samples: waiting and later takes return at once (never blocks)."""
        with self._cond:
            self._closed = True
            self._buffer.clear()
            self._cond.notify_all()
        if self._ready is not None:
            self._ready.set()

    def close(self, timeout: float = 2.0) -> None:
        """Stop, and wait for the reader thread to finish (the source belongs to the caller)."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def rewind(self) -> None:
        """Start the stream again from its first sample (same ids, same order)."""
        self.num_rewinds += 1
        with self._cond:
            if self.next_position == 0 and not self._ended:
                return  # nothing taken since the start: the read-ahead already starts at sample 0
            self._generation += 1
            self._buffer.clear()
            self._chars = 0
            self._replay_end, self._replay_next = len(self._head), 0
            self._ended, self._failure, self._failure_exc = False, None, None
            self._end_reported, self.end_position = False, None
            self.next_position = self.pass_served = self.pass_excluded = 0
            self._cond.notify_all()

    async def take(self, n: int, excluded: set[str] | frozenset[str], deadline_s: float) -> Taken:
        """Take the next ``n`` samples whose ids are not in ``excluded``.

        Waits for the reader while the buffer is empty; after ``deadline_s`` seconds returns
        what it has (possibly nothing: the caller then says "not ready", never sends ``[]``).
        """
        assert self._lock is not None and self._ready is not None and self._loop is not None
        async with self._lock:
            taken = Taken()
            deadline = self._loop.time() + deadline_s
            generation = self._generation
            while True:
                with self._cond:
                    if self._closed:
                        taken.ended = True
                        return taken
                    if generation != self._generation:  # rewound meanwhile: start the batch over
                        self.num_served -= len(taken.samples)
                        taken.samples.clear()
                        generation = self._generation
                    self._pop(n, excluded, taken)
                    if len(taken.samples) >= n:
                        return taken
                    if (not self._buffer and self._replay_next >= self._replay_end
                            and (self._ended or self._failure is not None)):
                        taken.ended, taken.error = True, self._failure
                        if not taken.samples:  # the client is told now (terminate or the error)
                            taken.first_end, self._end_reported = not self._end_reported, True
                        return taken
                    self._ready.clear()
                    self._waiting = True
                remaining = deadline - self._loop.time()
                if remaining <= 0:
                    return taken
                try:
                    await asyncio.wait_for(self._ready.wait(), remaining)
                except asyncio.TimeoutError:
                    pass

    async def wait_ready(self) -> BaseException | None:
        """Wait for the first sample (or the end). Returns the source's exception when it failed
        before yielding any sample; a failure after some samples leaves those servable."""
        while True:
            with self._cond:
                if self._buffer or self._replay_next < self._replay_end:
                    return None
                if self._ended:
                    return self._failure_exc if not self._num_read else None
            await asyncio.sleep(0.02)

    def estimate_bytes(self, num_samples: int) -> int:
        """The memory ``num_samples`` taken samples hold (see ``held_bytes``), from the mean of
        those read so far."""
        return num_samples * (self._read_bytes // max(1, self._num_read) + SAMPLE_OVERHEAD)

    def _pop(self, n: int, excluded: set[str] | frozenset[str], taken: Taken) -> None:
        """Move samples from the buffer into ``taken`` (holding ``_cond``)."""
        buffer, out = self._buffer, taken.samples
        popped = 0
        while len(out) < n and (buffer or self._replay_next < self._replay_end):
            if self._replay_next < self._replay_end:
                position = self._replay_next
                text = self._head[position]
                self._replay_next += 1
            else:
                position, text = buffer.popleft()
                self._chars -= len(text)
                popped += 1
            self.next_position = position + 1
            sid = sample_id(position)
            if sid in excluded:
                self.num_excluded += 1
                self.pass_excluded += 1
                continue
            out.append((sid, text))
            self.num_served += 1
            self.pass_served += 1
        if popped:
            self._cond.notify_all()  # room for the reader

    def status(self) -> dict[str, Any]:
        with self._cond:
            return {"current_position": self.next_position, "samples_served": self.num_served,
                    "samples_excluded": self.num_excluded, "read_ahead": len(self._buffer),
                    "replay_head": len(self._head),
                    "resets": self.num_rewinds,
                    "ended": self._ended and not self._buffer and self._replay_next >= self._replay_end,
                    "source_error": self._failure}

    # -- reader thread --------------------------------------------------------------------
    def _run(self) -> None:
        generation = 0
        while True:
            with self._cond:
                if self._closed:
                    return
                if generation != self._generation:
                    generation = self._generation
            if generation:
                try:
                    self.source.load_state_dict(self.initial_state)
                except Exception as exc:  # noqa: BLE001 - reported to every taker
                    log.error("cannot rewind the source: %s", exc)
                    self._finish(generation, exc)
                    continue
            self._read_pass(generation)

    def _read_pass(self, generation: int) -> None:
        """Read samples into the buffer until the pass ends, fails or a rewind supersedes it."""
        texts = None
        error: BaseException | None = None
        count = 0
        try:
            texts = sample_texts(self.source.stream(), self.sequence_length, self.separator)
            for position, text in enumerate(texts):
                if self.max_samples is not None and position >= self.max_samples:
                    break
                if not self._put(generation, position, text):
                    return
                count = position + 1
        except Exception as exc:  # noqa: BLE001 - reported to every taker
            error = exc
            self._log_failure(exc, count)
        finally:
            if texts is not None:
                texts.close()
        if error is None:  # the server logs the end when a client is told (terminate)
            log.debug("the read-ahead reached the end of the stream at sample %d", count)
        self._finish(generation, error, count)

    def _log_failure(self, exc: BaseException, count: int) -> None:
        """Log a source failure: in full the first time, in one line when a later pass repeats it."""
        summary = failure_summary(exc)
        if summary in self._failures_logged:
            log.warning("the data source failed again after %d samples: %s", count, summary)
            return
        self._failures_logged.add(summary)
        log.error("the data source failed after %d samples of this pass: %s\nThe server keeps running: each "
                  "pass serves those %d samples, then every getData gets an error naming this failure (at "
                  "most one a second per connection: EIR asks again at once, so its training waits there). "
                  "Fix or replace the data, then restart the server.\nDetails: %s", count, summary, count, exc)

    def _put(self, generation: int, position: int, text: str) -> bool:
        with self._cond:
            self._num_read += 1
            self._read_bytes += sys.getsizeof(text)
            if position < self._replay_end:  # served from the head in this pass
                return not self._closed and generation == self._generation
            if (position == len(self._head) and len(self._head) < self.replay_samples
                    and self._head_chars + len(text) <= self.replay_chars):
                self._head.append(text)
                self._head_chars += len(text)
            if generation == 0 and position < self._resume_at:  # before a restarted server's cursor
                return not self._closed and generation == self._generation
            while (not self._closed and generation == self._generation and self._buffer
                   and (len(self._buffer) >= self.buffer_samples
                        or self._chars + len(text) > self.buffer_chars)):
                self._cond.wait()
            if self._closed or generation != self._generation:
                return False
            self._buffer.append((position, text))
            self._chars += len(text)
            self._wake()
            return True

    def _finish(self, generation: int, error: BaseException | None, count: int = 0) -> None:
        """Mark the pass over and sleep until a rewind (or close)."""
        with self._cond:
            if generation == self._generation:
                self._ended, self._failure_exc, self.end_position = True, error, count
                self._failure = None if error is None else f"after {count} samples: {failure_summary(error)}"
                self._wake()
            while not self._closed and generation == self._generation:
                self._cond.wait()

    def _wake(self) -> None:
        """Wake a waiting taker (holding ``_cond``); cheap when nobody waits."""
        if self._waiting and self._loop is not None:
            self._waiting = False
            try:
                self._loop.call_soon_threadsafe(self._ready.set)  # type: ignore[union-attr]
            except RuntimeError:  # the loop is closed: shutting down
                pass


def held_bytes(samples: list[tuple[str, str]]) -> int:
    """The memory taken samples hold: their texts, ids, tuples and list slots."""
    return sum(sys.getsizeof(text) + SAMPLE_OVERHEAD for _, text in samples)


def failure_summary(exc: BaseException) -> str:
    """One line naming a failure: its type and the first line of its message (no hint, no
    worker stderr), fit for an ``error`` reply."""
    text = getattr(exc, "message", None) or str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text.strip().splitlines()[0][:500]}"
