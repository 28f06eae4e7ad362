"""The access report: one snapshot's regions, as boxes or as a table of address ranges.

``simple-boxes`` draws one line per region: a box whose length grows with the log of the
region's size (relative to the smallest and largest region of the snapshot, so a 4 KiB and
a 1 GiB region are both visible), filled with one digit for the access rate (``0`` only
when no access was seen, ``9`` at the maximum; see ``rate_digit``), then size, access rate
and age in human units. ``detailed`` lists the hexadecimal address ranges with the raw
``nr_accesses`` and ``age`` counters beside their human forms. Both end each target with a
total line, and a grand total when there are several targets.

A snapshot can hold up to max_nr_regions (1000 by default) regions, too many lines to read
at a glance; ``fit_for_display`` merges touching regions of similar access rate (with the
smallest tolerance that fits a line budget, as the kernel doubles its merge threshold) for
views that must stay short, and says by how much it merged.

Everything here is a pure function of a ``Snapshot`` (plus target names): the CLI picks the
snapshot (``pick_snapshot``) and prints the text.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import numpy as np

from damon_agent.api import units as api_units
from damon_agent.core import snapshots
from damon_agent.core.regions import Int64Array
from damon_agent.reports import errors, units

Style = Literal["simple-boxes", "detailed"]
STYLES: Final[tuple[Style, ...]] = ("simple-boxes", "detailed")

MAX_BOX_LENGTH: Final = 30


def rate_digit(nr_accesses: int, max_nr_accesses: int) -> int:
    """Access rate as one digit: 0 means never seen accessed, 1..9 scale up to the maximum.

    Rounding up keeps any seen access distinguishable from none.
    """
    if nr_accesses <= 0:
        return 0
    return min(9, max(1, math.ceil(9 * nr_accesses / max(1, max_nr_accesses))))


def pick_snapshot(
    snaps: Sequence[snapshots.Snapshot], start_us: int, at_us: int | None
) -> snapshots.Snapshot:
    """The snapshot nearest to ``start_us + at_us`` (the last one when ``at_us`` is None).

    A time past the last snapshot by more than one aggregation interval is an error, as it
    most likely means the wrong recording or unit.
    """
    if not snaps:
        raise errors.SelectionError("the recording holds no snapshot")
    if at_us is None:
        return snaps[-1]
    wanted = start_us + at_us
    last = snaps[-1]
    if wanted > last.time_us + last.aggr_us:
        raise errors.SelectionError(
            f"--at {api_units.format_duration_us(at_us)} is past the recording's last snapshot "
            f"(at {api_units.format_duration_us(last.time_us - start_us)})"
        )
    times = np.fromiter((s.time_us for s in snaps), dtype=np.int64, count=len(snaps))
    # argmin returns the first of equally near snapshots: the earlier one.
    return snaps[int(np.argmin(np.abs(times - wanted)))]


def merge_similar(snap: snapshots.Snapshot, *, rate_tolerance: float) -> snapshots.Snapshot:
    """For display: merge touching neighbours whose access rates are within the tolerance.

    A region joins the group before it when it starts where the group ends and its access
    rate differs from the group's size-weighted mean rate by at most ``rate_tolerance``
    (a share of the maximum rate). The merged region takes the size-weighted mean
    ``nr_accesses`` and ``age``, as the kernel's merge does. Gaps are never bridged.
    """
    tolerance_nr = rate_tolerance * snap.max_nr_accesses
    targets = []
    for target in snap.targets:
        starts: list[int] = []
        ends: list[int] = []
        nr_sums: list[float] = []
        age_sums: list[float] = []
        sizes = target.sizes.tolist()
        for start, end, nr, age, size in zip(
            target.start.tolist(),
            target.end.tolist(),
            target.nr_accesses.tolist(),
            target.age.tolist(),
            sizes,
            strict=True,
        ):
            if ends and start == ends[-1]:
                group_size = ends[-1] - starts[-1]
                if abs(nr - nr_sums[-1] / group_size) <= tolerance_nr:
                    ends[-1] = end
                    nr_sums[-1] += nr * size
                    age_sums[-1] += age * size
                    continue
            starts.append(start)
            ends.append(end)
            nr_sums.append(float(nr * size))
            age_sums.append(float(age * size))
        start_array = np.asarray(starts, dtype=np.int64)
        end_array = np.asarray(ends, dtype=np.int64)
        group_sizes = np.maximum(1, end_array - start_array).astype(np.float64)
        targets.append(
            snapshots.TargetSnapshot(
                target_id=target.target_id,
                start=start_array,
                end=end_array,
                nr_accesses=np.rint(np.asarray(nr_sums) / group_sizes).astype(np.int64),
                age=np.rint(np.asarray(age_sums) / group_sizes).astype(np.int64),
            )
        )
    return dataclasses.replace(snap, targets=tuple(targets))


def fit_for_display(snap: snapshots.Snapshot, max_regions: int) -> tuple[snapshots.Snapshot, float]:
    """``merge_similar`` with the smallest tolerance (in 5 % steps) that leaves at most
    ``max_regions`` regions; the snapshot itself (and 0.0) when it already fits."""
    tolerance = 0.0
    shown = snap
    while sum(len(t) for t in shown.targets) > max_regions and tolerance < 1.0:
        tolerance = round(tolerance + 0.05, 2)
        shown = merge_similar(snap, rate_tolerance=tolerance)
    return shown, tolerance


def render(
    snap: snapshots.Snapshot,
    *,
    style: Style = "simple-boxes",
    start_us: int = 0,
    target_names: Mapping[int, str] | None = None,
) -> str:
    """The access report of ``snap`` as text (lines joined by newlines, no trailing one)."""
    if style not in STYLES:
        raise errors.SelectionError(f"unknown style {style!r} (known: {', '.join(STYLES)})")
    names = target_names or {}
    lines = [
        f"time {units.format_seconds(snap.time_us - start_us)}"
        f"  (sampling {api_units.format_duration_us(snap.sample_us)},"
        f" aggregation {api_units.format_duration_us(snap.aggr_us)})"
    ]
    all_sizes = [t.sizes for t in snap.targets if len(t)]
    sizes = np.concatenate(all_sizes) if all_sizes else np.zeros(0, dtype=np.int64)
    for target in snap.targets:
        name = names.get(target.target_id)
        lines.append(f"target {target.target_id}" + (f" ({name})" if name else ""))
        if style == "simple-boxes":
            lines += _boxes(snap, target, sizes)
        else:
            lines += _detailed(snap, target)
        lines.append(_total_line("total", [target]))
    if len(snap.targets) > 1:
        lines.append(_total_line("all targets", snap.targets))
    return "\n".join(lines)


def _boxes(
    snap: snapshots.Snapshot, target: snapshots.TargetSnapshot, all_sizes: Int64Array
) -> list[str]:
    if not len(target):
        return ["(no regions)"]
    lengths = _box_lengths(target.sizes, all_sizes)
    max_nr = snap.max_nr_accesses
    lines = []
    for i in range(len(target)):
        nr = int(target.nr_accesses[i])
        digit = str(rate_digit(nr, max_nr))
        box = "|" + digit * int(lengths[i]) + "|" + " " * (MAX_BOX_LENGTH - int(lengths[i]))
        size = api_units.format_bytes(int(target.sizes[i]))
        rate = units.format_percent(min(1.0, nr / max_nr))
        age = api_units.format_duration_us(int(target.age[i]) * snap.aggr_us)
        lines.append(f"{box} {size:>11} {rate:>6} {age:>10}")
    return lines


def _box_lengths(sizes: Int64Array, all_sizes: Int64Array) -> Int64Array:
    """Length 1 for the snapshot's smallest region up to MAX_BOX_LENGTH for its largest."""
    low = math.log2(float(all_sizes.min()))
    high = math.log2(float(all_sizes.max()))
    if high - low < 1e-9:
        return np.full(sizes.size, MAX_BOX_LENGTH, dtype=np.int64)
    scaled = (np.log2(sizes.astype(np.float64)) - low) / (high - low)
    return 1 + np.rint(scaled * (MAX_BOX_LENGTH - 1)).astype(np.int64)


def _detailed(snap: snapshots.Snapshot, target: snapshots.TargetSnapshot) -> list[str]:
    if not len(target):
        return ["(no regions)"]
    max_nr = snap.max_nr_accesses
    rows = [("#", "start", "end", "size", "nr_accesses", "rate", "age", "age time")]
    for i in range(len(target)):
        nr = int(target.nr_accesses[i])
        age = int(target.age[i])
        rows.append(
            (
                str(i),
                f"{int(target.start[i]):#018x}",
                f"{int(target.end[i]):#018x}",
                api_units.format_bytes(int(target.sizes[i])),
                f"{nr}/{max_nr}",
                units.format_percent(min(1.0, nr / max_nr)),
                str(age),
                api_units.format_duration_us(age * snap.aggr_us),
            )
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    # Text columns left-aligned, numbers right-aligned.
    left = {1, 2}
    return [
        "  ".join(
            cell.ljust(widths[c]) if c in left else cell.rjust(widths[c])
            for c, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def _total_line(label: str, targets: Sequence[snapshots.TargetSnapshot]) -> str:
    total = sum(t.sizes.sum(dtype=np.int64) for t in targets)
    nr_regions = sum(len(t) for t in targets)
    accessed = sum(t.sizes[t.nr_accesses > 0].sum(dtype=np.int64) for t in targets)
    share = float(accessed) / float(total) if total else 0.0
    return (
        f"{label} {api_units.format_bytes(int(total))} in {nr_regions}"
        f" region{'' if nr_regions == 1 else 's'},"
        f" accessed {api_units.format_bytes(int(accessed))} ({units.format_percent(share)})"
    )
