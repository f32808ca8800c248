"""Every state hfstream makes loads with torch.load's defaults (weights_only=True) and restores bitwise."""

import io

import pytest
import torch

from conftest import make_texts, write_jsonl, write_parquet
from hfstream import Stream, StreamingTextDataLoader
from hfstream.tokens.encoder import TextEncoder

B, T = 2, 16


def through_torch(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer)  # the defaults: weights_only=True on torch >= 2.6


def rows(loader, n):
    return [torch.cat([x, y[:, -1:]], 1) for _, (x, y) in zip(range(n), loader)]


@pytest.fixture
def files(tmp_path):
    texts = make_texts(160, seed=21)
    for k in range(2):
        write_parquet(tmp_path / f"p{k}.parquet", texts[80 * k:80 * (k + 1)], row_group_size=9)
    write_jsonl(tmp_path / "b.jsonl", [{"text": t} for t in make_texts(90, seed=22, prefix="other")])
    return tmp_path


def loaders(files, **options):
    parquet = str(files / "*.parquet")
    mixture = [Stream(parquet, proportion=0.6, label="a"), Stream(str(files / "b.jsonl"), proportion=0.4, label="b")]
    common = dict(shuffle_buffer_size=30, shuffle_warmup=6, seed=4, prefetch=3, **options)
    return {
        "thread": lambda enc, cache: StreamingTextDataLoader(parquet, enc, B, T, epochs=None, token_cache=cache, **common),
        "workers": lambda enc, cache: StreamingTextDataLoader(parquet, enc, B, T, epochs=None, num_workers=2,
                                                              state_every=3, token_cache=cache, **common),
        "row_mixer": lambda enc, cache: StreamingTextDataLoader(mixture, enc, B, T, mix_by="tokens", epoch_size=20_000,
                                                                token_cache=cache, **common),
        "document_mixture": lambda enc, cache: StreamingTextDataLoader(mixture, enc, B, T, epoch_size=300,
                                                                       token_cache=cache, **common),
        "texts": lambda enc, cache: StreamingTextDataLoader(make_texts(200, seed=3), enc, B, T, token_cache=cache,
                                                            **common),
    }


@pytest.mark.parametrize("kind", ["thread", "workers", "row_mixer", "document_mixture", "texts"])
def test_state_loads_with_torch_defaults_and_restores_bitwise(files, tokenizer_path, tmp_path, kind):
    encoder = TextEncoder(tokenizer_path)
    make = loaders(files)[kind]
    cache = tmp_path / "cache"
    with make(encoder, cache) as loader:
        rows(loader, 17)
        state = loader.state_dict()
        expected = rows(loader, 25)
    with make(encoder, cache) as loader:
        loader.load_state_dict(through_torch(state))
        again = rows(loader, 25)
    assert len(again) == len(expected) == 25
    assert all(torch.equal(a, b) for a, b in zip(again, expected))


def test_corpus_and_mixture_states_load_with_torch_defaults(files):
    from hfstream.sources import open_source

    for data in (str(files / "b.jsonl"), [Stream(str(files / "b.jsonl"), proportion=1.0)]):
        with open_source(data) as source:
            next(iter(source.stream()))
            state = source.state_dict()
        assert through_torch(state) == state
