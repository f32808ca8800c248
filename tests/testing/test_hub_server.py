"""The local hub: the real huggingface_hub and datasets read a FineWeb-shaped repo from it, faults included."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LOAD_DATASET, digests, parquet_bytes
from hfstream.testing.fineweb import FINEWEB_REPO_ID, make_fineweb_like_repo, shared_fineweb_parquet
from hfstream.testing.hub import LocalHub

huggingface_hub = pytest.importorskip("huggingface_hub")
pq = pytest.importorskip("pyarrow.parquet")

FOOTER_READ = 64 * 1024  # pyarrow reads a parquet file's last 64 KiB first
REPO_ROOT = Path(__file__).resolve().parents[2]

# Run in a child: datasets reads HF_ENDPOINT when it is imported and has no endpoint argument.
@pytest.fixture(scope="module")
def fineweb(tmp_path_factory):
    """The shared FineWeb sample as a 5-file repo (synthetic text when /work/shared is absent)."""
    root = tmp_path_factory.mktemp("hub")
    repo = make_fineweb_like_repo(root / FINEWEB_REPO_ID, shared_fineweb_parquet(), num_files=5,
                                  row_group_size=64, num_synthetic_rows=1500)
    return root, repo


@pytest.fixture
def hub(fineweb):
    with LocalHub(fineweb[0]) as server:
        yield server


@pytest.fixture
def fs(hub):
    return huggingface_hub.HfFileSystem(endpoint=hub.url, token=False, skip_instance_cache=True)


def assert_read_about_once(hub, repo) -> None:
    """Each file once, plus pyarrow's footer read per file (and one more for the schema)."""
    assert parquet_bytes(hub) <= repo.num_bytes + FOOTER_READ * (len(repo.data_files) + 1)
    if shared_fineweb_parquet() is not None:  # files of ~2.4 MB: the footer reads are noise
        assert parquet_bytes(hub) <= 1.05 * repo.num_bytes


def chunk_span(parquet, row_group: int) -> tuple[int, int]:
    """(first byte, length) of the ``text`` column chunk of a row group (dictionary page included)."""
    chunk = parquet.metadata.row_group(row_group).column(0)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    return start, chunk.total_compressed_size


def hf_path(repo, k: int) -> str:
    return f"datasets/{FINEWEB_REPO_ID}/{repo.data_files[k]}"


# -- the real libraries end to end ----------------------------------------------------------------


def test_load_dataset_streams_the_config_rows_in_file_order(hub, fineweb, tmp_path):
    _, repo = fineweb
    env = {**os.environ, **hub.env(), "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    out = subprocess.run([sys.executable, "-c", LOAD_DATASET], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == digests(repo.texts())  # sample/10BT/* sorted, rows in file order
    # README (card + configs), no script, repo info at the sha, tree of sample/10BT, then parquet by range.
    assert set(hub.requests) == {"resolve:HEAD", "resolve:GET", "info", "tree"}
    assert all(r.status == 206 and r.range for r in hub.log if r.path.endswith(".parquet"))
    assert_read_about_once(hub, repo)


def test_corpus_reads_the_hub_repo_through_the_worker(hub, fineweb, tmp_path, monkeypatch):
    from hfstream import HuggingFaceStreamingCorpus

    _, repo = fineweb
    for key, value in {**hub.env(), "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(key, value)  # the worker subprocess inherits them
    with HuggingFaceStreamingCorpus(FINEWEB_REPO_ID, name="sample-10BT") as corpus:
        texts = list(corpus.stream())
    assert digests(texts) == digests(repo.texts())
    assert_read_about_once(hub, repo)


def test_corpus_survives_a_body_cut_mid_file(hub, fineweb, tmp_path, monkeypatch):
    _, repo = fineweb
    parquet = pq.ParquetFile(repo.root / repo.data_files[1])
    cut_at = chunk_span(parquet, 1)[1] // 2  # half of a row group's text column; the footer read is shorter
    rule = hub.cut(repo.data_files[1] + "$", after_bytes=cut_at)
    for key, value in {**hub.env(), "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(key, value)
    from hfstream import HuggingFaceStreamingCorpus

    with HuggingFaceStreamingCorpus(FINEWEB_REPO_ID, name="sample-10BT") as corpus:
        assert digests(corpus.stream()) == digests(repo.texts())
    cut = next(r for r in hub.log if r.path.endswith(repo.data_files[1]) and r.body_bytes == cut_at)
    again = [r for r in hub.log if r.range == cut.range and r.path == cut.path]
    # The worker reads one row group's column chunk per range GET; the cut one is read again whole
    # (HfFileSystemFile's http_backoff retries RemoteProtocolError from its start).
    assert rule.hits == 1 and [r.body_bytes for r in again] == [cut_at, int(cut.range.split("-")[1]) -
                                                                int(cut.range.split("=")[1].split("-")[0]) + 1]


def test_hffs_reads_a_footer_and_one_row_group_by_range(hub, fs, fineweb):
    _, repo = fineweb
    size = (repo.root / repo.data_files[2]).stat().st_size
    with fs.open(hf_path(repo, 2), "rb", cache_type="none") as f:
        parquet = pq.ParquetFile(f)
        hub.reset_counters()  # after the listing and the footer: count the row group alone
        rows = parquet.read_row_group(1, columns=["text"]).num_rows
    start, length = chunk_span(parquet, 1)
    assert rows == 64
    assert [(r.status, r.range) for r in hub.log] == [(206, f"bytes={start}-{start + length - 1}")]
    assert hub.bytes_served == length < size / 3


def test_hffs_default_readahead_reads_from_the_row_group_to_5_mib_on(hub, fs, fineweb):
    _, repo = fineweb
    size = (repo.root / repo.data_files[2]).stat().st_size
    with fs.open(hf_path(repo, 2), "rb") as f:  # fsspec's "readahead" cache, 5 MiB blocks
        parquet = pq.ParquetFile(f)
        parquet.read_row_group(1, columns=["text"])
    footer, group = [r for r in hub.log if r.endpoint == "resolve:GET"]
    assert footer.range == f"bytes={size - FOOTER_READ}-{size - 1}"
    start, _ = chunk_span(parquet, 1)
    assert group.range == f"bytes={start}-{min(size, start + 5 * 2**20) - 1}"


def test_push_commit_moves_main_and_the_old_sha_still_resolves(hub, tmp_path):
    api = huggingface_hub.HfApi(endpoint=hub.url, token=False)
    old = api.dataset_info(FINEWEB_REPO_ID).sha
    new = hub.push_commit(FINEWEB_REPO_ID, {"extra/notes.txt": "hello"}, message="Add notes")
    assert api.dataset_info(FINEWEB_REPO_ID).sha == new != old == hub.sha(FINEWEB_REPO_ID, old)
    assert "extra/notes.txt" in api.list_repo_files(FINEWEB_REPO_ID, repo_type="dataset")
    assert "extra/notes.txt" not in api.list_repo_files(FINEWEB_REPO_ID, repo_type="dataset", revision=old)
    path = huggingface_hub.hf_hub_download(FINEWEB_REPO_ID, "extra/notes.txt", repo_type="dataset",
                                           endpoint=hub.url, token=False, cache_dir=tmp_path)
    assert Path(path).read_text() == "hello" and new in path  # the snapshot folder is the sha


def test_tree_listing_is_paginated_with_link_headers(hub, fineweb):
    hub.tree_page_size = 2
    api = huggingface_hub.HfApi(endpoint=hub.url, token=False)
    entries = list(api.list_repo_tree(FINEWEB_REPO_ID, repo_type="dataset", recursive=True))
    assert sorted(e.path for e in entries if hasattr(e, "size")) == sorted(["README.md", *fineweb[1].data_files])
    assert hub.requests["tree"] == 4  # 8 entries (2 folders, 6 files), 2 a page


def test_unknown_repo_revision_and_file_raise_the_hub_errors(hub, tmp_path):
    api = huggingface_hub.HfApi(endpoint=hub.url, token=False)
    with pytest.raises(huggingface_hub.errors.RepositoryNotFoundError):
        api.dataset_info("nobody/nothing")
    with pytest.raises(huggingface_hub.errors.RevisionNotFoundError):
        api.dataset_info(FINEWEB_REPO_ID, revision="no-such-branch")
    with pytest.raises(huggingface_hub.errors.EntryNotFoundError):
        huggingface_hub.hf_hub_download(FINEWEB_REPO_ID, "nope.txt", repo_type="dataset", endpoint=hub.url,
                                        token=False, cache_dir=tmp_path)


def test_resolve_answers_head_and_ranges_as_the_hub(hub, fineweb):
    import urllib.error
    import urllib.request

    _, repo = fineweb
    data = (repo.root / repo.data_files[0]).read_bytes()
    url = f"{hub.url}/datasets/{FINEWEB_REPO_ID}/resolve/main/{repo.data_files[0]}"

    def fetch(method: str = "GET", byte_range: str | None = None):
        headers = {"Range": byte_range} if byte_range else {}
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers)) as response:
            return response.status, response.headers, response.read()

    status, headers, body = fetch("HEAD")
    assert (status, body, headers["Content-Length"], headers["X-Repo-Commit"]) == (
        200, b"", str(len(data)), hub.sha(FINEWEB_REPO_ID))
    assert headers["ETag"] == '"%s"' % hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id
    assert fetch(byte_range="bytes=10-19")[::2] == (206, data[10:20])
    assert fetch(byte_range="bytes=-8")[1]["Content-Range"] == f"bytes {len(data) - 8}-{len(data) - 1}/{len(data)}"
    with pytest.raises(urllib.error.HTTPError) as info:
        fetch(byte_range=f"bytes={len(data)}-")
    assert (info.value.code, info.value.headers["Content-Range"]) == (416, f"bytes */{len(data)}")
    assert hub.bytes_served == 10 + 8


# -- faults: what the real client sees -------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_a_transient_status_on_a_range_read_is_retried_after_1_s(hub, fs, fineweb, status):
    _, repo = fineweb
    f = fs.open(hf_path(repo, 0), "rb", cache_type="none")
    hub.reset_counters()
    rule = hub.fail(r"/resolve/", status=status)
    t0 = time.perf_counter()
    f.seek(1000)
    assert f.read(5000) == (repo.root / repo.data_files[0]).read_bytes()[1000:6000]
    assert time.perf_counter() - t0 >= 1.0  # http_backoff: 1 s, then 2, 4, 8, 8 (5 retries)
    assert rule.hits == 1 and [r.status for r in hub.log] == [status, 206] and hub.bytes_served == 5000


def test_a_503_on_the_api_or_a_download_get_is_raised_at_once(hub, tmp_path):
    api = huggingface_hub.HfApi(endpoint=hub.url, token=False)
    hub.fail(r"/api/datasets/", status=503)
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError) as info:
        api.dataset_info(FINEWEB_REPO_ID)  # repo info is not retried
    assert info.value.response.status_code == 503
    hub.fail(r"README\.md$", status=503, methods=["GET"])
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError):  # http_get retries 408 and 429 only
        huggingface_hub.hf_hub_download(FINEWEB_REPO_ID, "README.md", repo_type="dataset", endpoint=hub.url,
                                        token=False, cache_dir=tmp_path)
    hub.fail(r"README\.md$", status=503, methods=["HEAD"])  # a failed HEAD is retried, with backoff
    huggingface_hub.hf_hub_download(FINEWEB_REPO_ID, "README.md", repo_type="dataset", endpoint=hub.url,
                                    token=False, cache_dir=tmp_path)
    assert [r.status for r in hub.log if r.path.endswith("README.md")] == [200, 503, 503, 200, 200]


def test_a_cut_range_read_is_read_again_whole(hub, fs, fineweb):
    _, repo = fineweb
    f = fs.open(hf_path(repo, 0), "rb", cache_type="none")
    rule = hub.cut(r"\.parquet$", after_bytes=10_000)
    assert f.read(50_000) == (repo.root / repo.data_files[0]).read_bytes()[:50_000]
    # httpx raises RemoteProtocolError (peer closed connection ...), http_backoff retries the range.
    assert rule.hits == 1 and [r.body_bytes for r in hub.log if r.range] == [10_000, 50_000]


def test_a_cut_download_restarts_from_zero_below_one_chunk(hub, fineweb, tmp_path):
    _, repo = fineweb
    data = (repo.root / repo.data_files[1]).read_bytes()
    hub.cut(r"\.parquet$", after_bytes=50_000)
    path = huggingface_hub.hf_hub_download(FINEWEB_REPO_ID, repo.data_files[1], repo_type="dataset",
                                           endpoint=hub.url, token=False, cache_dir=tmp_path)
    assert Path(path).read_bytes() == data
    # http_get resumes from the bytes it has written, in 10 MiB chunks: here none, so no Range.
    gets = [(r.range, r.body_bytes) for r in hub.log if r.endpoint == "resolve:GET"]
    assert gets == [(None, 50_000), (None, len(data))]


def test_a_stall_past_the_read_timeout_is_retried(hub, fs, fineweb, monkeypatch):
    _, repo = fineweb
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.5)
    f = fs.open(hf_path(repo, 0), "rb", cache_type="none")
    hub.reset_counters()
    before = hub.stall(r"\.parquet$", seconds=0.2)  # under the timeout: the answer is only later
    within = hub.stall(r"\.parquet$", seconds=30, after_bytes=1000)  # past it, mid-body: ReadTimeout
    t0 = time.perf_counter()
    assert f.read(5000) == (repo.root / repo.data_files[0]).read_bytes()[:5000]
    assert time.perf_counter() - t0 >= 0.2 + 0.5 + 1.0  # stall, timeout, http_backoff's 1 s
    assert before.hits == within.hits == 1  # both on the first request; the retry gets it all
    assert [(r.range, r.body_bytes) for r in hub.log] == [("bytes=0-4999", 1000), ("bytes=0-4999", 5000)]


def test_a_token_is_required_and_401s_raise_the_hub_errors(hub, fineweb, tmp_path):
    hub.require_token("hf_right")
    with pytest.raises(huggingface_hub.errors.RepositoryNotFoundError):  # no token: as a private repo
        huggingface_hub.HfApi(endpoint=hub.url, token=False).dataset_info(FINEWEB_REPO_ID)
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError, match="Invalid credentials") as info:
        huggingface_hub.HfApi(endpoint=hub.url, token="hf_wrong").dataset_info(FINEWEB_REPO_ID)
    assert info.value.response.status_code == 401
    with pytest.raises(FileNotFoundError, match="repository not found"):
        huggingface_hub.HfFileSystem(endpoint=hub.url, token=False, skip_instance_cache=True).info(
            hf_path(fineweb[1], 0))
    assert huggingface_hub.HfApi(endpoint=hub.url, token="hf_right").dataset_info(FINEWEB_REPO_ID).sha
    assert [r.status for r in hub.log] == [401, 401, 401, 200]


def test_the_bandwidth_cap_paces_bodies(hub, fs, fineweb):
    _, repo = fineweb
    hub.bandwidth = 1_000_000
    f = fs.open(hf_path(repo, 0), "rb", cache_type="none")
    t0 = time.perf_counter()
    f.read(400_000)
    assert time.perf_counter() - t0 >= 0.3  # 0.4 s at 1 MB/s less 50 ms of credit (a lower bound only)


def test_cdn_redirects_cost_a_302_per_read_and_drop_the_token(hub, fineweb, tmp_path):
    _, repo = fineweb
    hub.cdn_redirects = r"\.parquet$"
    fs = huggingface_hub.HfFileSystem(endpoint=hub.url, token="hf_tok", skip_instance_cache=True)
    with fs.open(hf_path(repo, 0), "rb", cache_type="none") as f:
        f.seek(100)
        f.read(1000)
    resolve, cdn = [r for r in hub.log if r.range]
    assert (resolve.status, resolve.authorization) == (302, True)
    assert (cdn.endpoint, cdn.status, cdn.authorization, cdn.body_bytes) == ("cdn:GET", 206, False, 1000)
