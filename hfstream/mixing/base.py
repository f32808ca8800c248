"""Mixture: what the document mixture and the row mixture share: streams, schedule, shares and state.

Both mix the streams of a list (sorted by label) with a :class:`ScheduleCursor` over
per-epoch counts; they differ in what one scheduled unit is (a document, a training row) and
in what each stream's member is (a DocumentSource, a token pipeline). Members are stored by
label in the state, never by list position, so reordering the streams changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Sequence

from hfstream.errors import StateError
from hfstream.mixing.schedule import ScheduleCursor
from hfstream.mixing.streams import Stream
from hfstream.source.base import require_keys

log = logging.getLogger("hfstream.mixing")
STATE_VERSION = 1


class Mixture:
    """Streams mixed by a seeded schedule, with realized shares and a label-keyed state.

    Subclasses set ``self.members`` (one per stream, each with ``state_dict``,
    ``load_state_dict``, ``start`` and ``close``) and call :meth:`next_label` for each unit.

    Args:
        streams: sorted Streams.
        counts: units per stream per epoch (global, all ranks).
        kind: the fingerprint's prefix (``mix`` for documents, ``rows`` for training rows).
        unit: what a scheduled unit is, for logs ("documents", "rows").
        seed, method: the schedule's seed and batching method.
        per_device: units per device batch; the global batch is ``per_device * world_size``.
        rank, world_size: this process's place under DDP.
        epochs: epochs to run; None: forever.
        budgets: what the fingerprint pins per stream (default: ``counts``).
    """

    members: Sequence[Any]

    def __init__(self, streams: list[Stream], counts: list[int], *, kind: str, unit: str, seed: int,
                 method: str, per_device: int, rank: int, world_size: int, epochs: int | None,
                 budgets: list[int] | None = None):
        self.streams, self.counts, self.kind, self.unit = streams, counts, kind, unit
        self.seed, self.batching_method, self.epochs = seed, method, epochs
        self.per_device, self.rank, self.world_size = per_device, rank, world_size
        self._budgets = counts if budgets is None else budgets
        self.cursor = ScheduleCursor(counts, method, seed, per_device * world_size, world_size, rank,
                                     epochs, on_epoch_end=self._log_epoch)
        self.realized = [0] * len(streams)   # units taken per stream (this rank, all epochs)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.streams]

    def next_label(self) -> int | None:
        """The index of the stream the next unit comes from, or None after the last epoch."""
        label = self.cursor.next()
        if label is not None:
            self.realized[label] += 1
        return label

    def shares(self) -> dict[str, float]:
        """Realized share of each stream so far (this rank), rounded to 4 decimals."""
        total = sum(self.realized) or 1
        return {s.label: round(n / total, 4) for s, n in zip(self.streams, self.realized)}

    def _log_epoch(self, epoch: int) -> None:
        log.info("mixture epoch %d done; realized %s shares: %s", epoch, self.unit, self.shares())

    def fingerprint(self) -> str:
        ident = [(s.label, s.dataset, c) for s, c in zip(self.streams, self._budgets)]
        raw = (f"{ident}|{self.seed}|{self.batching_method}|{self.per_device}|"
               f"{self.rank}/{self.world_size}")
        return f"{self.kind}:" + hashlib.sha1(raw.encode()).hexdigest()[:16]

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "fingerprint": self.fingerprint(), **self.cursor.state_dict(),
                "realized": list(self.realized),
                "members": {s.label: m.state_dict() for s, m in zip(self.streams, self.members)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        require_keys(state, ("version", "fingerprint", "epoch", "index", "realized", "members"),
                     "mixture state", f"{type(self).__name__}.state_dict()")
        if state["version"] != STATE_VERSION or state["fingerprint"] != self.fingerprint():
            raise StateError(f"the mixture state was saved for other streams, weights, seed or batching "
                             f"(saved {state['fingerprint']}, this mixture is {self.fingerprint()})",
                             f"restore into a {type(self).__name__} built with the same streams and options")
        missing = [label for label in self.labels if label not in state["members"]]
        if missing:
            raise StateError(f"the mixture state has no position for stream(s) {missing}",
                             "restore a state saved by a mixture of the same streams")
        for s, member in zip(self.streams, self.members):
            member.load_state_dict(state["members"][s.label])
        self.cursor.load_state_dict(state)
        self.realized = list(state["realized"])

    def start(self) -> None:
        for member in self.members:
            member.start()

    def close(self) -> None:
        for member in self.members:
            member.close()
