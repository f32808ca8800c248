"""The ``train-streaming`` command: train a GPT or a transformers model (and, if needed, its tokenizer) from a stream.

Usage::

    train-streaming --config configs/tiny.yaml                      # built-in corpus, CPU, ~2 min
    train-streaming --config configs/tiny.yaml --max_steps 50 model.n_layer=2 --output runs/t2
    train-streaming --resume --output runs/tiny                     # continue a run exactly
    train-streaming --config configs/llama-tiny.yaml --report_to tensorboard   # a transformers Llama
    train-streaming --config configs/gpt2-small.yaml --dataset_name HuggingFaceFW/fineweb \\
        --dataset_config_name sample-10BT --output_dir runs/gpt2
    torchrun --nproc_per_node=8 -m hfstream.cli.train --config configs/gpt-1b.yaml

Settings come from the YAML config, then ``section.key=value`` overrides, then the flags.
Without ``--tokenizer`` (or ``tokenizer.path``) a tokenizer is first trained from the stream.
Ctrl+C finishes the current step, writes a checkpoint and exits; ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from hfstream.cli.common import EXIT_SIGINT, EXIT_SIGTERM, HelpFormatter, help_texts, run_main
from hfstream.cli.options import add_source_args
from hfstream.errors import ConfigError
from hfstream.train.config import config_to_yaml, data_source_keys, load_config

# flag dest -> config key: the training flags (seed names and run_clm names both), then every
# source option the data section has (generated from SourceSpec, like the flags themselves).
TRAIN_FLAG_KEYS = {
    "tokenizer": "tokenizer.path",
    "batch_size": "data.fetch_batch_size",
    "per_device_train_batch_size": "train.batch_size",
    "output": "train.output_dir",
    "max_steps": "train.max_steps",
    "logging_steps": "train.logging_steps",
    "save_steps": "train.save_steps",
    "eval_steps": "train.eval_steps",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "learning_rate": "optim.learning_rate",
    "warmup_steps": "optim.warmup_steps",
    "seed": "train.seed",
    "device": "train.device",
    "model_name_or_path": "model.name_or_path",
    "config_name": "model.config_name",
    "report_to": "train.report_to",
    "virtual_shards": "data.virtual_shards",
    "dataloader_num_workers": "data.num_workers",
    "adjust_accumulation": "train.adjust_accumulation",
}
FLAG_KEYS = {**TRAIN_FLAG_KEYS, **{key: f"data.{key}" for key in data_source_keys()}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train-streaming", formatter_class=HelpFormatter,
                                     **help_texts(__doc__))
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, e.g. model.n_layer=8 optim.learning_rate=3e-4")
    parser.add_argument("--config", help="YAML config (see configs/); default: built-in defaults")
    add_source_args(parser, dataset_required=False)
    # Flags set only when given, so that the config file's values stand otherwise.
    helps = {"shard": argparse.SUPPRESS, "num_shards": argparse.SUPPRESS,  # torchrun sets these
             "seed": "the run's seed: initial weights, shuffle buffer, samples [train.seed]",
             "max_samples": "documents per rank before the stream ends [data.max_samples]",
             "epochs": "passes over the data; 0 (the default): forever, training ends at max_steps"}
    for action in parser._actions:
        if action.dest not in ("help", "overrides", "config"):
            action.default = argparse.SUPPRESS
        action.help = helps.get(action.dest, action.help)
    s = argparse.SUPPRESS
    parser.add_argument("--dataset_name", dest="dataset", default=s, help="= --dataset (run_clm name)")
    parser.add_argument("--dataset_config_name", dest="name", default=s, help="= --name (run_clm name)")
    g = parser.add_argument_group("training (each sets a config key; run_clm names accepted)")
    g.add_argument("--tokenizer", default=s, help="tokenizer.json or its directory "
                   "[tokenizer.path]; none: train one from the stream first")
    g.add_argument("--per_device_train_batch_size", "--per-device-train-batch-size",
                   dest="per_device_train_batch_size", type=int, default=s,
                   help="sequences per device per micro-step [train.batch_size]")
    g.add_argument("--batch-size", dest="batch_size", type=int, default=s,
                   help="documents per worker batch, as in the seed design's --batch-size 1000 "
                        "[data.fetch_batch_size]; the training batch is --per_device_train_batch_size")
    g.add_argument("--output", "--output_dir", "--output-dir", dest="output", default=s,
                   help="run directory [train.output_dir]")
    g.add_argument("--max_steps", "--max-steps", type=int, default=s, help="[train.max_steps]")
    g.add_argument("--gradient_accumulation_steps", "--gradient-accumulation-steps", type=int,
                   default=s, help="[train.gradient_accumulation_steps]")
    g.add_argument("--learning_rate", "--learning-rate", "--lr", type=float, default=s,
                   help="peak learning rate [optim.learning_rate]")
    g.add_argument("--warmup_steps", "--warmup-steps", type=int, default=s, help="[optim.warmup_steps]")
    g.add_argument("--logging_steps", "--logging-steps", type=int, default=s, help="[train.logging_steps]")
    g.add_argument("--eval_steps", "--eval-steps", type=int, default=s, help="[train.eval_steps]")
    g.add_argument("--save_steps", "--save-steps", type=int, default=s, help="[train.save_steps]")
    g.add_argument("--device", default=s, choices=["auto", "cuda", "mps", "cpu"], help="[train.device]")
    g.add_argument("--model_name_or_path", "--model-name-or-path", default=s, metavar="DIR_OR_HUB_ID",
                   help="train a transformers causal LM's weights further: a save_pretrained directory or a "
                        "hub id [model.name_or_path]; needs hfstream[hf]")
    g.add_argument("--config_name", "--config-name", default=s, metavar="CONFIG_JSON",
                   help="train a transformers architecture from scratch: a config.json or its directory "
                        "[model.config_name]; needs hfstream[hf]")
    g.add_argument("--report_to", "--report-to", nargs="+", default=s, metavar="TRACKER",
                   help="none, tensorboard, wandb (several allowed) [train.report_to]; metrics.jsonl is "
                        "always written; needs hfstream[tensorboard] / hfstream[wandb]")
    e = parser.add_argument_group("elastic runs (README: Elastic runs)")
    e.add_argument("--virtual_shards", "--virtual-shards", type=int, default=s, metavar="K",
                   help="split the data into K fixed shards: the same global batches, and --resume, on any "
                        "ranks x workers dividing K (e.g. 240) [data.virtual_shards]")
    e.add_argument("--dataloader_num_workers", "--dataloader-num-workers", "--num_workers", type=int, default=s,
                   help="DataLoader worker processes per rank; needs --virtual_shards [data.num_workers]")
    e.add_argument("--adjust_accumulation", "--adjust-accumulation", action="store_const", const=True, default=s,
                   help="on a --resume with other ranks, change --gradient_accumulation_steps to keep the global "
                        "batch (else that is an error showing the arithmetic) [train.adjust_accumulation]")
    r = parser.add_argument_group("run")
    r.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue from OUTPUT/checkpoint.pt, or from PATH (a checkpoint or a run "
                        "directory); without --config the run's own config.yaml is used")
    r.add_argument("--overwrite", action="store_true", help="start afresh in a directory that holds a run")
    r.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar: a log line per logging step")
    r.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def resolve_config(args: argparse.Namespace) -> Any:
    """The config: the YAML file (or the resumed run's), then ``key=value``, then flags."""
    given = vars(args)
    for flag in ("shard", "num_shards"):
        if flag in given:
            raise ConfigError(f"--{flag.replace('_', '-')} is set by torchrun, not by hand",
                              "each rank reads shard RANK of WORLD_SIZE; run under torchrun "
                              "--nproc_per_node=N for several")
    overrides: dict[str, Any] = {}
    # --report_to takes one or more names (nargs="+"): key=value overrides written after it are overrides
    for item in args.overrides + [v for v in given.get("report_to", []) if "=" in v]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"cannot read the override {item!r}",
                              "write overrides as section.key=value, e.g. model.n_layer=8")
        overrides[key.strip()] = value
    for dest, key in FLAG_KEYS.items():
        if dest in given:
            value = given[dest]
            if dest == "epochs" and value == 0:
                value = None  # the shared source flags use 0 for "forever"
            if dest == "data_files" and isinstance(value, list) and len(value) == 1:
                value = value[0]
            if dest == "report_to":  # --report_to tensorboard wandb, or tensorboard,wandb
                value = [name for item in value if "=" not in item for name in item.split(",") if name]
            overrides[key] = value
    path = args.config
    if path is None and args.resume:
        path = _resumed_config(args.resume, given.get("output"))
    if args.resume not in (None, True) and "output" not in given:
        # `--resume runs/x`: the run continues in its own directory, wherever it was started from
        where = Path(args.resume)
        overrides["train.output_dir"] = str(where.parent if where.suffix == ".pt" else where)
    return load_config(path, overrides)


def _resumed_config(resume: Any, output: str | None) -> str:
    """config.yaml of the run ``--resume`` points at."""
    if resume is True:
        if output is None:
            raise ConfigError("--resume without --config needs --output (the run directory)",
                              "pass --output runs/NAME, or --resume runs/NAME, or --config")
        run_dir = Path(output)
    else:
        where = Path(resume)
        run_dir = where.parent if where.suffix == ".pt" else where
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"no config.yaml in {str(run_dir)!r} to resume with",
                          "pass --config with the run's settings, or point --resume at a run "
                          "directory written by train-streaming")
    return str(config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _logging_to_stderr(args.verbose):
        return run_main(lambda: _run(args), interrupted="aborted (no checkpoint written for the unfinished step)")


@contextlib.contextmanager
def _logging_to_stderr(verbose: bool) -> Iterator[None]:
    """hfstream's INFO lines (run description, evaluations, samples) on stderr, for this call."""
    logger = logging.getLogger("hfstream")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    quiet = [logging.getLogger(n) for n in ("hfstream.tokens.encoder", "hfstream.source.corpus", "hfstream.loader")]
    saved = (logger.level, logger.propagate, [q.level for q in quiet])
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    for q in quiet:
        q.setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        for q, level in zip(quiet, saved[2]):
            q.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    from hfstream.train.report import done_line
    from hfstream.train.trainer import train  # torch: only when training

    config = resolve_config(args)
    if args.print_config:
        print(config_to_yaml(config), end="")
        return 0
    summary = train(config, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    code = {None: 0, "SIGTERM": EXIT_SIGTERM}.get(summary.get("stopped_by"), EXIT_SIGINT)
    if summary.get("world_size", 1) > 1 and not _is_rank0():
        return code
    print(summary["message"] if summary.get("complete") else done_line(summary))
    return code


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    raise SystemExit(main())
