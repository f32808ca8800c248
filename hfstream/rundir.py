"""A run's output directory: the writability check, atomic writes (a full disk said plainly), ``metrics.jsonl``."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from hfstream.errors import ConfigError, DiskFullError

log = logging.getLogger("hfstream.rundir")


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
    """Create ``path`` if needed and prove it writable, before any work is done; remove what
    an atomic write killed half-way left there (:func:`remove_stale_temp_files`).

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
    remove_stale_temp_files(path)
    return path


# The temporary files of atomic_write_bytes (".NAME.XXXXXXXX.tmp", mkstemp's 8 characters) for
# the files a run writes; plotting once used a fixed ".training_curve.png.tmp".
_STALE_TEMP = re.compile(r"\.(checkpoint\.pt|config\.yaml|run_info\.json|summary\.json|tokenizer\.json|"
                         r"tokenizer_report\.json|(metrics|samples|batches-rank\d+)\.jsonl|"
                         r"training_curve\.png)(\.[a-z0-9_]{8})?\.tmp")


def remove_stale_temp_files(directory: Path) -> list[str]:
    """Delete the temporary files that writes of a run's outputs, killed half-way, left in
    ``directory`` (only those names, only there: no other file, no subdirectory).

    Call it before the run writes anything: a write in progress has such a file too.
    """
    removed = []
    for entry in os.scandir(directory):
        if _STALE_TEMP.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    if removed:
        log.info("removed %d temporary file(s) left in %s by interrupted writes: %s", len(removed),
                 directory, ", ".join(sorted(removed)))
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: never half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename: ``path`` is either the old
    file or the new one, never half a file.

    Raises:
        DiskFullError: the data did not fit (the old file is left as it was; the message says so).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full_error(exc, path, len(data)) if isinstance(exc, OSError) else None
        if full is not None:
            raise full from exc
        raise


#: errno -> what is full
_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
         errno.EFBIG: "the file size limit of this process (ulimit -f) is reached"}


def disk_full_error(exc: OSError, path: Path, size: int, state: str | None = None) -> DiskFullError | None:
    """The error saying that ``size`` bytes for ``path`` did not fit, where, how much is free,
    and what became of the file (``state``; by default: intact or not written); None when
    ``exc`` is not about space."""
    if exc.errno not in _FULL:
        return None
    path = Path(path).absolute()
    state = state or (f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written")
    if exc.errno == errno.EFBIG:
        import resource  # POSIX only, as EFBIG from a size limit is

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return DiskFullError(
            f"cannot write {path}: {_FULL[exc.errno]} ({_size(limit)}); it needs {_size(size)}; {state}",
            "raise the limit (ulimit -f unlimited) and run again; a run continues from its last "
            "checkpoint with --resume")
    disk, free = _mount_point(path.parent), shutil.disk_usage(path.parent).free
    return DiskFullError(
        f"cannot write {path}: {_FULL[exc.errno]} (the disk mounted at {disk}: {_size(free)} free, "
        f"{path.name} needs {_size(size)}); {state}",
        f"free space on {disk} or choose an output directory on another disk (--output), then run "
        "again; a run continues from its last checkpoint with --resume")


def _mount_point(directory: Path) -> str:
    while not os.path.ismount(directory) and directory.parent != directory:
        directory = directory.parent
    return str(directory)


def _size(num_bytes: int) -> str:
    if num_bytes < 0:  # RLIM_INFINITY
        return "no limit"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:,.1f} {unit}"
    return f"{num_bytes} bytes"


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
        """Append one record.

        Raises:
            DiskFullError: it did not fit (the records before it are intact).
        """
        line = json.dumps(record) + "\n"
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            full = disk_full_error(exc, self.path, len(line.encode()), "the records before this one are intact")
            if full is None:
                raise
            with contextlib.suppress(OSError):
                self._file.close()  # else closing it at exit tries to write the line again
            raise full from exc

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
