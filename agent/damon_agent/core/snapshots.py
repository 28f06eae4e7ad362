"""Snapshots: what the monitor reports at every aggregation interval.

A snapshot's size is bounded by the number of regions, never by memory size or by how
long monitoring ran. ``nr_accesses`` counts sampling intervals (of ``sample_us``) in which
the region was seen accessed during the aggregation interval; ``age`` counts aggregation
intervals (of ``aggr_us``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from damon_agent.core.regions import Int64Array


@dataclass(frozen=True)
class TargetSnapshot:
    target_id: int
    start: Int64Array
    end: Int64Array
    nr_accesses: Int64Array
    age: Int64Array

    @property
    def sizes(self) -> Int64Array:
        return self.end - self.start

    def __len__(self) -> int:
        return int(self.start.size)


@dataclass(frozen=True)
class Snapshot:
    time_us: int
    sample_us: int
    aggr_us: int
    targets: tuple[TargetSnapshot, ...]

    @property
    def max_nr_accesses(self) -> int:
        return max(1, self.aggr_us // max(1, self.sample_us))

    def access_rate(self, target: TargetSnapshot) -> NDArray[np.float64]:
        """Access rate per region as a share of the maximum (0.0 .. 1.0)."""
        return np.minimum(1.0, target.nr_accesses / self.max_nr_accesses)
