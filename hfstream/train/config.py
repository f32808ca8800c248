"""The training config's schema: typed sections that YAML files mirror, and their checks.

A config file has one mapping per section (``data``, ``tokenizer``, ``model``, ``optim``,
``train``, ``sample``), each key a field of the matching dataclass below; anything left out
keeps its default. Overrides name a field as ``section.key`` (or just ``key`` when only one
section has it)::

    config = load_config("configs/tiny.yaml", {"train.max_steps": 50, "n_layer": 2})

The ``data`` section's source options are generated from :class:`hfstream.source.spec.SourceSpec`
(one list of options for the CLIs, the corpus and this file). Reading, coercion and the
errors that name the closest valid key are :mod:`hfstream.typed_config`'s.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from hfstream.errors import ConfigError
from hfstream.mixing.streams import sorted_streams
from hfstream.source.spec import PLACEMENT_FIELDS, source_options
from hfstream.typed_config import Schema

log = logging.getLogger("hfstream.config")


@dataclass
class DataOptions:
    """The data section's own keys (what the trainer does with the stream)."""

    shuffle_files: bool = False           # file order shuffled per epoch (seeded by train.seed);
    #   then each epoch's shards are disjoint, but a file may move to another rank next epoch
    fetch_batch_size: int = 1000          # documents per worker message
    shuffle_buffer_size: int = 10_000     # documents in the loader's shuffle buffer (0: no shuffling)
    prefetch: int = 4                     # batches the loader prepares ahead
    eval_docs: int = 200                  # held-out documents (from the head of the stream)
    token_cache: bool = True              # keep documents' token ids for later passes and runs
    token_cache_bytes: Union[int, str, None] = None   # its disk budget ("20G"); None: 16 GiB
    # Elastic runs (README "Elastic runs"): K fixed shards, one global row order for any ranks x workers
    virtual_shards: int = 0               # K (0: off); a multiple of every ranks x num_workers the run uses
    num_workers: int = 0                  # DataLoader worker processes per rank (needs virtual_shards)
    # A mixture instead of `dataset` (MosaicML vocabulary; see hfstream.mixing):
    streams: list[dict[str, Any]] | None = None   # [{dataset: ..., proportion|repeat|choose: ..., label: ...}]
    epoch_size: Union[int, str, None] = None      # samples (or tokens with mix_by: tokens); "64M" works
    mix_by: Literal["samples", "tokens"] = "samples"
    batching_method: Literal["random", "stratified", "per_stream", "device_per_stream"] = "random"


#: SourceSpec fields that are not data keys: each rank's placement comes from torchrun, and the
#: file-order seed is train.seed when data.shuffle_files is set.
NOT_DATA_KEYS = (*PLACEMENT_FIELDS, "seed")
#: data-section defaults that differ from the corpus's: the built-in corpus, repeated forever.
DATA_DEFAULTS = {"dataset": "builtin:python-docs", "epochs": None}


def data_source_keys() -> list[str]:
    """The data section's keys that are source options (forwarded to the corpus as they are)."""
    return [opt.name for opt in source_options() if opt.name not in NOT_DATA_KEYS]


def _data_fields() -> list[tuple[str, Any, Any]]:
    """The source options (as the trainer defaults them) first, then the trainer's own keys."""
    own = typing.get_type_hints(DataOptions)
    return ([(opt.name, opt.annotation, field(default=DATA_DEFAULTS.get(opt.name, opt.default),
                                              metadata={"help": opt.help}))
             for opt in source_options() if opt.name not in NOT_DATA_KEYS]
            + [(f.name, own[f.name], field(default=f.default)) for f in dataclasses.fields(DataOptions)])


DataConfig = dataclasses.make_dataclass("DataConfig", _data_fields(), namespace={
    "__module__": __name__,
    "__doc__": "What to stream and how: every SourceSpec option (except per-rank placement and the "
               "file-order seed) plus the trainer's own keys (DataOptions). Each rank reads shard "
               "``rank`` of ``world_size``; the first ``eval_docs`` documents are held out."})


@dataclass
class TokenizerConfig:
    """The tokenizer: a ``tokenizer.json`` to use, or how to train one from the stream first."""

    path: str | None = None               # None: train one (saved as OUTPUT/tokenizer.json)
    vocab_size: int = 8192
    max_samples: int = 100_000            # documents to train it on
    min_frequency: int = 2
    special_tokens: list[str] = field(default_factory=lambda: ["<|endoftext|>"])
    backend: Literal["auto", "tokenizers", "tiktoken"] = "auto"


@dataclass
class ModelConfig:
    """The model: the built-in GPT (:mod:`hfstream.train.model`), or a transformers causal LM
    (:mod:`hfstream.train.hf_model`) when ``name_or_path`` or ``config_name`` is set."""

    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    seq_len: int = 256
    dropout: float = 0.0
    bias: bool = False
    vocab_size: int | None = None         # None: the tokenizer's, rounded up to a multiple of 64
    doc_mask: bool = False                # built-in GPT: attend within documents only
    name_or_path: str | None = None       # transformers model (local directory or hub id): its weights
    config_name: str | None = None        # transformers config.json (or its directory): from scratch


@dataclass
class OptimConfig:
    """AdamW with decoupled weight decay groups, linear warmup and cosine decay."""

    learning_rate: float = 6e-4
    min_lr_ratio: float = 0.1             # the cosine ends at learning_rate * min_lr_ratio
    warmup_steps: int = 100
    decay_steps: int | None = None        # None: train.max_steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0                # max gradient norm; 0 disables clipping


@dataclass
class TrainConfig:
    """The loop: steps, batch, logging, evaluation, checkpoints, device."""

    output_dir: str = "runs/default"
    max_steps: int = 1000
    batch_size: int = 16                  # sequences per device per micro-step
    gradient_accumulation_steps: int = 1
    logging_steps: int = 10
    eval_steps: int = 100
    eval_batches: int = 20                # at most this many batches of held-out data
    save_steps: int = 500
    seed: int = 0
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: bool = False
    deterministic: bool = False           # torch.use_deterministic_algorithms
    record_batches: bool = False          # write a hash of every batch to batches-rankR.jsonl
    record_docs: bool = False             # log each row's documents to docs-rankR.jsonl (hfstream audit)
    adjust_accumulation: bool = False     # on a resume with other ranks, change gradient_accumulation_steps
    #   to keep the global batch (virtual shards); off, a changed global batch is an error
    plot: bool = True                     # training_curve.png
    report_to: list[Literal["none", "tensorboard", "wandb"]] = field(default_factory=list)  # + metrics.jsonl
    export: bool | None = None            # OUTPUT/hf/ at the end; None: when transformers is installed


@dataclass
class SampleConfig:
    """Text generated from fixed prompts during training (printed and saved to samples.jsonl)."""

    prompts: list[str] = field(default_factory=lambda: ["The"])
    sample_steps: int = 200               # 0: only at the end
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int | None = 50


@dataclass
class Config:
    """A whole training run."""

    data: DataConfig = field(default_factory=DataConfig)  # type: ignore[valid-type]
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig())
    model: ModelConfig = field(default_factory=lambda: ModelConfig())
    optim: OptimConfig = field(default_factory=lambda: OptimConfig())
    train: TrainConfig = field(default_factory=lambda: TrainConfig())
    sample: SampleConfig = field(default_factory=lambda: SampleConfig())


# -- validation ---------------------------------------------------------------------------

_POSITIVE = {
    "data": ("fetch_batch_size", "prefetch"),
    "tokenizer": ("vocab_size", "max_samples", "min_frequency"),
    "model": ("n_layer", "n_head", "n_embd", "seq_len"),
    "train": ("max_steps", "batch_size", "gradient_accumulation_steps", "logging_steps",
              "eval_batches"),
    "sample": ("max_new_tokens",),
}
_NON_NEGATIVE = {
    "data": ("min_length", "eval_docs", "max_samples", "shuffle_buffer_size", "virtual_shards", "num_workers"),
    "optim": ("learning_rate", "min_lr_ratio", "warmup_steps", "weight_decay", "eps", "grad_clip"),
    "train": ("eval_steps", "save_steps", "seed"),
    "sample": ("sample_steps", "temperature"),
}


def validate(config: Config) -> None:
    """Range and consistency checks that types alone do not express."""
    for table, low in ((_POSITIVE, 1), (_NON_NEGATIVE, 0)):
        for section, keys in table.items():
            for key in keys:
                value = getattr(getattr(config, section), key)
                if value is not None and value < low:
                    raise ConfigError(f"{section}.{key} must be >= {low}, got {value}",
                                      f"set {section}.{key} to {low} or more")
    m, o = config.model, config.optim
    if m.n_embd % m.n_head:
        raise ConfigError(f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}",
                          "pick n_embd as a multiple of n_head (head size = n_embd / n_head)")
    if m.vocab_size is not None and m.vocab_size < 2:
        raise ConfigError(f"model.vocab_size must be >= 2, got {m.vocab_size}",
                          "leave it null to take the tokenizer's")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}", "0.0 is usual")
    if o.min_lr_ratio > 1.0:
        raise ConfigError(f"optim.min_lr_ratio must be <= 1, got {o.min_lr_ratio}",
                          "it is the final learning rate as a fraction of the peak (0.1 is usual)")
    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(o, key) < 1.0:
            raise ConfigError(f"optim.{key} must be in [0, 1), got {getattr(o, key)}",
                              "0.9 and 0.95 are usual")
    if o.decay_steps is not None and o.decay_steps < 1:
        raise ConfigError(f"optim.decay_steps must be >= 1, got {o.decay_steps}",
                          "leave it null to decay over train.max_steps")
    if config.data.epochs is not None and config.data.epochs < 1:
        raise ConfigError(f"data.epochs must be >= 1 or null, got {config.data.epochs}",
                          "null repeats the data forever")
    if config.sample.top_k is not None and config.sample.top_k < 1:
        raise ConfigError(f"sample.top_k must be >= 1 or null, got {config.sample.top_k}",
                          "null samples from the whole vocabulary")
    if config.data.num_workers and not config.data.virtual_shards:
        raise ConfigError(f"data.num_workers={config.data.num_workers} needs data.virtual_shards",
                          "set data.virtual_shards (e.g. 240: a multiple of ranks x workers), or drop data.num_workers")
    if config.data.virtual_shards and config.data.shuffle_files:
        raise ConfigError("data.shuffle_files with data.virtual_shards: the virtual shards are fixed for the whole run",
                          "drop data.shuffle_files: documents are shuffled within each shard, and the global order "
                          "interleaves all shards")
    if config.data.streams is not None:
        sorted_streams(config.data.streams)  # weights, labels, stream classes: errors name the stream
    elif config.data.batching_method != "random" or config.data.mix_by != "samples":
        raise ConfigError("data.batching_method / data.mix_by apply to a mixture (data.streams)",
                          "add data.streams: [{dataset: ..., proportion: ...}, ...] or drop them")
    if config.data.streams is not None and config.data.mix_by == "samples" \
            and config.data.batching_method != "random":
        raise ConfigError(f"data.batching_method={config.data.batching_method!r} needs data.mix_by: tokens",
                          "batch composition is defined on training rows; mixing documents is random")
    _validate_model_source(m)
    if not config.tokenizer.special_tokens:
        raise ConfigError("tokenizer.special_tokens is empty",
                          "keep at least the end-of-text token, e.g. ['<|endoftext|>']")


def _validate_model_source(m: ModelConfig) -> None:
    """A transformers model comes from one place, and document masking is the built-in GPT's."""
    if m.name_or_path is not None and m.config_name is not None:
        raise ConfigError("model.name_or_path and model.config_name are both set",
                          "name_or_path trains a model's weights further; config_name trains its "
                          "architecture from scratch: keep one")
    if m.doc_mask and (m.name_or_path is not None or m.config_name is not None):
        raise ConfigError("model.doc_mask applies to the built-in GPT, not to a transformers model",
                          "drop model.doc_mask, or train the built-in GPT (no name_or_path / config_name)")


SCHEMA = Schema(Config, validate, example="configs/tiny.yaml")
#: section name -> its dataclass, in the order configs are written.
SECTIONS: dict[str, type] = SCHEMA.sections


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (or start from the defaults) and apply ``section.key`` overrides.

    ``path`` may also name an example config shipped with hfstream: ``tiny``, ``tiny.yaml`` or
    ``configs/tiny.yaml`` from any directory (see :func:`find_config`).

    Raises:
        ConfigError: missing or unparsable file, unknown key, wrong type, out-of-range value.
    """
    return SCHEMA.load(None if path is None else find_config(path), overrides)


def example_configs_dir() -> Path | None:
    """Where the example configs are: inside the installed package, or the checkout's configs/."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "tiny.yaml").is_file():
            return candidate
    return None


def example_configs() -> list[str]:
    """The names of the example configs shipped with hfstream (``tiny``, ``gpt2-small``, ...)."""
    where = example_configs_dir()
    return sorted(p.stem for p in where.glob("*.yaml")) if where is not None else []


def find_config(path: str | Path) -> Path:
    """``path`` itself when it exists; else the shipped example config it names (``tiny``,
    ``tiny.yaml``, ``configs/tiny.yaml``), so the README's commands work from any directory.

    Raises:
        ConfigError: neither a file nor an example name; the hint lists the examples.
    """
    given = Path(path).expanduser()
    if given.is_file():
        return given
    name = given.name[:-5] if given.name.endswith(".yaml") else given.name
    where = example_configs_dir()
    if where is not None and (where / f"{name}.yaml").is_file() and given.parent in (Path("."), Path("configs")):
        log.info("using the example config shipped with hfstream: %s", where / f"{name}.yaml")
        return where / f"{name}.yaml"
    if given.parent == Path(".") and not given.suffix:
        close = difflib.get_close_matches(name, example_configs(), n=1)
        raise ConfigError(f"{str(path)!r} is neither a config file nor an example config",
                          (f"did you mean {close[0]!r}? " if close else "") + "the examples shipped with "
                          f"hfstream: {', '.join(example_configs()) or 'none'}, or pass the path of a YAML file")
    return given  # read_yaml says it does not exist, suggesting near names


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a validated Config from nested plain data (what YAML gives)."""
    return SCHEMA.from_dict(raw, source)


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``config`` with ``{"section.key" or "key": value}`` applied and validated."""
    return SCHEMA.apply_overrides(config, overrides)


def resolve_key(key: str) -> tuple[str, str]:
    """Turn ``section.key`` or a bare ``key`` into (section, key), or raise naming the closest."""
    return SCHEMA.resolve_key(key)


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Nested plain data (the YAML shape) of a config."""
    return SCHEMA.to_dict(config)


def config_to_yaml(config: Config) -> str:
    """The config as YAML, sections in their natural order (for logs and checkpoints)."""
    return SCHEMA.to_yaml(config)


def all_keys() -> list[str]:
    """Every ``section.key`` a config accepts."""
    return SCHEMA.all_keys()
