"""RowMixer on its own: rows follow the schedule, budgets in tokens, exact state, label-keyed."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from conftest import write_jsonl
from hfstream import Stream
from hfstream.errors import StateError
from hfstream.loader.row_mixer import RowMixer
from hfstream.tokens.encoder import TextEncoder


@pytest.fixture
def streams(tmp_path):
    web = write_jsonl(tmp_path / "web.jsonl", [{"text": f"web page {i} " * 20} for i in range(200)])
    code = write_jsonl(tmp_path / "code.jsonl", [{"text": f"def f{i}(): return {i}\n" * 6} for i in range(200)])
    return [Stream(str(web), proportion=3, label="web"), Stream(str(code), proportion=1, label="code")]


def mixer(streams, tokenizer_path, **options):
    return RowMixer(streams, TextEncoder(tokenizer_path), 4, 15, epoch_size="8k", seed=2,
                    shuffle_buffer_size=10, **options)


def test_rows_come_from_the_scheduled_streams_and_budgets_are_tokens(streams, tokenizer_path):
    rows_mixer = mixer(streams, tokenizer_path, epochs=1, batching_method="stratified")
    try:
        assert rows_mixer.token_budgets == [2000, 6000]             # sorted by label: code, web
        assert rows_mixer.counts == [125, 375]                     # rows of T+1 = 16 tokens
        counts = collections.Counter()
        while (rows := rows_mixer.next_batch()) is not None:
            assert rows.tokens.shape == (4, 16) and rows.stream_ids.shape == (4,)
            assert sorted(collections.Counter(rows.stream_ids.tolist()).values()) == [1, 3]  # stratified
            counts.update(rows.stream_ids.tolist())
        assert counts == {0: 125, 1: 375} and rows_mixer.shares() == {"code": 0.25, "web": 0.75}
        assert rows_mixer.stats()["shares"] == rows_mixer.shares()
    finally:
        rows_mixer.close()


def test_state_restores_exactly_and_is_keyed_by_label(streams, tokenizer_path):
    first = mixer(streams, tokenizer_path)
    for _ in range(7):
        first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch() for _ in range(10)]
    first.close()
    again = mixer(list(reversed(streams)), tokenizer_path)   # list order never matters
    again.load_state_dict(state)
    got = [again.next_batch() for _ in range(10)]
    again.close()
    assert set(state["members"]) == {"web", "code"}
    assert all(np.array_equal(a.tokens, b.tokens) and np.array_equal(a.stream_ids, b.stream_ids)
               for a, b in zip(got, expected))


def test_another_mixtures_state_is_refused(streams, tokenizer_path):
    state = mixer(streams, tokenizer_path).state_dict()
    other = RowMixer(streams, TextEncoder(tokenizer_path), 4, 15, epoch_size="16k", seed=2)
    with pytest.raises(StateError, match="other streams, weights, seed or batching"):
        other.load_state_dict(state)
    with pytest.raises(StateError, match="missing"):
        other.load_state_dict({"version": 1})
