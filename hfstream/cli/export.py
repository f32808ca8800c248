"""``hfstream export``: a run's checkpoint as a Hugging Face model directory (model + tokenizer).

Usage::

    hfstream export runs/tiny runs/tiny-hf              # the run's checkpoint.pt and tokenizer.json
    hfstream export runs/tiny/checkpoint.pt out --overwrite

Then, anywhere transformers runs::

    model = AutoModelForCausalLM.from_pretrained("runs/tiny-hf")
    tokenizer = AutoTokenizer.from_pretrained("runs/tiny-hf")

The built-in GPT becomes a GPT-2 (``GPT2LMHeadModel``) with the same logits; a transformers
model is saved as it is. Needs transformers: ``pip install "hfstream[hf]"``.
"""

from __future__ import annotations

import argparse
import logging


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand to the ``hfstream`` parser."""
    p = subparsers.add_parser(
        "export", help="write a run's model and tokenizer as a Hugging Face model directory",
        description="Write the model of a train-streaming run (its checkpoint) and its tokenizer as a "
                    "Hugging Face model directory (save_pretrained format).",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_DIR", help="a run directory (holding checkpoint.pt and tokenizer.json), "
                                                  "or a checkpoint.pt")
    p.add_argument("out", metavar="OUT", help="the directory to write (created; must be empty)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is not empty")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from hfstream.train.export import export_run  # torch and transformers: only when exporting

    logging.getLogger("hfstream.train").setLevel(logging.INFO)
    out = export_run(args.run, args.out, overwrite=args.overwrite)
    print(f"wrote {out} (model and tokenizer); load it with AutoModelForCausalLM.from_pretrained({str(out)!r}) "
          f"and AutoTokenizer.from_pretrained({str(out)!r})")
    return 0
