"""``hfstream info``: what a bug report needs: versions, native modules, tokenizer backends, CPUs, CUDA."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
from typing import Any

from hfstream import __version__
from hfstream.native import NATIVE_MODULES, native_status, require_native, use_native
from hfstream.source.builtin import cache_dir
from hfstream.tokens.encoder import default_threads, usable_cpus
from hfstream.train.config import example_configs_dir

LIBRARIES = ("torch", "tokenizers", "tiktoken", "datasets", "huggingface_hub", "pyarrow", "fsspec", "numpy",
             "websockets", "transformers", "Cython")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="versions, native modules, backends, CPUs and CUDA (for bug reports)",
                              description="Print what hfstream runs with: paste it into a bug report.")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=cmd_info)


def collect() -> dict[str, Any]:
    """Everything ``hfstream info`` prints, as plain data."""
    import torch  # the CUDA check needs it

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    return {
        "hfstream": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "native": native_status(), "native_allowed": use_native(), "native_required": require_native(),
        "native_modules": sorted(NATIVE_MODULES),
        "tokenizer_backends": {"tokenizers": versions["tokenizers"] is not None,
                               "tiktoken": versions["tiktoken"] is not None},
        "versions": versions,
        "cpus": {"os": os.cpu_count(), "usable": usable_cpus(), "tokenizer_threads": default_threads()},
        "cuda": {"available": cuda, "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                 if cuda else [], "torch_cuda": torch.version.cuda},
        "cache_dir": str(cache_dir()), "example_configs": str(example_configs_dir()),
    }


def cmd_info(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    native = ", ".join(f"{k}: {'native' if v else 'pure Python'}" for k, v in info["native"].items())
    libs = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v is not None)
    missing = ", ".join(k for k, v in info["versions"].items() if v is None)
    cpus = info["cpus"]
    cuda = info["cuda"]
    print(f"hfstream {info['hfstream']} on Python {info['python']} ({info['platform']})")
    print(f"native modules: {native}" + ("" if info["native_allowed"] else " (HFSTREAM_PURE_PYTHON=1)"))
    print(f"libraries: {libs}" + (f"; not installed: {missing}" if missing else ""))
    print(f"CPUs: {cpus['os']} ({cpus['usable']} usable; {cpus['tokenizer_threads']} tokenizer threads per process)")
    print(f"CUDA: {', '.join(cuda['devices']) if cuda['available'] else 'not available'} "
          f"(torch built for CUDA {cuda['torch_cuda']})")
    print(f"cache: {info['cache_dir']}; example configs: {info['example_configs']}")
    return 0
