"""Hugging Face causal LMs in the trainer: any transformers ``AutoModelForCausalLM`` behind the GPT's interface.

    model_config, model = build_transformers_model(config.model, tokenizer_vocab=1024, eos_id=0)
    logits, loss = model(inputs, targets)      # (B, T) -> (B, T, V), scalar: the loop's call
    model.hf.save_pretrained("out")            # the transformers model inside

``model.name_or_path`` (run_clm's ``--model_name_or_path``) trains a model's weights further: a
local directory written by ``save_pretrained``, or a hub id (taken from transformers' cache when
it is there; otherwise the hub must answer, and offline that fails at once, as hub datasets do).
``model.config_name`` (``--config_name``) trains an architecture from scratch: a ``config.json``
or its directory; its vocabulary becomes the run's tokenizer's (``model.vocab_size`` when set),
and its end-of-text id the tokenizer's. ``model.seq_len`` stays the training context.
``transformers`` is an optional extra: ``pip install "hfstream[hf]"``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from hfstream.errors import ConfigError, OfflineError
from hfstream.train import extras
from hfstream.train.config import ModelConfig, example_configs_dir
from hfstream.train.model import CausalLM
from hfstream.source.hub import check_hub_reachable

log = logging.getLogger("hfstream.train")
WHAT = "a transformers model (model.name_or_path / model.config_name, --model_name_or_path / --config_name)"


def is_transformers_model(m: ModelConfig) -> bool:
    """Whether the model section names a transformers model (else the built-in GPT)."""
    return m.name_or_path is not None or m.config_name is not None


class HFCausalLM(CausalLM):
    """A transformers causal LM with the built-in GPT's interface (:class:`hfstream.train.model.CausalLM`).

    Args:
        hf: the ``PreTrainedModel`` (``AutoModelForCausalLM``).
        context_len: the longest context it is given (``model.seq_len``).
        source: where it came from, for the log.
    """

    def __init__(self, hf: nn.Module, context_len: int, source: str):
        super().__init__()
        self.hf, self.context_len, self.source = hf, context_len, source

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and the mean cross-entropy with ``targets`` (already shifted: the
        loader's targets are the inputs one token on); without targets the last position only."""
        if positions is not None:
            raise ConfigError("document-masked attention is the built-in GPT's (model.doc_mask)",
                              "train a transformers model without model.doc_mask")
        logits = self.hf(input_ids=idx, use_cache=False).logits  # (B, T, V)
        if targets is None:
            return logits[:, [-1], :], None  # (B, 1, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights once

    def describe(self) -> str:
        return (f"{type(self.hf).__name__} from {self.source}: {self.num_params() / 1e6:,.2f}M parameters "
                f"(vocab {self.hf.get_input_embeddings().num_embeddings:,})")

    def architecture(self) -> dict:
        """What rebuilds this model: its transformers config (see :func:`from_architecture`)."""
        return {"kind": "transformers", "config": self.hf.config.to_dict()}


def build_transformers_model(m: ModelConfig, tokenizer_vocab: int, eos_id: int | None
                             ) -> tuple[ModelConfig, HFCausalLM]:
    """The model section's transformers model, and the section with its vocabulary size filled in.

    Raises:
        ConfigError: transformers is missing, the path does not exist or holds no model, the
            vocabulary is smaller than the tokenizer's, the context longer than the model's.
        OfflineError: a hub id that is not cached while the hub cannot be reached.
    """
    transformers = extras.require("transformers", WHAT)
    transformers.utils.logging.disable_progress_bar()
    if m.name_or_path is not None:
        hf = _load(transformers.AutoModelForCausalLM, m.name_or_path, "model.name_or_path", dtype=torch.float32)
        vocab_size = hf.get_input_embeddings().num_embeddings
        if m.vocab_size is not None and m.vocab_size != vocab_size:
            raise ConfigError(f"model.vocab_size={m.vocab_size}, but {m.name_or_path!r} has {vocab_size:,} "
                              "embeddings", "leave model.vocab_size null with model.name_or_path")
        source = m.name_or_path
    else:
        hf_config = _load(transformers.AutoConfig, m.config_name, "model.config_name")
        vocab_size = m.vocab_size or 64 * -(-tokenizer_vocab // 64)
        hf_config.vocab_size = vocab_size
        if eos_id is not None:
            hf_config.eos_token_id = hf_config.bos_token_id = eos_id
        hf = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
        source = f"{m.config_name} (from scratch)"
    if vocab_size < tokenizer_vocab:
        raise ConfigError(f"the model has {vocab_size:,} embeddings, fewer than the tokenizer's "
                          f"{tokenizer_vocab:,} tokens", "use the model's own tokenizer (--tokenizer DIR)")
    # max_position_embeddings: the config attribute every causal LM maps its context length to
    context = getattr(hf.config, "max_position_embeddings", None)
    if context is not None and m.seq_len > context:
        raise ConfigError(f"model.seq_len={m.seq_len} is longer than the model's context ({context} positions)",
                          f"set model.seq_len to {context} or less")
    m = dataclasses.replace(m, vocab_size=vocab_size)
    return m, HFCausalLM(hf, m.seq_len, source)


def check_source(m: ModelConfig) -> None:
    """Fail before a run writes anything when its transformers model cannot be had: a missing
    path, a config transformers does not know, a hub id neither cached nor reachable. Reads the
    config only (the weights come later)."""
    if not is_transformers_model(m):
        return
    transformers = extras.require("transformers", WHAT)
    for key, name in (("model.name_or_path", m.name_or_path), ("model.config_name", m.config_name)):
        if name is not None:
            _load(transformers.AutoConfig, name, key)


def from_architecture(architecture: dict[str, Any], context_len: int) -> HFCausalLM:
    """An untrained model of the architecture a checkpoint recorded (load its weights next)."""
    transformers = extras.require("transformers", WHAT)
    config = dict(architecture["config"])
    hf_config = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    return HFCausalLM(hf, context_len, "a checkpoint")


def model_directory(m: ModelConfig) -> Path | None:
    """The local directory of ``model.name_or_path``, if it is one (its tokenizer may be used)."""
    if m.name_or_path is None:
        return None
    path = Path(m.name_or_path).expanduser()
    return path if path.is_dir() else None


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _local_path(name: str) -> Path | None:
    """``name`` as a local path; ``configs/...`` also finds the example configs shipped with
    hfstream (``configs/llama-tiny/config.json`` from any directory, as ``--config llama-tiny``)."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    shipped = example_configs_dir()
    if shipped is not None and path.parts[:1] == ("configs",) and shipped.joinpath(*path.parts[1:]).exists():
        return shipped.joinpath(*path.parts[1:])
    return None


def _load(cls: Any, name: str, key: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(name)``: a local file or directory, or a hub id (cache first, then the hub)."""
    path = _local_path(name)
    if path is not None:
        return _from_pretrained(cls, str(path), key, **kwargs)
    if not _HUB_ID.match(name) or name.endswith(".json"):
        raise ConfigError(f"{key}: {name!r} does not exist",
                          "pass a directory holding config.json (and the weights, for name_or_path), "
                          "a config.json, or a hub id such as Qwen/Qwen2.5-0.5B")
    try:
        return cls.from_pretrained(name, local_files_only=True, **kwargs)  # cached: no network needed
    except OSError:
        pass
    try:
        check_hub_reachable(name)
    except OfflineError:
        raise OfflineError(f"{key}: {name!r} is not a local path, it is not in the transformers cache, and "
                           "the Hugging Face hub cannot be reached to download it",
                           "pass a local directory written by save_pretrained (or a config.json for "
                           "model.config_name), or set HF_ENDPOINT to a mirror you can reach") from None
    return _from_pretrained(cls, name, key, **kwargs)


def _from_pretrained(cls: Any, name: str, key: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{key}: cannot load {name!r}: {str(exc).splitlines()[0]}",
                          "pass a directory written by save_pretrained, or a config.json of a causal "
                          "LM known to transformers (model_type: llama, gpt2, qwen2, ...)") from None
