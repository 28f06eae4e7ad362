"""Access checks and ground truth of the sim operations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from damon_agent.core import clock
from damon_agent.ops import sim, workloads

MiB = 1 << 20
PAGE = workloads.PAGE_SIZE


def make_sim(
    ranges: list[dict[str, Any]], phases: list[dict[str, Any]], seed: int = 0
) -> tuple[sim.SimOperations, clock.SimClock]:
    workload = workloads.parse_workload(
        {"targets": [{"name": "t", "start": 0, "ranges": ranges, "phases": phases}]}
    )
    sim_clock = clock.SimClock()
    return sim.SimOperations(workload, clock=sim_clock, rng=np.random.default_rng(seed)), sim_clock


def check(
    ops: sim.SimOperations, sim_clock: clock.SimClock, addrs: list[int], wait_us: int
) -> list[bool]:
    array = np.array(addrs, dtype=np.int64)
    ops.prepare_access_checks(0, array)
    sim_clock.sleep_us(wait_us)
    return ops.check_accesses(0, array).tolist()


HOT_COLD = [{"name": "hot", "size": "4Mi"}, {"name": "cold", "size": "4Mi", "gap": "1Mi"}]


def test_layout_follows_sizes_and_gaps() -> None:
    ops, _ = make_sim(HOT_COLD, [{"duration": "1s"}])
    assert ops.target_ranges(0) == [(0, 4 * MiB), (5 * MiB, 9 * MiB)]
    assert [r.name for r in ops.ranges(0)] == ["hot", "cold"]


def test_hot_pages_are_seen_cold_and_unmapped_ones_not() -> None:
    ops, sim_clock = make_sim(HOT_COLD, [{"duration": "1s", "access": {"hot": "hot"}}])
    result = check(ops, sim_clock, [0, 4 * MiB - 1, 4 * MiB + 10, 6 * MiB, 100 * MiB], 5_000)
    assert result == [True, True, False, False, False]


def test_nothing_is_seen_when_no_time_passed_since_prepare() -> None:
    ops, sim_clock = make_sim(HOT_COLD, [{"duration": "1s", "access": {"hot": "hot"}}])
    assert check(ops, sim_clock, [0, PAGE], 0) == [False, False]


def test_random_probability_is_per_reference_interval() -> None:
    ops, sim_clock = make_sim(
        [{"name": "a", "size": "64Mi"}], [{"duration": "1h", "access": {"a": {"probability": 0.2}}}]
    )
    addrs = list(range(0, 64 * MiB, PAGE))
    one = np.mean(check(ops, sim_clock, addrs, 5_000))
    two = np.mean(check(ops, sim_clock, addrs, 10_000))
    assert one == pytest.approx(0.2, abs=0.01)
    assert two == pytest.approx(1 - 0.8**2, abs=0.01)


def test_sequential_cursor_touches_the_pages_it_passes() -> None:
    # probability 0.25 per 5 ms: one sweep of the 4 MiB range every 20 ms.
    ops, sim_clock = make_sim(
        [{"name": "a", "size": "4Mi"}],
        [{"duration": "1h", "access": {"a": {"probability": 0.25, "pattern": "sequential"}}}],
    )
    addrs = list(range(0, 4 * MiB, PAGE))
    first = check(ops, sim_clock, addrs, 5_000)  # 0..5 ms: the first quarter
    assert first == [i < 256 for i in range(1024)]
    second = check(ops, sim_clock, addrs, 5_000)  # 5..10 ms: the second quarter
    assert second == [256 <= i < 512 for i in range(1024)]
    assert all(check(ops, sim_clock, addrs, 20_000))  # a full sweep touches everything


def test_phases_change_and_repeat() -> None:
    phases = [
        {"name": "one", "duration": "1s", "access": {"hot": "hot"}},
        {"name": "two", "duration": "2s", "access": {"cold": "hot"}},
    ]
    ops, sim_clock = make_sim(HOT_COLD, phases)
    assert ops.phase_at(0, 500_000).name == "one"
    assert ops.phase_at(0, 1_500_000).name == "two"
    assert ops.phase_at(0, 3_200_000).name == "one"  # the cycle restarts
    assert ops.phase_changes(0, 7_000_000) == [1_000_000, 3_000_000, 4_000_000, 6_000_000]
    sim_clock.sleep_us(1_000_000)
    assert check(ops, sim_clock, [0, 6 * MiB], 5_000) == [False, True]


def test_last_phase_stays_without_repeat() -> None:
    workload = workloads.parse_workload(
        {
            "targets": [
                {
                    "ranges": HOT_COLD,
                    "repeat_phases": False,
                    "phases": [
                        {"name": "one", "duration": "1s"},
                        {"name": "two", "duration": "1s"},
                    ],
                }
            ]
        }
    )
    ops = sim.SimOperations(workload, clock=clock.SimClock(), rng=np.random.default_rng(0))
    assert ops.phase_at(0, 100_000_000).name == "two"
    assert ops.phase_changes(0, 100_000_000) == [1_000_000]


def test_ground_truth_hot_ranges_working_set_and_last_access() -> None:
    phases = [
        {"duration": "1s", "access": {"hot": {"probability": 0.5}}},
        {"duration": "1s", "access": {"cold": {"probability": 0.5, "pattern": "sequential"}}},
    ]
    ops, sim_clock = make_sim(HOT_COLD, phases)
    assert ops.hot_ranges(0, 0, 100_000) == [(0, 4 * MiB)]
    # Second phase, 5 ms: probability 0.5 per 5 ms sweeps half of the cold range.
    assert ops.hot_ranges(0, 1_000_000, 1_005_000) == [(5 * MiB, 7 * MiB)]
    assert ops.cold_ranges(0, 500_000) == [(5 * MiB, 9 * MiB)]
    assert ops.working_set_bytes(0, 0, 5_000) == pytest.approx(0.5 * 4 * MiB)
    assert ops.working_set_bytes(0, 0, 100_000) == pytest.approx(4 * MiB * (1 - 0.5**20))
    sim_clock.sleep_us(1_002_500)
    last = ops.last_access_us(0, np.array([0, 5 * MiB, 5 * MiB + PAGE * 128, 20 * MiB]))
    assert last[0] == 1_000_000  # the hot range was last accessed when phase one ended
    assert last[1] == 1_000_000  # the cursor started at the cold range's first page
    # One sweep per 10 ms (probability 0.5 per 5 ms): page 128 of 1024 is passed 1.25 ms in.
    assert last[2] == 1_000_000 + 1_250
    assert last[3] == -1  # unmapped


def test_one_tebibyte_target_answers_quickly() -> None:
    ops, sim_clock = make_sim(
        [{"name": "hot", "size": "1Gi"}, {"name": "big", "size": "1Ti"}],
        [{"duration": "1h", "access": {"hot": "hot", "big": {"probability": 0.01}}}],
    )
    addrs = np.random.default_rng(0).integers(0, (1 << 40) + (1 << 30), size=1000)
    for _ in range(100):
        ops.prepare_access_checks(0, addrs)
        sim_clock.sleep_us(5_000)
        seen = ops.check_accesses(0, addrs)
    assert seen[addrs < (1 << 30)].all()
    assert ops.counters(0).mapped_bytes == (1 << 40) + (1 << 30)
    assert ops.counters(0).access_checks == 100_000
