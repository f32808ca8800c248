"""numpy arrays as plain data for states: bytes, dtype and shape, which ``torch.load`` reads with its defaults.

torch >= 2.6 loads with ``weights_only=True``: tensors, numbers, strings, bytes, lists, tuples and
dicts, but no numpy objects. States hold token arrays (prefetched rows, a non-seekable source's
shuffle buffer) as :func:`pack` makes them; token ids are stored as uint32 when they fit.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_U32_MAX = (1 << 32) - 1


def narrow(array: np.ndarray) -> np.ndarray:
    """Integer ids as uint32 when every value fits (half the bytes of int64), else unchanged."""
    if array.dtype.kind in "iu" and array.dtype.itemsize > 4 and array.size:
        if int(array.min()) >= 0 and int(array.max()) <= _U32_MAX:
            return array.astype(np.uint32)
    return array


def pack(array: np.ndarray | None) -> dict[str, Any] | None:
    """``{"dtype", "shape", "data"}`` for a state (None stays None)."""
    if array is None:
        return None
    array = np.ascontiguousarray(narrow(np.asarray(array)))
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def unpack(packed: dict[str, Any] | np.ndarray | None, dtype: Any = None) -> np.ndarray | None:
    """The array again (as ``dtype`` when given); a numpy array (an older state) passes through."""
    if packed is None:
        return None
    if isinstance(packed, np.ndarray):
        array = packed
    else:
        array = np.frombuffer(packed["data"], np.dtype(packed["dtype"])).reshape(packed["shape"])
    return array if dtype is None else array.astype(dtype)  # a writable copy


def pack_many(arrays: Sequence[np.ndarray], dtype: str = "<u4") -> dict[str, Any]:
    """Many 1-D arrays of one dtype as ``{"dtype", "data": [bytes, ...]}``."""
    return {"dtype": dtype, "data": [np.ascontiguousarray(a, dtype).tobytes() for a in arrays]}


def unpack_many(packed: dict[str, Any] | list[Any]) -> list[np.ndarray]:
    """The arrays of :func:`pack_many` (a plain list of arrays, from an older state, passes through)."""
    if isinstance(packed, list):
        return [np.asarray(a) for a in packed]
    dtype = np.dtype(packed["dtype"])
    return [np.frombuffer(b, dtype) for b in packed["data"]]
