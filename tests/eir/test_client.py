"""``ws://`` datasets: hfstream reads from EIR-protocol servers (its own and others) as a client."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import orjson
import pytest

from conftest import make_texts, write_jsonl
from hfstream import HuggingFaceStreamingCorpus
from hfstream.cli.main import main as cli_main
from hfstream.eir.client import EirClient
from hfstream.eir.feed import ListSource
from hfstream.eir.runner import ServerThread
from hfstream.eir.server import ServerConfig
from hfstream.errors import ConfigError, DataFormatError, EmptyDatasetError, OfflineError
from hfstream.worker.ws import WsReader


@contextlib.contextmanager
def serving(tmp_path, texts: list[str], **config):
    """Our server over a real corpus (JSONL) of ``texts``, repeated forever, one sample per text."""
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    config.setdefault("sequence_length", 0)
    with HuggingFaceStreamingCorpus(str(path), epochs=None) as corpus, \
            ServerThread(corpus, ServerConfig(port=0, **config)) as server:
        yield server


@contextlib.contextmanager
def scripted_server(handler):
    """Someone else's EIR-protocol server: ``handler(connection)`` runs per connection."""
    from websockets.sync.server import serve

    server = serve(handler, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/ws"
    finally:
        server.shutdown()
        thread.join(5)


def tutorial_like(total: int, bad_data: bytes | None = None, errors_first: int = 0):
    """A server that behaves as EIR's tutorial server does: one global position, ids
    ``sample_<position>``, an empty ``inputs`` in info, and after ``["terminate"]`` it closes."""
    state = {"position": 0, "errors": errors_first}
    lock = threading.Lock()

    def handler(ws):
        first = orjson.loads(ws.recv())
        if first.get("type") != "handshake" or first.get("version") != "1.0":
            ws.send(orjson.dumps({"type": "error", "payload": {"message": "Incompatible protocol version"}}).decode())
            return
        ws.send('{"type": "handshake", "version": "1.0"}')
        for raw in ws:
            message = orjson.loads(raw)
            kind = message.get("type")
            if kind == "getInfo":
                ws.send('{"type": "info", "payload": {"inputs": {}, "outputs": {"text_output": {"type": "sequence"}}}}')
            elif kind == "getData":
                if bad_data is not None:
                    ws.send(bad_data.decode())
                    continue
                with lock:
                    if state["errors"]:
                        state["errors"] -= 1
                        ws.send('{"type": "error", "payload": {"message": "not now"}}')
                        continue
                    batch = []
                    while len(batch) < message["payload"]["batch_size"] and state["position"] < total:
                        text = f"text {state['position']}"
                        batch.append({"inputs": {"text_output": text},
                                      "target_labels": {"text_output": {"text_output": text}},
                                      "sample_id": f"sample_{state['position']}"})
                        state["position"] += 1
                if not batch:
                    ws.send('{"type": "data", "payload": ["terminate"]}')
                    break
                ws.send(orjson.dumps({"type": "data", "payload": batch}).decode())

    return handler


def test_a_corpus_reads_a_ws_dataset_like_any_other(tmp_path):
    texts = make_texts(30)
    with serving(tmp_path, texts) as server:
        with HuggingFaceStreamingCorpus(server.url, max_samples=75) as corpus:
            assert corpus.resolved.kind == "ws"
            got = list(corpus.stream())
        assert got == (texts * 3)[:75]
        with HuggingFaceStreamingCorpus(server.url, max_samples=5) as other:  # shared cursor: moves on
            assert list(other.stream()) == (texts * 3)[75:80]


def test_the_cli_reads_ws_datasets(tmp_path, capsys):
    texts = make_texts(10)
    with serving(tmp_path, texts) as server:
        assert cli_main(["head", "--dataset", server.url, "-n", "3", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [orjson.loads(line)["text"] for line in lines] == texts[:3]


def test_each_further_epoch_starts_with_a_reset(tmp_path):
    with serving(tmp_path, make_texts(40), sequence_length=6, max_iterations=20) as server:
        with HuggingFaceStreamingCorpus(server.url, epochs=2) as corpus:
            got = list(corpus.stream())
        assert len(got) == 40 and got[:20] == got[20:]
        assert all(len(t.split()) == 6 for t in got)


def test_a_server_already_at_its_end_is_rewound_when_epochs_allow_it(tmp_path):
    texts = make_texts(10)
    with serving(tmp_path, texts, max_iterations=5) as server:
        with HuggingFaceStreamingCorpus(server.url) as corpus:
            assert list(corpus.stream()) == texts[:5]
        with HuggingFaceStreamingCorpus(server.url) as corpus, pytest.raises(EmptyDatasetError) as info:
            list(corpus.stream())  # one epoch: no reset, which would rewind every client of the server
        assert "terminate" in info.value.message and "--epochs 2" in info.value.hint
        with HuggingFaceStreamingCorpus(server.url, epochs=2) as corpus:  # two: reset, then two passes
            assert list(corpus.stream()) == texts[:5] * 2
        with HuggingFaceStreamingCorpus(server.url, epochs=None, max_samples=7) as corpus:  # forever
            assert list(corpus.stream()) == (texts[:5] * 2)[:7]


def test_the_text_field_is_detected_or_named(tmp_path):
    texts = make_texts(5)
    with serving(tmp_path, texts, output_name="story") as server:
        with HuggingFaceStreamingCorpus(server.url, max_samples=2) as corpus:
            assert list(corpus.stream()) == texts[:2]
        with HuggingFaceStreamingCorpus(server.url, max_samples=2, ws_field="story") as corpus:
            assert list(corpus.stream()) == texts[2:4]
        with HuggingFaceStreamingCorpus(server.url, ws_field="text_output") as corpus, \
                pytest.raises(ConfigError) as info:
            list(corpus.stream())
        assert "'story'" in info.value.message and "ws_field" in info.value.hint


def test_the_token_comes_from_the_environment_or_the_url(tmp_path, monkeypatch):
    texts = make_texts(5)
    with serving(tmp_path, texts, token="s3cret") as server:
        with HuggingFaceStreamingCorpus(server.url) as corpus, pytest.raises(ConfigError) as info:
            list(corpus.stream())
        assert "HTTP 401" in info.value.message and "HFSTREAM_WS_TOKEN" in info.value.hint
        with HuggingFaceStreamingCorpus(server.url + "?token=s3cret", max_samples=1) as corpus:
            assert list(corpus.stream()) == texts[:1]
        monkeypatch.setenv("HFSTREAM_WS_TOKEN", "s3cret")
        with HuggingFaceStreamingCorpus(server.url, max_samples=1) as corpus:
            assert list(corpus.stream()) == texts[1:2]


def test_the_reader_reconnects_when_the_server_restarts():
    first = ServerThread(ListSource(["a"], epochs=None), ServerConfig(port=0, sequence_length=0)).start()
    port = first.server.port
    reader = WsReader(first.url, batch_size=4, max_attempts=30, backoff_s=0.02)
    chunks = reader.open(0, 0)
    try:
        assert next(chunks) == ["a"] * 4
        first.stop()
        with ServerThread(ListSource(["b"], epochs=None), ServerConfig(port=port, sequence_length=0)):
            assert next(chunks) == ["b"] * 4
        assert reader.num_reconnects >= 1
    finally:
        chunks.close()
        first.stop()


def test_an_unreachable_server_is_an_offline_error_after_a_few_attempts():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    reader = WsReader(f"ws://127.0.0.1:{port}/ws", max_attempts=3, backoff_s=0.01)
    with pytest.raises(OfflineError) as info:
        next(reader.open(0, 0))
    assert "3 times in a row" in info.value.message and "hfstream serve" in info.value.hint


def test_restoring_a_state_says_loudly_that_it_is_not_exact(tmp_path, caplog):
    with serving(tmp_path, make_texts(20)) as server:
        with HuggingFaceStreamingCorpus(server.url, max_samples=30) as corpus:
            stream = corpus.stream()
            for _ in range(10):
                next(stream)
            state = corpus.state_dict()
        with caplog.at_level(logging.WARNING, logger="hfstream.worker"):
            with HuggingFaceStreamingCorpus(server.url, max_samples=30) as corpus:
                corpus.load_state_dict(state)
                rest = list(corpus.stream())
        assert len(rest) == 20
        assert any("cannot seek" in r.getMessage() and "not an exact" in r.getMessage() for r in caplog.records)


def confirms_resets_without_broadcast(total: int, resets: list[float]):
    """A server that answers ``reset`` with resetConfirmation only (no ``reset`` broadcast)."""
    position = [0]

    def handler(ws):
        ws.recv()
        ws.send('{"type": "handshake", "version": "1.0"}')
        for raw in ws:
            kind = orjson.loads(raw).get("type")
            if kind == "getInfo":
                ws.send('{"type": "info", "payload": {"inputs": {}, "outputs": {"text_output": {"type": "sequence"}}}}')
            elif kind == "reset":
                resets.append(time.monotonic())
                position[0] = 0
                ws.send('{"type": "resetConfirmation", "payload": {"message": "Reset successful"}}')
            elif kind == "getData":
                if position[0] >= total:
                    ws.send('{"type": "data", "payload": ["terminate"]}')
                    continue
                text, position[0] = f"text {position[0]}", position[0] + 1
                ws.send(orjson.dumps({"type": "data", "payload": [
                    {"inputs": {"text_output": text}, "sample_id": f"sample_{position[0] - 1}"}]}).decode())

    return handler


def test_a_confirmed_reset_is_never_resent_and_a_missing_broadcast_is_named(monkeypatch):
    resets: list[float] = []
    with scripted_server(confirms_resets_without_broadcast(3, resets)) as url:
        with EirClient(url, timeout=1) as client, pytest.raises(DataFormatError) as info:
            client.reset()
        assert "confirmed the reset (resetConfirmation)" in info.value.message
        assert "no 'reset' broadcast within 1s" in info.value.message and "not sent again" in info.value.hint
        assert len(resets) == 1

        resets.clear()
        monkeypatch.setenv("HFSTREAM_WS_TIMEOUT", "2")  # the reply timeout a user sets (EIR's: 30 s)
        t0 = time.monotonic()
        with HuggingFaceStreamingCorpus(url, epochs=2) as corpus, pytest.raises(DataFormatError) as info:
            stream = corpus.stream()
            assert [next(stream) for _ in range(3)] == ["text 0", "text 1", "text 2"]  # epoch 0
            next(stream)  # epoch 1 starts with a reset
        assert "no 'reset' broadcast within 2s" in info.value.message
        assert len(resets) == 1 and time.monotonic() - t0 < 15  # was: 9 resets over ~6 minutes


def test_reading_from_a_tutorial_style_server(tmp_path):
    with scripted_server(tutorial_like(total=600)) as url:
        with HuggingFaceStreamingCorpus(url) as corpus:  # terminate, then the server hangs up
            got = list(corpus.stream())
    assert got == [f"text {i}" for i in range(600)]


def test_error_replies_to_getdata_are_retried_as_eir_does():
    with scripted_server(tutorial_like(total=10, errors_first=2)) as url:
        reader = WsReader(url, max_attempts=5, backoff_s=0.01)
        assert [t for chunk in reader.open(0, 0) for t in chunk] == [f"text {i}" for i in range(10)]


def test_a_server_that_breaks_the_protocol_is_a_data_format_error():
    with scripted_server(tutorial_like(total=10, bad_data=b"this is not json")) as url:
        with HuggingFaceStreamingCorpus(url) as corpus, pytest.raises(DataFormatError, match="not a JSON object"):
            list(corpus.stream())


def test_the_loader_trains_from_a_ws_dataset(tmp_path, tokenizer_path):
    import torch

    from hfstream import StreamingTextDataLoader

    with serving(tmp_path, make_texts(40), sequence_length=64) as server:
        with StreamingTextDataLoader(server.url, tokenizer_path, 4, 32, shuffle_buffer_size=0) as loader:
            batches = [batch for _, batch in zip(range(3), loader)]
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (4, 32)
        assert torch.equal(inputs[:, 1:], targets[:, :-1])
