"""Tests for the token packer: both twins, their parity, invariants and exact state restores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import twins
from hfstream.loader import _packing_py
from hfstream.errors import ConfigError, DataFormatError, StateError

TWINS = twins("_packing", _packing_py)
_packing_native, needs_native, IMPLS = TWINS.native, TWINS.needs_native, TWINS.impls
EOS = 50_000


def random_docs(seed: int, num_docs: int = 60, max_len: int = 40) -> list:
    """Documents in every accepted form: int32/uint32/int64/int16 arrays, lists, empties."""
    rng = np.random.default_rng(seed)
    dtypes = [np.int32, np.uint32, np.int64, np.int16]
    docs = []
    for i in range(num_docs):
        doc = rng.integers(0, 30_000, int(rng.integers(0, max_len)))
        docs.append(doc.tolist() if i % 5 == 4 else doc.astype(dtypes[i % 4]))
    return docs


def expected_stream(docs: list, eos_id: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The spec, written out: doc0 EOS doc1 EOS ... and each token's position in its document."""
    tokens, positions = [], []
    for doc in docs:
        doc = list(doc) + ([eos_id] if eos_id is not None and len(doc) else [])
        tokens += doc
        positions += range(len(doc))
    return np.array(tokens, np.int64), np.array(positions, np.int64)


def pop_all(packer) -> list:
    return [packer.pop() for _ in range(packer.num_ready)]


@pytest.mark.parametrize("impl", IMPLS)
def test_exact_small_case(impl):
    packer = impl.TokenPacker(batch_size=2, seq_len=3, eos_id=99, with_positions=True)
    packer.add_many([np.arange(5, dtype=np.int32), [], [7, 8, 9], np.arange(3, dtype=np.uint32)])
    assert (packer.num_ready, packer.num_pending_tokens, packer.num_empty_skipped) == (1, 14, 1)
    rows, positions = packer.pop()
    assert rows.dtype == positions.dtype == np.int64
    assert rows.tolist() == [[0, 1, 2, 3], [4, 99, 7, 8]]
    assert positions.tolist() == [[0, 1, 2, 3], [4, 5, 0, 1]]
    assert packer.num_pending_tokens == 6 and packer.num_ready == 0
    with pytest.raises(IndexError, match="no complete batch"):
        packer.pop()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("eos_id", [EOS, None])
@pytest.mark.parametrize("batch_size, seq_len", [(1, 1), (3, 7), (2, 64)])
def test_rows_concatenate_to_the_document_stream(impl, eos_id, batch_size, seq_len):
    docs = random_docs(seed=seq_len)
    packer = impl.TokenPacker(batch_size, seq_len, eos_id, with_positions=True)
    batches = []
    for lo in range(0, len(docs), 7):  # add in chunks, pop whenever ready
        packer.add_many(docs[lo:lo + 7])
        batches += pop_all(packer)
    tokens, positions = expected_stream(docs, eos_id)
    assert batches, "the test should produce at least one batch"
    for rows, pos in batches:
        assert rows.shape == pos.shape == (batch_size, seq_len + 1)
    popped = np.concatenate([rows.reshape(-1) for rows, _ in batches])  # (N, B, T+1) -> (N*B*(T+1),)
    assert np.array_equal(popped, tokens[:len(popped)])
    assert np.array_equal(np.concatenate([pos.reshape(-1) for _, pos in batches]),
                          positions[:len(popped)])
    assert packer.num_pending_tokens == len(tokens) - len(popped) < batch_size * (seq_len + 1)
    assert packer.num_empty_skipped == sum(len(doc) == 0 for doc in docs)


@pytest.mark.parametrize("impl", IMPLS)
def test_positions_restart_after_eos_and_continue_across_rows(impl):
    packer = impl.TokenPacker(batch_size=1, seq_len=3, eos_id=0, with_positions=True)
    packer.add_many([[5] * 6, [6] * 2])  # 5 5 5 5 | 5 5 EOS 6 | 6 EOS
    (rows1, pos1), (rows2, pos2) = pop_all(packer)
    assert pos1.tolist() == [[0, 1, 2, 3]]
    assert pos2.tolist() == [[4, 5, 6, 0]]  # the EOS carries position 6 of the document it ends
    assert rows2.tolist() == [[5, 5, 0, 6]]


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_documents_are_skipped_and_counted(impl):
    packer = impl.TokenPacker(batch_size=1, seq_len=2, eos_id=9)
    packer.add_many([[], np.array([], np.int32), np.empty(0), [1], []])
    packer.add([2])
    assert packer.num_empty_skipped == 4
    assert packer.pop().tolist() == [[1, 9, 2]]


@pytest.mark.parametrize("impl", IMPLS)
def test_without_positions_pop_returns_rows_only(impl):
    packer = impl.TokenPacker(batch_size=2, seq_len=2, eos_id=None)
    packer.add(np.arange(6, dtype=np.int64))
    rows = packer.pop()
    assert isinstance(rows, np.ndarray) and rows.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("impl", IMPLS)
def test_unusual_array_layouts_and_dtypes_are_converted(impl):
    packer = impl.TokenPacker(batch_size=1, seq_len=3, eos_id=None)
    base = np.arange(8, dtype=np.int64)
    packer.add_many([base[::2], base[:4].astype(">i4"), np.array([1, 2], np.uint8), (7, 7)])
    assert [rows.tolist() for rows in pop_all(packer)] == [
        [[0, 2, 4, 6]], [[0, 1, 2, 3]], [[1, 2, 7, 7]]]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("tokens, match", [
    (np.zeros((2, 3), np.int32), "1-D"), ([0.5, 1.5], "integers"), ("hello", "1-D"),
])
def test_bad_documents_raise_data_format_error(impl, tokens, match):
    with pytest.raises(DataFormatError, match=match):
        impl.TokenPacker(batch_size=1, seq_len=4, eos_id=0).add(tokens)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kwargs, name", [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 1.5}, "batch_size"),
    ({"seq_len": 0}, "seq_len"), ({"seq_len": "1024"}, "seq_len"),
    ({"eos_id": -1}, "eos_id"), ({"eos_id": 2.0}, "eos_id"),
    ({"with_positions": "yes"}, "with_positions"),
])
def test_bad_arguments_name_the_argument(impl, kwargs, name):
    args = {"batch_size": 2, "seq_len": 8, "eos_id": 0, **kwargs}
    with pytest.raises(ConfigError, match=name) as info:
        impl.TokenPacker(**args)
    assert info.value.hint


@pytest.mark.parametrize("impl", IMPLS)
def test_state_from_other_settings_is_refused(impl):
    state = impl.TokenPacker(batch_size=2, seq_len=8, eos_id=0).state_dict()
    with pytest.raises(StateError, match="seq_len"):
        impl.TokenPacker(batch_size=2, seq_len=9, eos_id=0).load_state_dict(state)
    with pytest.raises(StateError, match="missing"):
        impl.TokenPacker(batch_size=2, seq_len=8, eos_id=0).load_state_dict({"tokens": []})


def assert_resumes_exactly(make, docs: list, make_restored=None) -> None:
    """Run to a midpoint, save, finish; restore into a fresh packer, finish: bitwise identical."""
    mid = len(docs) // 2
    packer = make()
    packer.add_many(docs[:mid])
    pop_all(packer)
    state = json.loads(json.dumps(packer.state_dict()))  # plain types only
    packer.add_many(docs[mid:])
    rest = pop_all(packer)
    restored = (make_restored or make)()
    restored.load_state_dict(state)
    restored.add_many(docs[mid:])
    assert len(rest) > 0
    for expected, got in zip(rest, pop_all(restored), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert restored.state_dict() == packer.state_dict()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("with_positions", [False, True])
def test_state_round_trip_mid_stream(impl, with_positions):
    docs = random_docs(seed=3)
    assert_resumes_exactly(lambda: impl.TokenPacker(2, 16, EOS, with_positions), docs)


def test_python_twin_memory_stays_bounded_when_the_consumer_pops():
    packer = _packing_py.TokenPacker(batch_size=2, seq_len=32, eos_id=0)
    for doc in random_docs(seed=4, num_docs=2000, max_len=100):
        packer.add(doc)
        pop_all(packer)
    # The internal buffer holds at most ~2x (pending + one document), never the whole stream.
    assert len(packer._tokens) <= 4 * (2 * 33 + 100)


@needs_native
@pytest.mark.parametrize("seed", range(6))
def test_native_matches_python_twin(seed):
    rng = np.random.default_rng(seed)
    batch_size, seq_len = int(rng.integers(1, 5)), int(rng.integers(1, 100))
    eos_id = None if seed % 3 == 2 else int(rng.integers(0, 50_000))
    with_positions = bool(seed % 2)
    py = _packing_py.TokenPacker(batch_size, seq_len, eos_id, with_positions)
    nat = _packing_native.TokenPacker(batch_size, seq_len, eos_id, with_positions)
    docs = random_docs(seed, num_docs=300, max_len=400)
    for lo in range(0, len(docs), 25):
        chunk = docs[lo:lo + 25]
        if lo % 50:
            py.add_many(chunk)
            nat.add_many(chunk)
        else:
            for doc in chunk:
                py.add(doc)
                nat.add(doc)
        for _ in range(int(rng.integers(0, py.num_ready + 1))):  # leave some batches pending
            np.testing.assert_array_equal(py.pop(), nat.pop())
        assert py.state_dict() == nat.state_dict()
        assert (py.num_ready, py.num_pending_tokens) == (nat.num_ready, nat.num_pending_tokens)


@needs_native
@pytest.mark.parametrize("with_positions", [False, True])
def test_states_load_across_twins(with_positions):
    docs = random_docs(seed=5)

    def make_py():
        return _packing_py.TokenPacker(3, 10, EOS, with_positions)

    def make_native():
        return _packing_native.TokenPacker(3, 10, EOS, with_positions)

    assert_resumes_exactly(make_py, docs, make_restored=make_native)
    assert_resumes_exactly(make_native, docs, make_restored=make_py)
