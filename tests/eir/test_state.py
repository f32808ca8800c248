"""Validation ids' lifetime, and ``--state-file``: a restarted ``hfstream serve`` keeps excluding
them and continues at its cursor; a damaged or foreign state file is a clear error."""

from __future__ import annotations

import signal

import orjson
import pytest

from conftest import make_texts, write_jsonl
from hfstream.cli.main import main as cli_main
from hfstream.eir.client import EirClient
from hfstream.errors import StateError
from test_server import ServeProcess, ids_of, serving


def test_a_restarted_server_keeps_its_validation_ids_and_cursor(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in make_texts(30)])
    state = tmp_path / "state.json"
    args = ("--dataset", str(path), "--sequence-length", "8", "--state-file", str(state))
    with ServeProcess(*args) as first, EirClient(first.url) as client:
        client.set_validation_ids(["sample_1", "sample_4"])
        assert ids_of(client.get_data(4)) == ["sample_0", "sample_2", "sample_3", "sample_5"]
        first.stop(signal.SIGKILL)  # no clean shutdown: the ids were saved before the confirmation
    with ServeProcess(*args) as second:
        with EirClient(second.url) as client:
            assert client.status()["validation_ids_count"] == 2
            client.reset()  # from sample 0, whatever cursor was saved: the ids stay out
            assert ids_of(client.get_data(4)) == ["sample_0", "sample_2", "sample_3", "sample_5"]
            assert ids_of(client.get_data(3)) == ["sample_6", "sample_7", "sample_8"]
        assert second.stop() == 0  # a clean stop saves the cursor
    with ServeProcess(*args) as third:
        with EirClient(third.url) as client:
            assert ids_of(client.get_data(3)) == ["sample_9", "sample_10", "sample_11"]  # the cursor
        assert third.stop() == 0
    assert "2 validation ids" in third.log() and "resumes at sample 9" in third.log()
    saved = orjson.loads(state.read_bytes())
    assert saved["validation_ids"] == ["sample_1", "sample_4"] and saved["position"] == 12


def test_setvalidationids_replaces_the_previous_runs_ids(tmp_path):
    with serving(tmp_path) as server, EirClient(server.url) as client:
        client.set_validation_ids(["sample_0", "sample_1"])  # run 1
        client.set_validation_ids(["sample_2"])              # run 2 sends its own set
        assert client.status()["validation_ids_count"] == 1
        client.reset()
        assert ids_of(client.get_data(3)) == ["sample_0", "sample_1", "sample_3"]


def test_a_damaged_or_foreign_state_file_is_a_clear_error(tmp_path, capsys):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in make_texts(10)])
    state = tmp_path / "state.json"
    state.write_bytes(b'{"format": "hfstream-eir-server-st')  # cut by a full disk, say
    assert cli_main(["serve", "--dataset", str(path), "--port", "0", "--state-file", str(state)]) == 2
    err = capsys.readouterr().err
    assert f"state file {state} is damaged" in err and "HINT:" in err

    state.unlink()
    with serving(tmp_path, sequence_length=8, state_file=str(state)):
        pass  # writes a state for 8-word samples
    with pytest.raises(StateError) as info, serving(tmp_path, sequence_length=16, state_file=str(state)):
        pass
    assert "belongs to another stream" in info.value.message and "sequence_length" in info.value.message
    assert "--state-file" in info.value.hint

    missing_folder = tmp_path / "no" / "such" / "state.json"
    assert cli_main(["serve", "--dataset", str(path), "--port", "0", "--state-file", str(missing_folder)]) == 2
    assert "cannot write the state file" in capsys.readouterr().err
