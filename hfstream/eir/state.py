"""The server's state file (``--state-file``): validation ids and cursor, kept across restarts.

EIR sends its validation ids once per run and never again, so a server restarted mid-run
would serve them as training data. With a state file the server writes its validation set and
its cursor (the next sample position) there, atomically (a temporary file, fsync, rename),
after every ``setValidationIds`` (before confirming it), after every ``reset``, every few
seconds while the cursor moves and at shutdown; a restarted server reads it back, keeps
excluding those ids and continues at that position. The file names the stream it belongs to
(the source's starting state, the sample shape), so another server's file is refused, as is a
damaged one: both are a ``StateError`` naming the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from hfstream.errors import StateError

log = logging.getLogger("hfstream.eir.server")
FORMAT = "hfstream-eir-server-state"
VERSION = 1


@dataclass
class SavedState:
    """What a state file holds: the validation ids and the next sample position."""

    validation_ids: list[str] = field(default_factory=list)
    position: int = 0


def stream_fingerprint(source_state: dict[str, Any], sequence_length: int, separator: str) -> dict[str, Any]:
    """What makes sample ids name the same texts: the source's starting state and the sample shape."""
    digest = hashlib.sha1(orjson.dumps(source_state, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()
    return {"source": digest[:16], "sequence_length": sequence_length, "separator": separator}


class StateFile:
    """One server's state file.

    Args:
        path: where the state lives (created on the first save; its folder must exist).
        stream: ``stream_fingerprint(...)`` of the server's stream.
        name: what is served, for messages.
    """

    def __init__(self, path: str | os.PathLike, stream: dict[str, Any], name: str = ""):
        self.path, self.stream, self.name = Path(path), stream, name

    def load(self) -> SavedState | None:
        """The saved state, or None when the file does not exist yet.

        Raises:
            StateError: the file is damaged, not a state file, or another stream's.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc}",
                             "check its permissions, or pass another --state-file") from None
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError("not an hfstream serve state file")
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, this hfstream reads version {VERSION}")
            ids, position = data["validation_ids"], data["position"]
            if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)
                    and isinstance(position, int) and position >= 0):
                raise ValueError("bad validation_ids or position")
        except (ValueError, KeyError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise StateError(f"the state file {self.path} is damaged or not an hfstream serve state "
                             f"file ({str(exc)[:200]})",
                             "delete it to start without saved validation ids (a running EIR training "
                             "then needs a restart), or pass another --state-file") from None
        if data.get("stream") != self.stream:
            theirs = data.get("stream") or {}
            differ = sorted(k for k in set(theirs) | set(self.stream) if theirs.get(k) != self.stream.get(k))
            raise StateError(f"the state file {self.path} belongs to another stream (it was written by "
                             f"a server of {data.get('name')!r}; they differ in {', '.join(differ)}), so its "
                             f"sample ids name other texts",
                             f"serve the same data with the same --sequence-length and --separator, or "
                             f"pass another --state-file for {self.name or 'this stream'}")
        return SavedState(validation_ids=ids, position=position)

    def load_or_create(self) -> SavedState:
        """The saved state; a new file holding an empty one when there is none yet (so that a
        path that cannot be written fails now, at start).

        Raises:
            StateError: the file is damaged, another stream's, or cannot be written.
        """
        saved = self.load()
        if saved is None:
            saved = SavedState()
            try:
                self.save(saved)
            except OSError as exc:
                raise StateError(f"cannot write the state file {self.path}: {exc}",
                                 "pass a --state-file in a folder that exists and is writable") from None
        return saved

    def save(self, state: SavedState) -> None:
        """Write atomically: readers see the old file or the new one, never a mix."""
        data = orjson.dumps({"format": FORMAT, "version": VERSION, "name": self.name, "stream": self.stream,
                             "position": state.position, "validation_ids": state.validation_ids})
        handle, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class StateKeeper:
    """Writes a server's state to its file, off the event loop: ``save()`` when it matters
    (awaited), and every ``interval`` seconds while the cursor moves.

    Args:
        state_file: where to write.
        snapshot: returns the state to write now.
        interval: seconds between two periodic saves.
    """

    def __init__(self, state_file: StateFile, snapshot: Callable[[], SavedState], interval: float = 10.0):
        self.file, self.snapshot, self.interval = state_file, snapshot, interval
        self._lock = asyncio.Lock()
        self._saved_position = -1
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._save_every())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def save(self) -> None:
        async with self._lock:
            state = self.snapshot()
            await asyncio.to_thread(self.file.save, state)
            self._saved_position = state.position

    async def _save_every(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.snapshot().position != self._saved_position:
                try:
                    await self.save()
                except OSError as exc:
                    log.error("cannot write the state file %s: %s", self.file.path, exc)
