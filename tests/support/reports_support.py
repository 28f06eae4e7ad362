"""Hand-made snapshots for the report tests (tests/reports): every region given as
(start, end, nr, age).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from damon_agent.core import snapshots

Region = tuple[int, int, int, int]


def make_target(target_id: int, regions: Sequence[Region]) -> snapshots.TargetSnapshot:
    columns = np.asarray(regions, dtype=np.int64).reshape(-1, 4)
    return snapshots.TargetSnapshot(
        target_id=target_id,
        start=columns[:, 0].copy(),
        end=columns[:, 1].copy(),
        nr_accesses=columns[:, 2].copy(),
        age=columns[:, 3].copy(),
    )


def make_snapshot(
    time_us: int,
    *targets: Sequence[Region],
    sample_us: int = 5_000,
    aggr_us: int = 100_000,
) -> snapshots.Snapshot:
    """``make_snapshot(time_us, regions_of_target_0, regions_of_target_1, ...)``."""
    return snapshots.Snapshot(
        time_us=time_us,
        sample_us=sample_us,
        aggr_us=aggr_us,
        targets=tuple(make_target(i, regions) for i, regions in enumerate(targets)),
    )
