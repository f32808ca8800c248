"""How a served stream ends, over real sockets: terminate after --max-iterations, and a source
that fails mid-pass (a truncated .jsonl.gz) serving what was valid, then naming the failure."""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

import pytest

from conftest import make_texts
from hfstream.cli.main import main as cli_main
from hfstream.eir.client import EirClient, EirServerError
from test_server import ServeProcess, ids_of, serving


def test_the_end_is_logged_when_the_first_client_gets_terminate(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hfstream.eir"), \
            serving(tmp_path, max_iterations=30) as server, EirClient(server.url) as client:
        deadline = time.monotonic() + 10
        while client.status()["read_ahead"] < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.status()["read_ahead"] == 30  # the read-ahead is at the limit already ...
        client.set_validation_ids(["sample_3"])
        assert len(client.get_data(40)) == 29       # ... and the last samples go out
        ended = [r.getMessage() for r in caplog.records if "stream ended" in r.getMessage()]
        assert ended == []                          # but no client has been told yet
        assert client.get_data(40) is None and client.get_data(40) is None
        ended = [r.getMessage() for r in caplog.records if "stream ended" in r.getMessage()]
        assert len(ended) == 1 and "sample 30 (--max-iterations)" in ended[0]
        assert "29 samples served" in ended[0] and "1 left out" in ended[0]
        client.reset()
        assert len(client.get_data(40)) == 29 and client.get_data(1) is None
        assert sum("stream ended" in r.getMessage() for r in caplog.records) == 2  # once per pass


def truncated_jsonl_gz(path: Path, texts: list[str], keep: float) -> Path:
    data = gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in texts).encode())
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def test_a_truncated_file_serves_its_valid_samples_then_errors_on_every_getdata(tmp_path):
    """``hfstream serve`` in its own process, as a user runs it."""
    texts = make_texts(3000)
    path = truncated_jsonl_gz(tmp_path / "docs.jsonl.gz", texts, keep=0.6)
    with ServeProcess("--dataset", str(path), "--sequence-length", "0", "--batch-size", "100") as server:
        with EirClient(server.url, timeout=10) as client:
            served = []
            with pytest.raises(EirServerError) as info:
                while True:
                    served += client.get_data(256)
            assert 0 < len(served) < len(texts)
            assert [s["inputs"]["text_output"] for s in served] == texts[:len(served)]
            message = str(info.value)
            assert f"failed after {len(served)} samples" in message and "the file is truncated" in message
            t0 = time.monotonic()
            for _ in range(2):  # every getData now gets the error, at most one a second
                with pytest.raises(EirServerError, match="the file is truncated"):
                    client.get_data(256)
            assert time.monotonic() - t0 >= 0.9
            client.reset()  # a new pass serves the valid samples again, then fails again
            assert ids_of(client.get_data(5)) == [f"sample_{i}" for i in range(5)]
        assert server.stop() == 0
    log = server.log()
    assert log.count("ERROR") == 1 and f"source failed after {len(served)} samples" in log  # once, in full
    assert "keeps running" in log


def test_a_file_with_no_valid_sample_fails_the_command(tmp_path, capsys):
    path = truncated_jsonl_gz(tmp_path / "docs.jsonl.gz", make_texts(3000), keep=0.1)
    assert cli_main(["serve", "--dataset", str(path), "--port", "0", "--sequence-length", "0"]) == 2
    assert "the file is truncated" in capsys.readouterr().err
