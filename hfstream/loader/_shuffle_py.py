"""Pure-Python shuffle buffer: the spec that the native ``hfstream._shuffle`` must match exactly."""

from __future__ import annotations

from typing import Any

from hfstream.errors import ConfigError, StateError, check_int

_MASK64 = (1 << 64) - 1
_STATE_KEYS = ("capacity", "byte_budget", "rng_state", "items", "sizes")


def splitmix64(state: int) -> tuple[int, int]:
    """One step of the splitmix64 generator (all arithmetic mod 2**64).

    Args:
        state: the generator state, an int in [0, 2**64).

    Returns:
        ``(new_state, output)``, both ints in [0, 2**64).
    """
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def check_state(state: dict, capacity: int, byte_budget: int) -> None:
    """Raise StateError unless ``state`` is a shuffle-buffer state for these settings."""
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise StateError(f"shuffle buffer state is missing {missing}",
                         "pass a dict made by ShuffleBuffer.state_dict()")
    for key, mine in (("capacity", capacity), ("byte_budget", byte_budget)):
        if state[key] != mine:
            raise StateError(f"shuffle buffer state has {key}={state[key]} but this buffer has "
                             f"{key}={mine}", f"construct the buffer with {key}={state[key]}")
    if len(state["items"]) != len(state["sizes"]):
        raise StateError(f"shuffle buffer state has {len(state['items'])} items but "
                         f"{len(state['sizes'])} sizes", "the state dict is corrupt")


class ShuffleBuffer:
    """A shuffle buffer bounded both in item count and in bytes, with uniform random eviction.

    On ``push`` the item is appended; then, while ``len > capacity`` or
    ``(num_bytes > byte_budget and len > 1)``, an index j is drawn uniformly from
    ``[0, len)`` and item j is swap-removed and emitted. With ``warmup`` set, the count
    limit starts lower: ``limit = min(capacity, max(warmup, num_pushed // 2))``, so items
    start flowing after ``warmup`` pushes and the buffer then grows at half the input rate
    until it is full (webdataset's ``initial``): a fast first batch, full shuffling later. An item larger than the whole
    budget is therefore emitted almost at once, and memory stays below
    ``byte_budget`` plus one item.

    The generator is splitmix64 seeded with ``seed mod 2**64``; index = ``next() % len``.

    Args:
        capacity: the most items held (>= 1).
        byte_budget: the most bytes held, as counted by the sizes given to ``push`` (>= 1).
        seed: any int; the generator state starts at ``seed mod 2**64``.
        warmup: the count limit while filling (None: ``capacity`` from the start).

    Raises:
        ConfigError: an argument is not an int or is out of range.
    """

    def __init__(self, capacity: int, byte_budget: int, seed: int, warmup: int | None = None):
        self._capacity = check_int("capacity", capacity, 1)
        self._warmup = self._capacity if warmup is None else min(check_int("warmup", warmup, 1), self._capacity)
        self._num_pushed = 0
        self._byte_budget = check_int("byte_budget", byte_budget, 1)
        self._rng_state = check_int("seed", seed) & _MASK64
        self._items: list[Any] = []
        self._sizes: list[int] = []
        self._num_bytes = 0

    @property
    def capacity(self) -> int:
        """The most items held."""
        return self._capacity

    @property
    def byte_budget(self) -> int:
        """The most bytes held (one oversized item may exceed it briefly)."""
        return self._byte_budget

    @property
    def num_bytes(self) -> int:
        """The sum of the sizes of the items held."""
        return self._num_bytes

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: Any, nbytes: int) -> list[Any]:
        """Add ``item`` of size ``nbytes`` and return the items evicted, in eviction order.

        Raises:
            ConfigError: ``nbytes`` is negative or not an int.
        """
        nbytes = check_int("nbytes", nbytes, 0)
        self._items.append(item)
        self._sizes.append(nbytes)
        self._num_bytes += nbytes
        self._num_pushed += 1
        limit = min(self._capacity, max(self._warmup, self._num_pushed // 2))
        evicted: list[Any] = []
        while len(self._items) > limit or (
                self._num_bytes > self._byte_budget and len(self._items) > 1):
            evicted.append(self.pop())
        return evicted

    def push_many(self, items: list[Any], sizes: list[int]) -> list[Any]:
        """Push each item with its size, in order; return all evicted items in eviction order.

        Raises:
            ConfigError: ``items`` and ``sizes`` differ in length, or a size is bad.
        """
        if len(items) != len(sizes):
            raise ConfigError(f"push_many got {len(items)} items but {len(sizes)} sizes",
                              "pass one size per item")
        evicted: list[Any] = []
        for item, nbytes in zip(items, sizes):
            evicted.extend(self.push(item, nbytes))
        return evicted

    def pop(self) -> Any:
        """Evict and return one uniformly random item.

        Raises:
            IndexError: the buffer is empty.
        """
        n = len(self._items)
        if n == 0:
            raise IndexError("pop from an empty ShuffleBuffer")
        self._rng_state, z = splitmix64(self._rng_state)
        j = z % n
        # Swap-remove: O(1), and the order of the rest is part of the (exact) state.
        item, self._items[j] = self._items[j], self._items[n - 1]
        self._num_bytes -= self._sizes[j]
        self._sizes[j] = self._sizes[n - 1]
        self._items.pop()
        self._sizes.pop()
        return item

    def drain(self) -> list[Any]:
        """Evict every item, in random order (the end of the stream)."""
        return [self.pop() for _ in range(len(self._items))]

    def state_dict(self) -> dict[str, Any]:
        """The exact state as plain Python types: settings, generator state, items and sizes."""
        return {"capacity": self._capacity, "byte_budget": self._byte_budget,
                "rng_state": self._rng_state, "items": list(self._items),
                "sizes": list(self._sizes), "warmup": self._warmup, "num_pushed": self._num_pushed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from ``state_dict()``; the following evictions are then identical.

        Raises:
            StateError: the state is incomplete or was made with another capacity/byte_budget.
        """
        check_state(state, self._capacity, self._byte_budget)
        self._warmup = int(state.get("warmup", self._capacity))
        self._num_pushed = int(state.get("num_pushed", 0))
        self._rng_state = int(state["rng_state"]) & _MASK64
        self._items = list(state["items"])
        self._sizes = [int(size) for size in state["sizes"]]
        self._num_bytes = sum(self._sizes)
