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
from dataclasses import asdict

from hfstream.cli.common import HelpFormatter, help_texts, run_main
from hfstream.cli.options import add_mixture_args, add_source_args, open_source_from_args
from hfstream.tokens.tokenizer_trainer import DEFAULT_SPECIAL_TOKENS, train_tokenizer_from_stream


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train-tokenizer-streaming",
                                     formatter_class=HelpFormatter,
                                     **help_texts(__doc__))
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
    return run_main(lambda: _run(args), interrupted="interrupted: nothing was written")


def _run(args: argparse.Namespace) -> int:
    # The source first: a bad path or option fails before the output directory is created.
    # max_samples counts trained documents (held-out ones aside), so the stream itself is unlimited.
    source = open_source_from_args(args, args.batch_size, max_samples=None)
    report = train_tokenizer_from_stream(
        source, args.max_samples, args.vocab_size, args.output, min_frequency=args.min_frequency,
        special_tokens=args.special_tokens, holdout_samples=args.holdout_samples, progress=not args.quiet)
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        print(report.summary())
        print(f"wrote {args.output}/tokenizer.json and {args.output}/tokenizer_report.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
