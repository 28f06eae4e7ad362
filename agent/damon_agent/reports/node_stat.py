"""The figures DAMON_STAT gives, computed from a snapshot of the node's physical memory.

When the agent takes DAMON_STAT's place (``ops.kernel.takeover``) it keeps the node's
figures coming from its own kdamond, defined as the kernel's DAMON_STAT documentation
defines them (Documentation/admin-guide/mm/damon/stat.rst):

- idle time of a byte: for a region seen accessed in the last aggregation
  (``nr_accesses > 0``), minus how long its access level has lasted (its age); for a
  region not accessed, how long it has stayed so (its age). Ages count aggregation
  intervals, so milliseconds are ``age * aggr_us / 1000``. Negative idle times are the
  hot memory: the further below zero, the longer it has stayed hot.
- ``memory_idle_ms_percentiles``: 101 values, the idle time at 0, 1, ..., 100 % of the
  bytes ordered by idle time (0 is the hottest byte, 100 the coldest): the value of the
  region holding the byte at that share of the total, so every value is one a region had.
- ``estimated_memory_bandwidth``: bytes per second, each region's size times its
  ``nr_accesses`` (sampled accesses in the aggregation interval), summed, over the
  aggregation interval. Sampling makes it an estimate of access intensity, not a
  measured bandwidth.

Pure: numpy over ``core.snapshots``; O(regions log regions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from damon_agent.core import snapshots
from damon_agent.core.regions import Int64Array

PERCENTILES: Final = tuple(range(101))


@dataclass(frozen=True)
class NodeStat:
    """DAMON_STAT's figures for one snapshot."""

    idle_ms_percentiles: tuple[int, ...]  # 101 values, percentiles 0..100
    estimated_bandwidth: int  # bytes per second
    aggr_us: int  # the aggregation interval the snapshot was taken at


def idle_ms(snap: snapshots.Snapshot) -> tuple[Int64Array, Int64Array]:
    """(idle time in ms, size in bytes) of every region of every target."""
    idle = []
    sizes = []
    for target in snap.targets:
        lasted_ms = target.age * snap.aggr_us // 1000
        idle.append(np.where(target.nr_accesses > 0, -lasted_ms, lasted_ms))
        sizes.append(target.sizes)
    if not idle:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(idle).astype(np.int64), np.concatenate(sizes).astype(np.int64)


def idle_ms_percentiles(snap: snapshots.Snapshot) -> tuple[int, ...]:
    """The 101 idle-time percentiles in ms; all zero for a snapshot without regions."""
    idle, sizes = idle_ms(snap)
    total = int(sizes.sum())
    if total <= 0:
        return tuple(0 for _ in PERCENTILES)
    order = np.argsort(idle, kind="stable")
    ordered_idle = idle[order]
    covered = np.cumsum(sizes[order])
    # The region holding the byte at p % of the total: the first whose cumulative size
    # reaches it (p = 0 is the first region, p = 100 the last).
    wanted = np.array([total * p // 100 for p in PERCENTILES], dtype=np.int64)
    at = np.minimum(np.searchsorted(covered, wanted, side="left"), len(covered) - 1)
    return tuple(int(v) for v in ordered_idle[at])


def estimated_bandwidth(snap: snapshots.Snapshot) -> int:
    """Estimated memory bandwidth in bytes per second (see the module docstring)."""
    if snap.aggr_us <= 0:
        return 0
    # Python integers: terabytes times thousands of samples over many regions would
    # overflow int64.
    accessed = sum(
        int(size) * int(count)
        for t in snap.targets
        for size, count in zip(t.sizes.tolist(), t.nr_accesses.tolist(), strict=True)
    )
    return accessed * 1_000_000 // snap.aggr_us


def node_stat(snap: snapshots.Snapshot) -> NodeStat:
    return NodeStat(
        idle_ms_percentiles=idle_ms_percentiles(snap),
        estimated_bandwidth=estimated_bandwidth(snap),
        aggr_us=snap.aggr_us,
    )
