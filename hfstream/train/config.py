"""Training configuration: typed dataclasses, YAML files that mirror them, command-line overrides.

A config file has one mapping per section (``data``, ``tokenizer``, ``model``, ``optim``,
``train``, ``sample``), each key a field of the matching dataclass below; anything left out
keeps its default. Overrides name a field as ``section.key`` (or just ``key`` when only one
section has it)::

    config = load_config("configs/tiny.yaml", {"train.max_steps": 50, "n_layer": 2})

Unknown sections or keys and values of the wrong type raise :class:`~hfstream.errors.ConfigError`
naming the key and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from hfstream.errors import ConfigError


@dataclass
class DataConfig:
    """What to stream and how (source fields mirror :class:`hfstream.source.SourceSpec`).

    Each rank reads shard ``rank`` of ``world_size`` (set by torchrun, not here), the same
    shard in every epoch unless ``shuffle_files`` is set. The first
    ``eval_docs`` documents of the stream are the held-out evaluation set; a document with the
    same text is never trained on, in any epoch, on any rank.
    """

    dataset: str = "builtin:python-docs"
    split: str = "train"
    name: str | None = None
    data_files: Union[str, list[str], None] = None
    revision: str | None = None
    text_column: str = "text"
    min_length: int = 1
    max_samples: int | None = None        # documents per rank; None: no limit
    epochs: int | None = None             # None: repeat forever (training ends at max_steps)
    shard_by: Literal["auto", "files", "rows"] = "auto"
    sample_by: Literal["line", "paragraph", "document"] = "line"
    encoding_errors: Literal["strict", "replace", "ignore"] = "strict"
    format: Literal["parquet", "json", "text", "csv", "arrow", None] = None
    reader: Literal["auto", "fast", "datasets"] = "auto"
    strict: bool = False
    shuffle_files: bool = False           # file order shuffled per epoch (seeded by train.seed);
    #   then each epoch's shards are disjoint, but a file may move to another rank next epoch
    fetch_batch_size: int = 1000          # documents per worker message
    shuffle_buffer_size: int = 10_000     # documents in the loader's shuffle buffer
    prefetch: int = 4                     # batches the loader prepares ahead
    eval_docs: int = 200                  # held-out documents (from the head of the stream)
    # A mixture instead of `dataset` (MosaicML vocabulary; see hfstream.mixing):
    streams: list[dict[str, Any]] | None = None   # [{dataset: ..., proportion|repeat|choose: ..., label: ...}]
    epoch_size: Union[int, str, None] = None      # samples (or tokens with mix_by: tokens); "64M" works
    mix_by: Literal["samples", "tokens"] = "samples"
    batching_method: Literal["random", "stratified", "per_stream", "device_per_stream"] = "random"


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
    """The built-in GPT (:mod:`hfstream.model`)."""

    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    seq_len: int = 256
    dropout: float = 0.0
    bias: bool = False
    vocab_size: int | None = None         # None: the tokenizer's, rounded up to a multiple of 64


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
    plot: bool = True                     # training_curve.png


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

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


#: section name -> its dataclass, in the order configs are written.
SECTIONS: dict[str, type] = {"data": DataConfig, "tokenizer": TokenizerConfig, "model": ModelConfig,
            "optim": OptimConfig, "train": TrainConfig, "sample": SampleConfig}


# -- public API ---------------------------------------------------------------------------

def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (or start from the defaults) and apply ``section.key`` overrides.

    Raises:
        ConfigError: missing or unparsable file, unknown key, wrong type, out-of-range value.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
    config = config_from_dict(raw, source=str(path) if path is not None else "defaults")
    return apply_overrides(config, overrides or {})


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (an empty file is an empty mapping)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        near = _near_files(path)
        raise ConfigError(f"config file {str(path)!r} does not exist",
                          f"did you mean {near}?" if near else "pass the path of a YAML file, "
                          "e.g. configs/tiny.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{str(path)!r} is not valid YAML: {exc}",
                          "fix the syntax at the line shown (indentation, a missing ':')") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{str(path)!r} holds a {type(raw).__name__}, not a mapping of sections",
                          f"write sections at the top level: {', '.join(SECTIONS)}")
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a validated Config from nested plain data (what YAML gives)."""
    sections: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {name!r}", _suggest_section(str(name)))
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, got "
                              f"{type(values).__name__}",
                              f"write its keys indented under '{name}:'")
        sections[name] = _build_section(name, values, source)
    config = Config(**sections)
    validate(config)
    return config


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``config`` with ``{"section.key" or "key": value}`` applied and validated.

    String values are checked and converted like YAML values (``"3e-4"`` for a float,
    ``"null"`` for None, ``"[a, b]"`` for a list).
    """
    raw = config_to_dict(config)
    for key, value in overrides.items():
        section, name = resolve_key(key)
        expected = _field_types(SECTIONS[section])[name]
        if isinstance(value, str) and expected is not str:
            parsed = _parse_scalar(value)
            # "sample-10BT" or "2024" for a `str | None` field stays the string it was.
            if not (_accepts_str(expected) and not isinstance(parsed, (list, type(None)))):
                value = parsed
        raw[section][name] = value
    return config_from_dict(raw, source="override")


def resolve_key(key: str) -> tuple[str, str]:
    """Turn ``section.key`` or a bare ``key`` into (section, key), or raise naming the closest."""
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in {key!r}", _suggest_section(section))
        if name not in _field_types(SECTIONS[section]):
            raise ConfigError(f"unknown config key {key!r}", _suggest_key(section, name))
        return section, name
    owners = [s for s, cls in SECTIONS.items() if key in _field_types(cls)]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(f"config key {key!r} is ambiguous: it is in {', '.join(owners)}",
                          f"write it with its section, e.g. {owners[0]}.{key}")
    raise ConfigError(f"unknown config key {key!r}", _suggest_key(None, key))


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Nested plain data (the YAML shape) of a config."""
    return dataclasses.asdict(config)


def config_to_yaml(config: Config) -> str:
    """The config as YAML, sections in their natural order (for logs and checkpoints)."""
    import yaml

    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=100)


def all_keys() -> list[str]:
    """Every ``section.key`` a config accepts."""
    return [f"{s}.{k}" for s, cls in SECTIONS.items() for k in _field_types(cls)]


# -- validation ---------------------------------------------------------------------------

_POSITIVE = {
    "data": ("fetch_batch_size", "shuffle_buffer_size", "prefetch"),
    "tokenizer": ("vocab_size", "max_samples", "min_frequency"),
    "model": ("n_layer", "n_head", "n_embd", "seq_len"),
    "train": ("max_steps", "batch_size", "gradient_accumulation_steps", "logging_steps",
              "eval_batches"),
    "sample": ("max_new_tokens",),
}
_NON_NEGATIVE = {
    "data": ("min_length", "eval_docs", "max_samples"),
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
    if config.data.streams is not None:
        from hfstream.mixing.streams import sorted_streams

        sorted_streams(config.data.streams)  # weights, labels, stream classes: errors name the stream
    elif config.data.batching_method != "random" or config.data.mix_by != "samples":
        raise ConfigError("data.batching_method / data.mix_by apply to a mixture (data.streams)",
                          "add data.streams: [{dataset: ..., proportion: ...}, ...] or drop them")
    if config.data.streams is not None and config.data.mix_by == "samples" \
            and config.data.batching_method != "random":
        raise ConfigError(f"data.batching_method={config.data.batching_method!r} needs data.mix_by: tokens",
                          "batch composition is defined on training rows; mixing documents is random")
    if not config.tokenizer.special_tokens:
        raise ConfigError("tokenizer.special_tokens is empty",
                          "keep at least the end-of-text token, e.g. ['<|endoftext|>']")


# -- typed construction -------------------------------------------------------------------

def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _build_section(section: str, values: dict[str, Any], source: str) -> Any:
    cls = SECTIONS[section]
    types = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in types:
            raise ConfigError(f"{source}: unknown key {section}.{key}", _suggest_key(section, str(key)))
        kwargs[key] = _coerce(f"{section}.{key}", value, types[key])
    return cls(**kwargs)


def _coerce(key: str, value: Any, expected: Any) -> Any:
    """``value`` converted to the annotated type, or a ConfigError naming ``key``."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if _is_union(expected):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[-1] if len(errors) == 1 else ConfigError(
            f"{key} must be {_describe(expected)}, got {value!r} ({type(value).__name__})",
            f"set {key} to {_describe(expected)}")
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        close = difflib.get_close_matches(str(value), [str(a) for a in args if a is not None], n=1)
        raise ConfigError(f"{key}={value!r} is not one of {choices}",
                          f"did you mean {close[0]!r}?" if close else f"choose one of {choices}")
    if origin is dict or expected is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key} must be a mapping, got {value!r} ({type(value).__name__})",
                          f"write it as a YAML mapping, e.g. {{dataset: data.jsonl, proportion: 0.5}}")
    if origin is list:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r} ({type(value).__name__})",
                              f"write it as a YAML list, e.g. {key.split('.')[-1]}: [a, b]")
        return [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r} ({type(value).__name__})",
                          f"set {key}: true or {key}: false")
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _as_number(value)
        if number is not None and float(number).is_integer():
            return int(number)
        raise ConfigError(f"{key} must be an integer, got {value!r} ({type(value).__name__})",
                          f"set {key} to a whole number")
    if expected is float:
        number = _as_number(value)
        if number is not None:
            return float(number)
        raise ConfigError(f"{key} must be a number, got {value!r} ({type(value).__name__})",
                          f"set {key} to a number such as 3e-4")
    if expected is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r} ({type(value).__name__})",
                          f"quote the value of {key}")
    raise AssertionError(f"unsupported annotation {expected!r} for {key}")


def _accepts_str(annotation: Any) -> bool:
    return annotation is str or (_is_union(annotation) and str in typing.get_args(annotation))


def _is_union(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is Union or origin is types.UnionType


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _describe(expected: Any) -> str:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if _is_union(expected):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return "a list of " + {str: "strings", int: "integers"}.get(args[0], str(args[0]))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "null"}.get(expected, str(expected))


def _parse_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _suggest_section(name: str) -> str:
    close = difflib.get_close_matches(name, list(SECTIONS), n=1)
    if close:
        return f"did you mean {close[0]!r}? sections are: {', '.join(SECTIONS)}"
    owners = [s for s, cls in SECTIONS.items() if name in _field_types(cls)]
    if owners:
        return f"{name!r} is a key of section {owners[0]!r}: write it under '{owners[0]}:'"
    return f"sections are: {', '.join(SECTIONS)}"


def _suggest_key(section: str | None, name: str) -> str:
    if section is not None:
        close = difflib.get_close_matches(name, list(_field_types(SECTIONS[section])), n=1, cutoff=0.6)
        if close:
            return f"did you mean {section}.{close[0]}?"
    elsewhere = [k for k in all_keys() if k.split(".", 1)[1] == name]
    if elsewhere:
        return f"{name!r} belongs to another section: did you mean {elsewhere[0]}?"
    close = difflib.get_close_matches(name, [k.split(".", 1)[1] for k in all_keys()], n=1, cutoff=0.6)
    if close:
        full = next(k for k in all_keys() if k.endswith("." + close[0]))
        return f"did you mean {full}?"
    valid = ", ".join(_field_types(SECTIONS[section])) if section else ", ".join(all_keys())
    return f"valid keys: {valid}"


def _near_files(path: Path) -> str | None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return None
    names = [p.name for p in parent.iterdir() if p.suffix in (".yaml", ".yml")]
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.5)
    return str(parent / close[0]) if close else None
