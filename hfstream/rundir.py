"""A run's output directory: the writability check, atomic writes, and ``metrics.jsonl``."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from hfstream.errors import ConfigError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def prepared_output_dir(path: str | Path) -> Iterator[Path]:
    """Create ``path`` if needed and prove it writable; on an error inside the block, remove it
    again if this call created it and it is still empty (a failed run leaves nothing behind).
    """
    path = Path(path).expanduser()
    created = not path.exists()
    ensure_writable_dir(path)
    try:
        yield path
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only succeeds when empty
        raise


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it writable, before any work is done.

    Raises:
        ConfigError: the directory cannot be created or written (the OS reason is quoted).
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to the output directory {str(path)!r}: "
                          f"{exc.strerror or exc}",
                          "choose a directory you can write to (check permissions and free "
                          "space), e.g. --output runs/NAME") from None
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: never half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class MetricsLog:
    """Append-only JSON lines (one record per log, eval or sample event), flushed per record.

    On resume, records after the checkpoint's step are dropped (they belong to the part of the
    interrupted run that is about to be redone), so the file reads like one uninterrupted run.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a torn last line, from a crash, is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
