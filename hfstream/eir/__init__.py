"""EIR compatibility: a WebSocket server and client speaking EIR's streaming protocol v1.0.

``hfstream serve`` (``hfstream.eir.server``) streams any hfstream source to EIR's ``eirtrain``;
``ws://`` datasets (``hfstream.eir.client``, run by the worker) read from any such server.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EirServer": "hfstream.eir.server",
    "ServerConfig": "hfstream.eir.config",
    "ServerThread": "hfstream.eir.runner",
    "run_server": "hfstream.eir.runner",
    "EirClient": "hfstream.eir.client",
    "EirServerError": "hfstream.eir.client",
    "SampleFeed": "hfstream.eir.feed",
    "ListSource": "hfstream.eir.feed",
    "PROTOCOL_VERSION": "hfstream.eir.protocol",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hfstream.eir' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
