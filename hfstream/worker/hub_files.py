"""One-shot child: which data files ``datasets`` reads for a hub split at a commit, as one JSON line.

Run by ``hfstream.source.hub.resolve_hub`` (``python -m hfstream.worker.hub_files --spec JSON
--revision SHA``) so that neither the parent nor the worker imports ``datasets``. Prints a
``HubFiles`` as JSON, or ``{"error": {...}}`` (``"transient": true`` for a network error worth
retrying), always exit status 0 or 1 with that last line on stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys

import orjson

from hfstream.source.hub import transient_or_error
from hfstream.source.spec import SourceSpec
from hfstream.worker.hf import hub_data_files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hfstream.worker.hub_files", description=__doc__.split("\n")[0])
    p.add_argument("--spec", required=True, help="the SourceSpec as JSON")
    p.add_argument("--revision", required=True, help="the commit sha to resolve at")
    args = p.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    try:
        answer = hub_data_files(SourceSpec.from_json(args.spec), args.revision)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, typed
        logging.getLogger("hfstream.worker.hub_files").warning("%s: %s", type(exc).__name__, exc)
        print(orjson.dumps({"error": transient_or_error(exc)}).decode(), flush=True)
        return 1
    print(orjson.dumps(answer).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
