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


# -- document-masked attention (model.doc_mask) -------------------------------------------------

def test_document_layout_restarts_positions_and_blocks_attention_between_documents():
    from hfstream.train.model import document_layout

    positions = torch.tensor([[7, 8, 0, 1, 2, 0]])           # the row starts inside a document
    pos, mask = document_layout(positions)
    assert pos.tolist() == [[0, 1, 0, 1, 2, 0]]
    assert mask.shape == (1, 1, 6, 6)
    assert mask[0, 0].int().tolist() == [[1, 0, 0, 0, 0, 0],
                                         [1, 1, 0, 0, 0, 0],
                                         [0, 0, 1, 0, 0, 0],
                                         [0, 0, 1, 1, 0, 0],
                                         [0, 0, 1, 1, 1, 0],
                                         [0, 0, 0, 0, 0, 1]]


def test_a_tokens_logits_do_not_change_when_the_previous_document_in_its_row_changes():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, seq_len=T, vocab_size=V, doc_mask=True)).eval()
    # row: document A (positions 0..5, its EOS included), then document B (0..9)
    positions = torch.cat([torch.arange(6), torch.arange(10)])[None]
    row = torch.randint(1, V, (1, T))
    other = row.clone()
    other[0, :6] = torch.randint(1, V, (6,))                 # another previous document, same length
    a, _ = model(row, row, positions)
    b, _ = model(other, other, positions)
    torch.testing.assert_close(a[:, 6:], b[:, 6:], rtol=0, atol=1e-6)   # B's tokens do not see A
    assert not torch.allclose(a[:, :6], b[:, :6])
    plain, _ = model(row, row)                               # without positions: attends across
    assert not torch.allclose(plain[:, 6:], a[:, 6:])
    # B scored alone, from its own start: the same logits (positions restart at each document)
    alone, _ = model(row[:, 6:], row[:, 6:])
    torch.testing.assert_close(alone, a[:, 6:], rtol=1e-5, atol=1e-5)


def test_a_row_without_document_boundaries_is_plain_causal_attention(model):
    model.eval()
    idx = torch.randint(0, V, (2, T))
    inside = torch.arange(100, 100 + T).repeat(2, 1)         # one long document, mid-way
    torch.testing.assert_close(model(idx, idx, inside)[0], model(idx, idx)[0], rtol=1e-5, atol=1e-6)


def test_evaluation_positions_match_the_packers():
    import numpy as np

    from hfstream.loader.packing import TokenPacker
    from hfstream.train.evaluate import document_positions
    from hfstream.train.model import document_layout

    packer = TokenPacker(3, 7, eos_id=0, with_positions=True)
    rng = np.random.default_rng(0)
    packer.add_many([rng.integers(1, 50, n) for n in (3, 11, 1, 5, 9, 2, 4)])
    rows, positions = packer.pop()                           # (B, T+1) each
    trained, _ = document_layout(torch.from_numpy(positions[:, :-1]))
    assert document_positions(rows, eos_id=0)[:, :-1].tolist() == trained.tolist()
