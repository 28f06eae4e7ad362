"""The monitor loop: order of operations, invariants, reproducibility, watermarks."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from core_support import ScriptedOps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from damon_agent.core import attrs, clock, errors, monitor, regions, snapshots, vaddr_layout
from damon_agent.ops import sim, workloads

PAGE = regions.MIN_REGION_SIZE
MiB = 1 << 20


def _workload(ranges: list[tuple[str, int, int]], access: dict[str, Any]) -> workloads.Workload:
    """(name, size, gap) ranges, one phase with the given access patterns."""
    return workloads.parse_workload(
        {
            "targets": [
                {
                    "name": "t",
                    "ranges": [{"name": n, "size": s, "gap": g} for n, s, g in ranges],
                    "phases": [{"duration": "1h", "access": access}],
                }
            ]
        }
    )


def _monitor(
    workload: workloads.Workload,
    monitoring: attrs.MonitoringAttrs | None = None,
    seed: int = 1,
    schemes: Any = None,
) -> tuple[monitor.Monitor, sim.SimOperations, clock.SimClock]:
    sim_clock = clock.SimClock()
    ops = sim.SimOperations(workload, clock=sim_clock, rng=np.random.default_rng(seed))
    mon = monitor.Monitor(
        monitoring or attrs.MonitoringAttrs(),
        ops,
        ops.target_ids,
        clock=sim_clock,
        rng=np.random.default_rng(seed + 1),
        schemes=schemes,
    )
    return mon, ops, sim_clock


def _hot_cold() -> workloads.Workload:
    return _workload([("hot", 64 * MiB, 0), ("cold", 192 * MiB, 0)], {"hot": "hot"})


def _tiles(target: regions.TargetRegions, layout: list[tuple[int, int]]) -> bool:
    """Regions are sorted, non-empty, disjoint and cover exactly the layout."""
    covered = vaddr_layout.normalize_ranges(
        [(int(s), int(e)) for s, e in zip(target.start, target.end, strict=True)]
    )
    return bool(np.all(target.end > target.start)) and covered == layout


def test_snapshots_come_once_per_aggregation_interval() -> None:
    mon, _, sim_clock = _monitor(_hot_cold())
    taken = [mon.step() for _ in range(60)]
    closing = [i for i, snap in enumerate(taken) if snap is not None]
    assert closing == [19, 39, 59]  # every 20th sampling interval (100 ms / 5 ms)
    snap = taken[19]
    assert snap is not None
    assert snap.time_us == 100_000
    assert sim_clock.now_us() == 300_000
    assert snap.aggr_us == 100_000 and snap.sample_us == 5_000


def test_hot_and_cold_ranges_are_told_apart() -> None:
    mon, _, _ = _monitor(_hot_cold())
    snap = mon.run(3_000_000)
    assert snap is not None
    target = snap.targets[0]
    hot = target.end <= 64 * MiB + workloads.DEFAULT_START
    assert np.all(target.nr_accesses[hot] == 20)  # touched at every sample
    assert np.all(target.nr_accesses[target.start >= 64 * MiB + workloads.DEFAULT_START] == 0)


def test_age_grows_in_a_steady_pattern() -> None:
    mon, _, _ = _monitor(_hot_cold())
    snap = mon.run(5_000_000)
    assert snap is not None
    # Some regions have stayed unchanged for many aggregations.
    assert int(snap.targets[0].age.max()) >= 10


def test_a_seed_reproduces_a_run_exactly() -> None:
    def record(seed: int) -> list[snapshots.Snapshot]:
        mon, _, _ = _monitor(_hot_cold(), seed=seed)
        out: list[snapshots.Snapshot] = []
        mon.run(2_000_000, out.append)
        return out

    first, second, other = record(7), record(7), record(8)
    assert len(first) == len(second) == 20
    for a, b in zip(first, second, strict=True):
        assert a.time_us == b.time_us
        for ta, tb in zip(a.targets, b.targets, strict=True):
            assert np.array_equal(ta.start, tb.start)
            assert np.array_equal(ta.nr_accesses, tb.nr_accesses)
            assert np.array_equal(ta.age, tb.age)
    assert any(
        not np.array_equal(a.targets[0].start, c.targets[0].start)
        for a, c in zip(first, other, strict=True)
    )


def test_one_check_per_region_per_sample_whatever_the_memory_size() -> None:
    small, _, _ = _monitor(_workload([("a", 1 << 30, 0)], {"a": {"probability": 0.3}}))
    large, _, _ = _monitor(_workload([("a", 1 << 40, 0)], {"a": {"probability": 0.3}}))
    for mon in (small, large):
        before = mon.nr_access_checks
        regions_before = mon.nr_regions
        mon.step()
        assert mon.nr_access_checks - before == regions_before
        mon.run(2_000_000)
        assert mon.nr_access_checks <= mon.passed_sample_intervals * mon.attrs.max_nr_regions


def test_two_biggest_gaps_are_not_monitored() -> None:
    workload = _workload(
        [
            ("a", 4 * MiB, 0),
            ("b", 4 * MiB, 1 << 30),
            ("c", 4 * MiB, 4 * MiB),
            ("d", 4 * MiB, 1 << 32),
        ],
        {},
    )
    mon, ops, _ = _monitor(workload)
    starts = [r.start for r in ops.ranges(0)]
    ends = [r.end for r in ops.ranges(0)]
    expected = [(starts[0], ends[0]), (starts[1], ends[2]), (starts[3], ends[3])]
    assert _tiles(mon.targets[0], expected)


class RecordingHook:
    """A schemes hook that records what the monitor shows it (pure-logic fake)."""

    def __init__(self, active: bool = True) -> None:
        self.active = active
        self.calls: list[tuple[int, int, int]] = []  # (time, nr regions, sum nr_accesses)

    def wants_monitoring(self, now_us: int) -> bool:
        return self.active

    def apply(self, mon: monitor.Monitor, now_us: int) -> None:
        target = mon.targets[0]
        self.calls.append((now_us, len(target), int(target.nr_accesses.sum())))


def test_schemes_see_merged_regions_before_the_reset() -> None:
    hook = RecordingHook()
    mon, _, _ = _monitor(_hot_cold(), schemes=hook)
    snaps: list[snapshots.Snapshot] = []
    for _ in range(40):
        snap = mon.step()
        if snap is not None:
            snaps.append(snap)
    assert len(hook.calls) == 40  # called every sampling interval
    at_aggregation = hook.calls[39]
    assert at_aggregation[0] == snaps[1].time_us
    assert at_aggregation[1] == len(snaps[1].targets[0])  # after the merge
    assert at_aggregation[2] == int(snaps[1].targets[0].nr_accesses.sum()) > 0  # before reset
    assert mon.targets[0].nr_accesses.sum() == 0  # reset after


def test_inactive_schemes_make_the_monitor_only_sleep() -> None:
    hook = RecordingHook(active=False)
    mon, ops, sim_clock = _monitor(_hot_cold(), schemes=hook)
    for _ in range(30):
        assert mon.step() is None
    assert sim_clock.now_us() == 30 * 5_000
    assert mon.passed_sample_intervals == 0
    assert ops.counters(0).access_checks == 0
    assert hook.calls == []
    hook.active = True
    mon.run(100_000)
    assert ops.counters(0).access_checks > 0
    assert hook.calls


def test_ops_update_refits_regions_to_a_changed_layout() -> None:
    ops = ScriptedOps({0: [(0, 1000 * PAGE)]}, hot=[])
    sim_clock = clock.SimClock()
    mon = monitor.Monitor(
        attrs.MonitoringAttrs(update_us=1_000_000),
        ops,
        [0],
        clock=sim_clock,
        rng=np.random.default_rng(0),
    )
    mon.run(500_000)
    ops.layout[0] = [(500 * PAGE, 2000 * PAGE)]
    mon.run(400_000)
    assert mon.targets[0].start[0] == 0  # not yet: the update interval has not passed
    mon.run(200_000)
    assert _tiles(mon.targets[0], [(500 * PAGE, 2000 * PAGE)])
    assert mon.size_limit == 1500 * PAGE // 10


def test_intervals_tuning_lengthens_sampling_when_little_is_accessed() -> None:
    goal = attrs.IntervalsGoal(access_bp=400, aggrs=3, min_sample_us=5_000, max_sample_us=80_000)
    workload = _workload([("a", 256 * MiB, 0)], {"a": {"probability": 0.001}})
    mon, _, _ = _monitor(workload, attrs.MonitoringAttrs(intervals_goal=goal))
    mon.run(10_000_000)
    assert mon.attrs.sample_us > 5_000
    assert mon.attrs.aggr_us == mon.attrs.sample_us * 20


def test_intervals_tuning_shortens_sampling_when_everything_is_accessed() -> None:
    goal = attrs.IntervalsGoal(access_bp=400, aggrs=3, min_sample_us=1_000, max_sample_us=80_000)
    workload = _workload([("a", 256 * MiB, 0)], {"a": "hot"})
    start = attrs.MonitoringAttrs(sample_us=20_000, aggr_us=400_000, intervals_goal=goal)
    mon, _, _ = _monitor(workload, start)
    mon.run(10_000_000)
    assert mon.attrs.sample_us < 20_000
    assert mon.attrs.aggr_us == mon.attrs.sample_us * 20


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_nr_regions": 2}, "min_nr_regions"),
        ({"max_nr_regions": 5}, "max_nr_regions"),
        ({"aggr_us": 1_000}, "aggr_us"),
        ({"sample_us": 0}, "sample_us"),
        ({"intervals_goal": attrs.IntervalsGoal(access_bp=0)}, "intervals_goal.access_bp"),
    ],
)
def test_bad_attributes_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    bad = dataclasses.replace(attrs.MonitoringAttrs(), **change)
    with pytest.raises(errors.InvalidAttrsError, match=field):
        _monitor(_hot_cold(), bad)


layouts = st.lists(
    st.tuples(st.integers(1, 64), st.integers(0, 512)), min_size=1, max_size=8
)  # (size in MiB, gap in MiB)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=layouts,
    min_nr=st.integers(3, 30),
    extra=st.integers(0, 200),
    seed=st.integers(0, 2**16),
    probability=st.sampled_from([0.0, 0.01, 0.3, 1.0]),
)
def test_regions_always_tile_the_monitored_ranges_within_the_count_bounds(
    layout: list[tuple[int, int]], min_nr: int, extra: int, seed: int, probability: float
) -> None:
    max_nr = min_nr * 3 + extra
    ranges = [(f"r{i}", size * MiB, gap * MiB) for i, (size, gap) in enumerate(layout)]
    access = {"r0": {"probability": probability}, f"r{len(layout) - 1}": "hot"}
    monitoring = attrs.MonitoringAttrs(min_nr_regions=min_nr, max_nr_regions=max_nr)
    mon, ops, _ = _monitor(_workload(ranges, access), monitoring, seed=seed)
    expected = vaddr_layout.leave_out_two_biggest_gaps(ops.target_ranges(0))
    for _ in range(30):  # 1.5 aggregation intervals per chunk, 45 in all
        mon.run(150_000)
        target = mon.targets[0]
        assert _tiles(target, expected)
        assert min_nr <= len(target) <= max_nr


def test_lowering_max_nr_regions_online_is_enforced_at_the_next_aggregation() -> None:
    # A noisy hot range (each sample a coin flip) keeps many regions apart.
    noisy = _workload([("hot", 64 * MiB, 0), ("cold", 192 * MiB, 0)], {"hot": {"probability": 0.5}})
    mon, _, _ = _monitor(noisy)
    mon.run(3_000_000)
    assert mon.nr_regions > 60
    mon.set_attrs(dataclasses.replace(mon.attrs, max_nr_regions=60))
    mon.run(100_000)
    assert mon.nr_regions <= 60


@pytest.mark.parametrize(
    ("total", "max_region", "expected"),
    [
        (4 << 30, 32 * MiB, 128),  # exactly 128 regions of 32 MiB
        ((4 << 30) + PAGE, 32 * MiB, 256),  # one page more: the next power of two
        (64 * MiB, 32 * MiB, 10),  # never below the user's minimum
        (64 << 30, 32 * MiB, 500),  # never above half the maximum (1000)
        (0, 32 * MiB, 10),  # nothing known: the minimum
        (64 << 30, None, 10),  # no bound: the kernel's rule alone
    ],
)
def test_region_floor(total: int, max_region: int | None, expected: int) -> None:
    bounded = attrs.MonitoringAttrs(max_region_bytes=max_region)
    assert attrs.region_floor(bounded, total) == expected


def test_a_region_size_bound_keeps_small_hot_spots_in_a_large_idle_space() -> None:
    """Eight 2 MiB hot spots in 1 GiB: with the kernel's 10 regions a merge may make
    100 MiB regions, where a spot's accesses are sampled one time in fifty, and the spots
    are lost; with regions of at most 16 MiB (the floor is 64) they are found (hot-set F1
    against the sim's truth, pooled over the snapshots after the first second)."""
    layout: list[tuple[str, int, int]] = []
    for i in range(8):
        layout += [(f"idle{i}", 126 * MiB, 0), (f"spot{i}", 2 * MiB, 0)]
    workload = _workload(layout, {f"spot{i}": {"probability": 0.8} for i in range(8)})

    def run(monitoring: attrs.MonitoringAttrs) -> tuple[float, int]:
        """(hot-set F1, the largest region at the end)."""
        mon, ops, _ = _monitor(workload, monitoring)
        taken: list[snapshots.Snapshot] = []
        mon.run(5_000_000, taken.append)
        score = sim.HotSetScore()
        for snap in taken[10:]:
            score = score + sim.score_snapshot(ops, snap)
        last = taken[-1].targets[0]
        return score.f1, int((last.end - last.start).max())

    bounded = attrs.MonitoringAttrs(max_region_bytes=16 * MiB)
    mon, _, _ = _monitor(workload, bounded)
    assert (mon.size_limit, mon.nr_regions >= 64) == (16 * MiB, True)
    f1, largest = run(bounded)
    assert largest <= 16 * MiB
    assert f1 >= 0.9
    kernel_f1, kernel_largest = run(attrs.MonitoringAttrs())
    assert kernel_largest > 16 * MiB
    assert kernel_f1 < 0.7  # 0.32 to 0.53 over seeds 1-6
