"""DAMON_STAT's figures from a snapshot, checked against hand-computed values."""

from __future__ import annotations

import numpy as np

from damon_agent.core import snapshots
from damon_agent.reports import node_stat

MIB = 1 << 20


def _snap(
    regions: list[tuple[int, int, int]], *, aggr_us: int = 100_000, sample_us: int = 5_000
) -> snapshots.Snapshot:
    """Contiguous regions of (size, nr_accesses, age) from address 0."""
    starts = np.cumsum([0] + [r[0] for r in regions[:-1]]).astype(np.int64)
    sizes = np.array([r[0] for r in regions], dtype=np.int64)
    target = snapshots.TargetSnapshot(
        target_id=0,
        start=starts,
        end=starts + sizes,
        nr_accesses=np.array([r[1] for r in regions], dtype=np.int64),
        age=np.array([r[2] for r in regions], dtype=np.int64),
    )
    return snapshots.Snapshot(time_us=0, sample_us=sample_us, aggr_us=aggr_us, targets=(target,))


def test_idle_time_is_age_when_idle_and_minus_age_when_accessed() -> None:
    snap = _snap([(MIB, 3, 20), (MIB, 0, 50)])
    idle, sizes = node_stat.idle_ms(snap)
    assert idle.tolist() == [-2000, 5000]  # 20 and 50 aggregations of 100 ms
    assert sizes.tolist() == [MIB, MIB]


def test_percentiles_follow_the_bytes() -> None:
    # A quarter hot for 1 s, a quarter idle 2 s, half idle 10 s.
    snap = _snap([(2 * MIB, 0, 100), (MIB, 4, 10), (MIB, 0, 20)])
    values = node_stat.idle_ms_percentiles(snap)
    assert len(values) == 101
    assert values[0] == -1000 and values[25] == -1000
    assert values[26] == 2000 and values[50] == 2000
    assert values[51] == 10000 and values[100] == 10000
    assert list(values) == sorted(values)


def test_one_region_gives_its_idle_time_everywhere() -> None:
    assert set(node_stat.idle_ms_percentiles(_snap([(MIB, 0, 7)]))) == {700}


def test_no_regions_give_zeros() -> None:
    empty = snapshots.Snapshot(time_us=0, sample_us=5_000, aggr_us=100_000, targets=())
    assert node_stat.idle_ms_percentiles(empty) == tuple([0] * 101)
    assert node_stat.estimated_bandwidth(empty) == 0


def test_bandwidth_is_accessed_bytes_per_aggregation_second() -> None:
    snap = _snap([(MIB, 2, 1), (3 * MIB, 0, 1), (MIB, 10, 1)], aggr_us=200_000)
    # (1 MiB * 2 + 1 MiB * 10) per 0.2 s
    assert node_stat.estimated_bandwidth(snap) == 12 * MIB * 5


def test_bandwidth_does_not_overflow_on_big_machines() -> None:
    tib = 1 << 40
    snap = _snap([(tib, 100_000, 1)] * 64, aggr_us=1_000_000)
    assert node_stat.estimated_bandwidth(snap) == 64 * tib * 100_000


def test_node_stat_carries_the_interval() -> None:
    stat = node_stat.node_stat(_snap([(MIB, 1, 3)], aggr_us=400_000))
    assert stat.aggr_us == 400_000
    assert stat.idle_ms_percentiles[50] == -1200
    assert stat.estimated_bandwidth == MIB * 1_000_000 // 400_000
