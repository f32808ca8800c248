"""The ``ws://`` source: texts read from an EIR-protocol WebSocket server, as an EIR client.

``HuggingFaceStreamingCorpus("ws://127.0.0.1:8000/ws")`` runs this in its worker: connect,
handshake, ``getInfo``, then ``getData`` until the server says ``terminate`` (the end of an
epoch). Each sample's text (``inputs[FIELD]``, else ``target_labels[FIELD][FIELD]``) is one row;
a sample without it counts as a skipped ``null`` row. Dropped connections, refusals and reply
timeouts reconnect with exponential backoff; an ``error`` reply to ``getData`` is logged and
asked again, as EIR does.

Positions are not exact for this source: the server owns the cursor, shared by all its
clients, so a worker restarted at row R (after a crash, or by ``load_state_dict``) continues
from wherever the server is now: samples the old worker had received but not delivered are
lost, and nothing is replayed. Epoch ``e > 0`` starts with a ``reset``, which rewinds the
stream for *every* client of that server; so does epoch 0 when the server is already at its end
and ``epochs`` allows more than one pass. A reset the server confirmed is never sent again.
Sharding is the server's job too: several clients (ranks) already receive disjoint samples, so
``shard``/``num_shards``/``seed`` are ignored. The token comes from ``$HFSTREAM_WS_TOKEN`` or
``?token=`` in the URL; ``$HFSTREAM_WS_TIMEOUT`` sets the seconds each reply is waited for (30).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from hfstream.eir.client import EirClient, EirServerError, ServerUnavailable, redact
from hfstream.errors import ConfigError, DataFormatError, EmptyDatasetError, OfflineError
from hfstream.source.spec import SourceSpec
from hfstream.worker.rows import Chunks

log = logging.getLogger("hfstream.worker.ws")
TOKEN_ENV = "HFSTREAM_WS_TOKEN"
TIMEOUT_ENV = "HFSTREAM_WS_TIMEOUT"
REQUEST_BATCH = 256        # samples per getData (EIR's tutorial batch size)


def ws_opener(spec: SourceSpec) -> Callable[[int, int], Chunks]:
    """The worker opener for a ``ws://`` spec: ``(epoch, start row) -> chunks of texts``."""
    if spec.num_shards > 1 or spec.seed is not None:
        log.info("ws source: shard/num_shards/seed are ignored; the server hands every client "
                 "disjoint samples from one shared cursor")
    batch_size = REQUEST_BATCH if spec.max_samples is None else max(1, min(REQUEST_BATCH, spec.max_samples))
    return WsReader(spec.dataset, field=spec.ws_field, token=os.environ.get(TOKEN_ENV) or None,
                    batch_size=batch_size, timeout=_timeout_from_env(), epochs=spec.epochs).open


def _timeout_from_env() -> float:
    value = os.environ.get(TIMEOUT_ENV) or "30"
    try:
        timeout = float(value)
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise ConfigError(f"${TIMEOUT_ENV}={value!r} is not a number of seconds > 0",
                          f"set {TIMEOUT_ENV}=30 (EIR's reply timeout), or unset it")
    return timeout


class WsReader:
    """Reads sample texts from an EIR-protocol server, reconnecting on transient failures.

    Args:
        url: the server's ``ws://`` URL.
        field: the sample field holding the text; None picks the server's one sequence output.
        token: shared secret for the server (``Authorization: Bearer``).
        batch_size: samples asked for per ``getData``.
        max_attempts: consecutive failed attempts (connections or error replies) before giving up.
        backoff_s: first retry delay; doubles per consecutive failure, capped at 10 s.
        timeout: seconds to wait for each reply (a reset fails after it, and is never resent).
        epochs: the passes asked for (None: forever); more than one lets the first epoch reset
            a server that is already at its end.
    """

    def __init__(self, url: str, field: str | None = None, token: str | None = None, *,
                 batch_size: int = REQUEST_BATCH, max_attempts: int = 6, backoff_s: float = 0.5,
                 timeout: float = 30.0, epochs: int | None = 1):
        self.url, self.field, self.token = url, field, token
        self.batch_size, self.timeout, self.epochs = batch_size, timeout, epochs
        self.max_attempts, self.backoff_s = max_attempts, backoff_s
        self.num_reconnects = 0
        self._rewound_epochs: set[int] = set()  # epochs whose reset the server confirmed

    def open(self, epoch: int, start: int) -> Chunks:
        if start:
            log.warning("ws source %s cannot seek to row %d of epoch %d: the server owns the cursor, "
                        "so reading continues from the server's current position (not an exact "
                        "resume: undelivered samples are lost)", redact(self.url), start, epoch)
        return self._chunks(epoch, reset=epoch > 0 and start == 0, first=start == 0)

    def _reset(self, client: EirClient, epoch: int, why: str) -> None:
        """Rewind the server, once per epoch: a confirmed reset is never sent again (by a retry
        of this epoch either), since each one rewinds the stream for every client."""
        if epoch in self._rewound_epochs:
            return
        log.info("ws source %s: %s: sending reset (rewinds the server for all its clients)", redact(self.url), why)
        try:
            client.reset()
        finally:
            if client.reset_confirmed:
                self._rewound_epochs.add(epoch)

    def _chunks(self, epoch: int, reset: bool, first: bool) -> Chunks:
        client = self._connect()
        try:
            if reset:
                self._reset(client, epoch, f"epoch {epoch}")
            field = self._pick_field(client.info())
            failures, received = 0, 0
            while True:
                try:
                    samples = client.get_data(self.batch_size)
                except EirServerError as exc:  # EIR logs these and asks again; so do we, boundedly
                    failures = self._backoff(failures, exc)
                    continue
                except (ServerUnavailable, TimeoutError) as exc:
                    failures = self._backoff(failures, exc)
                    client.close()
                    client = self._connect()
                    self.num_reconnects += 1
                    continue
                if samples is None:
                    if first and not received:
                        if epoch not in self._rewound_epochs and self.epochs != 1:
                            self._reset(client, epoch, f"the server is at the end of its stream before "
                                                       f"epoch {epoch}; epochs={self.epochs} allows a rewind")
                            continue
                        raise self._empty_error(epoch)
                    return
                failures = 0
                received += len(samples)
                yield [_text(sample, field) for sample in samples]
        finally:
            client.close()

    def _empty_error(self, epoch: int) -> EmptyDatasetError:
        where = redact(self.url)
        if epoch in self._rewound_epochs:
            return EmptyDatasetError(f"the server at {where} answered terminate right after a reset: its "
                                     "stream has no sample", "check the server's data and --max-iterations")
        return EmptyDatasetError(f"the server at {where} ended its stream (terminate) before sending any "
                                 "sample: it is past its --max-iterations or at the end of its data",
                                 "read with epochs=2 or more (--epochs 2; 0 repeats forever): the reader "
                                 "then resets the server first (a reset rewinds the stream for all its "
                                 "clients); or restart the server")

    def _connect(self) -> EirClient:
        failures = 0
        while True:
            client = EirClient(self.url, token=self.token, timeout=self.timeout)
            try:
                return client.connect()
            except (ServerUnavailable, TimeoutError) as exc:
                failures = self._backoff(failures, exc)

    def _backoff(self, failures: int, exc: BaseException) -> int:
        """Sleep before the next attempt; give up with OfflineError after max_attempts."""
        failures += 1
        if failures >= self.max_attempts:
            raise OfflineError(f"the EIR server at {redact(self.url)} failed {failures} times in a row; "
                               f"last: {exc}",
                               "check that the server is running (hfstream serve ...) and that the "
                               "host, port and path of the URL are right")
        delay = min(self.backoff_s * 2 ** (failures - 1), 10.0)
        log.warning("ws source %s: %s; retry %d/%d in %.1fs", redact(self.url), exc, failures,
                    self.max_attempts - 1, delay)
        time.sleep(delay)
        return failures

    def _pick_field(self, info: dict[str, Any]) -> str:
        """The configured field, or the server's one sequence output/input."""
        fields = {**info["inputs"], **info["outputs"]}
        if self.field is not None:
            if self.field not in fields:
                raise ConfigError(f"the server at {redact(self.url)} has no field {self.field!r}; it "
                                  f"offers {sorted(fields) or 'none'}", "pass ws_field= one of those")
            return self.field
        sequences = sorted(name for name, desc in fields.items()
                           if isinstance(desc, dict) and desc.get("type") == "sequence")
        if len(sequences) == 1:
            return sequences[0]
        raise ConfigError(f"the server at {redact(self.url)} offers {len(sequences)} sequence fields "
                          f"({', '.join(sequences) or 'none'}; all fields: {sorted(fields)})",
                          "pass ws_field=NAME to say which one holds the text")


def _text(sample: Any, field: str) -> Any:
    """The text of one sample, or None when it has none (the worker skips and counts it)."""
    if not isinstance(sample, dict):
        raise DataFormatError(f"a data sample is not an object: {str(sample)[:80]}",
                              "the server does not follow EIR's protocol v1.0")
    inputs = sample.get("inputs")
    if isinstance(inputs, dict) and field in inputs:
        return inputs[field]
    targets = sample.get("target_labels")
    target = targets.get(field) if isinstance(targets, dict) else None
    return target.get(field) if isinstance(target, dict) else target
