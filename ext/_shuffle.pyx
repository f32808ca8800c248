"""Native shuffle buffer; hfstream/loader/_shuffle_py.py is the spec it matches exactly."""

from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport int64_t, uint64_t

# Argument and state checks are shared with the twin so that errors read the same.
from hfstream.errors import ConfigError, check_int
from hfstream.loader._shuffle_py import check_state

_MASK64 = (1 << 64) - 1


cdef inline uint64_t _splitmix64(uint64_t* state) noexcept nogil:
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef class ShuffleBuffer:
    """Count- and byte-bounded shuffle buffer; see ``hfstream.loader._shuffle_py.ShuffleBuffer``."""

    cdef readonly Py_ssize_t capacity
    cdef Py_ssize_t _warmup
    cdef int64_t _num_pushed
    cdef readonly int64_t byte_budget
    cdef readonly int64_t num_bytes
    cdef uint64_t _rng
    cdef list _items
    cdef int64_t* _sizes  # parallel to _items
    cdef Py_ssize_t _sizes_cap

    def __cinit__(self):
        self._sizes = NULL
        self._sizes_cap = 0

    def __init__(self, capacity, byte_budget, seed, warmup=None):
        self.capacity = check_int("capacity", capacity, 1)
        self._warmup = self.capacity if warmup is None else min(check_int("warmup", warmup, 1), self.capacity)
        self._num_pushed = 0
        self.byte_budget = check_int("byte_budget", byte_budget, 1)
        self._rng = check_int("seed", seed) & _MASK64
        self._items = []
        self.num_bytes = 0

    def __dealloc__(self):
        PyMem_Free(self._sizes)

    def __len__(self):
        return len(self._items)

    cdef int _reserve(self, Py_ssize_t n) except -1:
        if n <= self._sizes_cap:
            return 0
        cdef Py_ssize_t new_cap = max(n, 2 * self._sizes_cap, 16)
        cdef int64_t* grown = <int64_t*> PyMem_Realloc(self._sizes, new_cap * sizeof(int64_t))
        if grown == NULL:
            raise MemoryError()
        self._sizes = grown
        self._sizes_cap = new_cap
        return 0

    cdef object _pop(self):
        cdef Py_ssize_t n = len(self._items)
        cdef Py_ssize_t j = <Py_ssize_t> (_splitmix64(&self._rng) % <uint64_t> n)
        item = self._items[j]
        self._items[j] = self._items[n - 1]
        self.num_bytes -= self._sizes[j]
        self._sizes[j] = self._sizes[n - 1]
        del self._items[n - 1]
        return item

    cdef int _push(self, item, nbytes, list evicted) except -1:
        cdef int64_t size
        if type(nbytes) is int and nbytes >= 0:
            size = nbytes
        else:
            size = check_int("nbytes", nbytes, 0)
        cdef Py_ssize_t n = len(self._items)
        self._reserve(n + 1)
        self._items.append(item)
        self._sizes[n] = size
        self.num_bytes += size
        n += 1
        self._num_pushed += 1
        cdef Py_ssize_t limit = min(self.capacity, max(self._warmup, <Py_ssize_t> (self._num_pushed // 2)))
        while n > limit or (self.num_bytes > self.byte_budget and n > 1):
            evicted.append(self._pop())
            n -= 1
        return 0

    def push(self, item, nbytes):
        """Add ``item`` of size ``nbytes``; return the items evicted, in eviction order."""
        cdef list evicted = []
        self._push(item, nbytes, evicted)
        return evicted

    def push_many(self, items, sizes):
        """Push each item with its size, in order; return all evicted items in eviction order."""
        if len(items) != len(sizes):
            raise ConfigError(f"push_many got {len(items)} items but {len(sizes)} sizes",
                              "pass one size per item")
        cdef list evicted = []
        for item, nbytes in zip(items, sizes):
            self._push(item, nbytes, evicted)
        return evicted

    def pop(self):
        """Evict and return one uniformly random item; IndexError if empty."""
        if not self._items:
            raise IndexError("pop from an empty ShuffleBuffer")
        return self._pop()

    def drain(self):
        """Evict every item, in random order."""
        return [self._pop() for _ in range(len(self._items))]

    def state_dict(self):
        """The exact state as plain Python types (same layout as the twin's)."""
        cdef Py_ssize_t i
        return {"capacity": self.capacity, "byte_budget": self.byte_budget,
                "rng_state": self._rng, "items": list(self._items),
                "sizes": [self._sizes[i] for i in range(len(self._items))],
                "warmup": self._warmup, "num_pushed": self._num_pushed}

    def load_state_dict(self, state):
        """Restore a state from ``state_dict()`` (of either twin)."""
        check_state(state, self.capacity, self.byte_budget)
        cdef list sizes = [int(size) for size in state["sizes"]]
        cdef Py_ssize_t i
        self._reserve(len(sizes))
        self._items = list(state["items"])
        self._rng = int(state["rng_state"]) & _MASK64
        self._warmup = int(state.get("warmup", self.capacity))
        self._num_pushed = int(state.get("num_pushed", 0))
        self.num_bytes = 0
        for i in range(len(sizes)):
            self._sizes[i] = sizes[i]
            self.num_bytes += sizes[i]
