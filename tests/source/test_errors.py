"""Bad input: every case gets an error that names the cause and the next step, never a hang."""

import gzip
import json
import time

import pytest

from conftest import JSONL, BAD_FILES, make_texts, read_all, write_bad_file, write_jsonl, write_parquet
from hfstream import HuggingFaceStreamingCorpus
from hfstream.errors import (ConfigError, DataFormatError, DatasetNotFoundError, EmptyDatasetError,
                             FileAccessError, OfflineError)


def test_missing_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no such file") as info:
        HuggingFaceStreamingCorpus(str(tmp_path / "nope.parquet"))
    assert "HINT:" in str(info.value)


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="matched no files"):
        HuggingFaceStreamingCorpus(str(tmp_path / "*.parquet"))


def test_directory_without_data_files(tmp_path):
    (tmp_path / "notes.bin").write_bytes(b"x")
    with pytest.raises(DatasetNotFoundError, match="holds no data files"):
        HuggingFaceStreamingCorpus(str(tmp_path))


def test_unknown_extension_names_the_file_and_the_supported_ones(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_text("hello")
    with pytest.raises(DataFormatError, match=r"data\.xyz.*'\.xyz'") as info:
        HuggingFaceStreamingCorpus(str(path))
    assert ".parquet" in str(info.value)


def test_mixed_formats(tmp_path):
    write_parquet(tmp_path / "a.parquet", ["x"])
    write_jsonl(tmp_path / "b.jsonl", [{"text": "y"}])
    with pytest.raises(DataFormatError, match="mix formats"):
        HuggingFaceStreamingCorpus(str(tmp_path))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_missing_text_column_lists_the_columns(tmp_path, fmt):
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "d.parquet"
        pq.write_table(pa.table({"body": ["a"], "url": ["u"]}), path)
    else:
        path = write_jsonl(tmp_path / "d.jsonl", [{"body": "a", "url": "u"}])
    with pytest.raises(DataFormatError, match=r"no column 'text'.*'body', 'url'") as info:
        read_all(str(path))
    assert "--text-column" in str(info.value)


def test_null_and_non_string_text_are_skipped_and_counted(tmp_path):
    records = [{"text": "good one"}, {"text": None}, {"text": 42}, {"text": ""}, {"text": "good two"}]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with HuggingFaceStreamingCorpus(str(path)) as corpus:
        assert list(corpus.stream()) == ["good one", "good two"]
        assert corpus.skipped == {"null": 1, "non_string": 1, "too_short": 1}


def test_strict_mode_turns_bad_text_into_an_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "ok"}, {"text": 42}])
    with pytest.raises(DataFormatError, match=r"row 1 .*int.*'text'"):
        read_all(str(path), strict=True)


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c\n')
    with pytest.raises(DataFormatError, match=r"d\.jsonl:3: malformed JSON") as info:
        read_all(str(path))
    assert "sed -n '3p'" in str(info.value)


def test_json_array_file_is_explained(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[{"text": "a"}]')
    with pytest.raises(DataFormatError, match="JSON array"):
        read_all(str(path), reader="fast")
    assert read_all(str(path), reader="datasets") == ["a"]  # datasets reads arrays


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_truncated_or_corrupt_parquet(tmp_path, damage):
    path = write_parquet(tmp_path / "d.parquet", make_texts(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PAR1" + b"\0" * 500)
    with pytest.raises(DataFormatError, match=r"d\.parquet.*(truncated|corrupt)"):
        read_all(str(path))


def test_invalid_utf8_is_an_error_unless_replaced(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"d\.jsonl:2: invalid UTF-8") as info:
        read_all(str(path))
    assert "encoding_errors='replace'" in str(info.value)
    assert read_all(str(path), encoding_errors="replace") == ["fine", "caf\ufffd"]
    txt = tmp_path / "d.txt"
    txt.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(DataFormatError, match="invalid UTF-8"):
        read_all(str(txt))
    assert read_all(str(txt), encoding_errors="replace") == ["fine", "caf\ufffd"]


def test_empty_dataset(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(EmptyDatasetError, match="has no rows"):
        read_all(str(tmp_path / "empty.jsonl"))
    path = write_jsonl(tmp_path / "nulls.jsonl", [{"text": None}] * 3)
    with pytest.raises(EmptyDatasetError, match=r"all 3 rows .* skipped \(3 null\)"):
        read_all(str(path), epochs=None)  # must not spin forever on an empty repeat


def test_hub_id_while_offline_fails_fast_and_suggests_local_files(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    start = time.monotonic()
    with pytest.raises(OfflineError, match="cannot be\\s+reached") as info:
        read_all("HuggingFaceFW/fineweb", name="sample-10BT")
    assert "builtin:python-docs" in str(info.value) and "local files" in str(info.value)
    assert time.monotonic() - start < 30  # no hub retry loop


def test_hub_offline_env_is_respected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        read_all("HuggingFaceFW/fineweb")


@pytest.mark.parametrize("options,match", [
    ({"text_colum": "x"}, "did you mean 'text_column'"),
    ({"shard": 2, "num_shards": 2}, r"shard=2 is out of range"),
    ({"min_length": "5"}, "min_length must be an integer"),
    ({"sample_by": "word"}, "sample_by='word' is not valid"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
])
def test_bad_options(tmp_path, options, match):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with pytest.raises(ConfigError, match=match):
        HuggingFaceStreamingCorpus(str(path), **options)


# -- encoding errors: honoured everywhere, or said with file:line and the fix ---------------------

LONE_SURROGATES = ('{"text": "fine"}\n{"text": "lone \\ud800 high"}\n{"text": "pair \\ud83d\\ude00 '
                   'and lone low \\udc00"}\n{"text": "after"}\n')


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz"])
def test_lone_surrogate_escape_follows_encoding_errors(tmp_path, name):
    path = tmp_path / name
    data = LONE_SURROGATES.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert read_all(str(path), encoding_errors="replace") == [
        "fine", "lone \ufffd high", "pair \U0001f600 and lone low \ufffd", "after"]
    assert read_all(str(path), encoding_errors="ignore") == [
        "fine", "lone  high", "pair \U0001f600 and lone low ", "after"]
    with pytest.raises(DataFormatError, match=rf"{name}:2: .*lone surrogate escape \(\\ud800\)") as info:
        read_all(str(path))
    assert "--encoding-errors replace" in str(info.value) and "sed -n '2p'" in str(info.value)


def test_lone_surrogate_read_by_datasets_is_explained(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(LONE_SURROGATES)
    with pytest.raises(DataFormatError, match=r"d\.jsonl: invalid JSON in row 1 .*surrogate") as info:
        read_all(str(path), reader="datasets", encoding_errors="replace")
    assert "reader='fast'" in str(info.value)


def test_lone_surrogate_in_a_line_that_is_also_malformed_is_called_malformed(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "lone \\ud800 and no end\n')
    with pytest.raises(DataFormatError, match=r"d\.jsonl:2: malformed JSON line"):
        read_all(str(path), encoding_errors="replace")


def test_invalid_utf8_in_a_parquet_string_column_follows_encoding_errors(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Some writers do not check their strings: build such a column without pyarrow's check.
    data, offsets = b"fine" + b"caf\xe9" + b"after", np.array([0, 4, 8, 13], dtype=np.int32)
    column = pa.Array.from_buffers(pa.string(), 3, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": column}), path)
    assert read_all(str(path), encoding_errors="replace") == ["fine", "caf\ufffd", "after"]
    assert read_all(str(path), encoding_errors="ignore") == ["fine", "caf", "after"]
    with pytest.raises(DataFormatError, match=r"d\.parquet: row 1 of column 'text' is not valid UTF-8"):
        read_all(str(path))


def test_invalid_utf8_in_a_text_file_names_the_line(tmp_path):
    path = tmp_path / "d.txt"
    path.write_bytes(b"fine\n" * 5000 + b"line with caf\xe9\nafter\n")  # past the first read block
    with pytest.raises(DataFormatError, match=r"d\.txt:5001: invalid UTF-8 at byte 14 of the line"):
        read_all(str(path), sample_by="line")


# -- bad files: each its own cause and HINT, raised in the parent without a worker traceback ------

@pytest.mark.parametrize("kind", BAD_FILES)
def test_a_bad_file_gets_its_own_cause_and_hint(tmp_path, kind):
    path, match = write_bad_file(tmp_path, kind)
    with pytest.raises(DataFormatError, match=match) as info:
        read_all(str(path))
    assert "HINT:" in str(info.value) and "worker stderr" not in str(info.value)
    if kind.startswith("fake"):
        assert "rename it without" in str(info.value)
    elif kind.startswith("truncated"):
        assert "download or write it again" in str(info.value)


@pytest.mark.parametrize("kind", ["truncated-.gz", "truncated-.zst", "fake-.gz", "fake-.bz2"])
def test_a_bad_file_read_by_datasets_gets_the_same_cause(tmp_path, kind):
    path, match = write_bad_file(tmp_path, kind)
    with pytest.raises(DataFormatError, match=match):
        read_all(str(path), reader="datasets")


def test_an_unclosed_csv_quote_names_the_file_among_several(tmp_path):
    (tmp_path / "a.csv").write_text('text,id\n"one",1\n')
    (tmp_path / "b.csv").write_text('text,id\n"two",1\n"broken,2\nthree,3\n')
    (tmp_path / "c.csv").write_text('text,id\n"four",1\n')
    with pytest.raises(DataFormatError, match=r"b\.csv:3: a quoted field is never closed") as info:
        read_all(str(tmp_path))
    assert "sed -n '3p'" in str(info.value)


def test_documents_before_a_truncation_are_delivered_first(tmp_path):
    path, _ = write_bad_file(tmp_path, "truncated-.gz")
    got = []
    with pytest.raises(DataFormatError, match="truncated"):
        with HuggingFaceStreamingCorpus(str(path), batch_size=50) as corpus:
            got.extend(corpus.stream())
    assert 0 < len(got) < 2000 and got == [json.loads(line)["text"] for line in JSONL.splitlines()[:len(got)]]


@pytest.mark.parametrize("name", ["d.jsonl", "d.parquet", "d.txt.gz"])
def test_an_unreadable_file_is_permission_denied_not_corrupt(tmp_path, unreadable, name):
    make_unreadable, python = unreadable
    path = tmp_path / name
    if name.endswith(".parquet"):
        write_parquet(path, ["a", "b"])
    elif name.endswith(".gz"):
        path.write_bytes(gzip.compress(b"a\nb\n"))
    else:
        write_jsonl(path, [{"text": "a"}])
    make_unreadable(path)
    with pytest.raises(FileAccessError, match=rf"{name}: permission denied: user \S+ \(uid \d+\) may not read it") as info:
        read_all(str(path), python=python)
    assert "chmod a+r" in str(info.value) and "corrupt" not in str(info.value)
