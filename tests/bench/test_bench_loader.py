"""The loader benchmark runs end to end on a small file and reports every figure it promises."""

import json

from conftest import make_texts, write_parquet
from hfstream.bench import loader as bench


def test_loader_bench_reports_all_pipelines_side_by_side(tmp_path, tokenizer_path, capsys):
    path = write_parquet(tmp_path / "d.parquet", make_texts(400, seed=3) * 5, row_group_size=100)
    assert bench.main(["--dataset", str(path), "--tokenizer", str(tokenizer_path), "--epochs", "2",
                       "--batch-size", "2", "--seq-len", "64", "--json",
                       "--only", "hfstream", "tokenizers", "tiktoken", "tiktoken_numpy"]) == 0
    report = json.loads(capsys.readouterr().out)
    runs = report["results"]
    assert set(runs) == {"hfstream", "tokenizers", "tiktoken", "tiktoken_numpy"}
    # The bare runs tokenize the same texts with the same merges: the same number of tokens.
    assert runs["tiktoken"]["tokens"] == runs["tiktoken_numpy"]["tokens"] == 2 * runs["tokenizers"]["tokens"]
    ours = runs["hfstream"]
    # hfstream counts B x T input tokens per batch; each batch consumes B x (T+1) tokens of the
    # stream (every document's tokens plus one EOS), and only the last partial batch is left over.
    assert ours["tokens"] % (2 * 64) == 0
    batches, stream = ours["tokens"] // (2 * 64), runs["tiktoken"]["tokens"] + 2 * 2000
    assert batches * 2 * 65 <= stream < (batches + 1) * 2 * 65
    assert ours["first_batch_s"] > 0 and ours["peak_rss_mb"] > ours["floor_rss_mb"] > 0
    assert isinstance(ours["parent_rss_mb"], list)
    assert report["state"]["state_mb"] > 0 and report["state"]["restore_s"] > 0
    cache = report["cache"]  # pass 2 reads every document from the cache written by pass 1
    assert cache["off"]["tokens"] == cache["cold"]["tokens"] == cache["warm"]["tokens"] == ours["tokens"]
    assert cache["warm"]["cached_docs"] == 2 * 2000 and cache["cold"]["cached_docs"] < 2 * 2000
    assert cache["off"]["cached_docs"] == 0
    runs = report["workers"]["runs"]
    assert set(runs) == {"T=64 workers=0", "T=64 workers=2", "T=128 workers=0", "T=128 workers=2"}
    assert runs["T=64 workers=2"]["tokens"] > 0
    full = report["full_state"]
    assert full["buffer_docs"] > 0 and full["ws_form"] == "tokens" and full["restore_s"] > 0
    assert [row[0] for row in report["shuffle"]] == [1000, 256]
