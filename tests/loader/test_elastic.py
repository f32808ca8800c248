"""Virtual shards: one global row order whatever ranks × workers read it, and states that move between them.

Ranks are simulated here by several loaders in one process (shard=r, num_shards=W), each a real
pipeline over real files with real worker subprocesses; the global batch of a step is the
ranks' rows interleaved (row u of the global order is rank u mod W's row u div W). The
trainer's torchrun tests (tests/train/test_elastic_train.py) do the same across processes.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from hfstream.errors import ConfigError, StateError
from hfstream.loader.elastic import merge_states
from hfstream.loader.loader import StreamingTextDataLoader
from hfstream.loader.shards import ShardPlan
from hfstream.mixing.streams import Stream
from tests.conftest import make_texts, write_parquet

K, T = 4, 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four files of 7-document row groups: 4 × 60 documents of varied lengths."""
    root = tmp_path_factory.mktemp("elastic")
    texts = make_texts(240, seed=5)
    for i in range(4):
        write_parquet(root / f"part-{i}.parquet", texts[i * 60:(i + 1) * 60])
    return str(root / "*.parquet"), texts


def loaders(data, tokenizer, world, workers=0, batch=2, **options):
    return [StreamingTextDataLoader(data, tokenizer, batch, T, shuffle_buffer_size=16, seed=3, virtual_shards=K,
                                    shard=r, num_shards=world, num_workers=workers, token_cache=False,
                                    **options) for r in range(world)]


def global_rows(ranks, steps, streams=None):
    """``steps`` global batches: each rank's next batch, interleaved (row u from rank u mod W);
    with ``streams`` (a list), each rank's batch's stream ids are appended to it."""
    out = []
    for _ in range(steps):
        batches = [next(loader) for loader in ranks]
        parts = [b.inputs for b in batches]
        out.append(torch.stack(parts, dim=1).reshape(-1, parts[0].shape[1]))  # (B, W, T) -> (W*B, T): u = c*W + r
        if streams is not None:
            streams.append([b.stream_ids.tolist() for b in batches])
    return out


def digest(batches):
    return [hashlib.sha1(b.numpy().tobytes()).hexdigest()[:12] for b in batches]


def close(ranks):
    for loader in ranks:
        loader.close()


def test_the_plan_puts_row_u_on_shard_u_mod_k_whatever_the_ranks_and_workers():
    for world, workers in [(1, 0), (2, 0), (2, 2), (4, 1), (1, 4)]:
        for rank in range(world):
            plan = ShardPlan(8, world, rank, workers)
            for c in range(40):
                u = c * world + rank
                assert plan.shard_of(c) == u % 8
                assert plan.shard_of(c) in plan.shards(plan.lane_of(c))


def test_shards_that_do_not_divide_say_which_k_to_use():
    with pytest.raises(ConfigError) as err:
        ShardPlan(6, 4, 0, 1)
    assert "virtual_shards=8" in err.value.hint and "240" in err.value.hint
    assert "4 × 1 = 4" in str(err.value)


def test_global_batches_are_the_same_on_one_two_and_four_ranks(corpus, tokenizer_path):
    data, _ = corpus
    reference = None
    for world, workers, batch in [(1, 0, 4), (2, 0, 2), (4, 0, 1), (2, 2, 2)]:
        ranks = loaders(data, tokenizer_path, world, workers, batch=batch)
        try:
            got = digest(global_rows(ranks, 6))
        finally:
            close(ranks)
        reference = reference or got
        assert got == reference, (world, workers)


def test_a_state_merged_over_ranks_resumes_on_other_ranks_exactly(corpus, tokenizer_path):
    data, _ = corpus
    ranks = loaders(data, tokenizer_path, 1, batch=4)
    try:
        straight = digest(global_rows(ranks, 10))
    finally:
        close(ranks)
    ranks = loaders(data, tokenizer_path, 2, batch=2)
    try:
        first = digest(global_rows(ranks, 4))
        state = merge_states([loader.state_dict() for loader in ranks])
    finally:
        close(ranks)
    resumed = loaders(data, tokenizer_path, 4, workers=1, batch=1)
    try:
        for loader in resumed:
            loader.load_state_dict(state)
        rest = digest(global_rows(resumed, 6))
    finally:
        close(resumed)
    assert first + rest == straight


def test_one_ranks_state_is_refused_where_its_shards_moved(corpus, tokenizer_path):
    data, _ = corpus
    ranks = loaders(data, tokenizer_path, 2)
    try:
        global_rows(ranks, 2)
        alone = ranks[0].state_dict()
    finally:
        close(ranks)
    single = loaders(data, tokenizer_path, 1, batch=4)[0]
    try:
        with pytest.raises(StateError) as err:
            single.load_state_dict(alone)
        assert "merge_states" in err.value.hint
    finally:
        single.close()


@pytest.mark.parametrize("method", ["random", "stratified", "per_stream", "device_per_stream"])
def test_a_token_mixture_keeps_its_global_batches_on_other_ranks(corpus, tokenizer_path, tmp_path, method):
    data, texts = corpus
    other = write_parquet(tmp_path / "other.parquet", make_texts(120, seed=9, prefix="other"))
    streams = [Stream(data, proportion=0.7), Stream(str(other), proportion=0.3)]
    reference = None
    for world, batch in [(1, 4), (2, 2), (4, 1)]:
        ranks = loaders(streams, tokenizer_path, world, batch=batch, mix_by="tokens", batching_method=method,
                        global_batch=4, schedule_ranks=2, epoch_size=20_000)
        streams_of = []
        try:
            got = digest(global_rows(ranks, 6, streams_of))
        finally:
            close(ranks)
        reference = reference or got
        assert got == reference, (method, world)
        if method == "per_stream":       # every global batch from one stream
            assert all(len({i for ids in step for i in ids}) == 1 for step in streams_of)
        if method == "device_per_stream" and world == 2:  # on the run's ranks, each rank's batch one stream
            assert all(len(set(ids)) == 1 for step in streams_of for ids in step)
