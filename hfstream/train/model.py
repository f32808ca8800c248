"""The built-in GPT: a decoder-only transformer in one readable file (after nanoGPT).

    model = GPT(ModelConfig(n_layer=4, n_head=4, n_embd=128, seq_len=128, vocab_size=4096))
    logits, loss = model(inputs, targets)      # (B, T) int64 -> (B, T, V), scalar
    optimizer = model.configure_optimizer(learning_rate=3e-3, weight_decay=0.1)
    out = model.generate(prompt_ids, max_new_tokens=50, temperature=0.8, top_k=50)
    logits, loss = model(inputs, targets, positions)  # document-masked (model.doc_mask)

Pre-LayerNorm blocks, learned absolute positions, GELU MLP (4x), weight tying between the
token embedding and the output head, PyTorch's fused scaled-dot-product attention.

Given ``positions`` (the loader's ``batch.positions``: ids that restart at each document),
attention stays within each document of a packed row (a block-diagonal causal mask through
SDPA) and the position embeddings restart with each document.

:class:`CausalLM` is the interface the trainer uses, shared with the transformers adapter
(:mod:`hfstream.train.hf_model`).
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from hfstream.errors import ConfigError
from hfstream.train.config import ModelConfig


def document_layout(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row positions restarting at each document, and the attention mask that keeps it in.

    Args:
        positions: (B, T) position ids from the packer: 0 on the first token of each document
            (they count on across rows, so the first document of a row may start anywhere).

    Returns:
        ``(pos, mask)``: pos (B, T) counts from 0 at each document start and at the row start;
        mask (B, 1, T, T) bool, True where query t may attend key s: s <= t in the same document.
    """
    B, T = positions.shape
    t = torch.arange(T, device=positions.device)
    starts = positions == 0
    starts[:, 0] = True
    doc = starts.cumsum(dim=1)                                       # (B, T) document number in the row
    start_at = torch.where(starts, t, torch.zeros_like(t)).cummax(dim=1).values  # (B, T) its first index
    causal = torch.ones(T, T, dtype=torch.bool, device=positions.device).tril()
    mask = (doc[:, :, None] == doc[:, None, :]) & causal             # (B, T, T)
    return t - start_at, mask[:, None]                               # (B, T), (B, 1, T, T)


class CausalLM(nn.Module):
    """What the trainer needs of a model, the built-in GPT or a transformers causal LM adapted.

    A subclass sets ``context_len`` (the longest context it is given) and implements
    ``forward(idx, targets=None, positions=None) -> (logits, loss)`` (logits (B, T, V) and the
    mean cross-entropy with targets; without targets the last position only, (B, 1, V), and
    None), ``num_params()``, ``describe()`` (a line for the log) and ``architecture()`` (what
    rebuilds it: a checkpoint keeps it). This class adds what they share: the AdamW groups
    and sampling.
    """

    context_len: int

    def configure_optimizer(self, learning_rate: float, weight_decay: float,
                            betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                            device_type: str = "cpu") -> torch.optim.AdamW:
        """AdamW with weight decay on matrices (linear weights, embeddings) only.

        Biases and norm gains are not decayed. Uses the fused CUDA kernel when available.
        """
        params = [p for p in self.parameters() if p.requires_grad]  # tied weights appear once
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps,
                                 **({"fused": True} if fused else {}))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 stop_id: int | None = None) -> torch.Tensor:
        """Extend ``idx`` (B, T) by sampling ``max_new_tokens`` tokens (the last ``context_len`` as context).

        ``temperature`` 0 picks the most likely token; ``generator`` makes sampling reproducible
        without touching the global random state; generation stops early once every row has
        produced ``stop_id``.
        """
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.context_len:])
            logits = logits[:, -1, :].float()  # (B, V)
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits[logits < kth] = -float("inf")
                probs = F.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)
            idx = torch.cat((idx, next_id), dim=1)
            if stop_id is not None:
                done |= next_id.squeeze(1) == stop_id
                if bool(done.all()):
                    break
        return idx


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # mask: (B, 1, T, T) block-diagonal causal (True = attend), or None for plain causal
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, n_head, T, hs) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class GPT(CausalLM):
    """A GPT language model.

    Args:
        config: the architecture; ``vocab_size`` must be set (the trainer takes it from the
            tokenizer, rounded up to a multiple of 64).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size is None:
            raise ConfigError("the model needs a vocab_size", "set model.vocab_size or let the "
                              "trainer take it from the tokenizer")
        self.config, self.context_len = config, config.seq_len
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.seq_len, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; the position embedding is left out by default (as in nanoGPT)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward): 6N plus attention (PaLM appendix B)."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * c.seq_len

    def describe(self) -> str:
        """One line for the run's log: size and shape."""
        c = self.config
        masked = ", document-masked attention" if c.doc_mask else ""
        return (f"{self.num_params() / 1e6:,.2f}M parameters ({c.n_layer} layers, {c.n_head} heads, "
                f"{c.n_embd} wide, vocab {c.vocab_size:,}{masked})")

    def architecture(self) -> dict:
        """What rebuilds this model (a checkpoint keeps it; :mod:`hfstream.train.export` reads it)."""
        return {"kind": "gpt", "config": dataclasses.asdict(self.config)}

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position, and the mean cross-entropy when ``targets`` is given.

        Without targets only the last position's logits are computed: (B, 1, V). With
        ``positions`` (B, T) (ids restarting at each document, as the loader gives them)
        attention stays within each document and position embeddings restart with it.
        """
        B, T = idx.shape
        if T > self.config.seq_len:
            raise ConfigError(f"sequence of length {T} is longer than model.seq_len="
                              f"{self.config.seq_len}", "crop the input to the last seq_len tokens")
        mask = None
        if positions is None:
            pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        else:
            pos, mask = document_layout(positions)                      # (B, T), (B, 1, T, T)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None  # (B, 1, V)
        logits = self.lm_head(x)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss
