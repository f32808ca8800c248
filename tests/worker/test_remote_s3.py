"""``s3://`` datasets through s3fs, against a local S3-compatible server (moto in server mode on 127.0.0.1).

Skipped when ``moto[server]`` or ``s3fs`` (the ``hfstream[s3]`` extra) is not installed.
"""

from __future__ import annotations

import collections
import importlib.util

import pytest

from conftest import make_texts, read_all, write_jsonl, write_parquet
from hfstream import HuggingFaceStreamingCorpus
from hfstream.errors import ConfigError

BUCKET = "corpus"


@pytest.fixture(scope="module")
def s3_server():
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server._server.server_port}"
    client = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield url, client
    server.stop()


@pytest.fixture
def s3(s3_server, tmp_path, monkeypatch):
    """Upload 3 parquet files (row groups of 10) and a .jsonl.gz; the worker reaches moto through AWS_ENDPOINT_URL."""
    url, client = s3_server
    for key, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    texts = make_texts(150, seed=5)
    for k in range(3):
        path = write_parquet(tmp_path / f"part-{k}.parquet", texts[50 * k:50 * (k + 1)], row_group_size=10)
        client.upload_file(str(path), BUCKET, f"{tmp_path.name}/parquet/part-{k}.parquet")
    jsonl = write_jsonl(tmp_path / "d.jsonl.gz", [{"text": t} for t in texts])
    client.upload_file(str(jsonl), BUCKET, f"{tmp_path.name}/json/d.jsonl.gz")
    return f"s3://{BUCKET}/{tmp_path.name}", texts


def test_s3_parquet_glob_reads_every_document_in_order(s3):
    prefix, texts = s3
    assert read_all(f"{prefix}/parquet/*.parquet") == texts


def test_s3_jsonl_gz_reads_like_the_local_file(s3, tmp_path):
    prefix, texts = s3
    assert read_all(f"{prefix}/json/d.jsonl.gz") == read_all(str(tmp_path / "d.jsonl.gz")) == texts


def test_s3_row_group_shards_are_disjoint_and_complete(s3):
    prefix, texts = s3
    shards = [read_all(f"{prefix}/parquet/*.parquet", shard=r, num_shards=4) for r in range(4)]  # auto: row groups
    assert all(shards) and collections.Counter(t for s in shards for t in s) == collections.Counter(texts)


def test_s3_resume_continues_exactly(s3):
    prefix, texts = s3
    with HuggingFaceStreamingCorpus(f"{prefix}/parquet/*.parquet") as corpus:
        stream = corpus.stream()
        head = [next(stream) for _ in range(73)]
        state = corpus.state_dict()
    with HuggingFaceStreamingCorpus(f"{prefix}/parquet/*.parquet") as corpus:
        corpus.load_state_dict(state)
        assert head + list(corpus.stream()) == texts


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_a_url_scheme_without_its_package_names_the_pip_command():
    with pytest.raises(ConfigError, match=r"gcsfs.*\n.*pip install 'hfstream\[gcs\]'"):
        read_all("gs://bucket/data/*.parquet")
