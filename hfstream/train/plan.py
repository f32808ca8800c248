"""A run's data plan: the held-out documents, the tokenizer (given, resumed or trained from the stream), this rank's loader.

Every source is opened through :func:`hfstream.sources.open_source`: the run's data is a
dataset (``data.dataset``) or a mixture (``data.streams``), and the same door turns either
into a DocumentSource for the held-out head, the tokenizer's documents and the loader.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from hfstream.errors import ConfigError
from hfstream.loader.elastic import merge_states
from hfstream.loader.loader import StreamingTextDataLoader
from hfstream.mixing.streams import sorted_streams
from hfstream.source.base import DocumentSource
from hfstream.source.heldout import ExcludingSource, read_head, text_id
from hfstream.sources import open_source
from hfstream.tokens.encoder import TextEncoder
from hfstream.tokens.tokenizer_trainer import save_tokenizer, tokenizer_from_json, train_from_corpus
from hfstream.train.config import Config, data_source_keys
from hfstream.train.distributed import Ranks, broadcast_object
from hfstream.train.hf_model import model_directory

log = logging.getLogger("hfstream.train")


def source_options(config: Config) -> dict[str, Any]:
    """The data section's source options (everything but shard and limits), file-order seed included."""
    seed = config.train.seed if config.data.shuffle_files else None
    return {key: getattr(config.data, key) for key in data_source_keys()
            if key not in ("dataset", "max_samples", "epochs")} | {"seed": seed}


def run_data(config: Config) -> Any:
    """What the run reads, as ``open_source`` takes it: the dataset name, or the mixture."""
    d = config.data
    return d.dataset if not d.streams else {"streams": d.streams, "epoch_size": d.epoch_size}


def read_heldout(config: Config) -> list[str]:
    """The first ``data.eval_docs`` documents of the whole stream (shard 0 of 1, epoch 0).

    For a mixture: the head of each stream, ``eval_docs`` split evenly between them.
    """
    d = config.data
    if not d.eval_docs:
        return []
    if d.streams:
        streams = sorted_streams(d.streams)
        per_stream = -(-d.eval_docs // len(streams))
        heads: list[str] = []
        for stream in streams:
            with stream.open_source(max_samples=per_stream, epochs=1) as source:
                heads += read_head(source, per_stream)
        return heads
    with open_source(d.dataset, batch_size=min(d.fetch_batch_size, d.eval_docs), max_samples=d.eval_docs,
                     **source_options(config)) as source:
        return read_head(source, d.eval_docs)


def tokenizer_path(config: Config) -> str | None:
    """``tokenizer.path``; else, for a transformers model from a local directory, its tokenizer.json
    (run_clm's default: the model's own tokenizer); else None (train one)."""
    if config.tokenizer.path is not None:
        return config.tokenizer.path
    directory = model_directory(config.model)
    if directory is not None and (directory / "tokenizer.json").is_file():
        return str(directory)
    return None


def prepare_tokenizer(config: Config, ddp: Ranks, output: Path, heldout: list[str], resuming: bool) -> TextEncoder:
    """The run's TextEncoder: ``tokenizer.path`` (or the model directory's), else the run's own,
    else one trained now.

    A trained tokenizer never sees the held-out documents and is saved as OUTPUT/tokenizer.json;
    rank 0 trains it and sends it to the other ranks.
    """
    tc = config.tokenizer
    own = output / "tokenizer.json"
    given = tokenizer_path(config)
    if given is not None:
        source: Any = given
        if ddp.is_main and not resuming:
            encoder = TextEncoder(source, backend=tc.backend)
            save_tokenizer(encoder.tokenizer, output)  # the run directory is self-contained
            return encoder
    elif resuming:
        if not own.is_file():
            raise ConfigError(f"the run being resumed has no tokenizer at {str(own)!r}",
                              "pass the tokenizer it was trained with: --tokenizer PATH")
        source = own
    else:
        text = train_tokenizer_now(config, output, heldout) if ddp.is_main else None
        source = tokenizer_from_json(broadcast_object(ddp, text))
    return TextEncoder(source, backend=tc.backend)


def train_tokenizer_now(config: Config, output: Path, heldout: list[str]) -> str:
    """Train the run's tokenizer from the stream (rank 0); returns its JSON."""
    tc, d = config.tokenizer, config.data
    held = {text_id(x) for x in heldout}
    log.info("no tokenizer given: training a %d-token byte-level BPE on up to %d documents of %s",
             tc.vocab_size, tc.max_samples, d.dataset if not d.streams else "the mixture")
    with tokenizer_source(config, len(heldout)) as source:  # one pass at most
        tokenizer, report = train_from_corpus(
            source, tc.max_samples, tc.vocab_size, min_frequency=tc.min_frequency,
            special_tokens=tc.special_tokens, holdout=heldout, dataset=source.name,
            skip=(lambda x: text_id(x) in held) if held else None,
            progress=sys.stderr.isatty())
    save_tokenizer(tokenizer, output, report)
    log.info("%s", report.summary())
    return tokenizer.to_str()


def tokenizer_source(config: Config, num_heldout: int) -> DocumentSource:
    """The documents a tokenizer is trained on: the dataset, or the mixture mixed by documents
    (relative weights kept, absolute ones made equal, ``tokenizer.max_samples`` per epoch)."""
    d = config.data
    if not d.streams:
        return open_source(d.dataset, batch_size=d.fetch_batch_size, **source_options(config))
    streams = []
    for raw in d.streams:
        stream = {k: v for k, v in raw.items() if k not in ("proportion", "repeat", "choose", "size")}
        stream["proportion"] = raw.get("proportion") or 1.0
        streams.append(stream)
    return open_source(streams, epoch_size=config.tokenizer.max_samples + num_heldout, seed=config.train.seed)


def make_loader(config: Config, ddp: Ranks, encoder: TextEncoder, heldout: list[str],
                device: torch.device, schedule_ranks: int = 1) -> StreamingTextDataLoader:
    """This rank's StreamingTextDataLoader over shard ``rank`` of ``world_size``, held-out docs excluded
    (with position ids when the model masks attention by document); with ``data.virtual_shards``,
    over the virtual shards this rank owns."""
    d, t = config.data, config.train
    # document-masked attention needs the packer's document boundaries (batch.positions)
    common = {"prefetch": d.prefetch, "pin_memory": device.type == "cuda", "with_positions": config.model.doc_mask,
              "record_docs": t.record_docs, "token_cache": d.token_cache, "token_cache_bytes": d.token_cache_bytes}
    if d.virtual_shards:
        return _elastic_loader(config, ddp, encoder, heldout, schedule_ranks, common)
    if d.streams and d.mix_by == "tokens":  # one pipeline per stream; every row from one stream
        return StreamingTextDataLoader(
            d.streams, encoder, t.batch_size, config.model.seq_len, d.shuffle_buffer_size, seed=t.seed,
            mix_by="tokens", epoch_size=d.epoch_size, batching_method=d.batching_method, shard=ddp.rank,
            num_shards=ddp.world_size, epochs=d.epochs, wrap_source=lambda s: ExcludingSource(s, heldout),
            **common)
    data_options = {} if d.streams else {"batch_size": d.fetch_batch_size, "max_samples": d.max_samples,
                                         **source_options(config)}
    source = open_source(run_data(config), mixture_defaults={"seed": t.seed}, shard=ddp.rank,
                         num_shards=ddp.world_size, epochs=d.epochs, **data_options)
    try:  # the loader does not own a source it is handed: the trainer closes loader.source
        return StreamingTextDataLoader(ExcludingSource(source, heldout), encoder, t.batch_size,
                                       config.model.seq_len, d.shuffle_buffer_size, seed=t.seed + ddp.rank,
                                       **common)
    except BaseException:
        source.close()
        raise


def _elastic_loader(config: Config, ddp: Ranks, encoder: TextEncoder, heldout: list[str], schedule_ranks: int,
                    common: dict[str, Any]) -> StreamingTextDataLoader:
    """The loader over this rank's virtual shards: one global row order for any ranks × workers."""
    d, t = config.data, config.train
    tokens = bool(d.streams) and d.mix_by == "tokens"
    data = d.streams if tokens else run_data(config)
    options = {} if d.streams else {"max_samples": d.max_samples, **source_options(config)}
    options.pop("seed", None)  # file order: fixed with virtual shards (config validation says so)
    mixing = {"mix_by": "tokens", "epoch_size": d.epoch_size, "batching_method": d.batching_method} if tokens else {}
    return StreamingTextDataLoader(
        data, encoder, t.batch_size, config.model.seq_len, d.shuffle_buffer_size, seed=t.seed,
        virtual_shards=d.virtual_shards, num_workers=d.num_workers, shard=ddp.rank, num_shards=ddp.world_size,
        epochs=d.epochs, wrap_source=functools.partial(ExcludingSource, excluded=heldout),
        global_batch=t.batch_size * t.gradient_accumulation_steps * ddp.world_size, schedule_ranks=schedule_ranks,
        **mixing, **options, **common)


def loader_state(config: Config, ckpt: dict[str, Any], rank: int) -> dict[str, Any]:
    """What this rank's loader resumes from: its own state, or (virtual shards) every rank's merged."""
    states = [r["loader"] for r in ckpt["ranks"]]
    return merge_states(states) if config.data.virtual_shards else states[rank]
