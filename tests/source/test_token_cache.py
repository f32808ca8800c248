"""The token cache: the same batches with and without it (resume included), keys, corruption, eviction, concurrency."""

import io
import os
import threading

import numpy as np
import pytest
import torch

from conftest import make_texts, write_parquet
from hfstream import StreamingTextDataLoader
from hfstream.source.token_cache import TokenCache
from hfstream.tokens.encoder import TextEncoder

B, T = 2, 32


@pytest.fixture
def data(tmp_path):
    texts = make_texts(240, seed=11)
    texts[5] = ""  # skipped by min_length: rows and documents differ
    for k in range(2):
        write_parquet(tmp_path / f"p{k}.parquet", texts[120 * k:120 * (k + 1)], row_group_size=13)
    return str(tmp_path / "*.parquet")


@pytest.fixture
def encoder(tokenizer_path):
    return TextEncoder(tokenizer_path)


def rows_of(loader, n=None):
    out = []
    for x, y in loader:
        out.append(torch.cat([x, y[:, -1:]], 1))
        if n is not None and len(out) >= n:
            break
    return out


def make(data, encoder, cache, **kw):
    options = dict(shuffle_buffer_size=40, shuffle_warmup=8, seed=5, epochs=3, prefetch=2)
    return StreamingTextDataLoader(data, encoder, B, T, token_cache=cache, **{**options, **kw})


def same(a, b):
    return len(a) == len(b) > 0 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_batches_are_the_same_with_and_without_the_cache_and_later_passes_read_it(data, encoder, tmp_path):
    with make(data, encoder, False, epochs=5) as loader:
        plain = rows_of(loader)
    cache = TokenCache(tmp_path / "cache")
    for run in range(2):  # run 0 writes, and its later epochs read what the first wrote; run 1 reads only
        with make(data, encoder, cache, epochs=5) as loader:
            assert same(rows_of(loader), plain)
            served = loader.pipeline.docs.num_cached_docs
        assert served >= (239 if run == 0 else 5 * 239)
    assert cache.info()["chunks"] >= 1


def test_resume_is_exact_across_cached_and_uncached_loaders(data, encoder, tmp_path):
    with make(data, encoder, False) as loader:
        straight = rows_of(loader)
    got, state = [], None
    caches = [tmp_path / "c", False, tmp_path / "c", tmp_path / "other", tmp_path / "c"]
    for cut, cache in zip([5, 90, 91, 200, None], caches):
        with make(data, encoder, cache) as loader:
            if state is not None:
                buffer = io.BytesIO()
                torch.save(state, buffer)  # and back with torch.load's defaults (weights_only=True)
                buffer.seek(0)
                loader.load_state_dict(torch.load(buffer))
            got += rows_of(loader, None if cut is None else cut - len(got))
            state = loader.state_dict()
    assert same(got, straight)


def test_a_changed_file_or_another_tokenizer_never_uses_the_cache(data, encoder, tmp_path, tokenizer_path):
    from conftest import train_small_tokenizer

    cache = TokenCache(tmp_path / "cache")
    with make(data, encoder, cache, epochs=1) as loader:
        rows_of(loader)
    other = TextEncoder(train_small_tokenizer(tmp_path / "tok2.json", make_texts(300, seed=1), vocab_size=400))
    with make(data, other, cache, epochs=1) as loader:
        assert same(rows_of(loader), rows_of(make(data, other, False, epochs=1)))
        assert loader.pipeline.docs.num_cached_docs == 0
    path = sorted(tmp_path.glob("*.parquet"))[0]
    write_parquet(path, make_texts(120, seed=99), row_group_size=13)  # same name, new content
    with make(data, encoder, cache, epochs=1) as loader:
        fresh = rows_of(loader)
        assert loader.pipeline.docs.num_cached_docs == 0
    assert same(fresh, rows_of(make(data, encoder, False, epochs=1)))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_chunk_is_detected_and_written_again(data, encoder, tmp_path, damage):
    cache_dir = tmp_path / "cache"
    with make(data, encoder, cache_dir, epochs=1) as loader:
        expected = rows_of(loader)
    chunks = sorted(cache_dir.rglob("*.tok"))
    assert chunks
    for path in chunks:
        raw = bytearray(path.read_bytes())
        if damage == "truncate":
            raw = raw[:len(raw) - 9]
        else:
            raw[-5] ^= 0xFF
        path.write_bytes(bytes(raw))
    with make(data, encoder, cache_dir, epochs=1) as loader:
        assert same(rows_of(loader), expected)
        assert loader.pipeline.docs.num_cached_docs == 0
    with make(data, encoder, cache_dir, epochs=1) as loader:  # written again by the run above
        assert same(rows_of(loader), expected)
        assert loader.pipeline.docs.num_cached_docs > 0


def test_concurrent_writers_of_the_same_stream_are_safe(data, encoder, tmp_path):
    cache_dir = tmp_path / "cache"
    results = {}

    def run(k):
        with make(data, encoder, cache_dir, epochs=2) as loader:
            results[k] = rows_of(loader)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert same(results[0], results[1]) and same(results[0], results[2])
    assert not list(cache_dir.rglob(".tmp-*"))
    with make(data, encoder, cache_dir, epochs=2) as loader:
        assert same(rows_of(loader), results[0])
        assert loader.pipeline.docs.num_cached_docs > 0


def test_the_budget_evicts_the_least_recently_used_chunks(tmp_path):
    from hfstream.source.token_cache import ChunkName

    docs = [np.arange(100, dtype=np.uint32)] * 2
    size = TokenCache(tmp_path / "probe").write("s", ChunkName(0, 2, True), [0, 1], docs)
    cache = TokenCache(tmp_path / "c", budget=int(4.5 * size))  # four chunks fit, five do not
    tmp_path = tmp_path / "c"
    for k in range(4):
        cache.write(f"s{k}", ChunkName(0, 2, True), [0, 1], docs)
        os.utime(next((tmp_path / f"s{k}").glob("*.tok")), (1000 + k, 1000 + k))
    cache.open("s0", ChunkName(0, 2, True))  # used now: the newest
    cache.write("s4", ChunkName(0, 2, True), [0, 1], docs)
    left = {p.parent.name for p in tmp_path.rglob("*.tok")}
    assert left == {"s0", "s2", "s3", "s4"} and sum(p.stat().st_size for p in tmp_path.rglob("*.tok")) <= cache.budget
    assert cache.clear() > 0 and not list(tmp_path.rglob("*.tok"))


def test_restore_reads_documents_again_when_the_cache_lost_them(data, encoder, tmp_path):
    cache_dir = tmp_path / "cache"
    with make(data, encoder, cache_dir, epochs=None) as loader:
        rows_of(loader, 30)
        state = loader.state_dict()
        expected = rows_of(loader, 20)
    assert state["pipeline"]["form"] == "refs"
    TokenCache(cache_dir).clear()
    with make(data, encoder, cache_dir, epochs=None) as loader:
        loader.load_state_dict(state)
        assert same(rows_of(loader, 20), expected)


def test_sources_that_cannot_seek_keep_token_arrays_in_the_state(encoder):
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    corpus = HuggingFaceStreamingCorpus("ws://127.0.0.1:9/ws")
    assert not corpus.tokenized(TokenCache(), "k").seekable
    texts = make_texts(120, seed=2)
    with StreamingTextDataLoader(iter(texts), encoder, B, T, shuffle_buffer_size=20) as loader:
        rows_of(loader, 3)
        state = loader.state_dict()
    assert state["pipeline"]["form"] == "tokens" and state["pipeline"]["buffer"]["items"]["data"]


def test_cache_cli_shows_and_clears_the_cache(data, encoder, tmp_path, capsys):
    from hfstream.cli.main import main

    with make(data, encoder, tmp_path / "cache", epochs=1) as loader:
        rows_of(loader)
    assert main(["cache", "info", "--dir", str(tmp_path / "cache"), "--json"]) == 0
    info = __import__("json").loads(capsys.readouterr().out)
    assert info["chunks"] >= 1 and info["streams"][0]["dataset"] == data
    assert main(["cache", "info", "--dir", str(tmp_path / "cache")]) == 0
    assert "shard 0/1" in capsys.readouterr().out
    assert main(["cache", "clear", "--dir", str(tmp_path / "cache")]) == 0
    assert TokenCache(tmp_path / "cache").info()["chunks"] == 0


@pytest.mark.parametrize("options", [{"seed": 7, "epochs": 3}, {"max_samples": 150, "epochs": 3},
                                     {"shard": 1, "num_shards": 2, "shard_by": "rows", "epochs": 4},
                                     {"min_length": 40, "epochs": 3}])
def test_cached_passes_keep_every_source_option(data, encoder, tmp_path, options):
    with make(data, encoder, False, **options) as loader:
        plain = rows_of(loader)
    for _ in range(2):
        with make(data, encoder, tmp_path / "cache", **options) as loader:
            assert same(rows_of(loader), plain)
    assert loader.pipeline.docs.num_cached_docs > 0


def test_held_out_documents_stay_out_of_cached_passes(data, encoder, tmp_path):
    from hfstream.source.corpus import HuggingFaceStreamingCorpus
    from hfstream.source.heldout import ExcludingSource, read_head

    with HuggingFaceStreamingCorpus(data) as corpus:
        held = read_head(corpus, 20)
    runs = []
    for cache in (False, tmp_path / "cache", tmp_path / "cache"):
        source = ExcludingSource(HuggingFaceStreamingCorpus(data, epochs=3, batch_size=32), held)
        with StreamingTextDataLoader(source, encoder, B, T, shuffle_buffer_size=0, token_cache=cache) as loader:
            runs.append(rows_of(loader))
            cached = loader.pipeline.docs.inner.num_cached_docs if cache else 0
        source.close()
    assert same(runs[0], runs[1]) and same(runs[0], runs[2]) and cached > 0
    text = encoder.decode(torch.cat(runs[2]).flatten().tolist())
    assert not any(h in text for h in held if len(h) > 40)


def test_a_state_from_before_row_group_sharding_reads_another_cache_stream(data, encoder, tmp_path):
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    corpus = HuggingFaceStreamingCorpus(data, shard=1, num_shards=2)
    docs = corpus.tokenized(TokenCache(tmp_path), "k")
    fresh = docs.key_of(0)
    legacy = {k: v for k, v in corpus.state_dict().items() if k not in ("shard_mode", "revision")}
    docs.load_state_dict(legacy)  # rows were counted as "auto then chose" before row groups
    assert docs.key_of(0) != fresh
