"""Mixing with MosaicML semantics: the worked examples, schemes, batching methods, resume."""

import collections
import json
import textwrap

import pytest
import torch

from conftest import make_texts, torchrun, write_jsonl
from hfstream import MixedSource, Stream, StreamingTextDataLoader, register_stream
from hfstream.errors import ConfigError
from hfstream.mixing.schedule import epoch_labels
from hfstream.mixing.streams import parse_count


@pytest.fixture
def ab(tmp_path):
    """Stream A has 100 samples, stream B 200 (the documentation's example)."""
    paths = {}
    for name, n in (("A", 100), ("B", 200)):
        paths[name] = str(write_jsonl(tmp_path / f"{name}.jsonl", [{"text": f"{name}{i}"} for i in range(n)]))
    return paths


def _mix(streams, **options):
    with MixedSource(streams, **options) as mixture:
        docs = list(mixture.stream())
    return docs, collections.Counter(d[0] for d in docs)


def test_proportions_give_an_epoch_of_all_unique_samples(ab):
    docs, counts = _mix([Stream(ab["A"], proportion=0.25), Stream(ab["B"], proportion=0.75)])
    assert counts == {"A": 75, "B": 225} and len(docs) == 300


def test_epoch_size_rescales_and_proportions_are_normalized(ab):
    assert _mix([Stream(ab["A"], proportion=0.25), Stream(ab["B"], proportion=0.75)], epoch_size=400)[1] \
        == {"A": 100, "B": 300}
    assert _mix([Stream(ab["A"], proportion=2), Stream(ab["B"], proportion=6)])[1] == {"A": 75, "B": 225}


def test_repeat_upsamples_and_downsamples(ab):
    docs, counts = _mix([Stream(ab["A"], repeat=3), Stream(ab["B"])])
    assert counts == {"A": 300, "B": 200}
    assert set(collections.Counter(d for d in docs if d[0] == "A").values()) == {3}  # every A sample 3x
    docs, counts = _mix([Stream(ab["A"], repeat=0.25), Stream(ab["B"], repeat=1)])
    assert counts == {"A": 25, "B": 200} and len({d for d in docs if d[0] == "A"}) == 25


def test_choose_takes_exactly_that_many(ab):
    assert _mix([Stream(ab["A"], choose=250), Stream(ab["B"], choose=10)])[1] == {"A": 250, "B": 10}


def test_rounding_shortfall_is_seeded(ab):
    streams = [Stream(ab["A"], proportion=1), Stream(ab["B"], proportion=1), Stream(ab["B"], proportion=1, label="B2")]
    first = _mix(streams, epoch_size=301, seed=5)[1]
    assert sum(first.values()) == 301 and first == _mix(streams, epoch_size=301, seed=5)[1]


def test_mixing_schemes_is_an_error_naming_the_streams(ab):
    with pytest.raises(ConfigError, match=r"A\.jsonl use proportion.*B\.jsonl do not"):
        MixedSource([Stream(ab["A"], proportion=0.5), Stream(ab["B"], repeat=2)])
    with pytest.raises(ConfigError, match="sets proportion and choose"):
        Stream(ab["A"], proportion=0.5, choose=3)
    with pytest.raises(ConfigError, match="epoch_size=10 is given with absolute"):
        MixedSource([Stream(ab["A"], repeat=1)], epoch_size=10)


def test_a_size_that_cannot_be_known_is_a_clear_error(ab):
    with pytest.raises(ConfigError, match=r"size of stream 'HuggingFaceFW/fineweb'.* is unknown") as info:
        MixedSource([Stream("HuggingFaceFW/fineweb", repeat=2), Stream(ab["B"], repeat=1)])
    assert "size=N" in str(info.value)


def test_epoch_size_strings():
    assert [parse_count(v) for v in (100, "100k", "64M", "1.5B")] == [100, 100_000, 64_000_000, 1_500_000_000]
    with pytest.raises(ConfigError, match="not a count"):
        parse_count("lots")


def test_list_order_does_not_change_the_mixture(ab):
    one = _mix([Stream(ab["A"], proportion=1), Stream(ab["B"], proportion=3)], seed=2)[0]
    two = _mix([Stream(ab["B"], proportion=3), Stream(ab["A"], proportion=1)], seed=2)[0]
    assert one == two


def test_document_level_batching_methods(ab):
    streams = [Stream(ab["A"], proportion=0.25), Stream(ab["B"], proportion=0.75)]
    docs = _mix(streams, batching_method="stratified", batch_size=8)[0]
    for k in range(0, 296, 8):
        assert collections.Counter(d[0] for d in docs[k:k + 8]) == {"A": 2, "B": 6}
    docs = _mix(streams, batching_method="per_stream", batch_size=8)[0]
    assert all(len({d[0] for d in docs[k:k + 8]}) == 1 for k in range(0, len(docs), 8))


def test_schedules_split_global_batches_across_ranks():
    counts = [300, 500]
    full = list(epoch_labels(counts, "stratified", 1, 0, global_batch=8))
    ranks = [list(epoch_labels(counts, "stratified", 1, 0, global_batch=8, world_size=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 400
    rebuilt = [x for k in range(100) for r in (0, 1) for x in ranks[r][4 * k:4 * k + 4]]
    assert rebuilt == full


@register_stream("upper")
class UpperStream(Stream):
    """A custom stream class: the same documents, upper-cased."""

    def open(self, **overrides):
        inner = super().open(**overrides)
        outer = self

        class Upper:
            def stream(self):
                return (t.upper() for t in inner.stream())

            def state_dict(self):
                return inner.state_dict()

            def load_state_dict(self, state):
                inner.load_state_dict(state)

            def close(self):
                inner.close()

        outer.opened = True
        return Upper()


def test_registered_stream_class_used_by_name(ab):
    docs, counts = _mix([{"dataset": ab["A"], "stream_name": "upper", "choose": 5, "label": "a"},
                         {"dataset": ab["B"], "choose": 5}])
    assert sorted(d for d in docs if d.startswith("A")) == ["A0", "A1", "A2", "A3", "A4"]
    with pytest.raises(ConfigError, match="unknown stream_name 'nope'"):
        MixedSource([{"dataset": ab["A"], "stream_name": "nope"}])


def test_mixture_resume_is_exact_across_three_restores(ab):
    streams = [Stream(ab["A"], proportion=1), Stream(ab["B"], proportion=2)]
    straight = _mix(streams, epochs=2, seed=4)[0]
    got, state = [], None
    for stop in (10, 11, 350, None):
        with MixedSource(streams, epochs=2, seed=4) as mixture:
            if state is not None:
                mixture.load_state_dict(state)
            for text in mixture.stream():
                got.append(text)
                if stop is not None and len(got) >= stop:
                    break
            state = mixture.state_dict()
    assert got == straight


# -- token mixing in the loader: exact budgets, batch composition on the tensors ------------

@pytest.fixture
def text_streams(tmp_path):
    paths = {}
    for name, seed in (("web", 1), ("code", 2)):
        paths[name] = str(write_jsonl(tmp_path / f"{name}.jsonl",
                                      [{"text": t} for t in make_texts(150, seed=seed, prefix=name)]))
    return paths


def _loader(text_streams, tokenizer_path, **options):
    streams = [Stream(text_streams["web"], proportion=0.25), Stream(text_streams["code"], proportion=0.75)]
    return StreamingTextDataLoader(streams, tokenizer_path, 8, 31, mix_by="tokens", epoch_size="64k",
                                   shuffle_buffer_size=20, **options)


def test_token_budgets_hold_within_one_percent_over_an_epoch(text_streams, tokenizer_path):
    with _loader(text_streams, tokenizer_path, epochs=1) as loader:
        rows = collections.Counter()
        for batch in loader:
            rows.update(batch.stream_ids.tolist())
        budgets = loader.pipeline.token_budgets
    for label_index, budget in enumerate(budgets):  # streams are sorted by label: code, web
        assert abs(rows[label_index] * 32 - budget) <= 0.01 * budget
    assert sorted(budgets) == [16_000, 48_000]


def test_stratified_batches_are_exact_and_per_stream_batches_homogeneous(text_streams, tokenizer_path):
    with _loader(text_streams, tokenizer_path, batching_method="stratified") as loader:
        for _, batch in zip(range(20), loader):
            assert sorted(collections.Counter(batch.stream_ids.tolist()).values()) == [2, 6]
    with _loader(text_streams, tokenizer_path, batching_method="per_stream") as loader:
        seen = set()
        for _, batch in zip(range(30), loader):
            assert len(set(batch.stream_ids.tolist())) == 1
            seen |= set(batch.stream_ids.tolist())
        assert seen == {0, 1}


def test_token_mixture_resume_is_exact(text_streams, tokenizer_path):
    def run(cuts):
        got, state = [], None
        for stop in cuts:
            with _loader(text_streams, tokenizer_path, batching_method="stratified", seed=3) as loader:
                if state is not None:
                    loader.load_state_dict(state)
                for _, (x, y) in zip(range(stop), loader):
                    got.append(torch.cat([x, y[:, -1:]], 1))
                state = loader.state_dict()
        return got

    straight, resumed = run([40]), run([5, 1, 17, 17])
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed)) and len(resumed) == 40


def test_samples_mixing_in_the_loader_refuses_row_batching_methods(text_streams, tokenizer_path):
    with pytest.raises(ConfigError, match="mix_by='tokens'"):
        StreamingTextDataLoader([Stream(text_streams["web"]), Stream(text_streams["code"])], tokenizer_path,
                                8, 31, batching_method="stratified")


DEVICE_PER_STREAM = textwrap.dedent("""\
    import json, os, sys
    import torch.distributed as dist
    from hfstream import Stream, StreamingTextDataLoader
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    web, code, tok = sys.argv[1:4]
    streams = [Stream(web, proportion=0.5), Stream(code, proportion=0.5)]
    with StreamingTextDataLoader(streams, tok, 4, 31, mix_by="tokens", epoch_size="40k", epochs=1,
                                 batching_method="device_per_stream", shard=rank, num_shards=world,
                                 shuffle_buffer_size=10) as loader:
        ids = [batch.stream_ids.tolist() for batch in loader]
    gathered = [None] * world
    dist.all_gather_object(gathered, ids)
    if rank == 0:
        print(json.dumps(gathered))
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_device_per_stream_under_two_gloo_processes(text_streams, tokenizer_path, tmp_path):
    script = tmp_path / "dps.py"
    script.write_text(DEVICE_PER_STREAM)
    out = torchrun(script, text_streams["web"], text_streams["code"], str(tokenizer_path))
    assert out.returncode == 0, out.stderr[-2000:]
    per_rank = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(per_rank[0]) == len(per_rank[1]) > 10            # equal step counts by construction
    for batches in per_rank:
        assert all(len(set(ids)) == 1 for ids in batches)         # each device batch: one stream
    mixed = sum(per_rank[0][k][0] != per_rank[1][k][0] for k in range(len(per_rank[0])))
    assert mixed > 0                                              # while global batches mix


def test_unknown_batching_method_fails_at_construction(ab):
    with pytest.raises(ConfigError, match="batching_method='stratify' is not valid"):
        MixedSource([Stream(ab["A"]), Stream(ab["B"])], batching_method="stratify")
