"""Tests for the shuffle buffer: both twins, their parity, invariants and exact state restores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import twins
from hfstream.loader import _shuffle_py
from hfstream.errors import ConfigError, StateError

TWINS = twins("_shuffle", _shuffle_py)
_shuffle_native, needs_native, IMPLS = TWINS.native, TWINS.needs_native, TWINS.impls


def random_stream(seed: int, num_items: int = 300) -> tuple[list[str], list[int]]:
    """Items ``doc<i>`` with sizes from 0 to 400 bytes (some above the budgets used below)."""
    rng = np.random.default_rng(seed)
    return [f"doc{i}" for i in range(num_items)], rng.integers(0, 400, num_items).tolist()


def run(buf, items: list, sizes: list[int]) -> list:
    """Push one by one, popping now and then, then drain: the whole eviction sequence."""
    out = []
    for i, (item, nbytes) in enumerate(zip(items, sizes)):
        out += buf.push(item, nbytes)
        if i % 37 == 36 and len(buf):
            out.append(buf.pop())
    return out + buf.drain()


def test_splitmix64_matches_the_reference_outputs():
    # First outputs of the reference splitmix64.c seeded with 0.
    state, outputs = 0, []
    for _ in range(3):
        state, z = _shuffle_py.splitmix64(state)
        outputs.append(z)
    assert outputs == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("impl", IMPLS)
def test_exact_order_for_a_small_seed(impl):
    buf = impl.ShuffleBuffer(capacity=3, byte_budget=100, seed=0)
    assert buf.push_many(list("abcdefg"), [10] * 7) == ["d", "a", "f", "e"]
    assert buf.drain() == ["b", "g", "c"]
    assert len(buf) == 0 and buf.num_bytes == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_every_item_comes_out_exactly_once(impl):
    items, sizes = random_stream(seed=1)
    buf = impl.ShuffleBuffer(capacity=20, byte_budget=1500, seed=7)
    out = run(buf, items, sizes)
    assert sorted(out) == sorted(items)
    assert out != items  # it did shuffle


@pytest.mark.parametrize("impl", IMPLS)
def test_count_and_byte_bounds_hold_after_every_push(impl):
    items, sizes = random_stream(seed=2)
    buf = impl.ShuffleBuffer(capacity=16, byte_budget=1000, seed=3)
    held = 0
    for item, nbytes in zip(items, sizes):
        evicted = buf.push(item, nbytes)
        held += 1 - len(evicted)
        assert len(buf) == held <= buf.capacity
        assert buf.num_bytes <= buf.byte_budget or len(buf) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_an_item_over_the_budget_is_held_only_alone(impl):
    buf = impl.ShuffleBuffer(capacity=10, byte_budget=100, seed=0)
    out = buf.push_many(["a", "b"], [10, 10]) + buf.push("huge", 500)
    for i in range(20):
        out += buf.push(f"small{i}", 10)
        assert "huge" in out or len(buf) == 1  # held only while alone: memory <= budget + 1 item
        assert buf.num_bytes <= 100 or len(buf) == 1
    assert "huge" in out


@pytest.mark.parametrize("impl", IMPLS)
def test_seed_decides_the_order(impl):
    items, sizes = random_stream(seed=4)

    def order(seed: int) -> list:
        return run(impl.ShuffleBuffer(capacity=32, byte_budget=10**6, seed=seed), items, sizes)

    assert order(5) == order(5)
    assert order(5) != order(6)
    assert order(-1) == order(2**64 - 1)  # the state starts at seed mod 2**64


@pytest.mark.parametrize("impl", IMPLS)
def test_pop_on_empty_raises_index_error(impl):
    with pytest.raises(IndexError):
        impl.ShuffleBuffer(capacity=2, byte_budget=10, seed=0).pop()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kwargs, name", [
    ({"capacity": 0}, "capacity"), ({"capacity": 2.5}, "capacity"), ({"capacity": True}, "capacity"),
    ({"byte_budget": 0}, "byte_budget"), ({"byte_budget": "1GB"}, "byte_budget"),
    ({"seed": 1.0}, "seed"), ({"seed": None}, "seed"),
])
def test_bad_constructor_arguments_name_the_argument(impl, kwargs, name):
    args = {"capacity": 4, "byte_budget": 100, "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=name) as info:
        impl.ShuffleBuffer(**args)
    assert info.value.hint


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_push_arguments_raise_config_error(impl):
    buf = impl.ShuffleBuffer(capacity=4, byte_budget=100, seed=0)
    with pytest.raises(ConfigError, match="nbytes"):
        buf.push("a", -1)
    with pytest.raises(ConfigError, match="2 items but 1 sizes"):
        buf.push_many(["a", "b"], [1])
    assert len(buf) == 0 and buf.num_bytes == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_state_from_other_settings_is_refused(impl):
    state = impl.ShuffleBuffer(capacity=4, byte_budget=100, seed=0).state_dict()
    with pytest.raises(StateError, match="capacity"):
        impl.ShuffleBuffer(capacity=5, byte_budget=100, seed=0).load_state_dict(state)
    with pytest.raises(StateError, match="missing"):
        impl.ShuffleBuffer(capacity=4, byte_budget=100, seed=0).load_state_dict({})


def assert_resumes_exactly(make, items: list, sizes: list[int], make_restored=None) -> None:
    """Run to a midpoint, save, finish; restore into a fresh buffer, finish: identical."""
    mid = len(items) // 2
    buf = make()
    buf.push_many(items[:mid], sizes[:mid])
    state = json.loads(json.dumps(buf.state_dict()))  # plain types only
    rest = run(buf, items[mid:], sizes[mid:])
    restored = (make_restored or make)()
    restored.load_state_dict(state)
    assert run(restored, items[mid:], sizes[mid:]) == rest


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_state_round_trip_mid_stream(impl, seed):
    items, sizes = random_stream(seed)
    assert_resumes_exactly(lambda: impl.ShuffleBuffer(24, 2000, seed), items, sizes)


@needs_native
@pytest.mark.parametrize("seed", range(6))
def test_native_matches_python_twin(seed):
    rng = np.random.default_rng(seed)
    items, sizes = random_stream(seed, num_items=500)
    capacity, budget = int(rng.integers(1, 64)), int(rng.integers(1, 5000))
    py = _shuffle_py.ShuffleBuffer(capacity, budget, seed * 2**40 - 3)
    nat = _shuffle_native.ShuffleBuffer(capacity, budget, seed * 2**40 - 3)
    for lo in range(0, len(items), 50):  # push and push_many, with pops between
        chunk = slice(lo, lo + 50)
        if lo % 100:
            assert py.push_many(items[chunk], sizes[chunk]) == nat.push_many(items[chunk], sizes[chunk])
        else:
            for item, nbytes in zip(items[chunk], sizes[chunk]):
                assert py.push(item, nbytes) == nat.push(item, nbytes)
        if len(py):
            assert py.pop() == nat.pop()
        assert py.state_dict() == nat.state_dict()
        assert (len(py), py.num_bytes) == (len(nat), nat.num_bytes)
    assert py.drain() == nat.drain()


@needs_native
def test_states_load_across_twins():
    items, sizes = random_stream(seed=9)

    def make_py():
        return _shuffle_py.ShuffleBuffer(24, 2000, 11)

    def make_native():
        return _shuffle_native.ShuffleBuffer(24, 2000, 11)

    assert_resumes_exactly(make_py, items, sizes, make_restored=make_native)
    assert_resumes_exactly(make_native, items, sizes, make_restored=make_py)


# -- warm-up (webdataset's "initial"): items flow early, the buffer then grows to capacity --

@pytest.mark.parametrize("impl", IMPLS)
def test_warmup_evicts_early_then_grows_to_capacity(impl):
    buf = impl.ShuffleBuffer(capacity=100, byte_budget=1 << 30, seed=3, warmup=10)
    lengths, out = [], []
    for i in range(400):
        out.extend(buf.push(i, 1))
        lengths.append(len(buf))
    assert lengths[9] == 10 and lengths[10] == 10       # evicting from the 11th push on
    assert lengths[59] == 30                            # then growing at half rate
    assert max(lengths) == 100 and lengths[-1] == 100   # up to capacity, never beyond
    out.extend(buf.drain())
    assert sorted(out) == list(range(400))


@needs_native
def test_warmup_twins_agree_and_restore_exactly():
    NATIVE, PY = _shuffle_native, _shuffle_py
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 50, 3000).tolist()
    bufs = [m.ShuffleBuffer(capacity=500, byte_budget=20_000, seed=9, warmup=40) for m in (NATIVE, PY)]
    outs = [[], []]
    for k, (item, size) in enumerate(zip(range(3000), sizes)):
        for b, o in zip(bufs, outs):
            o.extend(b.push(item, size))
        if k == 1500:  # swap in restored copies mid-stream, across twins
            states = [b.state_dict() for b in bufs]
            bufs = [m.ShuffleBuffer(capacity=500, byte_budget=20_000, seed=0, warmup=40) for m in (NATIVE, PY)]
            bufs[0].load_state_dict(states[1])
            bufs[1].load_state_dict(states[0])
    assert outs[0] == outs[1]
