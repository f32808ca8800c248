"""Source options shared by every CLI: one flag per SourceSpec field."""

from __future__ import annotations

import argparse
from typing import Any


def add_source_args(parser: argparse.ArgumentParser, dataset_required: bool = True) -> None:
    """Add ``--dataset`` and the source options (flags mirror SourceSpec fields)."""
    g = parser.add_argument_group("source")
    g.add_argument("--dataset", required=dataset_required,
                   help="hub id, local file/glob/directory, or builtin:python-docs")
    g.add_argument("--split", default="train")
    g.add_argument("--name", default=None, help="hub config name (e.g. sample-10BT)")
    g.add_argument("--data-files", nargs="+", default=None, help="files for a format name or hub dataset")
    g.add_argument("--revision", default=None)
    g.add_argument("--text-column", default="text")
    g.add_argument("--min-length", type=int, default=1, help="skip documents shorter than this (chars)")
    g.add_argument("--max-samples", type=int, default=None, help="stop after this many documents")
    g.add_argument("--epochs", type=int, default=1, help="passes over the data (0: repeat forever)")
    g.add_argument("--shard", type=int, default=0)
    g.add_argument("--num-shards", type=int, default=1)
    g.add_argument("--shard-by", choices=["auto", "files", "rows"], default="auto")
    g.add_argument("--seed", type=int, default=None, help="shuffle the file order per epoch")
    g.add_argument("--strict", action="store_true", help="error on null/non-string text instead of skipping")
    g.add_argument("--sample-by", choices=["line", "paragraph", "document"], default="line",
                   help="text files: one document per line, paragraph or file")
    g.add_argument("--encoding-errors", choices=["strict", "replace", "ignore"], default="strict")
    g.add_argument("--format", default=None, choices=["parquet", "json", "text", "csv", "arrow"])
    g.add_argument("--reader", choices=["auto", "fast", "datasets"], default="auto")
    g.add_argument("--ws-field", default=None,
                   help="ws:// datasets: the sample field holding the text (default: detected)")


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The SourceSpec keyword arguments from parsed flags (without ``dataset``)."""
    data_files = args.data_files
    if data_files is not None and len(data_files) == 1:
        data_files = data_files[0]
    return {"split": args.split, "name": args.name, "data_files": data_files, "revision": args.revision,
            "text_column": args.text_column, "min_length": args.min_length,
            "max_samples": args.max_samples, "epochs": args.epochs or None, "shard": args.shard,
            "num_shards": args.num_shards, "shard_by": args.shard_by, "seed": args.seed,
            "strict": args.strict, "sample_by": args.sample_by,
            "encoding_errors": args.encoding_errors, "format": args.format, "reader": args.reader,
            "ws_field": args.ws_field}


def add_mixture_args(parser: argparse.ArgumentParser) -> None:
    """``--streams FILE``: a YAML/JSON mixture instead of one ``--dataset``."""
    parser.add_argument("--streams", default=None, metavar="FILE",
                        help="a YAML/JSON mixture: {streams: [{dataset: ..., proportion: ...}, ...], "
                             "epoch_size: ..., seed: ...} (MosaicML vocabulary)")


def load_mixture_file(path: str) -> dict[str, Any]:
    """Read a mixture file: a list of streams, or a mapping with ``streams`` and mixture options."""
    from pathlib import Path

    import yaml

    from hfstream.errors import ConfigError

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the mixture file {path!r}: {exc}",
                          "write it as YAML: streams: [{dataset: a.jsonl, proportion: 0.3}, ...]") from None
    if isinstance(data, list):
        data = {"streams": data}
    if not isinstance(data, dict) or not isinstance(data.get("streams"), list):
        raise ConfigError(f"{path!r} has no 'streams' list",
                          "write: streams: [{dataset: a.jsonl, proportion: 0.3}, {dataset: b.jsonl, proportion: 0.7}]")
    allowed = {"streams", "epoch_size", "seed", "batching_method", "batch_size", "epochs"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in the mixture file {path!r}",
                          f"valid keys: {', '.join(sorted(allowed))}")
    return data


def open_source(args: argparse.Namespace, **overrides: Any) -> Any:
    """The document source the flags describe: a mixture (``--streams``) or one corpus."""
    from hfstream.errors import ConfigError

    if getattr(args, "streams", None):
        from hfstream.mixing.streams import MixedSource

        mixture = load_mixture_file(args.streams)
        mixture.setdefault("epochs", overrides.get("epochs", args.epochs or None))
        return MixedSource(mixture.pop("streams"), **mixture)
    if not args.dataset:
        raise ConfigError("no data given", "pass --dataset DATASET (or --streams mixture.yaml)")
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    options = source_options(args)
    options.update(overrides)
    return HuggingFaceStreamingCorpus(args.dataset, batch_size=getattr(args, "batch_size", 1000), **options)
