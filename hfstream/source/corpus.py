"""HuggingFaceStreamingCorpus: documents from a worker subprocess, restarted exactly on failure."""

from __future__ import annotations

import logging
import queue
import time
from collections import Counter
from typing import Any, Iterator

from hfstream.errors import ERROR_TYPES, ConfigError, StateError, WorkerError, check_int
from hfstream.source.base import DocumentSource, TokenDocuments, Where, require_keys
from hfstream.source.ids import IdentifiedTexts
from hfstream.source.process import WorkerProcess
from hfstream.source.resolve import resolve
from hfstream.source.spec import SourceSpec, make_spec
from hfstream.source.cached import CachedCorpus, stream_identity

log = logging.getLogger("hfstream.source.corpus")
STATE_VERSION = 1


class HuggingFaceStreamingCorpus(DocumentSource):
    """A resumable stream of document texts read by a long-lived worker subprocess.

    The worker reads the dataset (fast readers for parquet, JSON lines and text, local or
    remote: hub ids, ``hf://``, ``s3://``, ``gs://``, ``https://``; ``datasets.load_dataset(
    streaming=True)`` for the rest, with the same documents) and sends batches over a pipe; a reader
    thread keeps a queue bounded in bytes full. If the worker crashes, hangs (silent for
    ``watchdog_timeout`` seconds, e.g. SIGSTOP'd) or writes a malformed line, a new one starts at
    the exact next undelivered document: nothing is lost or repeated.

    Args:
        dataset: hub id, local file/glob/directory, remote URL or glob, format name with
            ``data_files``, or ``builtin:python-docs``.
        split: split to read.
        batch_size: documents per worker message (the worker's fetch size; ``docs_per_message``).
        max_samples: stop after this many documents (of this shard); None for no limit.
        queue_bytes: bound on the text held in the parent's read-ahead queue.
        watchdog_timeout: seconds of worker silence (no heartbeat either) before it is killed
            and restarted.
        max_restarts: consecutive restarts without a new document before giving up with
            ``WorkerError``.
        heartbeat: seconds of idleness after which the worker sends a heartbeat line.
        python: the interpreter (or a command prefix) that runs the worker, e.g. the python of
            another environment where ``datasets`` lives; default: this interpreter.
        fork_server: fork the worker from this process's fork server
            (:mod:`hfstream.source.forkserver`), which imported the worker once: milliseconds
            instead of ~0.3 s of imports per start, for processes that run many corpora (virtual
            shards). ``HFSTREAM_FORK_SERVER=0`` turns it off.
        **options: any other ``SourceSpec`` field: ``name``, ``data_files``, ``revision``,
            ``text_column``, ``min_length``, ``epochs``, ``shard``, ``num_shards``, ``shard_by``,
            ``seed``, ``strict``, ``sample_by``, ``encoding_errors``, ``format``, ``reader``.

    Example::

        with HuggingFaceStreamingCorpus("data/*.parquet", shard=rank, num_shards=world) as corpus:
            for text in corpus.stream():
                ...
            state = corpus.state_dict()   # the exact position, for a checkpoint
    """

    def __init__(self, dataset: str, split: str = "train", batch_size: int = 1000,
                 max_samples: int | None = None, *, queue_bytes: int = 64 << 20,
                 watchdog_timeout: float = 30.0, max_restarts: int = 5, heartbeat: float = 1.0,
                 python: str | list[str] | None = None, fork_server: bool = False, **options: Any):
        self.spec: SourceSpec = make_spec(dataset, split=split, max_samples=max_samples, **options)
        self.docs_per_message = check_int("batch_size", batch_size, 1)
        self.queue_bytes = check_int("queue_bytes", queue_bytes, 1)
        self.max_restarts = check_int("max_restarts", max_restarts, 0)
        if not watchdog_timeout > heartbeat > 0:
            raise ConfigError(f"watchdog_timeout={watchdog_timeout} must exceed heartbeat={heartbeat} > 0",
                              "a watchdog shorter than the heartbeat would kill healthy workers")
        self.resolved = resolve(self.spec)  # local path errors surface here, in the caller
        self.name = self.spec.dataset
        self.watchdog_timeout, self.heartbeat = watchdog_timeout, heartbeat
        self.python = [python] if isinstance(python, str) else python
        self.fork_server = fork_server
        self.num_restarts = 0
        self.skipped: Counter[str] = Counter()
        self._worker: WorkerProcess | None = None
        # What the first worker chose, kept for every later one (and in the state), so that rows
        # are counted the same way and a hub dataset is read at one commit across restarts.
        self._shard_mode: str | None = None     # files | row_groups | rows; None: not known yet
        self._revision: str | None = None       # the hub commit read
        self._revision_checked = True           # False after a restore: the worker checks it
        self._seek(0, 0, 0, finished=False)

    # -- position bookkeeping -------------------------------------------------------------
    def _seek(self, epoch: int, row: int, delivered: int, finished: bool) -> None:
        """Forget any read-ahead and continue from this position."""
        self._stop_worker()
        self._base = (epoch, row, delivered)        # position before the current batch
        self._batch: dict[str, Any] | None = None   # batch being consumed
        self._index = -1                            # index of its last yielded document
        self._received = (epoch, row, delivered)    # position after the last batch received
        self._finished = finished
        self._failures = 0

    def _position(self) -> tuple[int, int, int]:
        batch, i = self._batch, self._index
        if batch is None or i < 0:
            return self._base
        epoch, rows = batch["epoch"], batch["rows"]
        row = batch["end"] if i == len(rows) - 1 else rows[i] + 1
        return epoch, row, self._base[2] + i + 1

    # -- streaming ------------------------------------------------------------------------
    def stream(self) -> Iterator[str]:
        """Yield document texts from the current position to the end of the stream.

        Calling it again (after breaking out of a loop, or after ``load_state_dict``) continues
        exactly after the last document yielded.
        """
        while True:
            texts = self._pending_texts()
            if texts is None:
                return
            for i in range(self._index + 1, len(texts)):
                self._index = i
                yield texts[i]

    def stream_batches(self) -> Iterator[list[str]]:
        """Yield lists of document texts (faster than ``stream`` for bulk consumers)."""
        while True:
            texts = self._pending_texts()
            if texts is None:
                return
            rest = texts[self._index + 1:] if self._index >= 0 else texts
            self._index = len(texts) - 1
            yield rest

    def stream_located(self) -> Iterator[tuple[int, list[int], int, list[str]]]:
        """``stream_batches`` with where each batch lies: ``(epoch, rows, end, texts)``, ``rows[i]``
        the shard row of ``texts[i]``, ``end`` the row after the batch (what a seekable view needs)."""
        while True:
            texts = self._pending_texts()
            if texts is None:
                return
            batch, first = self._batch, self._index + 1
            self._index = len(texts) - 1
            yield batch["epoch"], batch["rows"][first:], batch["end"], texts[first:]  # type: ignore[index]

    def stream_identified(self) -> Iterator[tuple[str, Where]]:
        """``stream()`` with each document's shard, epoch and row, and the rows read for it."""
        shard, num_shards = self.spec.shard, self.spec.num_shards
        epoch, row, _ = self._position()
        for text in self.stream():
            batch = self._batch
            assert batch is not None
            start = row if epoch == batch["epoch"] else 0
            epoch, row, _ = self._position()
            yield text, (None, shard, num_shards, epoch, batch["rows"][self._index], start, row)

    def tokenized(self, cache: Any, key: str, identified: bool = False) -> TokenDocuments:
        """Documents with refs, read again by seeking the worker; token ids through ``cache``.

        A corpus without a stable identity (a ws:// server, a hub branch, a URL) gives texts only
        (with ``identified``: read document by document, each with its id).
        """
        if stream_identity(self.spec, self.resolved) is None:
            return IdentifiedTexts(self) if identified else super().tokenized(cache, key)
        return CachedCorpus(self, cache, key, identified)

    def _pending_texts(self) -> list[str] | None:
        """The current batch if it has documents left, else the next batch (None at the end)."""
        batch = self._batch
        if batch is not None and self._index < len(batch["batch"]) - 1:
            return batch["batch"]
        batch = self._next_batch()
        return None if batch is None else batch["batch"]

    def start(self) -> None:
        """Start the worker now (it otherwise starts on the first read), to overlap its start-up."""
        if self._worker is None and not self._finished:
            self._start_worker()

    def _next_batch(self) -> dict[str, Any] | None:
        if self._batch is not None:  # fully consumed: the position moves past it
            self._base = self._position_after_batch(self._batch, self._base[2])
            self._batch, self._index = None, -1
        max_samples = self.spec.max_samples
        while not self._finished:
            if max_samples is not None and self._received[2] >= max_samples:
                self._finished = True
                break
            if self._worker is None:
                self._start_worker()
            try:
                kind, message = self._worker.queue.get(timeout=0.25)  # type: ignore[union-attr]
            except queue.Empty:
                self._check_watchdog()
                continue
            if kind in ("batch", "done"):
                self._note_reader(self._worker.status)  # type: ignore[union-attr]
            if kind == "batch":
                self._received = self._position_after_batch(message, self._received[2])
                self.skipped.update(message.get("skipped", {}))
                self._failures = 0
                self._batch, self._index = message, -1
                return message
            if kind == "done":
                self.skipped.update(message.get("skipped", {}))
                self._received = (message["epoch"], message["end"], self._received[2])
                self._base = self._received
                self._finished = True
                self._stop_worker()
            elif kind == "error":
                self._raise_worker_error(message["error"])
            else:  # "exit" without "done", or a malformed line
                self._restart(kind, message)
        return None

    @staticmethod
    def _position_after_batch(batch: dict[str, Any], delivered: int) -> tuple[int, int, int]:
        return batch["epoch"], batch["end"], delivered + len(batch["batch"])

    def _note_reader(self, status: dict[str, Any]) -> None:
        """Keep the worker's shard mode and hub commit (from its ``ready`` line) for the next ones."""
        self._shard_mode = status.get("shard_mode") or self._shard_mode
        if status.get("revision"):
            self._revision, self._revision_checked = status["revision"], True

    def _start_worker(self) -> None:
        epoch, row, delivered = self._received
        limit = None if self.spec.max_samples is None else self.spec.max_samples - delivered
        revision = "--pinned-revision" if self._revision_checked else "--expect-revision"
        self._worker = WorkerProcess(self.spec, start_epoch=epoch, start_row=row, limit=limit,
                                     docs_per_message=self.docs_per_message, queue_bytes=self.queue_bytes,
                                     heartbeat_s=self.heartbeat, python=self.python, fork=self.fork_server,
                                     options={"--shard-mode": self._shard_mode, revision: self._revision})
        log.debug("worker %d started at epoch %d row %d", self._worker.pid, epoch, row)

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _check_watchdog(self) -> None:
        worker = self._worker
        if worker is not None and worker.silent_for() > self.watchdog_timeout:
            log.warning("worker %d silent for %.1fs (stopped or hung): killing it", worker.pid,
                        worker.silent_for())
            worker.killed_by_watchdog = True
            worker.kill()

    def _restart(self, kind: str, detail: Any) -> None:
        worker = self._worker
        assert worker is not None
        if kind == "bad":
            reason = f"malformed output ({detail})"
        elif worker.killed_by_watchdog:
            reason = f"no output for {self.watchdog_timeout:.0f}s (killed by the watchdog)"
        else:
            reason = f"exited with code {detail} before the end of the stream"
        exit_code, tail = worker.exit_code, worker.stderr_tail()
        self._stop_worker()
        self._failures += 1
        self.num_restarts += 1
        if self._failures > self.max_restarts:
            raise WorkerError(
                f"the worker for {self.spec.dataset!r} failed {self._failures} times in a row; last: {reason}",
                "see the worker's stderr below; raise max_restarts if the source is just flaky",
                exit_code=exit_code, stderr_tail=tail)
        delay = min(0.1 * 2 ** (self._failures - 1), 10.0)
        epoch, row, _ = self._received
        log.warning("worker %s; restarting at epoch %d row %d in %.1fs (restart %d/%d)",
                    reason, epoch, row, delay, self._failures, self.max_restarts)
        time.sleep(delay)

    def _raise_worker_error(self, error: dict[str, Any]) -> None:
        worker = self._worker
        tail = worker.stderr_tail() if worker is not None else ""
        exit_code = worker.proc.wait(timeout=5) if worker is not None else None
        self._stop_worker()
        self._finished = True
        cls = ERROR_TYPES.get(error.get("type", ""))
        if cls is not None and cls is not WorkerError:
            raise cls(error.get("message", ""), error.get("hint"))
        raise WorkerError(f"the worker for {self.spec.dataset!r} failed: {error.get('type')}: "
                          f"{error.get('message')}", error.get("hint"), exit_code=exit_code,
                          stderr_tail=tail)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The exact position: the next document after a restore is the next one not yet yielded."""
        epoch, row, delivered = self._position()
        return {"version": STATE_VERSION, "fingerprint": self.spec.fingerprint(),
                "dataset": self.spec.dataset, "shard": self.spec.shard, "num_shards": self.spec.num_shards,
                "epoch": epoch, "row": row, "delivered": delivered,
                "finished": self._finished and self._batch is None,
                "shard_mode": self._shard_mode, "revision": self._revision}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by ``state_dict`` (of a corpus over the same data).

        A hub dataset is read at the commit the state was saved on: the worker refuses (with a
        ``StateError`` on the next read) a revision that now names another commit.

        Raises:
            StateError: the state comes from another dataset, shard layout, seed or version.
        """
        require_keys(state, ("version", "fingerprint", "epoch", "row", "delivered"), "corpus state",
                     "HuggingFaceStreamingCorpus.state_dict()")
        if state["version"] != STATE_VERSION:
            raise StateError(f"not a corpus state of version {STATE_VERSION}: {str(state)[:100]}",
                             "pass the dict returned by HuggingFaceStreamingCorpus.state_dict()")
        if state.get("fingerprint") not in (self.spec.fingerprint(), self.spec.fingerprint(with_revision=True)):
            raise StateError(
                f"the state was saved for dataset {state.get('dataset')!r} shard {state.get('shard')}/"
                f"{state.get('num_shards')}, this corpus reads {self.spec.dataset!r} shard "
                f"{self.spec.shard}/{self.spec.num_shards} (or other settings differ: text_column, "
                "min_length, seed, split, sharding)",
                "restore into a corpus built with the same dataset and options")
        self._seek(state["epoch"], state["row"], state["delivered"], bool(state.get("finished")))
        # A state from before row-group sharding counted rows as "auto" then chose: files or rows.
        self._shard_mode = state["shard_mode"] if "shard_mode" in state else "legacy"
        self._revision = state.get("revision")
        self._revision_checked = self._revision is None

    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    def stats(self) -> dict[str, Any]:
        return {"skipped": dict(self.skipped), "restarts": self.num_restarts}

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def num_delivered(self) -> int:
        return self._position()[2]

    @property
    def progress(self) -> dict[str, Any]:
        """The worker's last progress report (documents, chars, rates), if any."""
        return dict(self._worker.progress) if self._worker is not None else {}

    @property
    def worker_pid(self) -> int | None:
        return self._worker.pid if self._worker is not None else None

    def close(self) -> None:
        """Stop the worker. The position is kept: ``stream()`` would start a new one."""
        self._stop_worker()

    def __repr__(self) -> str:
        epoch, row, delivered = self._position()
        return (f"HuggingFaceStreamingCorpus({self.spec.dataset!r}, shard={self.spec.shard}/"
                f"{self.spec.num_shards}, epoch={epoch}, row={row}, delivered={delivered})")
