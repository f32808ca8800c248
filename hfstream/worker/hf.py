"""The ``datasets`` path: hub datasets and files read through ``load_dataset(streaming=True)``,
and which files a hub split reads (asked of ``load_dataset_builder`` by ``hfstream.worker.hub_files``).

The only module of hfstream that imports ``datasets``; it does so inside functions, so a
worker on the fast path never pays the import.
"""

from __future__ import annotations

from typing import Any

from hfstream.errors import DataFormatError, DatasetNotFoundError
from hfstream.source.spec import SourceSpec
from hfstream.worker.remote import raise_if_server_trouble
from hfstream.worker.rows import Chunks, ShardMode, _every_nth, epoch_file_order, shard_mode, skip_rows

_ITER_BATCH = 512


def local_rows(files: list[str], fmt: str, spec: SourceSpec, epoch: int, start: int,
               mode: ShardMode) -> Chunks:
    """This shard's chunks of local ``files`` in ``epoch`` from shard row ``start``, via datasets."""
    order = epoch_file_order(files, spec.seed, epoch)
    if mode == "files":
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
    try:
        ds = datasets.load_dataset(fmt, data_files=files, split="train", streaming=True, **kwargs)
    except FileNotFoundError as exc:
        raise_if_server_trouble(files)
        raise DatasetNotFoundError(f"cannot open {', '.join(files[:3])}: {exc}",
                                   "check the path or URL (and, for a URL, that the server serves it)") from None
    return _column_chunks(ds, spec.text_column, where=", ".join(files[:3]))


def hub_rows(spec: SourceSpec, epoch: int, start: int, forced_mode: str | None) -> Chunks:
    """This shard's chunks of a hub dataset in ``epoch`` from shard row ``start``.

    ``spec.revision`` is the commit the run reads (pinned by the caller at resolution).
    """
    import datasets

    try:
        ds = datasets.load_dataset(spec.dataset, spec.name, split=spec.split, revision=spec.revision,
                                   data_files=spec.data_files, streaming=True)
    except (FileNotFoundError, ValueError) as exc:
        raise hub_open_error(spec, exc) from exc
    if spec.seed is not None:
        # buffer_size=1: shuffle the order of the dataset's shards (files) only, per epoch.
        ds = ds.shuffle(seed=spec.seed, buffer_size=1)
        ds.set_epoch(epoch)
    if shard_mode(spec, ds.num_shards, forced=forced_mode) == "files":
        ds = ds.shard(num_shards=spec.num_shards, index=spec.shard, contiguous=False)
        return skip_rows(_column_chunks(ds, spec.text_column, spec.dataset), start)
    global_start = start * spec.num_shards + spec.shard
    chunks = skip_rows(_column_chunks(ds, spec.text_column, spec.dataset), global_start)
    return _every_nth(chunks, spec.num_shards)


def hub_open_error(spec: SourceSpec, exc: BaseException) -> DataFormatError:
    return DataFormatError(f"could not open hub dataset {spec.dataset!r} (name={spec.name!r}, split={spec.split!r}): "
                           f"{exc}", "check the id, config name and split on https://huggingface.co/datasets/"
                           f"{spec.dataset}")


def hub_data_files(spec: SourceSpec, sha: str) -> dict[str, Any]:
    """Which files ``load_dataset(spec..., streaming=True)`` reads at commit ``sha``, in its order,
    and whether hfstream's readers give the same rows (a ``hfstream.source.hub.HubFiles`` as a dict)."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(spec.dataset, spec.name, revision=sha, data_files=spec.data_files)
    except (FileNotFoundError, ValueError) as exc:
        raise hub_open_error(spec, exc) from exc
    splits = dict(builder.config.data_files or {})
    if spec.split not in splits:
        raise DataFormatError(f"hub dataset {spec.dataset!r} (name={spec.name!r}) has no split {spec.split!r}; "
                              f"the splits are: {', '.join(map(repr, splits)) or '(none)'}",
                              "pass split=NAME (--split NAME) with one of them")
    files = [str(f) for f in splits[spec.split]]
    why = _why_not_fast(builder, spec, files)
    return {"repo_id": spec.dataset, "sha": sha, "builder": builder.name, "files": files, "fast": not why,
            "why_not_fast": why}


def _why_not_fast(builder: Any, spec: SourceSpec, files: list[str]) -> str:
    """Why hfstream's readers would not give this builder's rows ("" when they would)."""
    config, name = builder.config, builder.name
    if name not in ("parquet", "json", "text"):
        return f"the {name} builder has no fast reader"
    if any("::" in f or not f.startswith("hf://") for f in files):
        return "files inside archives or off the hub"
    features = getattr(config, "features", None)
    if features is not None and getattr(features.get(spec.text_column), "dtype", None) not in ("string", "large_string"):
        return f"the card declares features that cast {spec.text_column!r}"
    options = {"parquet": {"columns": None, "filters": None},
               "json": {"field": None, "encoding": "utf-8"},
               "text": {"sample_by": spec.sample_by, "keep_linebreaks": False, "encoding": "utf-8"}}[name]
    differ = [key for key, value in options.items() if getattr(config, key, value) != value]
    return f"builder options {', '.join(differ)} are set" if differ else ""
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
