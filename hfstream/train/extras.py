"""The optional libraries behind some features (pip extras): found, imported, or named with the install command.

``transformers`` (and ``accelerate``, for ``transformers.Trainer``) come with ``hfstream[hf]``,
``tensorboard`` with ``hfstream[tensorboard]``, ``wandb`` with ``hfstream[wandb]``;
``hfstream[all]`` brings them all. A run checks what its config needs before it writes anything.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from hfstream.errors import ConfigError
from hfstream.train.config import Config

#: library -> the extra that installs it
EXTRAS = {"transformers": "hf", "accelerate": "hf", "tensorboard": "tensorboard", "wandb": "wandb"}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def install_hint(module: str) -> str:
    return f'pip install "hfstream[{EXTRAS[module]}]" (or pip install {module})'


def require(module: str, what: str) -> ModuleType:
    """Import an optional library, or raise a ConfigError naming the feature and the pip command.

    Args:
        module: ``transformers``, ``accelerate``, ``tensorboard`` or ``wandb``.
        what: the feature that needs it, for the message (e.g. ``--report_to wandb``).
    """
    check(module, what)
    return importlib.import_module(module)


def check(module: str, what: str) -> None:
    """Raise the same error as :func:`require` when ``module`` is missing, without importing it."""
    if not installed(module):
        raise ConfigError(f"{what} needs the {module} library, which is not installed", install_hint(module))


def check_config(config: Config) -> None:
    """Raise naming the install command when the run's config needs a library that is missing.

    ``train.export`` left null exports only when transformers is there, so it needs nothing.
    """
    m, t = config.model, config.train
    if m.name_or_path is not None or m.config_name is not None:
        check("transformers", "a transformers model (model.name_or_path / model.config_name)")
    if t.export:
        check("transformers", "train.export: true (a Hugging Face model directory at the end)")
    for name in t.report_to:
        if name != "none":
            check(name, f"--report_to {name} (train.report_to)")


def export_wanted(config: Config) -> bool:
    """``train.export``, with null meaning: when transformers is installed."""
    return config.train.export if config.train.export is not None else installed("transformers")
