"""The ``train-tokenizer-streaming`` command: a byte-level BPE tokenizer trained from a stream.

Usage::

    train-tokenizer-streaming --dataset builtin:python-docs --max-samples 1500 \\
        --vocab-size 4096 --output runs/tokenizer
    train-tokenizer-streaming --dataset HuggingFaceFW/fineweb --name sample-10BT \\
        --max-samples 1000000 --vocab-size 50257 --output runs/fineweb-tokenizer

Writes OUTPUT/tokenizer.json and OUTPUT/tokenizer_report.json (documents and bytes read, time,
vocabulary size, bytes per token on held-out documents from the head of the stream).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

from hfstream.cli.options import add_mixture_args, add_source_args, open_source, source_options
from hfstream.errors import ConfigError, HfStreamError
from hfstream.tokens.tokenizer_trainer import DEFAULT_SPECIAL_TOKENS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train-tokenizer-streaming",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    add_source_args(parser, dataset_required=False)
    add_mixture_args(parser)
    g = parser.add_argument_group("tokenizer")
    g.add_argument("--vocab-size", type=int, required=True,
                   help="vocabulary size, special tokens and the 256 byte symbols included")
    g.add_argument("--min-frequency", type=int, default=2, help="merge only pairs seen this often")
    g.add_argument("--special-tokens", nargs="+", default=list(DEFAULT_SPECIAL_TOKENS),
                   metavar="TOKEN", help="added first, never split (default: <|endoftext|>)")
    g.add_argument("--holdout-samples", type=int, default=None,
                   help="documents from the head of the stream kept out of training, for "
                        "measuring bytes per token (default: max-samples/10, at most 500; 0: none)")
    g.add_argument("--output", "--output_dir", required=True, metavar="DIR",
                   help="directory for tokenizer.json and tokenizer_report.json")
    g.add_argument("--batch-size", type=int, default=1000, help="documents per worker message")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(name)s %(levelname)s: %(message)s")
    from hfstream.tokens.tokenizer_trainer import train_tokenizer_from_stream

    options = source_options(args)
    max_samples = options.pop("max_samples")
    try:
        source = open_source(args) if args.streams else args.dataset  # a mixture, or a dataset name
        if source is None:
            raise ConfigError("no data given", "pass --dataset DATASET (or --streams mixture.yaml)")
        if args.streams:
            options = {}
        report = train_tokenizer_from_stream(
            source, max_samples, args.vocab_size, args.output,
            min_frequency=args.min_frequency, special_tokens=args.special_tokens,
            holdout_samples=args.holdout_samples, progress=not args.quiet,
            **({"batch_size": args.batch_size, **options} if not args.streams else {}))
    except HfStreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        print(report.summary())
        print(f"wrote {args.output}/tokenizer.json and {args.output}/tokenizer_report.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
