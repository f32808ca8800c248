"""``hfstream cache``: what the token cache holds, and clearing it.

Usage::

    hfstream cache info                  # where it is, its budget, each cached stream
    hfstream cache info --json
    hfstream cache clear                 # delete every cached token chunk
    hfstream cache info --dir /data/tok  # another cache directory (default $HFSTREAM_CACHE/tokens)

The loader writes the token ids of the documents it reads there (``token_cache=``), so later
passes and runs skip reading text and tokenizing; the least recently used chunks go when it
grows past its budget (``$HFSTREAM_TOKEN_CACHE_BYTES``, default 16 GiB).
"""

from __future__ import annotations

import argparse

import orjson

from hfstream.source.token_cache import TokenCache


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cache`` subcommand to the ``hfstream`` parser."""
    p = subparsers.add_parser("cache", help="show or clear the token cache",
                              description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["info", "clear"], help="info: what it holds; clear: delete it")
    p.add_argument("--dir", default=None, help="the cache directory (default: $HFSTREAM_CACHE/tokens)")
    p.add_argument("--json", action="store_true", help="print info as JSON")
    p.set_defaults(func=cmd_cache)


def cmd_cache(args: argparse.Namespace) -> int:
    cache = TokenCache(args.dir)
    if args.action == "clear":
        freed = cache.clear()
        print(f"cleared {cache.root}: {freed / 1e6:,.1f} MB freed")
        return 0
    info = cache.info()
    if args.json:
        print(orjson.dumps(info).decode())
        return 0
    print(f"token cache: {info['root']}\nbudget: {info['budget'] / 1e9:,.1f} GB "
          f"(HFSTREAM_TOKEN_CACHE_BYTES); used: {info['bytes'] / 1e6:,.1f} MB in {info['chunks']} chunks")
    for s in sorted(info["streams"], key=lambda s: -s["bytes"]):
        print(f"  {s['bytes'] / 1e6:10,.1f} MB  {s['chunks']:4} chunks  {s.get('dataset', '?')} "
              f"shard {s.get('shard', '?')}  tokenizer {s.get('tokenizer', '?')}")
    return 0
