"""The watermarks state machine and its own check interval."""

from __future__ import annotations

import pytest
from schemes_support import Metrics

from damon_agent.schemes import model, watermarks

# Reclaim-style: start below 40% free, go on up to 50%, stop below 5%.
WM = model.Watermarks(metric="free_mem_rate", interval_us=1_000_000, high=500, mid=400, low=50)


@pytest.mark.parametrize(
    ("value", "was_on", "is_on"),
    [
        (600, True, False),  # above high: off
        (600, False, False),
        (450, True, True),  # between mid and high: stays as it was
        (450, False, False),
        (500, False, False),  # high itself is in the band
        (400, False, False),  # mid itself is in the band
        (399, False, True),  # below mid, above low: on
        (50, False, True),  # low itself: still on
        (49, True, False),  # below low: off
    ],
)
def test_transitions(value: int, was_on: bool, is_on: bool) -> None:
    assert watermarks.next_activation(WM, value, was_on) is is_on


def test_a_sequence_of_readings_with_the_check_interval() -> None:
    metrics = Metrics()
    state = watermarks.WatermarkState()
    seen = []
    for now_us, free in [
        (0, 700),  # off (above high)
        (500_000, 300),  # not checked yet: still off
        (1_000_000, 450),  # checked: in the band and off: stays off
        (2_000_000, 300),  # on
        (3_000_000, 450),  # in the band and on: stays on
        (4_000_000, 10),  # below low: off
        (5_000_000, 450),  # off in the band: stays off
    ]:
        metrics.set("free_mem_rate", free)
        seen.append(state.update(WM, metrics, now_us))
    assert seen == [False, False, False, True, True, False, False]
    assert metrics.reads == ["free_mem_rate"] * 6


def test_no_watermarks_or_metric_none_is_always_on() -> None:
    metrics = Metrics()
    state = watermarks.WatermarkState(activated=False)
    assert state.update(None, metrics, 0) is True
    none = model.Watermarks(metric="none", interval_us=1, high=0, mid=0, low=0)
    assert watermarks.WatermarkState(activated=False).update(none, metrics, 0) is True
    assert metrics.reads == []


def test_unreadable_metric_keeps_the_state() -> None:
    metrics = Metrics()
    state = watermarks.WatermarkState()
    assert state.update(WM, metrics, 0) is True  # starts on, as the kernel creates it
    metrics.set("free_mem_rate", 900)
    assert state.update(WM, metrics, 1_000_000) is False
    metrics.values.clear()
    assert state.update(WM, metrics, 2_000_000) is False
