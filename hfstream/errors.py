"""Exception types: every user-facing failure names its cause and the next step."""

from __future__ import annotations

import operator


class HfStreamError(Exception):
    """Base class of all hfstream errors.

    Messages follow one shape: what went wrong (naming the bad value), then a
    ``HINT:`` line that says what to do next.
    """

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nHINT: {hint}")


class ConfigError(HfStreamError, ValueError):
    """A bad option or argument (unknown key, wrong type, out-of-range value)."""


class DatasetNotFoundError(HfStreamError, FileNotFoundError):
    """A local path, glob or directory that holds no readable data files."""


class DataFormatError(HfStreamError, ValueError):
    """Data that cannot be read as documents: bad JSON, bad UTF-8, corrupt file, missing column."""


class EmptyDatasetError(HfStreamError, ValueError):
    """A dataset (or shard) that yields no document at all."""


class OfflineError(HfStreamError, ConnectionError):
    """A hub dataset was asked for but the Hugging Face hub cannot be reached."""


class AuthError(HfStreamError, PermissionError):
    """A remote store refused the credentials (HTTP 401/403): a missing, invalid or expired token."""


class StateError(HfStreamError, ValueError):
    """A state dict that does not belong to this object (other dataset, version or settings)."""


class WorkerError(HfStreamError, RuntimeError):
    """The worker subprocess failed and could not be recovered.

    Attributes:
        exit_code: the worker's exit status (negative: killed by that signal), or None.
        stderr_tail: the last lines the worker wrote to stderr.
    """

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None,
                 stderr_tail: str = ""):
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        full_hint = hint
        if stderr_tail:
            tail = "\n".join("    " + line for line in stderr_tail.rstrip().splitlines())
            full_hint = f"{hint or 'see the worker output below'}\nworker stderr (last lines):\n{tail}"
        super().__init__(message, full_hint)


# Worker-side errors travel as {"error": {"type": name, ...}}; the parent rebuilds them by name.
ERROR_TYPES: dict[str, type[HfStreamError]] = {
    cls.__name__: cls
    for cls in (HfStreamError, ConfigError, DatasetNotFoundError, DataFormatError,
                EmptyDatasetError, OfflineError, AuthError, StateError, WorkerError)
}


def check_int(name: str, value: object, minimum: int | None = None, hint: str | None = None) -> int:
    """``value`` as an int (numpy integers accepted, bools refused), else a ConfigError naming ``name``.

    The one integer-argument check of the package: every option, setting and constructor
    argument that must be a whole number (at least ``minimum``) goes through it.
    """
    at_least = "" if minimum is None else f" >= {minimum}"
    ok = not isinstance(value, bool)
    if ok:
        try:
            value = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            ok = False
    if not ok or (minimum is not None and value < minimum):  # type: ignore[operator]
        raise ConfigError(f"{name} must be an integer{at_least}, got {value!r}"
                          + ("" if ok else f" ({type(value).__name__})"),
                          hint or f"pass {name} as a whole number{at_least}")
    return value  # type: ignore[return-value]
