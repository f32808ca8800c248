"""The token packer: native ``hfstream._packing`` when built, else its pure-Python twin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hfstream.native import load

if TYPE_CHECKING:
    from hfstream.loader._packing_py import TokenPacker
else:
    TokenPacker = load("_packing", "hfstream.loader._packing_py").TokenPacker

__all__ = ["TokenPacker"]
