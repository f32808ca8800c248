"""Tokenizer threads: text groups, jobs in order, errors recovered, a new pool after fork."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from hfstream.tokens.encoder import TextEncoder
from hfstream.tokens.jobs import EncodeJob, groups, tokenizer_pool


def test_groups_cover_every_text_once_in_order():
    texts = ["x" * n for n in (10, 70_000, 5, 5, 100_000, 1)]
    spans = groups(texts, max_chars=65_536)
    assert spans[0][0] == 0 and spans[-1][1] == len(texts)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))         # consecutive, no gap, no overlap
    assert spans == [(0, 2), (2, 5), (5, 6)]
    assert groups([]) == []


def test_submitted_jobs_give_the_inline_result_in_submission_order(tokenizer_path):
    encoder = TextEncoder(tokenizer_path, num_threads=2)
    batches = [[f"batch {b} text {i} " * (i % 50 + 1) for i in range(300)] for b in range(4)]
    jobs = [encoder.submit(texts) for texts in batches]
    for texts, job in zip(batches, jobs):
        expected = encoder.encode_batch(texts)
        got = job.result()
        assert len(got) == len(texts) and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_a_failing_group_is_re_raised_or_recovered_by_on_error():
    pool = tokenizer_pool(2)

    def encode(texts):
        if "bad" in texts:
            raise ValueError("bad text")
        return [np.array([len(t)], dtype=np.uint32) for t in texts]

    texts = ["a", "bb", "bad", "cccc"]
    with pytest.raises(ValueError, match="bad text"):
        EncodeJob.submit(pool, encode, texts, [(0, 2), (2, 4)]).result()
    recovered = EncodeJob.submit(pool, encode, texts, [(0, 2), (2, 4)],
                                 on_error=lambda exc: [np.array([0], dtype=np.uint32)] * len(texts)).result()
    assert [a.tolist() for a in recovered] == [[0]] * 4
    assert [a.tolist() for a in EncodeJob.done([np.array([7])]).result()] == [[7]]


def _encode_in_child(path, out):
    encoder = TextEncoder(path, num_threads=2)
    out.put([a.tolist() for a in encoder.submit(["hello world"] * 3).result()])


def test_a_forked_child_gets_its_own_pool(tokenizer_path):
    encoder = TextEncoder(tokenizer_path, num_threads=2)
    parent = [a.tolist() for a in encoder.submit(["hello world"] * 3).result()]  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_encode_in_child, args=(str(tokenizer_path), out))
    child.start()
    got = out.get(timeout=60)
    child.join(30)
    assert child.exitcode == 0 and got == parent
