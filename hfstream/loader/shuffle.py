"""The shuffle buffer: native ``hfstream._shuffle`` when built, else its pure-Python twin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hfstream.native import load

if TYPE_CHECKING:
    from hfstream.loader._shuffle_py import ShuffleBuffer
else:
    ShuffleBuffer = load("_shuffle", "hfstream.loader._shuffle_py").ShuffleBuffer

__all__ = ["ShuffleBuffer"]
