"""Events: the correlator's rate limit and counts, its bound, the Event it writes, and the
recorder's loop (never blocking the caller, holding postings while the apiserver fails).
"""

from __future__ import annotations

import asyncio
import datetime

import pytest

from damon_agent.api import events

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
NODE = events.ObjectRef("damon.io/v1alpha1", "DamonNode", "n1", None, "uid-n1")
SCHEME = events.ObjectRef("damon.io/v1alpha1", "DamonScheme", "cold", "shop", "uid-s")


def failed(message: str = "the kernel said no", reason: str = "ApplyFailed") -> events.Occurrence:
    return events.Occurrence(NODE, "Warning", reason, message)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def test_the_first_occurrence_is_due_at_once_and_repeats_fold_into_one_posting_per_interval():
    c = events.Correlator(interval_s=60)
    c.observe(failed(), now_s=0, at=at(0))
    (first,) = c.due(0)
    assert (first.count, first.create, first.namespace) == (1, True, "default")
    c.posted(first, now_s=0)
    for second in range(1, 31):  # a burst: one failure a second
        c.observe(failed(f"attempt {second}"), now_s=second, at=at(second))
    assert c.due(30) == []  # within the interval: held
    assert c.next_due_in(30) == 30
    (folded,) = c.due(60)
    assert folded.count == 31 and not folded.create
    assert folded.name == first.name  # the same Event object, patched
    assert folded.occurrence.message == "attempt 30"  # the latest says what happens now
    assert (folded.first_at, folded.last_at) == (at(0), at(30))
    c.posted(folded, now_s=60)
    assert c.due(1000) == [] and c.next_due_in(1000) is None  # nothing new: nothing to post


def test_series_are_per_object_related_type_and_reason_not_per_message():
    c = events.Correlator(interval_s=60)
    c.observe(failed("a"), now_s=0, at=at(0))
    c.observe(failed("b"), now_s=0, at=at(0))  # same series
    c.observe(failed(reason="DamonHeld"), now_s=0, at=at(0))
    c.observe(
        events.Occurrence(NODE, "Warning", "ApplyFailed", "x", related=SCHEME), now_s=0, at=at(0)
    )
    c.observe(events.Occurrence(SCHEME, "Warning", "Rejected", "y"), now_s=0, at=at(0))
    due = c.due(0)
    assert [p.count for p in due] == [2, 1, 1, 1]
    assert len({p.name for p in due}) == 4
    assert due[-1].namespace == "shop"  # a namespaced object's Events live beside it


def test_a_posting_that_failed_stays_due_and_counts_what_came_meanwhile():
    c = events.Correlator(interval_s=60)
    c.observe(failed(), now_s=0, at=at(0))
    assert len(c.due(0)) == 1  # the apiserver did not take it: posted() is not called
    c.observe(failed(), now_s=5, at=at(5))
    (again,) = c.due(5)
    assert again.count == 2 and again.create  # still no Event object: create it


def test_memory_is_bounded_and_idle_series_start_afresh():
    c = events.Correlator(interval_s=60, max_series=3, idle_s=600)
    for i in range(10):
        occurrence = failed(reason=f"Reason{i}")
        c.observe(occurrence, now_s=i, at=at(i))
        for posting in c.due(i):
            c.posted(posting, now_s=i)
    assert len(c) == 3 and c.dropped == 0  # the pushed-out series had nothing left to post
    c.observe(failed(reason="Reason9"), now_s=10, at=at(10))  # pending, within interval
    for i in range(10, 14):
        c.observe(failed(reason=f"Other{i}"), now_s=i, at=at(i))  # never posted
    assert len(c) == 3 and c.dropped >= 1  # what could not be kept is counted, not kept
    old = events.Correlator(interval_s=60, idle_s=600)
    old.observe(failed(), now_s=0, at=at(0))
    (first,) = old.due(0)
    old.posted(first, now_s=0)
    old.observe(failed(), now_s=700, at=at(700))  # the Event expired long ago
    (fresh,) = old.due(700)
    assert fresh.count == 1 and fresh.create and fresh.name != first.name


def test_the_event_body_and_patch():
    c = events.Correlator(interval_s=0)
    long = "x" * 5000
    c.observe(
        events.Occurrence(NODE, "Warning", "BadPlan", long, related=SCHEME), now_s=0, at=at(0)
    )
    (posting,) = c.due(0)
    body = posting.body(component="damon-agent", instance="n1")
    assert body["metadata"] == {"name": posting.name, "namespace": "default"}
    assert posting.name.startswith("n1.") and len(posting.name) == len("n1.") + 16
    assert body["involvedObject"] == {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "DamonNode",
        "name": "n1",
        "uid": "uid-n1",
    }
    assert body["related"]["namespace"] == "shop"
    assert (body["type"], body["reason"], body["count"]) == ("Warning", "BadPlan", 1)
    assert len(body["message"]) == events.MAX_MESSAGE and body["message"].endswith("…")
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-01-01T12:00:00Z"
    assert body["source"] == {"component": "damon-agent", "host": "n1"}
    assert set(posting.patch()) == {"count", "lastTimestamp", "message"}


class FlakyApi:
    """Takes postings while ``up``; raises ConnectionError or hangs otherwise."""

    def __init__(self) -> None:
        self.up = True
        self.hang = False
        self.taken: list[events.Posting] = []

    async def post(self, posting: events.Posting) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if not self.up:
            raise ConnectionError("apiserver away")
        self.taken.append(posting)


async def test_the_recorder_never_blocks_and_catches_up_when_the_apiserver_is_back():
    api = FlakyApi()
    now = [0.0]
    recorder = events.Recorder(
        events.Correlator(interval_s=0.2),
        api.post,
        failures=(ConnectionError,),
        timeout_s=0.2,
        retry_first_s=0.05,
        retry_max_s=0.1,
        monotonic=lambda: now[0],
        clock=lambda: T0,
    )
    task = asyncio.create_task(recorder.run())
    try:
        recorder.record(failed())
        await _until(lambda: len(api.taken) == 1)
        api.hang = True  # the apiserver hangs: record() still returns at once
        for _ in range(100):
            recorder.record(failed())
        now[0] = 1.0
        recorder.record(failed())
        await _until(lambda: recorder.post_errors >= 1)  # the hung write timed out
        api.hang, api.up = False, False
        await _until(lambda: recorder.post_errors >= 3)  # refused, retried with backoff
        api.up = True
        await _until(lambda: len(api.taken) == 2)
        assert api.taken[-1].count == 102  # everything meanwhile, in one posting
        assert recorder.posted == 2 and recorder.recorded == 102
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("timed out")
        await asyncio.sleep(0.01)
