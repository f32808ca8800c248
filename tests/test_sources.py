"""The one door (open_source) and the DocumentSource protocol: every kind of data, every misuse."""

from __future__ import annotations

import pytest

from conftest import make_texts, write_jsonl
from hfstream import DocumentSource, HuggingFaceStreamingCorpus, MixedSource, Stream, open_source
from hfstream.errors import ConfigError, StateError
from hfstream.source.base import as_document_source, require_keys
from hfstream.source.heldout import ExcludingSource
from hfstream.source.memory import IterableSource


@pytest.fixture
def two_files(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"a{i}"} for i in range(30)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(60)])
    return str(a), str(b)


def test_a_name_opens_a_corpus_with_its_options(two_files):
    with open_source(two_files[0], corpus_defaults={"batch_size": 7}, max_samples=5) as source:
        assert isinstance(source, HuggingFaceStreamingCorpus)
        assert source.docs_per_message == 7 and list(source.stream()) == [f"a{i}" for i in range(5)]
    with open_source(two_files[0], corpus_defaults={"batch_size": 7}, batch_size=3) as source:
        assert source.docs_per_message == 3   # an explicit option wins over the default


@pytest.mark.parametrize("form", ["streams", "dicts", "mapping", "file"])
def test_every_form_of_a_mixture_opens_the_same_mixture(two_files, tmp_path, form):
    a, b = two_files
    streams = [{"dataset": a, "proportion": 1}, {"dataset": b, "proportion": 2}]
    data = {"streams": [Stream(a, proportion=1), Stream(b, proportion=2)], "dicts": streams,
            "mapping": {"streams": streams, "epoch_size": 30}, "file": tmp_path / "mix.yaml"}[form]
    if form == "file":
        data.write_text(f"streams:\n  - {{dataset: {a}, proportion: 1}}\n  - {{dataset: {b}, proportion: 2}}\n"
                        "epoch_size: 30\n")
        data = str(data)
    options = {} if form in ("mapping", "file") else {"epoch_size": 30}
    with open_source(data, mixture_defaults={"seed": 3}, **options) as source:
        assert isinstance(source, MixedSource) and source.counts == [10, 20] and source.seed == 3
        docs = list(source.stream())
    assert sorted(docs) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(20)])


def test_texts_in_memory_and_ready_sources(two_files):
    texts = make_texts(10)
    source = open_source(texts, epochs=2)
    assert isinstance(source, IterableSource) and list(source.stream()) == texts * 2
    corpus = HuggingFaceStreamingCorpus(two_files[0])
    assert open_source(corpus) is corpus
    with pytest.raises(ConfigError, match="ready-made source"):
        open_source(corpus, max_samples=3)
    with pytest.raises(ConfigError, match="do not apply to texts in memory"):
        open_source(texts, text_column="body")
    with pytest.raises(ConfigError, match="do not apply to a mixture as a whole.*\n.*each stream"):
        open_source([Stream(two_files[0])], text_column="body")
    with pytest.raises(ConfigError, match="got int"):
        open_source(42)


class Duck:
    """Not a DocumentSource, but with the methods of one: adapted at the door."""

    def __init__(self):
        self.position, self.closed = 0, False

    def stream_batches(self):
        while self.position < 6:
            self.position += 2
            yield [f"d{self.position - 2}", f"d{self.position - 1}"]

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]

    def close(self):
        self.closed = True


def test_duck_typed_sources_are_adapted_once_at_the_door():
    duck = Duck()
    with open_source(duck) as source:
        assert isinstance(source, DocumentSource) and source.name == "Duck"
        assert next(source.stream_batches()) == ["d0", "d1"]
        state = source.state_dict()
        source.start()  # a no-op: Duck has no start()
        assert list(source.stream()) == ["d2", "d3", "d4", "d5"]
        source.load_state_dict(state)
        assert list(source.stream()) == ["d2", "d3", "d4", "d5"]
    assert duck.closed
    with pytest.raises(ConfigError, match=r"has no stream\(\) or stream_batches\(\), state_dict\(\)"):
        as_document_source(object())


def test_default_stream_and_stream_batches_are_built_on_each_other():
    class Batches(DocumentSource):
        def stream_batches(self):
            yield ["x", "y"]
            yield ["z"]

    class Texts(DocumentSource):
        def stream(self):
            yield from "abc"

    assert list(Batches().stream()) == ["x", "y", "z"]
    assert list(Texts().stream_batches()) == [["a", "b", "c"]]
    assert Texts().stats() == {} and Texts().start() is None and Texts().close() is None


@pytest.mark.parametrize("state", [None, [], {"version": 1}, {"epoch": 0}])
def test_a_malformed_state_is_a_state_error_naming_what_is_missing(two_files, state):
    a, b = two_files
    sources = [HuggingFaceStreamingCorpus(a), IterableSource(["x"]),
               MixedSource([Stream(a), Stream(b)]), ExcludingSource(HuggingFaceStreamingCorpus(a), ["a1"])]
    for source in sources:
        with pytest.raises(StateError) as info:
            source.load_state_dict(state)
        assert "missing" in str(info.value) or "must be a dict" in str(info.value), (source, info.value)
        source.close()


def test_require_keys_names_the_missing_keys_and_the_method_that_makes_them():
    with pytest.raises(StateError, match=r"is missing 'b', 'c'\nHINT: pass the whole dict returned by X.state_dict"):
        require_keys({"a": 1}, ("a", "b", "c"), "thing state", "X.state_dict()")
    assert require_keys({"a": 1}, ("a",), "thing state", "X.state_dict()") == {"a": 1}
