"""The worker's main loop: open the shard, filter rows into documents, write protocol lines."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from hfstream.errors import DataFormatError, EmptyDatasetError, HfStreamError
from hfstream.source import hub
from hfstream.source import wire as protocol
from hfstream.source.faults import describe, is_refused, is_transient, refused_error
from hfstream.source.resolve import Resolved, resolve
from hfstream.source.spec import SourceSpec
from hfstream.worker import fast, hf, remote, row_groups
from hfstream.worker.rows import Chunks, FileCounts, local_shard_rows, piece_shard_rows, shard_mode

log = logging.getLogger("hfstream.worker")
Opener = Callable[[int, int], Chunks]  # (epoch, start shard row) -> chunks of raw values

FIRST_BATCH = 16                 # a small first batch: the first document arrives sooner
MAX_BATCH_CHARS = 8 << 20        # a batch line never grows past ~8 MB of text
FLUSH_AFTER_S = 0.1              # a slow source still delivers what it has every 100 ms


class Emitter:
    """Writes protocol lines to stdout; a daemon thread sends heartbeats when idle."""

    def __init__(self, out: BinaryIO, heartbeat_s: float):
        self._out, self._lock = out, threading.Lock()
        self._last = time.monotonic()
        if heartbeat_s > 0:
            threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                             name="hfstream-heartbeat").start()

    def send(self, message: dict[str, Any]) -> None:
        line = protocol.encode(message)
        with self._lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (BrokenPipeError, ValueError):
                os._exit(0)  # the parent closed our stdout: it wants us gone
            self._last = time.monotonic()

    def _beat(self, interval: float) -> None:
        while True:
            time.sleep(interval / 2)
            if time.monotonic() - self._last >= interval:
                self.send({"heartbeat": round(time.time(), 3)})


class Progress:
    """Counts what was sent and reports it on stderr as ``{"progress": ...}`` JSON lines."""

    def __init__(self, interval_s: float):
        self.docs = self.chars = 0
        self._interval, self._t0 = interval_s, time.monotonic()
        self._next = self._t0 + interval_s

    def add(self, docs: int, chars: int) -> None:
        self.docs += docs
        self.chars += chars
        now = time.monotonic()
        if self._interval > 0 and now >= self._next:
            self._next = now + self._interval
            elapsed = max(now - self._t0, 1e-9)
            line = protocol.encode({"progress": self.docs, "chars": self.chars,
                                    "docs_per_s": round(self.docs / elapsed, 1),
                                    "mb_per_s": round(self.chars / elapsed / 1e6, 2)})
            sys.stderr.write(line.decode())
            sys.stderr.flush()


def stream_documents(spec: SourceSpec, opener: Opener, emit: Callable[[dict], None], *,
                     start_epoch: int, start_row: int, limit: int | None, docs_per_message: int,
                     progress: Progress) -> None:
    """Send the shard's documents from (start_epoch, start_row) as batches, then ``done``."""
    epoch, row, sent = start_epoch, start_row, 0
    texts: list[str] = []
    rows: list[int] = []
    skipped: Counter[str] = Counter()
    chars, batch_t0, target = 0, 0.0, min(docs_per_message, FIRST_BATCH)

    def flush(end: int) -> None:
        nonlocal texts, rows, chars, sent, target
        message = protocol.batch_message(texts, epoch, rows, end)
        if skipped:
            message["skipped"] = dict(skipped)
            skipped.clear()
        emit(message)
        sent += len(texts)
        progress.add(len(texts), chars)
        texts, rows, chars, target = [], [], 0, docs_per_message

    min_length, strict = spec.min_length, spec.strict
    while spec.epochs is None or epoch < spec.epochs:
        epoch_start, epoch_docs = row, 0
        for chunk in opener(epoch, row):
            for value in chunk:
                if type(value) is str and len(value) >= min_length:
                    if not texts:
                        batch_t0 = time.monotonic()
                    texts.append(value)
                    rows.append(row)
                    chars += len(value)
                else:
                    skipped[_skip_reason(value, spec, epoch, row)] += 1
                row += 1
                if texts and (len(texts) >= target or chars >= MAX_BATCH_CHARS
                              or limit is not None and sent + len(texts) >= limit):
                    epoch_docs += len(texts)
                    flush(row)
                    if limit is not None and sent >= limit:
                        emit(_done(sent, epoch, row, skipped))
                        return
            if texts and time.monotonic() - batch_t0 >= FLUSH_AFTER_S:
                epoch_docs += len(texts)
                flush(row)
        if texts:
            epoch_docs += len(texts)
            flush(row)
        if epoch_start == 0 and epoch_docs == 0:
            _raise_empty(row, skipped, spec)
        epoch, row = epoch + 1, 0
    emit(_done(sent, epoch, row, skipped))


def _done(total: int, epoch: int, end: int, skipped: Counter) -> dict[str, Any]:
    return {"done": True, "total": total, "epoch": epoch, "end": end, "skipped": dict(skipped)}


def _skip_reason(value: Any, spec: SourceSpec, epoch: int, row: int) -> str:
    if isinstance(value, str):
        return "too_short"
    reason = "null" if value is None else "non_string"
    if spec.strict:
        got = "null" if value is None else f"a {type(value).__name__} ({str(value)[:40]!r})"
        raise DataFormatError(
            f"row {row} of shard {spec.shard} (epoch {epoch}) has {got} in column {spec.text_column!r}",
            "fix the data, pick the right text_column, or turn strict mode off to skip and count such rows")
    return reason


def _raise_empty(num_rows: int, skipped: Counter, spec: SourceSpec) -> None:
    where = f"dataset {spec.dataset!r}" + (f" (shard {spec.shard} of {spec.num_shards})"
                                           if spec.num_shards > 1 else "")
    if not num_rows:
        raise EmptyDatasetError(f"{where} has no rows",
                                "check that the files are not empty, and that num_shards is not larger "
                                "than the number of rows")
    detail = ", ".join(f"{n} {why}" for why, n in skipped.items())
    raise EmptyDatasetError(f"all {num_rows} rows of {where} were skipped ({detail})",
                            f"check text_column (now {spec.text_column!r}), min_length (now "
                            f"{spec.min_length}) and the data itself")


@dataclass
class Reader:
    """What the worker reads with: the reader's name, an opener of shard rows, and what the parent
    records in the corpus state (how rows are sharded, the hub commit)."""

    name: str                       # fast | datasets | ws
    opener: Opener
    shard_mode: str | None = None   # files | row_groups | rows; None: decided by datasets later
    revision: str | None = None     # the hub commit read
    num_files: int = 0


def make_reader(spec: SourceSpec, resolved: Resolved, forced_mode: str | None = None,
                pinned: str | None = None, expected: str | None = None) -> Reader:
    """Pick the reader (fast, datasets or ws) for ``spec``: hub ids are resolved to their files first.

    Args:
        forced_mode: the shard mode of a saved state (see ``rows.shard_mode``).
        pinned: the hub commit this run reads; expected: the one a saved state was read at.
    """
    if resolved.kind == "ws":
        from hfstream.worker import ws

        return Reader("ws", ws.ws_opener(spec))
    files, fmt, versions, revision = resolved.files, resolved.format, None, None
    if resolved.kind == "hub":
        found = hub.resolve_hub(spec, pinned, expected)
        revision = found.sha
        if not found.fast or spec.reader == "datasets":
            if spec.reader == "fast":
                raise HfStreamError(f"no fast reader for {spec.dataset!r}: {found.why_not_fast}",
                                    "use reader='auto' or 'datasets' for this dataset")
            log.info("reading %s through datasets at %s%s", spec.dataset, found.sha,
                     f" ({found.why_not_fast})" if found.why_not_fast else "")
            at_commit = dataclasses.replace(spec, revision=found.sha)
            return Reader("datasets", lambda e, r: hf.hub_rows(at_commit, e, r, forced_mode), None, revision,
                          len(found.files))
        files, fmt, versions = found.files, found.builder, [found.sha] * len(found.files)
    elif resolved.kind == "remote" and spec.reader != "datasets" and (fmt == "parquet" or fmt in fast.READERS):
        listed = remote.list_files(files)
        files, versions = [f.url for f in listed], [f"{f.size}:{f.version}" if f.version else "" for f in listed]
    return _files_reader(spec, files, fmt or "", versions, forced_mode, revision)


def _files_reader(spec: SourceSpec, files: list[str], fmt: str, versions: list[str] | None,
                  forced_mode: str | None, revision: str | None) -> Reader:
    """The reader of a list of local files or URLs in one format."""
    has_fast = fmt == "parquet" or fmt in fast.READERS
    if spec.reader == "fast" and not has_fast:
        raise HfStreamError(f"no fast reader for {fmt} files", "use reader='auto' or 'datasets' for this format")
    if not has_fast or spec.reader == "datasets":
        mode = shard_mode(spec, len(files), forced=forced_mode)
        return Reader("datasets", lambda e, r: hf.local_rows(files, fmt, spec, e, r, mode), mode, revision,
                      len(files))
    if fmt != "parquet":
        mode = shard_mode(spec, len(files), forced=forced_mode)
        counts = FileCounts(dict(zip(files, versions or map(_local_version, files))))  # "": not kept
        return Reader("fast", lambda e, r: local_shard_rows(files, spec, e, r, fast.READERS[fmt], mode, counts),
                      mode, revision, len(files))
    file_layouts = row_groups.layouts(files, versions)
    rows_per_group = [layout["rows"] for layout in file_layouts]
    mode = shard_mode(spec, len(files), sum(map(len, rows_per_group)), forced_mode)
    read = row_groups.RowGroupReader(files, file_layouts, spec, read_ahead=remote.is_url(files[0]) if files else False)
    return Reader("fast", lambda e, r: piece_shard_rows(rows_per_group, spec, e, r, mode, read), mode, revision,
                  len(files))


def _local_version(path: str) -> str:
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def retry_call(call: Callable[[], Any], max_retries: int, what: str, backoff_s: float = 0.5) -> Any:
    """``call()``, retried with backoff on transient network errors (resolution, listings)."""
    for failures in itertools.count(1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified below
            if is_refused(exc):
                raise refused_error(exc, what) from None
            if not is_transient(exc) or failures > max_retries:
                raise
            delay = min(backoff_s * 2 ** (failures - 1), 30.0)
            log.warning("transient error opening %s (%s); retry %d/%d in %.1fs", what, describe(exc),
                        failures, max_retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def retrying(opener: Opener, max_retries: int, backoff_s: float = 0.5, what: str = "the dataset") -> Opener:
    """Wrap an opener so transient network errors reopen the stream at the same row.

    A refused token (HTTP 401/403) is an ``AuthError`` naming the credentials, never retried.
    """

    def open_at(epoch: int, start: int) -> Chunks:
        row, failures = start, 0
        while True:
            try:
                for chunk in opener(epoch, row):
                    yield chunk
                    row += len(chunk)
                    failures = 0
                return
            except Exception as exc:  # noqa: BLE001 - classified below
                if is_refused(exc):
                    raise refused_error(exc, what) from None
                if not is_transient(exc) or failures >= max_retries:
                    raise
                failures += 1
                delay = min(backoff_s * 2 ** (failures - 1), 30.0)
                log.warning("transient error at epoch %d row %d (%s); retry %d/%d in %.1fs",
                            epoch, row, describe(exc), failures, max_retries, delay)
                time.sleep(delay)

    return open_at


def _watch_stdin() -> None:
    """Exit when the parent goes away: its end of our stdin closes, even on SIGKILL."""
    try:
        while os.read(0, 1 << 16):  # raw fd: no buffered-reader lock held at shutdown
            pass
    except OSError:
        pass
    os._exit(0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hfstream.worker",
                                description="Stream one shard of a dataset as protocol lines on stdout.")
    p.add_argument("--spec", required=True, help="the SourceSpec as JSON")
    p.add_argument("--start-epoch", type=int, default=0)
    p.add_argument("--start-row", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="send at most this many documents")
    p.add_argument("--docs-per-message", type=int, default=1000, help="documents per batch line")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds of silence before a heartbeat")
    p.add_argument("--progress-interval", type=float, default=1.0)
    p.add_argument("--max-retries", type=int, default=8, help="retries of transient network errors")
    p.add_argument("--shard-mode", default=None, help="the shard mode a saved state was read with "
                   "(files, row_groups, rows, or legacy for a state from before row-group sharding)")
    p.add_argument("--pinned-revision", default=None, help="the hub commit this run reads")
    p.add_argument("--expect-revision", default=None, help="the hub commit a resumed state was read at")
    p.add_argument("--watch-stdin", action=argparse.BooleanOptionalAction, default=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"hfstream.worker[{os.getpid()}] %(levelname)s: %(message)s")
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    if args.watch_stdin and not sys.stdin.isatty():
        threading.Thread(target=_watch_stdin, daemon=True, name="hfstream-stdin").start()
    emitter = Emitter(sys.stdout.buffer, args.heartbeat)
    try:
        spec = SourceSpec.from_json(args.spec)
        emitter.send({"v": protocol.PROTOCOL_VERSION, "status": "loading", "dataset": spec.dataset})
        resolved = resolve(spec)
        reader = retry_call(lambda: make_reader(spec, resolved, args.shard_mode, args.pinned_revision,
                                                args.expect_revision), args.max_retries, spec.dataset)
        emitter.send({"status": "ready", "reader": reader.name, "kind": resolved.kind,
                      "format": resolved.format, "num_files": reader.num_files or len(resolved.files),
                      "shard_mode": reader.shard_mode, "revision": reader.revision})
        stream_documents(spec, retrying(reader.opener, args.max_retries, what=spec.dataset), emitter.send,
                         start_epoch=args.start_epoch, start_row=args.start_row, limit=args.limit,
                         docs_per_message=args.docs_per_message, progress=Progress(args.progress_interval))
        return 0
    except HfStreamError as exc:
        log.error("%s", exc)
        emitter.send(protocol.error_message(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 - anything else is reported, with its traceback
        traceback.print_exc(file=sys.stderr)
        emitter.send(protocol.error_message(exc))
        return 1
