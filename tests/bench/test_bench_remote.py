"""The remote benchmark runs end to end on a tiny repo and prints every figure it promises."""

import re

import pytest

from conftest import make_texts, write_parquet
from hfstream.bench import BENCHMARKS
from hfstream.bench import remote as bench

pytest.importorskip("huggingface_hub")


@pytest.mark.slow
def test_remote_bench_prints_every_figure(tmp_path, capsys):
    source = write_parquet(tmp_path / "d.parquet", make_texts(300, seed=4), row_group_size=30,
                           id=[f"id-{i}" for i in range(300)])
    assert "remote" in BENCHMARKS
    assert bench.main(["--dataset", str(source), "--min-mb", "0.1", "--repeats", "1", "--ranks", "2",
                       "--bandwidth", "50"]) == 0
    out = capsys.readouterr().out
    for label in ("(a) throughput", "hfstream, hub id", "same files on local disk", "datasets streaming, hub id",
                  "(b) restart", "1% (document", "90% (document", "90% / 1%", "(c) bytes served to 2 ranks",
                  "row_groups", "50 MB/s cap"):
        assert label in out, label
    served = dict(re.findall(r"^(row_groups|rows) +[\d,.]+ +([\d.]+)x$", out, re.M))
    assert float(served["row_groups"]) <= 1.05 and float(served["rows"]) > 1.5  # rows: every rank reads all
    ratios = re.findall(r"^(?:hfstream|datasets).*?([\d.]+)x$", out, re.M)
    assert len(ratios) == 3 and all(float(r) > 0 for r in ratios)
