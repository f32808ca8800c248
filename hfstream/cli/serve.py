"""``hfstream serve``: stream any hfstream source to EIR (or any EIR-protocol client) over WebSocket.

Usage::

    hfstream serve --dataset builtin:python-docs                      # ws://127.0.0.1:8000/ws
    hfstream serve --dataset 'data/*.parquet' --sequence-length 48    # 48-word samples
    hfstream serve --dataset c4.jsonl.gz --sequence-length 0          # one sample per document
    hfstream serve --streams mixture.yaml                             # a mixture of datasets
    HFSTREAM_WS_TOKEN=s3cret hfstream serve --dataset ... --host 0.0.0.0

EIR's output config then names the server: ``output_source: ws://127.0.0.1:8000/ws`` (add
``?token=s3cret`` when the server has a token) and ``output_name: text_output``.
"""

from __future__ import annotations

import argparse
import logging
import os

from hfstream.cli.common import HelpFormatter
from hfstream.cli.options import add_mixture_args, add_source_args, open_source_from_args
from hfstream.eir.runner import run_server
from hfstream.eir.server import ServerConfig

TOKEN_ENV = "HFSTREAM_WS_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand to the ``hfstream`` parser."""
    p = subparsers.add_parser(
        "serve", help="serve a dataset over WebSocket with EIR's streaming protocol",
        description="Serve a dataset over WebSocket with EIR's streaming protocol v1.0; the data "
                    "repeats forever unless --epochs, --max-samples or --max-iterations end it.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=HelpFormatter)
    add_source_args(p, dataset_required=False)
    add_mixture_args(p)
    p.set_defaults(epochs=0, func=cmd_serve)  # a server repeats its data: EIR needs >= 10,000 samples
    p.add_argument("--batch-size", type=int, default=1000, help="documents per worker batch")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    g.add_argument("--port", type=int, default=8000, help="TCP port to listen on (0: any free port)")
    g.add_argument("--path", default="/ws", help="the WebSocket endpoint (EIR's tutorial: /ws)")
    g.add_argument("--output-name", default="text_output",
                   help="the sequence output's name; must match output_name in EIR's output config")
    g.add_argument("--sequence-length", type=int, default=512,
                   help="words per sample (0: one sample per document). Words, not tokens: EIR's "
                        "max_length counts its own tokens (~1.3 per word with BPE) and crops longer "
                        "samples, so ~0.75 x max_length words uses all the text")
    g.add_argument("--separator", default="<|endoftext|>",
                   help="word put between two documents in a chunk ('' for none)")
    g.add_argument("--max-iterations", type=int, default=None,
                   help="answer [\"terminate\"] after this many samples per pass (until a reset)")
    g.add_argument("--token", default=None,
                   help=f"shared secret clients must send: ?token=TOKEN in the URL (as pasted, '+', '/' "
                        f"and '=' included, or percent-encoded) or Authorization: Bearer TOKEN; "
                        f"default ${TOKEN_ENV}, which keeps it out of the process list")
    g.add_argument("--max-batch-size", type=int, default=4096, help="largest getData batch served")
    g.add_argument("--max-message-bytes", type=int, default=4 << 20, help="largest client frame accepted")
    g.add_argument("--max-connections", type=int, default=128,
                   help="connections served at once; more get HTTP 503")
    g.add_argument("--max-pending-bytes", type=int, default=256 << 20,
                   help="memory all replies not yet read by their clients may hold together (default "
                        "256 MiB); a getData that does not fit waits, then gets a 'busy' error")
    g.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin allowed to connect (repeatable; '*': any). Others get "
                        "HTTP 403, so web pages cannot read the data")
    g.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a name clients may use for this server in the Host header (repeatable; '*': "
                        "any). Accepted without it: loopback names and addresses, the --host address, "
                        "and on a non-loopback --host any IP address and this machine's name (any name "
                        "with a token). Others get HTTP 403: DNS rebinding protection")
    g.add_argument("--ping-interval", type=float, default=45.0,
                   help="ping a connection after this many seconds without a message from its client "
                        "(0: never). Only idle connections are pinged, and pings never time out: every "
                        "frame restarts the 30 s reply timeout of EIR's client, so pinging a client "
                        "that waits for a reply would make a missing reply hang it instead of failing "
                        "after 30 s; 45 s > 30 s also leaves EIR 0.3.1 (heartbeat every 30 s) unpinged")
    g.add_argument("--state-file", default=None, metavar="PATH",
                   help="keep the validation ids and the cursor in this file, so that a restarted "
                        "server still leaves the ids out and continues where it was (EIR sends its "
                        "validation ids only once per run)")


def cmd_serve(args: argparse.Namespace) -> int:
    logging.getLogger("hfstream.eir").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.verbose:  # our per-connection lines, not websockets' line per frame
        logging.getLogger("websockets").setLevel(logging.INFO)
    config = ServerConfig(
        host=args.host, port=args.port, path=args.path, output_name=args.output_name,
        sequence_length=args.sequence_length, separator=args.separator,
        max_iterations=args.max_iterations, token=args.token or os.environ.get(TOKEN_ENV) or None,
        max_batch_size=args.max_batch_size, max_message_bytes=args.max_message_bytes,
        max_connections=args.max_connections, allowed_origins=tuple(args.allow_origin),
        allowed_hosts=tuple(args.allow_host), max_pending_bytes=args.max_pending_bytes,
        ping_interval=args.ping_interval or None, state_file=args.state_file)
    # A corpus or a mixture: the server takes any DocumentSource. A corpus's read-ahead is small
    # since the server buffers samples itself.
    overrides = {} if args.streams else {"queue_bytes": 16 << 20}
    with open_source_from_args(args, args.batch_size, **overrides) as source:
        run_server(source, config, name=args.dataset or f"mixture {args.streams}")
    return 0
