"""Pure-Python token packer: the spec that the native ``hfstream._packing`` must match exactly."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hfstream.errors import ConfigError, DataFormatError, StateError, check_int

_SETTINGS = ("batch_size", "seq_len", "eos_id", "with_positions")


def check_settings(batch_size: Any, seq_len: Any, eos_id: Any,
                   with_positions: Any) -> dict[str, Any]:
    """Validate the packer's arguments and return them as a dict (shared by both twins).

    Raises:
        ConfigError: an argument has the wrong type or is out of range.
    """
    if not isinstance(with_positions, (bool, np.bool_)):
        raise ConfigError(f"with_positions must be a bool, got {with_positions!r}",
                          "pass with_positions=True or False")
    return {"batch_size": check_int("batch_size", batch_size, 1),
            "seq_len": check_int("seq_len", seq_len, 1),
            "eos_id": None if eos_id is None else check_int("eos_id", eos_id, 0),
            "with_positions": bool(with_positions)}


def check_state(state: dict[str, Any], settings: dict[str, Any]) -> None:
    """Raise StateError unless ``state`` is a packer state made with the same ``settings``."""
    missing = [key for key in (*_SETTINGS, "tokens", "positions", "num_empty_skipped")
               if key not in state]
    if missing:
        raise StateError(f"token packer state is missing {missing}",
                         "pass a dict made by TokenPacker.state_dict()")
    for key, mine in settings.items():
        if state[key] != mine:
            raise StateError(f"token packer state has {key}={state[key]!r} but this packer has "
                             f"{key}={mine!r}", f"construct the packer with {key}={state[key]!r}")
    if settings["with_positions"] and len(state["positions"]) != len(state["tokens"]):
        raise StateError(f"token packer state has {len(state['tokens'])} tokens but "
                         f"{len(state['positions'])} positions", "the state dict is corrupt")


def as_token_array(tokens: Any) -> np.ndarray:
    """Return one document's token ids as a 1-D integer array (empty: any dtype).

    Raises:
        DataFormatError: the tokens are not a 1-D sequence of integers.
    """
    doc = np.asarray(tokens)
    if doc.ndim != 1:
        raise DataFormatError(f"a document's tokens must be 1-D, got shape {doc.shape}",
                              "pass one token array per document (add_many takes a list of them)")
    if doc.size and doc.dtype.kind not in "iu":
        raise DataFormatError(f"token ids must be integers, got dtype {doc.dtype}",
                              "tokenize the text first and pass the token ids")
    return doc


def grown_size(size: int, needed: int) -> int:
    """The buffer size for ``needed`` tokens: keep ``size`` while half of it is enough, else double.

    Keeping at least as much free room as pending tokens makes compaction O(1) per token, and
    memory stays within a small factor of the most tokens ever pending.
    """
    return size if 2 * needed <= size else 2 * needed


def size_hint(docs: Any) -> int:
    """The most tokens a list of documents can add (EOS included); 0 when unknown.

    Only a capacity hint: bad documents still fail in ``add`` order, after the ones before them
    were added. Iterators are not looked into (that would consume them).
    """
    if not isinstance(docs, (list, tuple)):
        return 0
    try:
        return sum([len(doc) + 1 for doc in docs])
    except TypeError:  # an unsized document: add() will say what is wrong with it
        return 0


class TokenPacker:
    """Pack documents' token ids into batches of rows of ``seq_len + 1`` tokens, without padding.

    Documents are concatenated as ``doc0 EOS doc1 EOS ...`` into one stream; consecutive,
    non-overlapping slices of ``T+1`` tokens form rows and ``B`` consecutive rows form a batch
    (the caller takes inputs ``row[:-1]`` and targets ``row[1:]``). Nothing is dropped: the
    remainder waits for the next documents. Empty documents are skipped entirely (no EOS)
    and counted in ``num_empty_skipped``.

    Positions (``with_positions=True``) are each token's index within its document: 0 on a
    document's first token, and the EOS gets the next index of the document it ends (without
    ``eos_id`` they still restart at each document). They keep counting across row and batch
    boundaries.

    Memory holds only the pending tokens (within a small factor), so the consumer must
    ``pop()`` whenever ``num_ready`` is positive.

    Args:
        batch_size: B, rows per batch (>= 1).
        seq_len: T; each row holds T+1 tokens (>= 1).
        eos_id: the token appended after every document, or None for no separator.
        with_positions: if True, ``pop()`` also returns the position ids.

    Raises:
        ConfigError: an argument has the wrong type or is out of range.
    """

    def __init__(self, batch_size: int, seq_len: int, eos_id: int | None,
                 with_positions: bool = False):
        self._settings = check_settings(batch_size, seq_len, eos_id, with_positions)
        self._batch_shape = (self._settings["batch_size"], self._settings["seq_len"] + 1)
        self._batch_tokens = self._batch_shape[0] * self._batch_shape[1]
        self._num_empty_skipped = 0
        self._reset([], [])

    @property
    def batch_size(self) -> int:
        """B, rows per batch."""
        return self._settings["batch_size"]

    @property
    def seq_len(self) -> int:
        """T; each row holds T+1 tokens."""
        return self._settings["seq_len"]

    @property
    def eos_id(self) -> int | None:
        """The token appended after every document, or None."""
        return self._settings["eos_id"]

    @property
    def with_positions(self) -> bool:
        """Whether ``pop()`` also returns position ids."""
        return self._settings["with_positions"]

    @property
    def num_ready(self) -> int:
        """Complete batches that ``pop()`` can return now."""
        return (self._tail - self._head) // self._batch_tokens

    @property
    def num_pending_tokens(self) -> int:
        """Tokens held (EOS included) that are not yet in a popped batch."""
        return self._tail - self._head

    @property
    def num_empty_skipped(self) -> int:
        """Empty documents skipped so far."""
        return self._num_empty_skipped

    def add(self, tokens: Any) -> None:
        """Append one document's token ids (1-D int array or list), then EOS if ``eos_id`` is set.

        Raises:
            DataFormatError: the tokens are not a 1-D sequence of integers.
        """
        doc = as_token_array(tokens)
        n = len(doc)
        if n == 0:
            self._num_empty_skipped += 1
            return
        eos_id = self._settings["eos_id"]
        total = n + (eos_id is not None)
        self._reserve(total)
        start = self._tail
        self._tokens[start:start + n] = doc
        if eos_id is not None:
            self._tokens[start + n] = eos_id
        if self._positions is not None:
            self._positions[start:start + total] = np.arange(total)
        self._tail += total

    def add_many(self, docs: Sequence[Any]) -> None:
        """Add each document in order; the same as calling ``add`` on each."""
        self._reserve(size_hint(docs))  # grow once, not once per document
        for doc in docs:
            self.add(doc)

    def pop(self) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Remove and return the next batch.

        Returns:
            int64 rows of shape (B, T+1); with ``with_positions``, ``(rows, positions)`` with
            positions int64 of shape (B, T+1).

        Raises:
            IndexError: no complete batch is ready (``num_ready == 0``).
        """
        if self.num_ready == 0:
            raise IndexError(f"no complete batch ready: {self.num_pending_tokens} tokens pending, "
                             f"a batch needs {self._batch_tokens}; add more documents first")
        start, stop = self._head, self._head + self._batch_tokens
        rows = self._tokens[start:stop].reshape(self._batch_shape).copy()  # (B*(T+1),) -> (B, T+1)
        self._head = stop
        if self._positions is None:
            return rows
        return rows, self._positions[start:stop].reshape(self._batch_shape).copy()

    def state_dict(self) -> dict[str, Any]:
        """The exact state as plain Python types: settings, pending tokens (and their positions)."""
        pending = slice(self._head, self._tail)
        positions = [] if self._positions is None else self._positions[pending].tolist()
        return {**self._settings, "tokens": self._tokens[pending].tolist(),
                "positions": positions, "num_empty_skipped": self._num_empty_skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from ``state_dict()``; the following batches are then bitwise identical.

        Raises:
            StateError: the state is incomplete or was made with other settings.
        """
        check_state(state, self._settings)
        self._reset(state["tokens"], state["positions"])
        self._num_empty_skipped = int(state["num_empty_skipped"])

    def _reset(self, tokens: Sequence[int], positions: Sequence[int]) -> None:
        size = grown_size(2 * self._batch_tokens, len(tokens))
        self._tokens = np.empty(size, np.int64)
        self._tokens[:len(tokens)] = tokens
        self._positions = None
        if self._settings["with_positions"]:
            self._positions = np.empty(size, np.int64)
            self._positions[:len(positions)] = positions
        self._head, self._tail = 0, len(tokens)

    def _reserve(self, n: int) -> None:
        """Make room for ``n`` more tokens after the tail: move pending tokens to the front
        and grow the buffers if needed."""
        if self._tail + n <= len(self._tokens):
            return
        pending = self._tail - self._head
        size = grown_size(len(self._tokens), pending + n)
        self._tokens = self._moved(self._tokens, size)
        if self._positions is not None:
            self._positions = self._moved(self._positions, size)
        self._head, self._tail = 0, pending

    def _moved(self, buffer: np.ndarray, size: int) -> np.ndarray:
        """Pending tokens moved to the front of ``buffer``, or of a new one of ``size``."""
        out = buffer if size == len(buffer) else np.empty(size, np.int64)
        out[:self._tail - self._head] = buffer[self._head:self._tail]  # numpy handles the overlap
        return out
