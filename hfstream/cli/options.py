"""Source options shared by every CLI: one flag per SourceSpec field, generated from its type and help."""

from __future__ import annotations

import argparse
import typing
from typing import Any

from hfstream.errors import ConfigError
from hfstream.mixing.streams import load_mixture_file
from hfstream.source.base import DocumentSource
from hfstream.source.spec import SourceOption, source_options
from hfstream.sources import open_source


def flag_of(name: str) -> str:
    """The command-line flag of a source option: ``text_column`` -> ``--text-column``."""
    return "--" + name.replace("_", "-")


def add_source_args(parser: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    """Add ``--dataset`` and every other source option (``--split``, ``--text-column``, ...)."""
    group = parser.add_argument_group("source (the options of HuggingFaceStreamingCorpus)")
    for opt in source_options():
        group.add_argument(flag_of(opt.name), dest=opt.name, **_argument(opt, dataset_required))


def _argument(opt: SourceOption, dataset_required: bool) -> dict[str, Any]:
    """argparse keywords for one option, from its annotation: bool, choices, a list, an int, a str."""
    if opt.name == "dataset":
        return {"required": dataset_required, "default": None, "help": opt.help}
    if opt.name == "epochs":  # None (repeat forever) is spelled 0 on the command line
        return {"type": int, "default": opt.default, "help": f"{opt.help} (default: {opt.default})"}
    kwargs: dict[str, Any] = {"default": opt.default, "help": opt.help}  # the formatter shows defaults
    types = [t for t in typing.get_args(opt.annotation) if t is not type(None)] or [opt.annotation]
    if opt.annotation is bool:
        kwargs["action"] = "store_true"
    elif opt.choices is not None:
        kwargs["choices"] = [c for c in opt.choices if c is not None]
    elif any(typing.get_origin(t) is list for t in types):
        kwargs.update(nargs="+", metavar=opt.name.upper())
    elif int in types:
        kwargs["type"] = int
    return kwargs


def source_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The SourceSpec keyword arguments the flags set (without ``dataset``)."""
    given = vars(args)
    options = {opt.name: given[opt.name] for opt in source_options()
               if opt.name != "dataset" and opt.name in given}
    if isinstance(options.get("data_files"), list) and len(options["data_files"]) == 1:
        options["data_files"] = options["data_files"][0]
    if options.get("epochs") == 0:
        options["epochs"] = None
    return options


def add_mixture_args(parser: argparse.ArgumentParser) -> None:
    """``--streams FILE``: a YAML mixture instead of one ``--dataset``."""
    parser.add_argument("--streams", default=None, metavar="FILE",
                        help="a YAML/JSON mixture: {streams: [{dataset: ..., proportion: ...}, ...], "
                             "epoch_size: ..., seed: ...} (MosaicML vocabulary)")


def open_source_from_args(args: argparse.Namespace, docs_per_message: int = 1000,
                          **overrides: Any) -> DocumentSource:
    """The document source the flags describe: a mixture (``--streams``) or one dataset.

    Raises:
        ConfigError: neither ``--dataset`` nor ``--streams`` was given.
    """
    options = {**source_kwargs(args), **overrides}
    if args.streams:
        return open_source(load_mixture_file(args.streams), mixture_defaults={"epochs": options["epochs"]})
    if not args.dataset:
        raise ConfigError("no data given", "pass --dataset DATASET (or --streams mixture.yaml)")
    return open_source(args.dataset, batch_size=docs_per_message, **options)
