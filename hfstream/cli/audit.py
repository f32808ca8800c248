"""``hfstream audit RUN_DIR``: prove from a run's docs logs (train.record_docs) that every document was trained on exactly once.

Reads every rank's docs-rankR.jsonl across every segment of the run (resumes included) and prints,
per epoch and stream: the documents expected (read, minus those filtered out, held out or
without tokens), seen once, seen more than once, missing, held out, filtered, still in the
loader's buffers at the end, and the tail of a stream that ended (less than a batch); then the
tokens trained per stream (with a token mixture's budget share). Exit 0 when clean, 1 on any loss
or repetition (naming the documents and where they were seen), 2 when the logs cannot be used.
"""

from __future__ import annotations

import argparse
import json

from hfstream.cli.common import help_texts
from hfstream.train.audit import EXIT_CLEAN, EXIT_PROBLEMS, audit, report_text, to_plain


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="prove that a run trained on every document exactly once "
                                            "(needs train.record_docs)", **help_texts(__doc__))
    p.add_argument("run_dir", metavar="RUN_DIR", help="the train-streaming output directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--show", type=int, default=10, metavar="N", help="describe at most N problems")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    out = audit(args.run_dir, show=args.show)
    print(json.dumps(to_plain(out), indent=2) if args.json else report_text(out, args.run_dir))
    return EXIT_CLEAN if out.clean else EXIT_PROBLEMS
