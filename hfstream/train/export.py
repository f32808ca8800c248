"""Hugging Face model directories from a run: the model (``save_pretrained``) and its tokenizer, loadable anywhere.

    export_run("runs/tiny", "runs/tiny-hf")     # hfstream export runs/tiny runs/tiny-hf
    # then, anywhere transformers runs:
    model = AutoModelForCausalLM.from_pretrained("runs/tiny-hf")
    tokenizer = AutoTokenizer.from_pretrained("runs/tiny-hf")

A transformers model is saved as it is. The built-in GPT becomes a ``GPT2LMHeadModel`` with the
same logits: the same pre-LayerNorm blocks, learned positions, tied embeddings and
``1/sqrt(head_size)`` attention scaling; ``activation_function="gelu"`` (the exact GELU: GPT-2's
default is the tanh approximation), LayerNorm eps 1e-5, and zero biases where ours has none
(``model.bias: false``); nn.Linear weights are transposed into GPT-2's Conv1D layout. A GPT
trained with ``model.doc_mask`` exports the same way; the GPT-2 attends across documents of a
packed input, which a single text (generation) never has.

The tokenizer is saved as a ``PreTrainedTokenizerFast`` with the run's end-of-text token as
EOS and BOS (no BOS is added when encoding: the model was trained without one).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from hfstream.errors import ConfigError, StateError
from hfstream.tokens.encoder import TextEncoder
from hfstream.tokens.tokenizer_trainer import tokenizer_from_json
from hfstream.train import extras
from hfstream.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from hfstream.train.hf_model import HFCausalLM
from hfstream.train.model import GPT, CausalLM
from hfstream.train.models import model_from_checkpoint

log = logging.getLogger("hfstream.train")
WHAT = "exporting a Hugging Face model directory"


def export_run(run: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Export the checkpoint of a run (its directory, or a ``checkpoint.pt``) to ``out``.

    Raises:
        ConfigError: no checkpoint there, ``out`` is not empty (without ``overwrite``),
            transformers is missing.
        StateError: the run's tokenizer.json is missing or not the one the checkpoint was trained with.
    """
    extras.require("transformers", WHAT)
    where = Path(run).expanduser()
    path = where / CHECKPOINT_NAME if where.is_dir() else where
    if not path.is_file():
        raise ConfigError(f"no checkpoint to export at {str(path)!r}",
                          "pass a run directory written by train-streaming (it holds checkpoint.pt), "
                          "or a checkpoint.pt")
    ckpt = load_checkpoint(path)
    tokenizer = path.parent / "tokenizer.json"
    if not tokenizer.is_file():
        raise StateError(f"the run has no tokenizer at {str(tokenizer)!r}",
                         "export the run directory train-streaming wrote (it holds tokenizer.json)")
    encoder = TextEncoder(tokenizer, backend="tokenizers")
    if encoder.fingerprint != ckpt["tokenizer"]["fingerprint"]:
        raise StateError(f"{str(tokenizer)!r} is not the tokenizer the checkpoint was trained with",
                         "export the run directory as train-streaming left it")
    model = model_from_checkpoint(ckpt)
    log.info("exporting step %d of %s", ckpt["step"], path)
    return export_model(model, encoder, out, overwrite=overwrite)


def export_model(model: CausalLM, encoder: TextEncoder, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``model`` and ``encoder``'s tokenizer as a Hugging Face model directory at ``out``.

    The directory is written beside ``out`` and moved into place: ``out`` is never half-written.
    """
    transformers = extras.require("transformers", WHAT)
    transformers.utils.logging.disable_progress_bar()
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{str(out)!r} is not empty", "choose a new directory, or pass --overwrite")
    hf = to_transformers(model, encoder.eos_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        hf.save_pretrained(staging)
        tokenizer_for_transformers(encoder, hf.config).save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def to_transformers(model: CausalLM, eos_id: int | None) -> Any:
    """The ``PreTrainedModel`` to save: a transformers model as it is, the built-in GPT as GPT-2."""
    if isinstance(model, HFCausalLM):
        hf = model.hf
    else:
        assert isinstance(model, GPT), type(model)
        hf = gpt_to_gpt2(model, eos_id)
    if eos_id is not None:
        hf.config.eos_token_id = hf.config.bos_token_id = eos_id
        hf.generation_config.eos_token_id = hf.generation_config.bos_token_id = eos_id
        hf.generation_config.pad_token_id = eos_id  # no padding token: generate() pads with EOS
    return hf


@torch.no_grad()
def gpt_to_gpt2(model: GPT, eos_id: int | None = None) -> Any:
    """The built-in GPT as a ``transformers.GPT2LMHeadModel`` with identical logits."""
    transformers = extras.require("transformers", WHAT)
    c = model.config
    config = transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.seq_len, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        n_inner=4 * c.n_embd, activation_function="gelu", layer_norm_epsilon=1e-5,
        resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout, scale_attn_weights=True,
        tie_word_embeddings=True, bos_token_id=eos_id, eos_token_id=eos_id)
    hf = transformers.GPT2LMHeadModel(config).eval()
    state = {"transformer.wte.weight": model.wte.weight, "transformer.wpe.weight": model.wpe.weight,
             **_layer_norm("transformer.ln_f", model.ln_f)}
    for i, block in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        state |= _layer_norm(p + "ln_1", block.ln_1) | _layer_norm(p + "ln_2", block.ln_2)
        state |= _conv1d(p + "attn.c_attn", block.attn.c_attn) | _conv1d(p + "attn.c_proj", block.attn.c_proj)
        state |= _conv1d(p + "mlp.c_fc", block.mlp.c_fc) | _conv1d(p + "mlp.c_proj", block.mlp.c_proj)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # lm_head: tied to wte
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    return hf


def _layer_norm(name: str, norm: torch.nn.LayerNorm) -> dict[str, torch.Tensor]:
    bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.weight)
    return {f"{name}.weight": norm.weight, f"{name}.bias": bias}


def _conv1d(name: str, linear: torch.nn.Linear) -> dict[str, torch.Tensor]:
    """nn.Linear (out, in) -> GPT-2's Conv1D (in, out); a missing bias becomes zeros."""
    bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
    return {f"{name}.weight": linear.weight.t().contiguous(), f"{name}.bias": bias}


def tokenizer_for_transformers(encoder: TextEncoder, model_config: Any = None) -> Any:
    """``encoder``'s tokenizer as a ``PreTrainedTokenizerFast`` (EOS = BOS = the end-of-text token)."""
    transformers = extras.require("transformers", WHAT)
    special = {}
    if encoder.eos_id is not None:
        eos = encoder.tokenizer.id_to_token(encoder.eos_id)
        special = {"eos_token": eos, "bos_token": eos}
    context = getattr(model_config, "max_position_embeddings", None)  # the config's context length
    # a fresh copy: transformers may change its settings (encode_special_tokens is not serialized)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer_from_json(encoder.tokenizer.to_str()),
                                                model_max_length=context or int(1e30), **special)
