"""The ``datasets`` path: hub datasets, and local files read through ``load_dataset(streaming=True)``.

The only module of hfstream that imports ``datasets``; it does so inside functions, so a
worker on the fast path never pays the ~3 s import.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse

from hfstream.errors import DataFormatError, DatasetNotFoundError, OfflineError
from hfstream.source.spec import SourceSpec
from hfstream.worker.failures import explained_datasets
from hfstream.worker.rows import Chunks, _every_nth, epoch_file_order, shard_mode, skip_rows

_ITER_BATCH = 512


def local_rows(files: list[str], fmt: str, spec: SourceSpec, epoch: int, start: int) -> Chunks:
    """This shard's chunks of local ``files`` in ``epoch`` from shard row ``start``, via datasets."""
    order = epoch_file_order(files, spec.seed, epoch)
    if shard_mode(spec, len(order)) == "files":
        return skip_rows(_load_local(order[spec.shard::spec.num_shards], fmt, spec), start)
    global_start = start * spec.num_shards + spec.shard
    return _every_nth(skip_rows(_load_local(order, fmt, spec), global_start), spec.num_shards)


def _load_local(files: list[str], fmt: str, spec: SourceSpec) -> Chunks:
    import datasets

    kwargs: dict[str, Any] = {}
    if fmt == "text":
        kwargs.update(sample_by=spec.sample_by, encoding_errors=spec.encoding_errors)
    elif fmt == "json" and spec.encoding_errors != "strict":
        kwargs.update(encoding_errors=spec.encoding_errors)
    elif fmt == "csv" and all(f.endswith((".tsv", ".tsv.gz")) for f in files):
        kwargs.update(sep="\t")

    def chunks() -> Chunks:  # opening reads the first rows too: a bad file may fail here already
        try:
            ds = datasets.load_dataset(fmt, data_files=files, split="train", streaming=True, **kwargs)
        except FileNotFoundError as exc:
            _raise_if_server_trouble(files)
            raise DatasetNotFoundError(f"cannot open {', '.join(files[:3])}: {exc}",
                                       "check the path or URL (and, for a URL, that the server serves it)") from None
        yield from _column_chunks(ds, spec.text_column, where=", ".join(files[:3]))

    return explained_datasets(chunks(), files)


def _raise_if_server_trouble(files: list[str]) -> None:
    """datasets reports an HTTP 5xx/429 at open time as "Unable to find": tell transient from missing.

    Raises:
        ConnectionError: a remote file whose server is down or overloaded (the worker retries).
    """
    import urllib.error
    import urllib.request

    for url in (f for f in files if f.startswith(("http://", "https://"))):
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                raise ConnectionError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(f"{url}: {exc}") from None


def hub_rows(spec: SourceSpec, epoch: int, start: int) -> Chunks:
    """This shard's chunks of a hub dataset in ``epoch`` from shard row ``start``."""
    check_hub_reachable(spec.dataset)
    import datasets

    try:
        ds = datasets.load_dataset(spec.dataset, spec.name, split=spec.split, revision=spec.revision,
                                   data_files=spec.data_files, streaming=True)
    except (FileNotFoundError, ValueError) as exc:
        raise DataFormatError(f"could not open hub dataset {spec.dataset!r} "
                              f"(name={spec.name!r}, split={spec.split!r}): {exc}",
                              "check the id, config name and split on https://huggingface.co/datasets/"
                              f"{spec.dataset}") from exc
    if spec.seed is not None:
        # buffer_size=1: shuffle the order of the dataset's shards (files) only, per epoch.
        ds = ds.shuffle(seed=spec.seed, buffer_size=1)
        ds.set_epoch(epoch)
    if shard_mode(spec, ds.num_shards) == "files":
        ds = ds.shard(num_shards=spec.num_shards, index=spec.shard, contiguous=False)
        return skip_rows(_column_chunks(ds, spec.text_column, spec.dataset), start)
    global_start = start * spec.num_shards + spec.shard
    chunks = skip_rows(_column_chunks(ds, spec.text_column, spec.dataset), global_start)
    return _every_nth(chunks, spec.num_shards)


def _column_chunks(ds: Any, column: str, where: str) -> Chunks:
    names = ds.column_names
    if names is not None and column not in names:
        raise DataFormatError(f"{where}: no column {column!r}; the columns are: {', '.join(map(repr, names))}",
                              "pass text_column=NAME (--text-column NAME) with the column that holds the text")
    if names is not None and len(names) > 1:
        ds = ds.select_columns([column])
    for batch in ds.iter(batch_size=_ITER_BATCH):
        if column not in batch:
            raise DataFormatError(f"{where}: no column {column!r}; the columns are: "
                                  f"{', '.join(map(repr, batch))}",
                                  "pass text_column=NAME (--text-column NAME)")
        yield batch[column]


def check_hub_reachable(dataset: str, timeout: float = 3.0) -> None:
    """Fail fast, with a useful message, when the hub cannot be reached.

    Raises:
        OfflineError: HF_HUB_OFFLINE is set, or no TCP connection to the hub endpoint.
    """
    hint = ("use local files instead (--dataset 'path/to/*.parquet', a directory, or a .jsonl file) "
            "or the built-in corpus builtin:python-docs; a mirror can be set with HF_ENDPOINT")
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise OfflineError(f"{dataset!r} is a hub dataset, but HF_HUB_OFFLINE is set", hint)
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # a proxy decides reachability; let datasets try through it
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise OfflineError(
            f"{dataset!r} is not a local path, and the Hugging Face hub ({host}:{port}) cannot be "
            f"reached to stream it: {exc.__class__.__name__}: {exc}",
            f"you appear to be offline: {hint}") from None
