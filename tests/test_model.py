"""The built-in GPT: shapes, initial loss, causality, optimizer groups, generation, learning."""

import math

import pytest
import torch

from hfstream.train.config import ModelConfig
from hfstream.errors import ConfigError
from hfstream.train.model import GPT

V, T = 96, 16


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, seq_len=T, vocab_size=V))


def test_shapes_and_initial_loss_near_uniform(model):
    idx, targets = torch.randint(0, V, (2, 3, T))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, T, V)
    assert abs(loss.item() - math.log(V)) < 0.3   # small init: close to uniform
    logits, loss = model(idx)
    assert logits.shape == (3, 1, V) and loss is None


def test_weights_are_tied_and_counted_once(model):
    assert model.wte.weight is model.lm_head.weight
    c = model.config
    blocks = c.n_layer * (12 * c.n_embd ** 2 + 2 * c.n_embd)   # no biases; 2 LayerNorm gains
    expected = V * c.n_embd + blocks + c.n_embd                 # + final LayerNorm
    assert model.num_params() == expected
    assert model.num_params(non_embedding=False) == expected + T * c.n_embd


def test_attention_is_causal(model):
    model.eval()
    idx = torch.randint(0, V, (1, T))
    changed = idx.clone()
    changed[0, -1] = (idx[0, -1] + 1) % V
    a, _ = model(idx, idx)
    b, _ = model(changed, changed)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6)   # the past does not see the future
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_optimizer_decays_matrices_only_and_covers_every_parameter_once(model):
    opt = model.configure_optimizer(learning_rate=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_it_learns_a_batch(model):
    torch.manual_seed(1)
    idx = torch.randint(0, V, (4, T + 1))
    opt = model.configure_optimizer(learning_rate=3e-3, weight_decay=0.0)
    first = None
    for _ in range(60):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 3


def test_generate_is_reproducible_greedy_and_stops(model):
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(0))
    b = model.generate(prompt, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 23) and torch.equal(a, b) and torch.equal(a[:, :3], prompt)
    greedy = model.generate(prompt, 5, temperature=0.0)
    assert torch.equal(greedy, model.generate(prompt, 5, temperature=1.0, top_k=1))
    first = int(greedy[0, 3])
    stopped = model.generate(prompt, 5, temperature=0.0, stop_id=first)
    assert stopped.shape == (1, 4)
    long = model.generate(torch.randint(0, V, (1, T)), 3)   # context is cropped to seq_len
    assert long.shape == (1, T + 3)


def test_bad_inputs():
    with pytest.raises(ConfigError, match="vocab_size"):
        GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, seq_len=4))
    model = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, seq_len=4, vocab_size=10))
    with pytest.raises(ConfigError, match="longer than model.seq_len=4"):
        model(torch.zeros((1, 5), dtype=torch.long))
