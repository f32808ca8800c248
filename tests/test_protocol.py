"""The wire protocol: round trips, kinds, malformed lines."""

import pytest

from hfstream.source import wire as protocol
from hfstream.errors import DataFormatError


def test_round_trip_of_every_kind():
    messages = [
        {"v": protocol.PROTOCOL_VERSION, "status": "loading", "dataset": "d"},
        {"status": "ready", "reader": "fast"},
        protocol.batch_message(["a", "naïve \"q\"\n😀"], epoch=2, rows=[5, 9], end=11),
        {"heartbeat": 1.5},
        {"done": True, "total": 2, "epoch": 3, "end": 0, "skipped": {"null": 1}},
        protocol.error_message(DataFormatError("bad", "fix it")),
    ]
    for message in messages:
        line = protocol.encode(message)
        assert line.endswith(b"\n") and line.count(b"\n") == 1  # one message, one line
        assert protocol.decode(line) == message
    assert [protocol.kind_of(m) for m in messages] == ["status", "status", "batch", "heartbeat",
                                                       "done", "error"]


def test_error_message_carries_type_message_and_hint():
    error = protocol.error_message(DataFormatError("f.jsonl:3: malformed", "fix line 3"))["error"]
    assert error == {"type": "DataFormatError", "message": "f.jsonl:3: malformed", "hint": "fix line 3"}


@pytest.mark.parametrize("line", [b'{"batch": ["a", "b"', b"[1, 2]\n", b'{"other": 1}\n', b"\xff\n"])
def test_malformed_lines_are_rejected(line):
    with pytest.raises(ValueError):
        protocol.decode(line)
