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


@pytest.mark.parametrize("line,problem", [
    (b'{"batch": 5}\n', "a 'batch' message with a bad 'batch'"),
    (b'{"batch": ["x"], "epoch": 0}\n', "a 'batch' message without 'rows'"),
    (b'{"batch": ["x"], "epoch": 0, "rows": [true], "end": 1}\n', "with a bad 'rows'"),
    (b'{"batch": ["x", "y"], "epoch": 0, "rows": [3, 2], "end": 4}\n', "rows do not increase"),
    (b'{"batch": ["x"], "epoch": 0, "rows": [3], "end": 3}\n', "rows do not increase from 0 up to its end"),
    (b'{"batch": ["x"], "epoch": 0, "rows": [0], "end": 1, "skipped": {"null": "2"}}\n', "bad 'skipped'"),
    (b'{"done": true, "total": 1, "epoch": 0}\n', "a 'done' message without 'end'"),
    (b'{"done": false, "total": 1, "epoch": 0, "end": 1}\n', "bad 'done'"),
    (b'{"error": {"type": "X"}}\n', "bad 'error'"),
    (b'{"heartbeat": "soon"}\n', "bad 'heartbeat'"),
    (b'{"v": 2, "status": "loading"}\n', "bad 'v'"),
    (b'{"batch": [], "epoch": 0, "rows": [], "end": 0, "done": true}\n', "not a protocol message"),
])
def test_lines_of_the_wrong_shape_are_rejected_and_say_why(line, problem):
    with pytest.raises(ValueError, match=problem):
        protocol.decode(line)
