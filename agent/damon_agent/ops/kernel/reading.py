"""Readers of a running kdamond: each writes one state command, then reads the files it filled.

- ``schemes_stats``: ``update_schemes_stats`` -> ``schemes/N/stats/*``;
- ``tried_regions``: ``update_schemes_tried_regions`` -> ``schemes/N/tried_regions/*``
  (the kernel waits for each scheme's next apply interval, so this blocks for about one
  aggregation interval);
- ``tried_bytes``: ``update_schemes_tried_bytes`` -> ``tried_regions/total_bytes`` only;
- ``effective_quotas``: ``update_schemes_effective_quotas`` -> ``quotas/effective_bytes``;
- ``quota_tunings``: the same command, then each scheme's ``effective_bytes`` (in the
  unit its ``quotas/bytes`` is written in) and its goals' ``target_value`` and
  ``current_value``. The kernel never writes ``current_value``: it holds what the agent
  fed a ``user_input`` goal, and nothing that means anything for the kernel's own
  metrics (Documentation/admin-guide/mm/damon/usage.rst says so). Kernels before 6.9
  have no ``effective_bytes`` (``effective_bytes`` None; ``with_effective`` False skips
  the command there);
- ``tuned_intervals``: ``update_tuned_intervals`` -> ``intervals/{sample_us,aggr_us}``;
- ``commit_quota_goals``: writes goals' ``current_value`` (``user_input`` feedback) and
  ``commit_schemes_quota_goals``.

Tried region directories are listed, not counted from 0: the kernel names them by a
running counter (on 6.18 they come as 0, 2, 4, ... and keep counting across updates), so
the numeric order of the names is the address order. Region addresses are multiplied by
the context's ``addr_unit``, so callers always get bytes.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from dataclasses import dataclass

from damon_agent.ops.kernel import applying, errors, model
from damon_agent.ops.kernel import sysfs as sysfs_io
from damon_agent.schemes import stats as scheme_stats

_STATS_FILES = (
    "nr_tried",
    "sz_tried",
    "nr_applied",
    "sz_applied",
    "sz_ops_filter_passed",
    "qt_exceeds",
)


def _scheme_dirs(fs: sysfs_io.SysfsIO, index: int) -> list[str]:
    base = f"kdamonds/{index}/contexts/0/schemes"
    count = sysfs_io.read_int(fs, f"{base}/nr_schemes")
    return [f"{base}/{s}" for s in range(count)]


def _ints(values: list[str], base: str, entries: Sequence[str], name: str) -> list[int]:
    """A column of ``read_table`` as integers; ``SysfsError`` naming the file that holds
    anything else (``base/<entry>/<name>``)."""
    try:
        return list(map(int, values))
    except ValueError:
        return [
            sysfs_io.parse_int(value, f"{base}/{entry}/{name}")
            for entry, value in zip(entries, values, strict=True)
        ]


def _addr_unit(fs: sysfs_io.SysfsIO, index: int) -> int:
    path = f"kdamonds/{index}/contexts/0/addr_unit"
    return sysfs_io.read_int(fs, path) if fs.exists(path) else 1


def schemes_stats(
    fs: sysfs_io.SysfsIO, index: int, sleep: applying.Sleep, *, nr_schemes: int | None = None
) -> list[scheme_stats.SchemeCounters]:
    applying.state_command(fs, index, "update_schemes_stats", sleep)
    base = f"kdamonds/{index}/contexts/0/schemes"
    count = sysfs_io.read_int(fs, f"{base}/nr_schemes") if nr_schemes is None else nr_schemes
    if not count:
        return []
    entries = [f"{s}/stats" for s in range(count)]
    files: tuple[str, ...] = _STATS_FILES
    try:
        columns = fs.read_table(base, entries, files)
    except errors.SysfsMissingError:
        # sz_ops_filter_passed came with 6.14: asked for only when the first try failed,
        # which spares a path walk a call on the kernels that have it.
        files = tuple(n for n in _STATS_FILES if fs.exists(f"{base}/0/stats/{n}"))
        columns = fs.read_table(base, entries, files)
    parsed = [
        _ints(column, base, entries, name) for name, column in zip(files, columns, strict=True)
    ]
    return [
        scheme_stats.SchemeCounters(
            **{name: column[s] for name, column in zip(files, parsed, strict=True)}
        )
        for s in range(count)
    ]


def tried_regions(
    fs: sysfs_io.SysfsIO,
    index: int,
    sleep: applying.Sleep,
    *,
    schemes: Sequence[int] | None = None,
    with_filter_passed: bool = False,
) -> list[model.TriedRegions]:
    """Tried regions of every scheme (or of ``schemes``), in address order.

    ``with_filter_passed`` also reads each region's ``sz_filter_passed`` (6.14), one more
    file per region; snapshots do not need it.
    """
    applying.state_command(fs, index, "update_schemes_tried_regions", sleep)
    unit = _addr_unit(fs, index)
    dirs = _scheme_dirs(fs, index)
    wanted = range(len(dirs)) if schemes is None else schemes
    result = []
    for s_index in wanted:
        base = f"{dirs[s_index]}/tried_regions"
        names = sorted((n for n in fs.listdir(base) if n.isdigit()), key=int)
        regions = []
        for name in names:
            region = f"{base}/{name}"
            passed = 0
            if with_filter_passed and fs.exists(f"{region}/sz_filter_passed"):
                passed = sysfs_io.read_int(fs, f"{region}/sz_filter_passed")
            regions.append(
                model.TriedRegion(
                    start=sysfs_io.read_int(fs, f"{region}/start") * unit,
                    end=sysfs_io.read_int(fs, f"{region}/end") * unit,
                    nr_accesses=sysfs_io.read_int(fs, f"{region}/nr_accesses"),
                    age=sysfs_io.read_int(fs, f"{region}/age"),
                    sz_filter_passed=passed,
                )
            )
        total_path = f"{base}/total_bytes"
        total = (
            sysfs_io.read_int(fs, total_path) * unit
            if fs.exists(total_path)
            else sum(r.end - r.start for r in regions)
        )
        result.append(model.TriedRegions(total_bytes=total, regions=tuple(regions)))
    return result


@dataclass(frozen=True)
class RegionColumns:
    """Tried regions of one scheme as parallel lists (bytes), for snapshots."""

    start: list[int]
    end: list[int]
    nr_accesses: list[int]
    age: list[int]


def tried_region_columns(
    fs: sysfs_io.SysfsIO,
    index: int,
    scheme: int,
    sleep: applying.Sleep,
    *,
    tiling: Sequence[tuple[int, int]] | None = None,
    unit: int | None = None,
) -> RegionColumns:
    """The regions of scheme ``scheme`` as columns, reading as few files as it can.

    With ``tiling`` (the target's initial ranges, in bytes, when the scheme's tried
    regions are all the target's regions: a paddr target and a match-all pattern) the
    ``end`` files are not read: regions tile each initial range, so a region ends where
    the next one starts, or at the end of its range. ``total_bytes`` checks that; on a
    mismatch the ends are read after all. That is a quarter fewer sysfs reads per
    snapshot, the agent's main cost.
    """
    applying.state_command(fs, index, "update_schemes_tried_regions", sleep)
    if unit is None:
        unit = _addr_unit(fs, index)
    base = f"kdamonds/{index}/contexts/0/schemes/{scheme}/tried_regions"
    if isinstance(fs, sysfs_io.NumberedTableReader):
        return _fast_region_columns(fs, fs, base, tiling, unit)
    names = sorted((n for n in fs.listdir(base) if n.isdigit()), key=int)
    starts, accesses, ages = fs.read_table(base, names, ("start", "nr_accesses", "age"))
    start = [v * unit for v in _ints(starts, base, names, "start")]
    nr_accesses = _ints(accesses, base, names, "nr_accesses")
    age = _ints(ages, base, names, "age")
    end: list[int] | None = None
    if tiling and start:
        end = _tiled_ends(start, tiling)
        total_path = f"{base}/total_bytes"
        if not fs.exists(total_path) or sysfs_io.read_int(fs, total_path) * unit != sum(
            e - s for s, e in zip(start, end, strict=True)
        ):
            end = None
    if end is None:
        (ends,) = fs.read_table(base, names, ("end",))
        end = [v * unit for v in _ints(ends, base, names, "end")]
    return RegionColumns(start=start, end=end, nr_accesses=nr_accesses, age=age)


def _fast_region_columns(
    fs: sysfs_io.SysfsIO,
    reader: sysfs_io.NumberedTableReader,
    base: str,
    tiling: Sequence[tuple[int, int]] | None,
    unit: int,
) -> RegionColumns:
    """``tried_region_columns`` through one directory descriptor (``sysfs`` docstring).

    The same files and the same result as the generic path; ``total_bytes`` comes in the
    same pass, as the tiling check needs it anyway.
    """
    table = reader.read_numbered_table(base, ("start", "nr_accesses", "age"), ("total_bytes",))
    starts, nr_accesses, age = table.columns
    start = starts if unit == 1 else [v * unit for v in starts]
    end: list[int] | None = None
    total = table.own["total_bytes"]
    if tiling and start and total is not None:
        end = _tiled_ends(start, tiling)
        if total * unit != sum(end) - sum(start):
            end = None
    if end is None:
        # The same directories as the other columns, even if they changed since.
        (ends,) = fs.read_table(base, table.names, ("end",))
        end = [v * unit for v in _ints(ends, base, table.names, "end")]
    return RegionColumns(start=start, end=end, nr_accesses=nr_accesses, age=age)


def _tiled_ends(start: list[int], tiling: Sequence[tuple[int, int]]) -> list[int]:
    """Each region ends where the next one starts, or at the end of its initial range.

    The limit of a region is the end of the last initial range starting at or below it
    (the first range's end below them all). Runs over every region of every snapshot, so
    for sorted starts (the kernel lists regions in address order) the limits are laid out
    range by range with C-level bisects instead of one Python step per region.
    """
    if not start:
        return []
    range_starts = [s for s, _ in tiling]
    range_ends = [e for _, e in tiling]
    limits: list[int]
    if all(map(operator.le, start, start[1:])):
        cuts = [0] + [bisect.bisect_left(start, s) for s in range_starts[1:]] + [len(start)]
        limits = []
        for k, limit in enumerate(range_ends):
            limits += [limit] * (cuts[k + 1] - cuts[k])
    else:
        right = bisect.bisect_right
        limits = [range_ends[max(0, right(range_starts, a) - 1)] for a in start]
    ends = list(map(min, start[1:], limits))
    ends.append(limits[-1])
    return ends


def tried_bytes(fs: sysfs_io.SysfsIO, index: int, sleep: applying.Sleep) -> list[int]:
    applying.state_command(fs, index, "update_schemes_tried_bytes", sleep)
    unit = _addr_unit(fs, index)
    return [
        sysfs_io.read_int(fs, f"{scheme}/tried_regions/total_bytes") * unit
        for scheme in _scheme_dirs(fs, index)
    ]


def clear_tried_regions(fs: sysfs_io.SysfsIO, index: int, sleep: applying.Sleep) -> None:
    applying.state_command(fs, index, "clear_schemes_tried_regions", sleep)


def effective_quotas(fs: sysfs_io.SysfsIO, index: int, sleep: applying.Sleep) -> list[int]:
    applying.state_command(fs, index, "update_schemes_effective_quotas", sleep)
    return [
        sysfs_io.read_int(fs, f"{scheme}/quotas/effective_bytes")
        for scheme in _scheme_dirs(fs, index)
    ]


@dataclass(frozen=True)
class QuotaTuning:
    """One kernel scheme's quota now: effective size quota and goals (target, current)."""

    effective_bytes: int | None
    goals: tuple[tuple[int, int], ...] = ()


def quota_tunings(
    fs: sysfs_io.SysfsIO,
    index: int,
    sleep: applying.Sleep,
    *,
    with_effective: bool = True,
    nr_schemes: int | None = None,
) -> list[QuotaTuning]:
    """The quota of the first ``nr_schemes`` schemes (default: all) of kdamond ``index``."""
    if with_effective:
        applying.state_command(fs, index, "update_schemes_effective_quotas", sleep)
    dirs = _scheme_dirs(fs, index)
    if nr_schemes is not None:
        dirs = dirs[:nr_schemes]
    result = []
    for scheme in dirs:
        effective = (
            sysfs_io.read_int(fs, f"{scheme}/quotas/effective_bytes") if with_effective else None
        )
        goals_dir = f"{scheme}/quotas/goals"
        nr_goals = (
            sysfs_io.read_int(fs, f"{goals_dir}/nr_goals")
            if fs.exists(f"{goals_dir}/nr_goals")
            else 0
        )
        goals = tuple(
            (
                sysfs_io.read_int(fs, f"{goals_dir}/{g}/target_value"),
                sysfs_io.read_int(fs, f"{goals_dir}/{g}/current_value"),
            )
            for g in range(nr_goals)
        )
        result.append(QuotaTuning(effective_bytes=effective, goals=goals))
    return result


def tuned_intervals(
    fs: sysfs_io.SysfsIO, index: int, sleep: applying.Sleep
) -> model.TunedIntervals:
    applying.state_command(fs, index, "update_tuned_intervals", sleep)
    base = f"kdamonds/{index}/contexts/0/monitoring_attrs/intervals"
    return model.TunedIntervals(
        sample_us=sysfs_io.read_int(fs, f"{base}/sample_us"),
        aggr_us=sysfs_io.read_int(fs, f"{base}/aggr_us"),
    )


def commit_quota_goals(
    fs: sysfs_io.SysfsIO,
    index: int,
    current_values: dict[tuple[int, int], int],
    sleep: applying.Sleep,
) -> None:
    """Feed ``current_value`` of goals keyed by (scheme index, goal index), then commit them."""
    dirs = _scheme_dirs(fs, index)
    for (s_index, g_index), value in sorted(current_values.items()):
        path = f"{dirs[s_index]}/quotas/goals/{g_index}/current_value"
        applying.write_retrying(fs, path, str(value), sleep)
    applying.state_command(fs, index, "commit_schemes_quota_goals", sleep)
