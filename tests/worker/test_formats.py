"""Every supported format, read through the worker; the fast path equals the datasets path."""

import json

import pytest

from conftest import make_texts, read_all, write_jsonl, write_parquet


def test_parquet_multi_file_directory_in_sorted_order(parquet_dir):
    directory, texts = parquet_dir
    assert read_all(str(directory)) == texts


def test_parquet_glob_and_list(parquet_dir):
    directory, texts = parquet_dir
    assert read_all(str(directory / "part-*.parquet")) == texts
    files = [str(directory / f"part-{k}.parquet") for k in (2, 0)]
    assert read_all("parquet", data_files=files) == texts[50:75] + texts[:25]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".jsonl.gz", ".jsonl.zst"])
def test_json_lines_plain_and_compressed(tmp_path, texts, suffix):
    path = write_jsonl(tmp_path / f"data{suffix}", [{"text": t, "id": i} for i, t in enumerate(texts)],
                       blank_every=7)
    assert read_all(str(path)) == texts


@pytest.mark.parametrize("reader", ["fast", "datasets"])
def test_zstd_file_of_several_frames_is_read_whole(tmp_path, texts, reader):
    import zstandard

    lines = [(json.dumps({"text": t}) + "\n").encode() for t in texts]
    frames = b"".join(zstandard.ZstdCompressor().compress(b"".join(lines[i:i + 7])) for i in range(0, 50, 7))
    path = tmp_path / "data.jsonl.zst"  # as `cat a.zst b.zst` or a multi-threaded writer makes them
    path.write_bytes(frames)
    assert read_all(str(path), reader=reader) == texts


def test_text_file_sample_by_line_paragraph_document(tmp_path):
    raw = "first line\r\nsecond line\rthird\n\npara two a\npara two b\n\n\n\nlast\n"
    path = tmp_path / "book.txt"
    path.write_bytes(raw.encode())
    assert read_all(str(path)) == ["first line", "second line", "third", "para two a", "para two b", "last"]
    assert read_all(str(path), sample_by="paragraph") == [
        "first line\nsecond line\nthird", "para two a\npara two b", "last\n"]
    assert read_all(str(path), sample_by="document") == [raw.replace("\r\n", "\n").replace("\r", "\n")]


def test_csv_and_arrow_go_through_datasets(tmp_path, texts):
    import pyarrow as pa

    csv_path = tmp_path / "d.csv"
    csv_path.write_text("id,text\n" + "".join(f'{i},"{t.replace(chr(34), chr(34) * 2)}"\n'
                                              for i, t in enumerate(texts)))
    assert read_all(str(csv_path)) == texts
    arrow_path = tmp_path / "d.arrow"
    table = pa.table({"text": texts})
    with pa.ipc.new_stream(str(arrow_path), table.schema) as writer:
        writer.write_table(table)
    assert read_all(str(arrow_path)) == texts


def test_other_text_column(tmp_path, texts):
    path = write_jsonl(tmp_path / "d.jsonl", [{"content": t} for t in texts])
    assert read_all(str(path), text_column="content") == texts


def test_builtin_corpus_is_real_text_and_deterministic():
    docs = read_all("builtin:python-docs")
    assert len(docs) > 1000
    assert sum(map(len, docs)) > 1_000_000
    assert any("comparison" in d.lower() for d in docs[:200])  # pydoc topics: English prose
    assert read_all("builtin:python-docs", max_samples=20) == docs[:20]


# -- fast path == datasets path -------------------------------------------------------------

def _both(dataset, **options):
    return read_all(dataset, reader="fast", **options), read_all(dataset, reader="datasets", **options)


def test_fast_equals_datasets_parquet_sharded_and_filtered(tmp_path):
    texts = make_texts(120)
    texts[5] = None
    texts[17] = "short"
    for k in range(3):
        write_parquet(tmp_path / f"p{k}.parquet", texts[40 * k:40 * (k + 1)], row_group_size=9)
    # datasets cannot shard by row group: compare the sharding both do ("auto" picks row groups here)
    for options in ({}, {"min_length": 10}, {"num_shards": 2, "shard": 1, "shard_by": "rows"},
                    {"num_shards": 3, "shard": 2, "seed": 4, "epochs": 2}):
        fast, slow = _both(str(tmp_path), **options)
        assert fast == slow and fast, options


def test_fast_equals_datasets_jsonl_gz_with_nulls_and_blank_lines(tmp_path):
    records = [{"text": t} for t in make_texts(60)]
    records[3] = {"text": None}
    write_jsonl(tmp_path / "a.jsonl.gz", records[:30], blank_every=4)
    write_jsonl(tmp_path / "b.jsonl.gz", records[30:], blank_every=5)
    fast, slow = _both(str(tmp_path / "*.jsonl.gz"), num_shards=2, shard=0)
    assert fast == slow and len(fast) > 20


@pytest.mark.parametrize("sample_by", ["line", "paragraph", "document"])
def test_fast_equals_datasets_text(tmp_path, sample_by):
    body = "\n".join(make_texts(40)).replace("\n1", "\r\n\r\n1")
    (tmp_path / "t.txt").write_text(body, newline="")
    fast, slow = _both(str(tmp_path / "t.txt"), sample_by=sample_by)
    assert fast == slow and fast


@pytest.mark.skipif(not __import__("conftest").FINEWEB.exists(), reason="../shared/data is absent")
def test_fast_equals_datasets_on_real_fineweb_sample():
    from conftest import FINEWEB

    fast, slow = _both(str(FINEWEB), max_samples=700)
    assert fast == slow and len(fast) == 700
    assert json.dumps(fast[:3])  # real text round-trips
