"""The loader's producers: picked once, one interface; a thread producer's state, errors and ownership."""

from __future__ import annotations

import pytest
import torch

from conftest import make_texts, write_jsonl
from hfstream import HuggingFaceStreamingCorpus, Stream, StreamingTextDataLoader
from hfstream.errors import StateError
from hfstream.loader.pipeline import TokenPipeline
from hfstream.loader.producers import ThreadProducer
from hfstream.loader.row_mixer import RowMixer
from hfstream.loader.workers import WorkerProducer
from hfstream.source.base import DocumentSource

B, T = 4, 16


@pytest.fixture
def data(tmp_path):
    return str(write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in make_texts(120, seed=3)]))


def test_the_loader_picks_one_producer_for_what_it_is_given(data, tokenizer_path, tmp_path):
    with StreamingTextDataLoader(data, tokenizer_path, B, T) as loader:
        assert isinstance(loader.producer, ThreadProducer) and isinstance(loader.pipeline, TokenPipeline)
        assert isinstance(loader.source, HuggingFaceStreamingCorpus)
    with StreamingTextDataLoader([Stream(data, proportion=1, label="a")], tokenizer_path, B, T,
                                 mix_by="tokens", epoch_size="4k") as loader:
        assert isinstance(loader.pipeline, RowMixer) and loader.source is None
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"streams:\n  - {{dataset: {data}, proportion: 1}}\nepoch_size: 50\n")
    with StreamingTextDataLoader(str(mix), tokenizer_path, B, T) as loader:   # a mixture file, by documents
        assert loader.source.name == f"mixture of {data}" and next(loader).inputs.shape == (B, T)
    loader = StreamingTextDataLoader(data, tokenizer_path, B, T, num_workers=1)
    assert isinstance(loader.producer, WorkerProducer) and loader.pipeline is None
    loader.close()


class Failing(DocumentSource):
    """Fails after its first batch, like a source whose data turns out to be bad."""

    def stream_batches(self):
        yield make_texts(40)
        raise RuntimeError("the disk went away")

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def fingerprint(self):
        return "failing"


def test_an_error_in_the_producer_thread_reaches_the_consumer_with_its_cause(tokenizer_path):
    with StreamingTextDataLoader(Failing(), tokenizer_path, B, T, shuffle_buffer_size=0) as loader:
        with pytest.raises(RuntimeError, match="the disk went away"):
            for _ in loader:
                pass


def test_a_handed_source_is_left_open_an_owned_one_is_closed(data, tokenizer_path):
    corpus = HuggingFaceStreamingCorpus(data, epochs=None)      # endless: its worker stays up
    # (no token cache: once a cache serves the documents, the worker is stopped on purpose)
    with StreamingTextDataLoader(corpus, tokenizer_path, B, T, token_cache=False) as loader:
        next(loader)
        assert corpus.worker_pid is not None
    assert corpus.worker_pid is not None     # still the caller's: it closes it
    corpus.close()
    loader = StreamingTextDataLoader(data, tokenizer_path, B, T, epochs=None, token_cache=False)
    next(loader)
    owned = loader.source
    assert owned.worker_pid is not None
    loader.close()
    assert owned.worker_pid is None


def test_the_state_holds_the_batches_prepared_ahead_and_a_malformed_one_is_refused(data, tokenizer_path):
    with StreamingTextDataLoader(data, tokenizer_path, B, T, prefetch=4) as loader:
        next(loader)
        loader.start()
        state = loader.state_dict()
        expected = [b.inputs for _, b in zip(range(6), loader)]
    assert {"pipeline", "queued", "ended", "batches", "fingerprint", "version"} <= set(state)
    with StreamingTextDataLoader(data, tokenizer_path, B, T, prefetch=4) as again:
        again.load_state_dict(state)
        got = [b.inputs for _, b in zip(range(6), again)]
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
        broken = {k: v for k, v in state.items() if k != "queued"}
        with pytest.raises(StateError, match="loader state is missing 'queued'"):
            again.load_state_dict(broken)
