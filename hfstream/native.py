"""The one place that decides between a native (Cython) module and its pure-Python twin.

Environment variables:
    HFSTREAM_PURE_PYTHON=1: always use the pure-Python twins (CI runs the suite once so).
        It wins over HFSTREAM_REQUIRE_NATIVE, so one CI job may set both.
    HFSTREAM_REQUIRE_NATIVE=1: a native module that cannot be imported is an ImportError
        instead of a silent fallback (CI sets it where the build is expected to work).

Facades call :func:`load` once, at import time; the choice holds for the process.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

#: Native module name (``hfstream.<name>``, built from ``ext/<name>.pyx``) -> its Python twin.
NATIVE_MODULES: dict[str, str] = {
    "_shuffle": "hfstream.loader._shuffle_py",
    "_packing": "hfstream.loader._packing_py",
}


def use_native() -> bool:
    """False when ``HFSTREAM_PURE_PYTHON=1`` forces the pure-Python twins, else True."""
    return os.environ.get("HFSTREAM_PURE_PYTHON") != "1"


def require_native() -> bool:
    """True when ``HFSTREAM_REQUIRE_NATIVE=1``: a missing native module is an error."""
    return os.environ.get("HFSTREAM_REQUIRE_NATIVE") == "1"


def _import_native(native_name: str) -> tuple[ModuleType | None, ImportError | None]:
    try:
        return importlib.import_module(f"hfstream.{native_name}"), None
    except ImportError as exc:  # not built, or built for another Python
        return None, exc


def load(native_name: str, py_module: str) -> ModuleType:
    """Return the native module ``hfstream.<native_name>`` if allowed and importable, else the twin.

    Args:
        native_name: the private native module, e.g. ``"_shuffle"``.
        py_module: the dotted name of its pure-Python twin, e.g. ``"hfstream.loader._shuffle_py"``.

    Raises:
        ImportError: the native module cannot be imported and ``HFSTREAM_REQUIRE_NATIVE=1``
            (unless ``HFSTREAM_PURE_PYTHON=1`` asked for the twins anyway).
    """
    if use_native():
        module, error = _import_native(native_name)
        if module is not None:
            return module
        if require_native():
            raise ImportError(
                f"native module hfstream.{native_name} is required (HFSTREAM_REQUIRE_NATIVE=1) "
                f"but cannot be imported: {error}\n"
                "HINT: build it with `python setup.py build_ext --inplace` (or reinstall with a "
                "C compiler and Cython available), or unset HFSTREAM_REQUIRE_NATIVE to fall back "
                "to pure Python."
            ) from error
        _warn_fallback(native_name, error)
    return importlib.import_module(py_module)


class NativeFallbackWarning(RuntimeWarning):
    """The native extensions are not built: the (slower) pure-Python twins run instead."""


_warned = False


def _warn_fallback(native_name: str, error: ImportError | None) -> None:
    """Say once per process, where a user sees it, that the pure-Python twins are in use."""
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f"hfstream's native extensions are not built (hfstream.{native_name}: {error}); the pure-Python "
        "twins give the same batches, but shuffling and packing run several times slower. Reinstall with "
        "a C compiler available (`pip install --force-reinstall --no-deps .`), check with `hfstream info`, "
        "or set HFSTREAM_PURE_PYTHON=1 to choose the twins and silence this.",
        NativeFallbackWarning, stacklevel=3)


def native_status() -> dict[str, bool]:
    """Which native modules are active: ``{"_shuffle": True, "_packing": False, ...}``.

    True means facades use the native module: native code is allowed
    (``HFSTREAM_PURE_PYTHON`` is not ``1``) and the module imports. Never raises.
    """
    return {name: use_native() and _import_native(name)[0] is not None
            for name in NATIVE_MODULES}
