"""Tokenizer threads: one pool per process, and jobs that encode a batch of texts in the background.

The loader hands the next batch of texts to the pool before it packs the current one, so the
tokenizer threads never wait on Python work (packing, shuffling, tensor building) and the
GIL-free BPE keeps every core busy. Texts go to the threads in groups of about
:data:`GROUP_CHARS` characters: a future per text would cost more than short texts take.

The pool belongs to the process: a forked child (a torch DataLoader worker) gets a new one,
and nothing here is pickled.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

GROUP_CHARS = 1 << 16          # characters per task handed to a tokenizer thread

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools() -> None:
    # In a forked child the parent's pool threads do not exist (and the lock may be held).
    global _pools, _pools_lock
    _pools, _pools_lock = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def tokenizer_pool(num_threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``num_threads`` tokenizer threads (created on first use)."""
    with _pools_lock:
        pool = _pools.get(num_threads)
        if pool is None:
            pool = _pools[num_threads] = ThreadPoolExecutor(num_threads, thread_name_prefix="hfstream-tokenize")
        return pool


def groups(texts: Sequence[str], max_chars: int = GROUP_CHARS) -> list[tuple[int, int]]:
    """Split ``range(len(texts))`` into consecutive (start, stop) spans of about max_chars each."""
    spans, start, chars = [], 0, 0
    for i, text in enumerate(texts):
        chars += len(text) if type(text) is str else 0  # a non-str is the encode function's error
        if chars >= max_chars:
            spans.append((start, i + 1))
            start, chars = i + 1, 0
    if start < len(texts):
        spans.append((start, len(texts)))
    return spans


class EncodeJob:
    """Token arrays of a list of texts, being computed by the tokenizer threads.

    ``result()`` waits and returns one array per text, in order. Errors raised by the encode
    function are re-raised by ``result()`` (through ``on_error`` when given, which may recover by
    returning the arrays itself).
    """

    def __init__(self, futures: list[Future], on_error: Callable[[BaseException], list[np.ndarray]] | None = None):
        self._futures = futures
        self._on_error = on_error

    @classmethod
    def submit(cls, pool: ThreadPoolExecutor, encode: Callable[[Sequence[str]], list[np.ndarray]],
               texts: Sequence[str], spans: list[tuple[int, int]],
               on_error: Callable[[BaseException], list[np.ndarray]] | None = None) -> "EncodeJob":
        """Run ``encode(texts[start:stop])`` for each span on ``pool``."""
        return cls([pool.submit(encode, texts[start:stop]) for start, stop in spans], on_error)

    @classmethod
    def inline(cls, encode: Callable[[Sequence[str]], list[np.ndarray]], texts: Sequence[str],
               on_error: Callable[[BaseException], list[np.ndarray]] | None = None) -> "EncodeJob":
        """Run ``encode(texts)`` now, in the calling thread."""
        future: Future = Future()
        try:
            future.set_result(encode(texts))
        except Exception as exc:  # noqa: BLE001 - raised again by result(), like a pool task's
            future.set_exception(exc)
        return cls([future], on_error)

    @classmethod
    def done(cls, arrays: list[np.ndarray]) -> "EncodeJob":
        """A job whose arrays are already known."""
        return cls.inline(lambda texts: arrays, ())

    def result(self) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        try:
            for future in self._futures:
                out.extend(future.result())
        except Exception as exc:
            self.cancel()
            if self._on_error is None:
                raise
            return self._on_error(exc)
        return out

    def cancel(self) -> None:
        """Drop the work not started yet (the job's result is no longer wanted)."""
        for future in self._futures:
            future.cancel()
