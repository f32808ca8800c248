"""What the local hub does to its traffic: injected faults, a bandwidth cap, and counters."""

from __future__ import annotations

import collections
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["fail", "cut", "stall"]


@dataclass
class FaultRule:
    """One injected fault, applied to the next ``times`` requests whose path matches ``pattern``.

    Attributes:
        kind: ``fail`` (answer ``status`` instead), ``cut`` (drop the connection after
            ``after_bytes`` bytes of the body) or ``stall`` (sleep ``seconds`` before answering,
            or after ``after_bytes`` bytes of the body).
        pattern: a regular expression searched in the request's decoded path (no query string).
        times: how many matching requests it affects; None: all of them.
        methods: the HTTP methods it applies to; empty: all.
        hits: how many requests it has affected so far.
    """

    kind: FaultKind
    pattern: str
    times: int | None = 1
    methods: tuple[str, ...] = ()
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    after_bytes: int | None = None
    seconds: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str, body_length: int | None) -> bool:
        """Whether it applies: before answering (``body_length`` None) or to a body that long."""
        if self.after_bytes is None:
            in_phase = body_length is None
        else:  # a cut or stall inside the body applies only to a body longer than after_bytes
            in_phase = body_length is not None and self.after_bytes < body_length
        return (in_phase and (self.times is None or self.hits < self.times)
                and (not self.methods or method in self.methods)
                and re.search(self.pattern, path) is not None)


@dataclass
class Plan:
    """The faults one request meets, at most one of each kind (the first matching rule).

    Asked for twice: before answering (``fail``, and a ``stall`` without ``after_bytes``), then
    once the body's length is known (``cut``, and a ``stall`` with ``after_bytes``).
    """

    fail: FaultRule | None = None
    cut: FaultRule | None = None
    stall: FaultRule | None = None

    def body_stops(self) -> list[int]:
        """Body offsets at which something happens (a stall, a cut), to split the writes there."""
        return sorted({r.after_bytes for r in (self.stall, self.cut) if r is not None and r.after_bytes is not None})


@dataclass
class RequestRecord:
    """One request as the server saw it."""

    method: str
    path: str
    endpoint: str
    status: int = 0
    range: str | None = None
    authorization: bool = False  # whether the request carried an Authorization header
    body_bytes: int = 0


class Traffic:
    """Thread-safe fault rules, bandwidth pacing and counters, shared by the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_free = 0.0
        self.bandwidth: float | None = None  # bytes/s over all connections; None: unlimited
        self.closing = threading.Event()  # set on shutdown: stalls and pacing end at once
        self.reset_counters()

    # -- faults --------------------------------------------------------------------------------

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def plan(self, method: str, path: str, body_length: int | None = None) -> Plan:
        """The faults for this request (before answering, or for a body of ``body_length``); counts hits."""
        plan = Plan()
        with self._lock:
            for rule in self._rules:
                if getattr(plan, rule.kind) is None and rule.matches(method, path, body_length):
                    setattr(plan, rule.kind, rule)
                    rule.hits += 1
        return plan

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the server shuts down."""
        if seconds > 0:
            self.closing.wait(seconds)

    # -- bandwidth -----------------------------------------------------------------------------

    def chunk_size(self) -> int:
        """Bytes per write: small enough under a cap to keep the pace smooth."""
        cap = self.bandwidth
        return 1 << 16 if not cap else int(min(1 << 16, max(1024, cap / 50)))

    def pace(self, num_bytes: int) -> None:
        """Wait for the slot of ``num_bytes`` under the bandwidth cap (shared by all connections)."""
        cap = self.bandwidth
        if not cap:
            return
        with self._lock:
            now = time.monotonic()
            # Slots follow one another; up to 50 ms of credit absorbs the time the writes take.
            self._next_free = max(self._next_free, now - 0.05) + num_bytes / cap
            wait = self._next_free - now
        self.sleep(wait)

    # -- counters ------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_served = 0
            self.bytes_by_file: collections.Counter[str] = collections.Counter()
            self.requests: collections.Counter[str] = collections.Counter()
            self.log: list[RequestRecord] = []

    def record(self, record: RequestRecord) -> RequestRecord:
        with self._lock:
            self.requests[record.endpoint] += 1
            self.log.append(record)
        return record

    def count_body(self, record: RequestRecord, file_key: str, num_bytes: int) -> None:
        with self._lock:
            record.body_bytes += num_bytes
            self.bytes_served += num_bytes
            self.bytes_by_file[file_key] += num_bytes
