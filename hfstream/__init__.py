"""hfstream: stream raw text corpora straight into language-model training."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names -> defining module. Imported lazily so that `import hfstream` stays light
# (no torch, no datasets, no tokenizers until a name that needs them is used).
_EXPORTS = {
    "HuggingFaceStreamingCorpus": "hfstream.source.corpus",
    "DocumentSource": "hfstream.source.base",
    "SourceSpec": "hfstream.source.spec",
    "open_source": "hfstream.sources",
    "StreamingTextDataLoader": "hfstream.loader.loader",
    "Batch": "hfstream.loader.batch",
    "TextEncoder": "hfstream.tokens.encoder",
    "Stream": "hfstream.mixing.streams",
    "MixedSource": "hfstream.mixing.documents",
    "register_stream": "hfstream.mixing.streams",
    "WorkerError": "hfstream.errors",
    "HfStreamError": "hfstream.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hfstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
