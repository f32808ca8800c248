"""Hub datasets read by row group over fsspec, against a real hub on 127.0.0.1 and real worker processes.

The corpus resolves the hub id once (commit + files, as ``datasets`` would read them), then its
worker reads parquet through pyarrow over HfFileSystem: a restart costs one footer and the row
groups it needs, ranks split row groups, faults and a refused token are handled, a moved
revision is refused on resume.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys

import pytest

from hfstream import HuggingFaceStreamingCorpus
from hfstream.errors import AuthError, StateError
from hfstream.testing.fineweb import FINEWEB_REPO_ID, make_fineweb_like_repo, shared_fineweb_parquet
from hfstream.testing.hub import LocalHub
from conftest import LOAD_DATASET, digests, parquet_bytes  # the same datasets run and counters

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("huggingface_hub")

@pytest.fixture(scope="module")
def fineweb(tmp_path_factory):
    """The shared FineWeb sample as a 5-file repo, row groups of 64 (synthetic text when absent)."""
    root = tmp_path_factory.mktemp("hub")
    repo = make_fineweb_like_repo(root / FINEWEB_REPO_ID, shared_fineweb_parquet(), num_files=5,
                                  row_group_size=64, num_synthetic_rows=1500)
    return root, repo, repo.texts()


@pytest.fixture
def hub(fineweb, tmp_path, monkeypatch):
    """A local hub serving the repo; the worker subprocesses inherit its environment."""
    with LocalHub(fineweb[0]) as server:
        for key, value in {**server.env(), "HF_HOME": str(tmp_path / "hf")}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


def corpus(**options) -> HuggingFaceStreamingCorpus:
    return HuggingFaceStreamingCorpus(FINEWEB_REPO_ID, name="sample-10BT", **options)


def read(**options) -> list[str]:
    with corpus(**options) as c:
        return list(c.stream())


def text_chunk(path, group: int) -> int:
    """Bytes of the text column chunk of a row group (what one row-group read fetches)."""
    return pq.ParquetFile(path).metadata.row_group(group).column(0).total_compressed_size


def footer(path) -> int:
    return pq.ParquetFile(path).metadata.serialized_size + 8


# -- the same documents as datasets ------------------------------------------------------------


def test_the_hub_split_reads_what_datasets_reads_in_its_order(hub, fineweb, tmp_path):
    _, repo, texts = fineweb
    child = subprocess.run([sys.executable, "-c", LOAD_DATASET], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "ds")})
    assert child.returncode == 0, child.stderr[-2000:]
    with corpus() as c:
        ours = list(c.stream())
        state = c.state_dict()
    assert digests(ours) == json.loads(child.stdout) == digests(texts)
    assert state["revision"] == hub.sha(FINEWEB_REPO_ID)


@pytest.mark.parametrize("num_shards,shard_by", [(5, "files"), (2, "rows")])
def test_each_shard_reads_what_the_datasets_reader_reads(hub, fineweb, num_shards, shard_by):
    shard = num_shards - 1
    fast = read(shard=shard, num_shards=num_shards, shard_by=shard_by)
    slow = read(shard=shard, num_shards=num_shards, shard_by=shard_by, reader="datasets")
    assert digests(fast) == digests(slow) and fast


def test_the_worker_reads_the_hub_without_importing_datasets(hub, fineweb):
    from hfstream.source.spec import SourceSpec

    spec = SourceSpec(FINEWEB_REPO_ID, name="sample-10BT", max_samples=5)
    script = ("import sys, hfstream.worker.main as m; code = m.main(sys.argv[1:]); "
              "print('datasets' in sys.modules, file=sys.stderr); sys.exit(code)")
    child = subprocess.run([sys.executable, "-c", script, "--spec", spec.to_json(), "--limit", "5",
                            "--no-watch-stdin", "--heartbeat", "0"], capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in child.stdout.splitlines()]
    ready = next(m for m in lines if m.get("status") == "ready")
    assert child.returncode == 0 and ready["reader"] == "fast" and ready["revision"] == hub.sha(FINEWEB_REPO_ID)
    assert child.stderr.strip().splitlines()[-1] == "False"  # no datasets in the worker


# -- O(1) seek ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_a_restart_reads_one_footer_and_the_row_groups_it_needs(hub, fineweb, fraction):
    _, repo, texts = fineweb
    position = int(len(texts) * fraction)
    with corpus() as c:  # reads the head, resolves and caches the layouts
        stream = c.stream()
        assert len([next(stream) for _ in range(position)]) == position
        state = c.state_dict()
    hub.reset_counters()
    with corpus(max_samples=position + 3) as c:
        c.load_state_dict(state)
        assert digests(c.stream()) == digests(texts[position:position + 3])
    # Allowed: the footer and row group of the position, and one read ahead (the next row group,
    # with its file's footer when it starts the next file).
    files = [repo.root / f for f in repo.data_files]
    groups = [(f, g) for f in files for g in range(pq.ParquetFile(f).metadata.num_row_groups)]
    rows = [pq.ParquetFile(f).metadata.row_group(g).num_rows for f, g in groups]
    k = next(i for i in range(len(groups)) if sum(rows[:i + 1]) > position)
    needed = [groups[k]] + groups[k + 1:k + 2]
    bound = sum(text_chunk(f, g) for f, g in needed) + sum(footer(f) for f in {f for f, _ in needed})
    assert 0 < parquet_bytes(hub) <= bound
    assert parquet_bytes(hub) < 0.2 * repo.num_bytes


def test_kill_9_of_the_worker_mid_row_group_continues_exactly(hub, fineweb):
    _, _, texts = fineweb
    with corpus(batch_size=10, queue_bytes=1 << 16) as c:
        stream = c.stream()
        got = [next(stream) for _ in range(100)]  # row groups hold 64 rows: this is mid-group
        os.kill(c.worker_pid, signal.SIGKILL)
        got += list(stream)
        assert c.num_restarts == 1
    assert digests(got) == digests(texts)


# -- sharding by row group ---------------------------------------------------------------------


def test_four_ranks_over_five_files_split_row_groups_and_read_the_dataset_once(hub, fineweb, tmp_path,
                                                                               monkeypatch):
    _, repo, texts = fineweb
    monkeypatch.setenv("HFSTREAM_CACHE", str(tmp_path / "cache"))  # resolution and footers counted too
    shards = []
    for rank in range(4):
        with corpus(shard=rank, num_shards=4) as c:  # auto: 5 files do not split 4 ways
            shards.append(list(c.stream()))
            assert c.state_dict()["shard_mode"] == "row_groups"
    assert all(shards)
    assert collections.Counter(t for s in shards for t in s) == collections.Counter(texts)  # disjoint, complete
    assert parquet_bytes(hub) <= 1.05 * repo.num_bytes
    assert max(map(len, shards)) - min(map(len, shards)) <= 2 * 64  # within two row groups


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["cut", "503", "stall", "api-503"])
def test_injected_faults_lose_and_repeat_nothing(hub, fineweb, monkeypatch, fault):
    _, _, texts = fineweb
    if fault == "cut":
        rule = hub.cut(r"\.parquet$", after_bytes=20_000, times=3)  # footers and column chunks
    elif fault == "503":
        rule = hub.fail(r"/resolve/.*\.parquet$", status=503, times=2)
    elif fault == "stall":
        monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
        rule = hub.stall(r"\.parquet$", seconds=60, after_bytes=10_000)  # past the read timeout
    else:  # repo info is not retried by huggingface_hub: the worker's own retry takes it
        rule = hub.fail(r"^/api/datasets/", status=503, times=2)
    assert digests(read()) == digests(texts)
    assert rule.hits >= 1


def test_a_changed_revision_on_resume_is_a_clear_state_error(hub, fineweb):
    _, repo, texts = fineweb
    with corpus() as c:
        stream = c.stream()
        head = [next(stream) for _ in range(50)]
        state = c.state_dict()
    old = hub.sha(FINEWEB_REPO_ID)
    new = hub.push_commit(FINEWEB_REPO_ID, {"sample/10BT/005_00000.parquet": repo.root / repo.data_files[0]})
    moved = corpus()
    moved.load_state_dict(state)
    with pytest.raises(StateError) as info:
        next(iter(moved.stream()))
    message = str(info.value)
    assert old in message and new in message and f"revision={old!r}" in message
    with corpus(revision=old) as pinned:  # the fix the message gives
        pinned.load_state_dict(state)
        assert digests(head + list(pinned.stream())) == digests(texts)


@pytest.mark.parametrize("token", [None, "hf_expired"])
def test_a_refused_token_is_a_clear_error_naming_hf_token(hub, monkeypatch, token):
    hub.require_token("hf_right")
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token)
        monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "0")  # huggingface_hub sends HF_TOKEN
    with pytest.raises(AuthError, match="HF_TOKEN") as info:
        read()
    assert "config name and split" not in str(info.value) and "401" in str(info.value)
    assert {r.authorization for r in hub.log} == {token is not None}


def test_the_right_token_reaches_the_api_the_resolution_and_the_reads(hub, fineweb, monkeypatch, tmp_path):
    monkeypatch.setenv("HFSTREAM_CACHE", str(tmp_path / "cache"))  # the resolution child runs too
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "0")  # huggingface_hub sends HF_TOKEN
    hub.require_token("hf_right")
    assert digests(read(max_samples=100)) == digests(fineweb[2][:100])
    assert 401 not in {r.status for r in hub.log} and all(r.authorization for r in hub.log)


# -- JSON lines: a restart is bounded by one file ----------------------------------------------


def test_a_restart_in_compressed_json_lines_reads_only_the_file_it_is_in(tmp_path, monkeypatch):
    from conftest import make_texts, write_jsonl

    texts = make_texts(400, seed=9)
    data = tmp_path / "hub" / "org" / "web-jsonl" / "data"
    data.mkdir(parents=True)
    for k in range(4):
        write_jsonl(data / f"part-{k}.jsonl.gz", [{"text": t} for t in texts[100 * k:100 * (k + 1)]])
    with LocalHub(tmp_path / "hub") as hub:
        for key, value in {**hub.env(), "HF_HOME": str(tmp_path / "hf")}.items():
            monkeypatch.setenv(key, value)
        with HuggingFaceStreamingCorpus("org/web-jsonl") as c:  # a first pass learns each file's rows
            stream = c.stream()
            assert [next(stream) for _ in range(400)] == texts
        with HuggingFaceStreamingCorpus("org/web-jsonl") as c:
            stream = c.stream()
            head = [next(stream) for _ in range(250)]
            state = c.state_dict()
        hub.reset_counters()
        with HuggingFaceStreamingCorpus("org/web-jsonl", max_samples=253) as c:
            c.load_state_dict(state)
            assert head + list(c.stream()) == texts[:253]
        assert set(hub.bytes_by_file) == {"org/web-jsonl/data/part-2.jsonl.gz"}
