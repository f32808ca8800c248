"""Native token packer; hfstream/loader/_packing_py.py is the spec it matches exactly."""

from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.string cimport memcpy, memmove

import numpy as np

# Argument, state and token checks are shared with the twin so that errors read the same.
from hfstream.loader._packing_py import (as_token_array, check_settings, check_state, grown_size,
                                         size_hint)


cdef class TokenPacker:
    """Pack token ids into (B, T+1) int64 batches; see ``hfstream.loader._packing_py.TokenPacker``."""

    cdef dict _settings
    cdef readonly Py_ssize_t batch_size
    cdef readonly Py_ssize_t seq_len
    cdef readonly object eos_id
    cdef readonly bint with_positions
    cdef readonly Py_ssize_t num_empty_skipped
    cdef bint _has_eos
    cdef int64_t _eos
    cdef Py_ssize_t _batch_tokens
    cdef Py_ssize_t _head, _tail  # pending tokens are [_head, _tail) of the buffers
    cdef object _tokens_arr, _positions_arr  # the numpy arrays that own the buffers
    cdef int64_t[::1] _tokens, _positions

    def __init__(self, batch_size, seq_len, eos_id, with_positions=False):
        self._settings = check_settings(batch_size, seq_len, eos_id, with_positions)
        self.batch_size = self._settings["batch_size"]
        self.seq_len = self._settings["seq_len"]
        self.eos_id = self._settings["eos_id"]
        self.with_positions = self._settings["with_positions"]
        self._has_eos = self.eos_id is not None
        self._eos = self.eos_id if self._has_eos else 0
        self._batch_tokens = self.batch_size * (self.seq_len + 1)
        self.num_empty_skipped = 0
        self._reset([], [])

    @property
    def num_ready(self):
        """Complete batches that ``pop()`` can return now."""
        return (self._tail - self._head) // self._batch_tokens

    @property
    def num_pending_tokens(self):
        """Tokens held (EOS included) that are not yet in a popped batch."""
        return self._tail - self._head

    def add(self, tokens):
        """Append one document's token ids, then EOS if ``eos_id`` is set."""
        self._append(tokens)

    def add_many(self, docs):
        """Add each document in order; the same as calling ``add`` on each."""
        self._reserve(size_hint(docs))  # grow once, not once per document
        for doc in docs:
            self._append(doc)

    def pop(self):
        """Remove and return the next batch: rows (B, T+1), or (rows, positions)."""
        if self.num_ready == 0:
            raise IndexError(f"no complete batch ready: {self.num_pending_tokens} tokens pending, "
                             f"a batch needs {self._batch_tokens}; add more documents first")
        cdef Py_ssize_t start = self._head, stop = self._head + self._batch_tokens
        shape = (self.batch_size, self.seq_len + 1)
        rows = self._tokens_arr[start:stop].reshape(shape).copy()  # (B*(T+1),) -> (B, T+1)
        self._head = stop
        if not self.with_positions:
            return rows
        return rows, self._positions_arr[start:stop].reshape(shape).copy()

    def state_dict(self):
        """The exact state as plain Python types (same layout as the twin's)."""
        positions = []
        if self.with_positions:
            positions = self._positions_arr[self._head:self._tail].tolist()
        return {**self._settings, "tokens": self._tokens_arr[self._head:self._tail].tolist(),
                "positions": positions, "num_empty_skipped": self.num_empty_skipped}

    def load_state_dict(self, state):
        """Restore a state from ``state_dict()`` (of either twin)."""
        check_state(state, self._settings)
        self._reset(state["tokens"], state["positions"])
        self.num_empty_skipped = int(state["num_empty_skipped"])

    cdef int _reset(self, tokens, positions) except -1:
        size = grown_size(2 * self._batch_tokens, len(tokens))
        self._tokens_arr = np.empty(size, np.int64)
        self._tokens_arr[:len(tokens)] = tokens
        self._tokens = self._tokens_arr
        if self.with_positions:
            self._positions_arr = np.empty(size, np.int64)
            self._positions_arr[:len(positions)] = positions
            self._positions = self._positions_arr
        self._head, self._tail = 0, len(tokens)
        return 0

    cdef int _reserve(self, Py_ssize_t n) except -1:
        """Make room for ``n`` more tokens after the tail (same policy as the twin)."""
        if self._tail + n <= self._tokens.shape[0]:
            return 0
        cdef Py_ssize_t pending = self._tail - self._head
        cdef Py_ssize_t size = grown_size(self._tokens.shape[0], pending + n)
        self._tokens_arr, self._tokens = self._moved(self._tokens_arr, self._tokens, size)
        if self.with_positions:
            self._positions_arr, self._positions = self._moved(
                self._positions_arr, self._positions, size)
        self._head, self._tail = 0, pending
        return 0

    cdef tuple _moved(self, arr, int64_t[::1] buffer, Py_ssize_t size):
        """Pending tokens moved to the front of ``buffer``, or of a new one of ``size``."""
        cdef Py_ssize_t pending = self._tail - self._head
        if size == buffer.shape[0]:
            if pending:
                memmove(&buffer[0], &buffer[self._head], pending * sizeof(int64_t))
            return arr, buffer
        out_arr = np.empty(size, np.int64)
        cdef int64_t[::1] out = out_arr
        if pending:
            memcpy(&out[0], &buffer[self._head], pending * sizeof(int64_t))
        return out_arr, out

    cdef int _append(self, tokens) except -1:
        cdef const int64_t[::1] src64
        cdef const int32_t[::1] src32
        cdef const uint32_t[::1] srcu32
        cdef Py_ssize_t i, n, total
        cdef int64_t* dst
        doc = as_token_array(tokens)
        n = doc.shape[0]
        if n == 0:
            self.num_empty_skipped += 1
            return 0
        total = n + self._has_eos
        self._reserve(total)
        dtype = doc.dtype
        # Fast paths for the dtypes tokenizers produce; anything else is converted once.
        if not (dtype.isnative and doc.flags.c_contiguous and (
                (dtype.kind == "i" and dtype.itemsize in (4, 8))
                or (dtype.kind == "u" and dtype.itemsize == 4))):
            doc = np.ascontiguousarray(doc, dtype=np.int64)
            dtype = doc.dtype
        dst = &self._tokens[self._tail]
        if dtype.itemsize == 8:
            src64 = doc
            memcpy(dst, &src64[0], n * sizeof(int64_t))
        elif dtype.kind == "i":
            src32 = doc
            for i in range(n):
                dst[i] = src32[i]
        else:
            srcu32 = doc
            for i in range(n):
                dst[i] = srcu32[i]
        if self._has_eos:
            dst[n] = self._eos
        if self.with_positions:
            dst = &self._positions[self._tail]
            for i in range(total):
                dst[i] = i
        self._tail += total
        return 0
