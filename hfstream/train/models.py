"""Which model a run trains: the built-in GPT or a transformers causal LM, built new or rebuilt from a checkpoint.

The decision is made here once, from the model section; everything after it talks to the
model through :class:`hfstream.train.model.CausalLM`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hfstream.errors import ConfigError
from hfstream.train import hf_model
from hfstream.train.config import ModelConfig
from hfstream.train.model import GPT, CausalLM


def build_model(m: ModelConfig, tokenizer_vocab: int, eos_id: int | None) -> tuple[ModelConfig, CausalLM]:
    """The model the section describes (freshly initialized from the global torch seed, or
    pretrained weights), and the section with ``vocab_size`` resolved.

    The built-in GPT's vocabulary is ``model.vocab_size``, or the tokenizer's rounded up to a
    multiple of 64; see :func:`hfstream.train.hf_model.build_transformers_model` for the rest.
    """
    if hf_model.is_transformers_model(m):
        return hf_model.build_transformers_model(m, tokenizer_vocab, eos_id)
    vocab_size = m.vocab_size or 64 * -(-tokenizer_vocab // 64)
    if vocab_size < tokenizer_vocab:
        raise ConfigError(f"model.vocab_size={vocab_size} is smaller than the tokenizer's "
                          f"{tokenizer_vocab}", "leave model.vocab_size null to take the tokenizer's")
    m = dataclasses.replace(m, vocab_size=vocab_size)
    return m, GPT(m)


def architecture_of(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's architecture record (older checkpoints hold only the GPT's model section)."""
    return checkpoint.get("architecture") or {"kind": "gpt", "config": checkpoint["model_config"]}


def model_from_checkpoint(checkpoint: dict[str, Any]) -> CausalLM:
    """The checkpoint's model with its trained weights (on the CPU, in eval mode)."""
    arch = architecture_of(checkpoint)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    section = ModelConfig(**{k: v for k, v in checkpoint["model_config"].items() if k in known})
    if arch["kind"] == "transformers":
        model: Any = hf_model.from_architecture(arch, section.seq_len)
    else:
        model = GPT(ModelConfig(**{k: v for k, v in arch["config"].items() if k in known}))
    model.load_state_dict(checkpoint["model"])
    return model.eval()
