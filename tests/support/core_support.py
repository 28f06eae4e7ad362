"""Helpers of the monitoring core's tests (tests/core): a region builder and a scripted
operations set.

``ScriptedOps`` is a fake for pure-logic tests only (it answers access checks from a
fixed set of hot byte ranges and lets a test change the layout); the monitor is also
tested against the real ``sim`` operations in test_monitor.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from damon_agent.core import regions


def make_regions(
    bounds: Sequence[tuple[int, int]],
    nr_accesses: Sequence[int] | None = None,
    age: Sequence[int] | None = None,
    last_nr_accesses: Sequence[int] | None = None,
) -> regions.TargetRegions:
    """Build TargetRegions from [(start, end)] and optional per-region counters."""
    n = len(bounds)
    target = regions.TargetRegions(
        0,
        start=np.array([s for s, _ in bounds], dtype=np.int64),
        end=np.array([e for _, e in bounds], dtype=np.int64),
        nr_accesses=np.array(nr_accesses or [0] * n, dtype=np.int64),
        age=np.array(age or [0] * n, dtype=np.int64),
        last_nr_accesses=np.array(last_nr_accesses or [0] * n, dtype=np.int64),
    )
    target.nr_accesses_bp = target.nr_accesses * 10_000
    return target


class ScriptedOps:
    """Access checks answered from fixed hot ranges; the layout can be changed."""

    def __init__(self, layout: dict[int, list[tuple[int, int]]], hot: list[tuple[int, int]]):
        self.layout = layout
        self.hot = hot
        self.prepared: list[int] = []
        self.checked = 0

    def target_ranges(self, target_id: int) -> list[tuple[int, int]]:
        return list(self.layout[target_id])

    def prepare_access_checks(self, target_id: int, addrs: regions.Int64Array) -> None:
        self.prepared.append(int(addrs.size))

    def check_accesses(self, target_id: int, addrs: regions.Int64Array) -> NDArray[np.bool_]:
        self.checked += int(addrs.size)
        result = np.zeros(addrs.size, dtype=bool)
        for start, end in self.hot:
            result |= (addrs >= start) & (addrs < end)
        return result
