"""record_docs: every row says which documents, and which of their tokens, it holds; exact across a restore; free when off."""

import numpy as np
import pytest
import torch

from conftest import make_texts, write_jsonl
from hfstream import StreamingTextDataLoader
from hfstream.errors import ConfigError, StateError
from hfstream.source.heldout import ExcludingSource
from hfstream.sources import open_source
from hfstream.tokens.encoder import TextEncoder
from test_states import B, T, files, loaders, through_torch  # noqa: F401 - files is a fixture

KINDS = ["thread", "workers", "row_mixer", "document_mixture", "texts"]


def take(loader, n):
    return [batch for _, batch in zip(range(n), loader)]


def fill(docs, batches):
    """Each document's tokens, put together from the rows that hold them (-1: not seen yet)."""
    for batch in batches:
        tokens = torch.cat([batch.inputs, batch.targets[:, -1:]], 1).numpy()  # (B, T+1)
        assert len(batch.docs.rows) == B
        for r, row in enumerate(batch.docs.rows):
            assert sum(end - start for _, start, end, _ in row) == T + 1   # the spans tile the row
            at = 0
            for doc, start, end, total in row:
                array = docs.setdefault(doc, np.full(total, -1))
                assert len(array) == total and (array[start:end] == -1).all(), f"{doc} tokens {start}-{end} twice"
                array[start:end] = tokens[r, at:at + end - start]
                at += end - start
            if batch.stream_ids is not None:  # a token mixture: the row's stream is its documents'
                assert {doc[0] for doc, *_ in row} == {"ab"[int(batch.stream_ids[r])]}


def read_docs(reads):
    """The documents a Reads says were read (rows read, minus the filtered ones)."""
    skipped = {(*r[:4], row) for r in reads.skipped for row in range(r[4], r[5])}
    return {(*r[:4], row) for r in reads.ranges for row in range(r[4], r[5])} - skipped - set(reads.held_out)


@pytest.mark.parametrize("kind", KINDS)
def test_each_row_is_the_documents_its_spans_name(files, tokenizer_path, tmp_path, kind):  # noqa: F811
    encoder = TextEncoder(tokenizer_path)
    texts = make_texts(160, seed=21) + make_texts(90, seed=22, prefix="other") + make_texts(200, seed=3)
    known = {tuple(ids) for ids in encoder.encode_batch(texts)}
    docs = {}
    with loaders(files, record_docs=True)[kind](encoder, tmp_path / "cache") as loader:
        batches = take(loader, 40)
        fill(docs, batches)
        in_flight = loader.docs_in_flight()
    read = set().union(*(read_docs(b.docs.reads) for b in batches), read_docs(in_flight.reads))
    whole = [tuple(a[:-1]) for a in docs.values() if (a >= 0).all()]
    assert len(whole) > 10 and all(a[-1] == encoder.eos_id for a in docs.values() if (a >= 0).all())
    assert set(whole) <= known and len(set(whole)) == len(whole)   # real documents, none twice
    assert set(docs) <= read                                        # each one was read ...
    if kind == "document_mixture":                                  # ... from the stream its id names
        assert {doc[0] for doc in docs} == {"a", "b"}
        b_texts = {tuple(ids) for ids in encoder.encode_batch(make_texts(90, seed=22, prefix="other"))}
        assert all((tuple(a[:-1]) in b_texts) == (doc[0] == "b") for doc, a in docs.items() if (a >= 0).all())
    for doc, start, end, _ in in_flight.buffered:                   # the rest is in flight
        assert doc in read and (doc not in docs or (docs[doc][start:end] == -1).all())


@pytest.mark.parametrize("kind", KINDS)
def test_records_after_a_restore_are_those_of_the_run_that_went_on(files, tokenizer_path, tmp_path, kind):  # noqa: F811
    encoder = TextEncoder(tokenizer_path)
    make = loaders(files, record_docs=True)[kind]
    with make(encoder, tmp_path / "cache") as loader:
        before = take(loader, 17)
        in_flight = loader.docs_in_flight()          # stops the loader's thread: the state is at the same point
        state = through_torch(loader.state_dict())
        after = [b.docs for b in take(loader, 25)]
    with make(encoder, tmp_path / "cache") as loader:
        loader.load_state_dict(state)
        assert loader.docs_in_flight() == in_flight
        assert [b.docs for b in take(loader, 25)] == after
    # what was in flight at the state is what the batches after it hold of the documents read before it
    read_before = set().union(*(read_docs(b.docs.reads) for b in before), read_docs(in_flight.reads))
    later = {(doc, k) for docs in after for row in docs.rows for doc, start, end, _ in row if doc in read_before
             for k in range(start, end)}
    flight = {(doc, k) for doc, start, end, _ in in_flight.buffered for k in range(start, end)}
    assert later and later <= flight


def test_off_it_costs_nothing_and_says_so(files, tokenizer_path, tmp_path):  # noqa: F811
    encoder = TextEncoder(tokenizer_path)
    with loaders(files)["thread"](encoder, tmp_path / "cache") as loader:
        batch = next(loader)
        assert batch.docs is None and loader.pipeline.recorder is None
        assert not loader.pipeline.docs.identified                  # the source was not asked for ids
        state = loader.state_dict()
        assert "records" not in state["pipeline"]
        with pytest.raises(ConfigError, match="record_docs=True"):
            loader.docs_in_flight()
    with loaders(files, record_docs=True)["thread"](encoder, tmp_path / "cache") as loader:
        with pytest.raises(StateError, match="saved without record_docs") as info:
            loader.load_state_dict(state)
        assert "train.record_docs" in info.value.hint


def test_filtered_and_held_out_rows_are_recorded_as_such(tmp_path, tokenizer_path):
    texts = make_texts(60, seed=5)
    rows = [{"text": "x" if i % 7 == 3 else t} for i, t in enumerate(texts)]   # too short: filtered
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    source = ExcludingSource(open_source(str(path), min_length=5, epochs=1), [texts[0], texts[11]])
    with StreamingTextDataLoader(source, tokenizer_path, B, T, shuffle_buffer_size=8, token_cache=False,
                                 record_docs=True) as loader:
        batches = list(loader)
        in_flight = loader.docs_in_flight()
    reads = [b.docs.reads for b in batches] + [in_flight.reads]
    name = str(path)
    assert {(*r[:4], row) for rs in reads for r in rs.skipped for row in range(r[4], r[5])} == \
        {(name, 0, 1, 0, i) for i in range(60) if i % 7 == 3}
    assert sorted(d for rs in reads for d in rs.held_out) == [(name, 0, 1, 0, 0), (name, 0, 1, 0, 11)]
    rows_read = sorted((r[4], r[5]) for rs in reads for r in rs.ranges if r[3] == 0)
    assert rows_read[0][0] == 0 and rows_read[-1][1] == 60 and \
        all(a[1] == b[0] for a, b in zip(rows_read, rows_read[1:]))    # every row, once
    assert any(r[3] == 1 and r[4] == r[5] == 0 for rs in reads for r in rs.ranges)  # epoch 0 ended
    assert in_flight.tail and not in_flight.buffered                    # the stream ended: less than a batch
