"""The footprints report: distributions of a target's memory footprints over a recording.

Rows are the working set size (from the snapshots, as the wss report computes it) and every
value the ``footprint`` records carry (rss and vsz of the profiled process or cgroup, the
system's used memory, and any other name, in that order); columns are the percentiles
0/25/50/75/100 (see ``percentiles``) and the average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from damon_agent.api import units as api_units
from damon_agent.core import snapshots
from damon_agent.reports import errors, percentiles, wss

PREFERRED_ORDER = ("wss", "rss", "vsz", "sys_used")


def series(
    snaps: Sequence[snapshots.Snapshot], footprints: Sequence[tuple[int, Mapping[str, int]]]
) -> dict[str, list[int]]:
    """Every footprint's values over time, wss first."""
    values: dict[str, list[int]] = {}
    if snaps:
        values["wss"] = wss.wss_series(snaps).tolist()
    for _, record in footprints:
        for name, value in record.items():
            values.setdefault(name, []).append(value)
    rank = {name: i for i, name in enumerate(PREFERRED_ORDER)}
    return dict(sorted(values.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def render(
    snaps: Sequence[snapshots.Snapshot], footprints: Sequence[tuple[int, Mapping[str, int]]]
) -> str:
    """A table of percentiles per footprint; a note when only the wss is known."""
    values = series(snaps, footprints)
    if not values:
        raise errors.SelectionError("the recording holds neither snapshots nor footprints")
    points = percentiles.DEFAULT_PERCENTILES
    rows = [("", *(f"{p} %" for p in points), "average")]
    for name, samples in values.items():
        dist = percentiles.percentiles(samples, points)
        rows.append(
            (
                name,
                *(api_units.format_bytes(dist[p]) for p in points),
                api_units.format_bytes(percentiles.average(samples)),
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(widths[c]) if c == 0 else cell.rjust(widths[c]) for c, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    if not footprints:
        lines.append(
            "(no footprint records: record with damon-agent run --backend kernel"
            " --pid PID or --cgroup PATH to add rss, vsz and sys_used)"
        )
    return "\n".join(lines)
