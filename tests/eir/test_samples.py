"""EIR protocol pieces without sockets: request validation, documents -> samples, the shared feed."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hfstream.eir import protocol
from hfstream.eir.budget import ReplyBudget
from hfstream.eir.feed import ListSource, SampleFeed
from hfstream.eir.samples import sample_id, sample_texts
from hfstream.errors import ConfigError

LIMITS = {"max_batch_size": 100, "max_ids": 5}


# -- requests ------------------------------------------------------------------------------------
def test_every_request_type_parses_and_a_missing_payload_is_empty():
    handshake = protocol.parse_request(b'{"type": "handshake", "version": "1.0", "worker_id": 0}', **LIMITS)
    assert (handshake.type, handshake.version) == ("handshake", "1.0")
    for kind in ("getInfo", "heartbeat", "reset", "status"):
        request = protocol.parse_request(orjson.dumps({"type": kind}), **LIMITS)
        assert (request.type, request.payload) == (kind, {})
    assert protocol.parse_request('{"type": "reset", "payload": null}', **LIMITS).payload == {}
    assert protocol.parse_request('{"type": "getData", "payload": {"batch_size": 100}}', **LIMITS).batch_size == 100
    ids = protocol.parse_request('{"type": "setValidationIds", "payload": {"validation_ids": ["sample_3", 4]}}',
                                 **LIMITS).validation_ids
    assert ids == ["sample_3", "4"]


@pytest.mark.parametrize("frame, cause", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"payload": {}}', 'has no "type"'),
    (b'{"type": "getDataPlease"}', "unknown message type 'getDataPlease'"),
    (b'{"type": "getInfo", "payload": [1]}', "payload must be an object"),
    (b'{"type": "getData"}', "batch_size must be an integer"),
    (b'{"type": "getData", "payload": {"batch_size": "8"}}', "batch_size must be an integer"),
    (b'{"type": "getData", "payload": {"batch_size": true}}', "batch_size must be an integer"),
    (b'{"type": "getData", "payload": {"batch_size": 0}}', "out of range [1, 100]"),
    (b'{"type": "getData", "payload": {"batch_size": 101}}', "out of range [1, 100]"),
    (b'{"type": "setValidationIds", "payload": {}}', "validation_ids must be a list"),
    (b'{"type": "setValidationIds", "payload": {"validation_ids": [1, 2, 3, 4, 5, 6]}}', "more than the server keeps"),
    (b'{"type": "setValidationIds", "payload": {"validation_ids": [{"a": 1}]}}', "ids must be strings"),
])
def test_malformed_requests_name_their_cause_and_hint(frame, cause):
    with pytest.raises(protocol.RequestError) as info:
        protocol.parse_request(frame, **LIMITS)
    assert cause in info.value.message and info.value.hint


def test_replies_have_the_shapes_eir_reads():
    sample = protocol.sample("text_output", "some text", "sample_7")
    assert sample == {"inputs": {"text_output": "some text"},
                      "target_labels": {"text_output": {"text_output": "some text"}}, "sample_id": "sample_7"}
    assert protocol.info_reply("text_output")["payload"] == {"inputs": {}, "outputs": {"text_output": {"type": "sequence"}}}
    assert protocol.terminate_reply() == {"type": "data", "payload": ["terminate"]}
    assert protocol.is_terminate(["terminate"]) and not protocol.is_terminate([]) and not protocol.is_terminate([sample])
    for reply in (protocol.reset_confirmation(), protocol.reset_broadcast(), protocol.validation_reply(3, 5)):
        assert isinstance(reply["payload"]["message"], str)
    assert protocol.heartbeat_reply() == {"type": "heartbeat"}


def test_a_data_reply_encoded_in_pieces_is_the_whole_frame_cut_at_sample_boundaries():
    pairs = [(f"sample_{i}", 'naïve "quote" 東京 emoji😀 ' * i) for i in range(40)]
    whole = protocol.encode(protocol.data_reply([protocol.sample("out", t, sid) for sid, t in pairs]))
    for piece_bytes in (1, 500, 1 << 30):
        pieces = list(protocol.encode_data_reply("out", pairs, piece_bytes))
        assert b"".join(pieces) == whole
        assert all(piece.decode("utf-8") for piece in pieces)  # each is valid UTF-8 by itself
    assert len(list(protocol.encode_data_reply("out", pairs, 1 << 30))) == 1
    assert b"".join(protocol.encode_data_reply("out", [], 10)) == protocol.encode(protocol.data_reply([]))


def test_the_reply_budget_is_first_come_first_served_and_admits_an_oversized_reply_alone():
    async def main():
        budget = ReplyBudget(100)
        assert await budget.acquire(60, 1) == 60
        late = asyncio.ensure_future(budget.acquire(50, 5))   # does not fit: waits
        small = asyncio.ensure_future(budget.acquire(10, 5))  # fits, but comes after: waits too
        await asyncio.sleep(0.05)
        assert not late.done() and not small.done()
        assert await budget.acquire(30, 0.05) == 0            # time out: nothing held
        budget.release(60)
        assert (await late, await small) == (50, 10) and budget.used == 60
        budget.release(60)
        assert await budget.acquire(500, 1) == 100            # larger than the budget: alone
        assert budget.resize(100, 130) == 130 and budget.used == 130 and budget.peak == 130
        budget.release(130)
        assert budget.used == 0 and budget.reset_peak() == 130

    _run(main())


# -- documents -> samples ------------------------------------------------------------------------
def test_chunks_have_exactly_sequence_length_words_and_separate_documents():
    docs = ["a b c", "", "   ", "d e", "f g h i j k"]
    chunks = list(sample_texts(docs, 4, separator="<eot>"))
    assert chunks == ["a b c <eot>", "d e <eot> f", "g h i j", "k"]
    assert list(sample_texts(docs, 4, separator="")) == ["a b c d", "e f g h", "i j k"]
    assert list(sample_texts(docs, 0)) == docs  # document mode: unchanged, empty ones included


def test_chunking_a_long_document_is_linear_and_exact():
    words = [f"w{i}" for i in range(100_003)]
    chunks = list(sample_texts([" ".join(words)], 10))
    assert len(chunks) == 10_001 and chunks[-1] == "w100000 w100001 w100002"
    assert " ".join(chunks).split() == words


def test_sample_ids_are_positions():
    assert [sample_id(p) for p in (0, 1, 12345)] == ["sample_0", "sample_1", "sample_12345"]


# -- the shared feed -----------------------------------------------------------------------------
def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_feed_hands_out_positions_in_order_skips_excluded_and_rewinds_to_the_same_ids():
    async def main():
        feed = SampleFeed(ListSource([f"doc{i}" for i in range(7)], epochs=None), sequence_length=0,
                          buffer_samples=16)
        feed.start()
        try:
            first = await feed.take(10, set(), 5)
            second = await feed.take(5, {"sample_11", "sample_12"}, 5)
            feed.rewind()
            again = await feed.take(15, {"sample_11", "sample_12"}, 5)
            return first, second, again, feed.status()
        finally:
            feed.close()

    first, second, again, status = _run(main())
    assert [sid for sid, _ in first.samples] == [f"sample_{p}" for p in range(10)]
    assert [text for _, text in first.samples][6:8] == ["doc6", "doc0"]  # a small source cycles
    assert [sid for sid, _ in second.samples] == ["sample_10", "sample_13", "sample_14", "sample_15", "sample_16"]
    assert again.samples == first.samples + second.samples
    assert status["resets"] == 1 and status["samples_excluded"] == 4


def test_feed_ends_after_max_samples_and_after_a_finite_source():
    async def main():
        feed = SampleFeed(ListSource(["a b c d e f g"], epochs=2), sequence_length=3, max_samples=100)
        capped = SampleFeed(ListSource(["x"] * 50, epochs=None), sequence_length=0, max_samples=8)
        feed.start()
        capped.start()
        try:
            return (await feed.take(10, set(), 5), await feed.take(10, set(), 5),
                    await capped.take(5, set(), 5), await capped.take(5, set(), 5), await capped.take(5, set(), 5))
        finally:
            feed.close()
            capped.close()

    whole, after, c1, c2, c3 = _run(main())
    assert [t for _, t in whole.samples] == ["a b c", "d e f", "g <|endoftext|> a", "b c d", "e f g"]
    assert whole.ended and after.ended and not after.samples
    assert (len(c1.samples), len(c2.samples), c2.ended, c3.samples, c3.ended) == (5, 3, True, [], True)


def test_feed_reports_a_failing_source_and_a_slow_one():
    class Failing(ListSource):
        def stream(self):
            yield "one"
            raise OSError("disk on fire")

    class Slow(ListSource):
        def stream(self):
            import time

            time.sleep(0.5)
            yield from super().stream()

    async def main():
        failing = SampleFeed(Failing(["x"]), sequence_length=0)
        slow = SampleFeed(Slow(["y"]), sequence_length=0)
        failing.start()
        slow.start()
        try:
            return (await failing.take(5, set(), 5), await slow.take(1, set(), 0.05),
                    await slow.take(1, set(), 5))
        finally:
            failing.close()
            slow.close()

    failed, not_yet, later = _run(main())
    assert failed.samples == [("sample_0", "one")] and failed.ended and "disk on fire" in failed.error
    assert (not_yet.samples, not_yet.ended, not_yet.error) == ([], False, None)
    assert later.samples == [("sample_0", "y")]


def test_after_a_rewind_the_head_is_served_from_memory_while_the_source_restarts():
    class SlowToRestart(ListSource):
        def load_state_dict(self, state):
            import time

            time.sleep(0.5)  # like a worker subprocess starting again
            super().load_state_dict(state)

    async def main():
        feed = SampleFeed(SlowToRestart([f"doc{i}" for i in range(9)], epochs=None), sequence_length=0,
                          replay_samples=5)
        feed.start()
        try:
            first = await feed.take(12, set(), 5)
            feed.rewind()
            quick = await feed.take(12, set(), 0.2)  # the head only: the source is still restarting
            rest = await feed.take(7, set(), 5)
            return first, quick, rest, feed.status()
        finally:
            feed.close()

    first, quick, rest, status = _run(main())
    assert quick.samples == first.samples[:5] and not quick.ended
    assert rest.samples == first.samples[5:]  # the reader skipped what the head served
    assert status["replay_head"] == 5 and status["resets"] == 1


def test_feed_needs_a_rewindable_source():
    with pytest.raises(ConfigError, match="no stream"):
        SampleFeed(iter(["a"]))  # type: ignore[arg-type]
