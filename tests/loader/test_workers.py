"""The DataLoader-worker producer's bookkeeping: one fixed batch order, whatever torch delivers."""

from __future__ import annotations

import pytest

from hfstream.errors import HfStreamError, StateError
from hfstream.loader.workers import StreamingTextDataset, WorkerTracker


def item(worker, index, anchor=None, size=1):
    """A group of ``size`` batches from ``worker``, the first numbered ``index``."""
    return {"worker": worker, "index": index, "anchor": anchor, "docs": index, "rows": [None] * size,
            "positions": None}


def handed_out(tracker, arrivals):
    order = []
    while (got := tracker.next_batch(arrivals)) is not None:
        group, k = got
        order.append((group["worker"], group["index"] + k))
    return order


def end(worker):
    return {"worker": worker, "end": True}


def test_batches_are_handed_out_round_robin_whatever_order_they_arrive_in():
    tracker = WorkerTracker(3)
    arrivals = iter([item(1, 0), item(2, 0), item(0, 0, {"a": 0}), item(0, 1), end(1), item(2, 1), end(0),
                     item(2, 2), end(2)])
    order = handed_out(tracker, arrivals)
    assert order == [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (2, 2)]   # finished workers are skipped
    assert tracker.total == 6 and tracker.ended == {0, 1, 2}


def test_groups_are_handed_out_one_batch_at_a_time_in_the_same_order():
    tracker = WorkerTracker(2)
    arrivals = iter([item(0, 0, {"a": 0}, size=1), item(1, 0, size=1), item(0, 1, size=2), item(1, 1, size=4),
                     end(0), item(1, 5), end(1)])
    assert handed_out(tracker, arrivals) == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2), (1, 3), (1, 4), (1, 5)]
    assert tracker.next_index == {0: 3, 1: 6} and tracker.anchors[0] == (0, {"a": 0})


def test_state_round_trip_and_the_resume_points_it_gives_the_workers():
    tracker = WorkerTracker(2)
    arrivals = iter([item(0, 0, {"pipe": 0}), item(1, 0, {"pipe": 1}), item(0, 1), item(1, 1)])
    for _ in range(3):
        tracker.next_batch(arrivals)
    state = tracker.state_dict()
    assert state["cursor"] == 1 and state["workers"][0] == {"anchor_index": 0, "anchor": {"pipe": 0}, "next_index": 2}
    dataset = StreamingTextDataset("unused", None, 2, 8)
    restored = WorkerTracker(2)
    restored.load_state_dict(state, dataset)
    assert dataset.resume[1]["next_index"] == 1 and dataset.rotation == 1 and restored.total == 3
    with pytest.raises(StateError, match="num_workers=2.*num_workers=3"):
        WorkerTracker(3).load_state_dict(state, dataset)
    with pytest.raises(StateError, match="missing"):
        WorkerTracker(2).load_state_dict({"num_workers": 2}, dataset)


def test_workers_that_stop_early_are_a_clear_error():
    tracker = WorkerTracker(2)
    with pytest.raises(HfStreamError, match="stopped before worker 1 sent its last batch"):
        while tracker.next_batch(iter([item(0, 0), item(0, 1)])) is not None:
            pass
