"""The working-set-size report: how much memory was in use, over the whole recording.

The WSS of one snapshot is the total size of its regions with ``nr_accesses > 0``, summed
over all targets: memory seen accessed during that aggregation interval. The report gives
its distribution over the recording's snapshots (percentiles 0, 25, 50, 75, 100 as in
``percentiles``, and the average).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from damon_agent.api import units as api_units
from damon_agent.core import snapshots
from damon_agent.core.regions import Int64Array
from damon_agent.reports import errors, percentiles, units


def working_set_size(snap: snapshots.Snapshot) -> int:
    """Bytes of the snapshot's regions seen accessed, over all targets."""
    return sum(int(t.sizes[t.nr_accesses > 0].sum(dtype=np.int64)) for t in snap.targets)


def wss_series(snaps: Sequence[snapshots.Snapshot]) -> Int64Array:
    """WSS of each snapshot, in order."""
    return np.fromiter((working_set_size(s) for s in snaps), dtype=np.int64, count=len(snaps))


def render(snaps: Sequence[snapshots.Snapshot], *, start_us: int = 0) -> str:
    """Percentiles and average of the WSS over ``snaps``."""
    if not snaps:
        raise errors.SelectionError("the recording holds no snapshot: no working set size")
    series = wss_series(snaps)
    lines = [
        f"working set size over {len(snaps)} snapshot{'' if len(snaps) == 1 else 's'}"
        f" ({units.format_seconds(snaps[0].time_us - start_us)}"
        f" .. {units.format_seconds(snaps[-1].time_us - start_us)})",
        f"{'percentile':>10}  {'wss':>12}",
    ]
    for point, value in percentiles.percentiles(series).items():
        lines.append(f"{point:>10}  {api_units.format_bytes(value):>12}")
    lines.append(f"{'average':>10}  {api_units.format_bytes(percentiles.average(series)):>12}")
    return "\n".join(lines)
