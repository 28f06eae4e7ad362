"""The heatmap report: access rate over time and address, as text and as a PNG.

Only the monitored space is drawn. The address axis is the union of all regions ever seen
for each target, merged into contiguous spans, laid end to end (targets in id order, spans
in address order). Unmonitored gaps, such as the terabytes between a process's heap and
its stack, take no room, so a small hot range stays visible; the legend maps the axis back
to real addresses.

Building the map (``build``) is vectorised and exact: within one snapshot the access rate
is piecewise constant over the axis, so its integral is piecewise linear with knots at the
region bounds, and ``numpy.interp`` evaluates it at the bucket edges. A cell's value is the
coverage-weighted mean access rate of everything that fell into it (over the snapshots of
its time bucket and the bytes of its address bucket), or NaN where nothing was monitored.
Cost is O((regions + columns) log regions) per snapshot; no page-sized work.

The text form puts time on rows and the address space on columns (terminals are wider than
tall) with one digit per cell, as the access report's boxes use; the PNG, drawn with
matplotlib's Agg canvas (no display, no pyplot global state), puts time on the x axis.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from damon_agent.api import units as api_units
from damon_agent.core import snapshots
from damon_agent.core.regions import Int64Array
from damon_agent.reports import errors, units

Float64Array = NDArray[np.float64]

TEXT_ROWS: Final = 30
TEXT_COLUMNS: Final = 72
PNG_ROWS: Final = 600
PNG_COLUMNS: Final = 400


@dataclass(frozen=True)
class Span:
    """A contiguous monitored address range and where it starts on the heatmap's axis."""

    target_id: int
    start: int
    end: int
    offset: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Heatmap:
    """Mean access rates (0..1, NaN = not monitored) of time buckets x address buckets."""

    spans: tuple[Span, ...]
    # Time of each row relative to the recording's start: the first snapshot in it.
    row_times_us: Int64Array
    # Bytes of the concatenated monitored space at each column's left edge (+ the end).
    column_edges: Float64Array
    rates: Float64Array

    @property
    def total_bytes(self) -> int:
        return sum(span.size for span in self.spans)


def monitored_spans(snaps: Sequence[snapshots.Snapshot]) -> tuple[Span, ...]:
    """The union of every region of every snapshot, per target, as contiguous spans."""
    starts: dict[int, list[Int64Array]] = {}
    ends: dict[int, list[Int64Array]] = {}
    for snap in snaps:
        for target in snap.targets:
            if len(target):
                starts.setdefault(target.target_id, []).append(target.start)
                ends.setdefault(target.target_id, []).append(target.end)
    spans: list[Span] = []
    offset = 0
    for target_id in sorted(starts):
        start = np.concatenate(starts[target_id])
        end = np.concatenate(ends[target_id])
        order = np.argsort(start, kind="stable")
        start, end = start[order], end[order]
        reach = np.maximum.accumulate(end)
        # A new span begins where a region starts beyond everything before it reaches.
        breaks = np.flatnonzero(start[1:] > reach[:-1]) + 1
        span_starts = start[np.concatenate(([0], breaks))]
        span_ends = reach[np.concatenate((breaks - 1, [start.size - 1]))]
        for s, e in zip(span_starts.tolist(), span_ends.tolist(), strict=True):
            spans.append(Span(target_id=target_id, start=s, end=e, offset=offset))
            offset += e - s
    return tuple(spans)


def build(
    snaps: Sequence[snapshots.Snapshot],
    *,
    rows: int = TEXT_ROWS,
    columns: int = TEXT_COLUMNS,
    start_us: int = 0,
) -> Heatmap:
    """Bucket ``snaps`` into at most ``rows`` time rows and ``columns`` address columns."""
    if rows < 1 or columns < 1:
        raise errors.SelectionError(
            f"heatmap needs at least 1 row and 1 column, got {rows}x{columns}"
        )
    if not snaps:
        raise errors.SelectionError("the recording holds no snapshot: nothing to draw")
    spans = monitored_spans(snaps)
    total = sum(span.size for span in spans)
    if total == 0:
        raise errors.SelectionError("the recording's snapshots hold no region: nothing to draw")

    times = np.fromiter((s.time_us for s in snaps), dtype=np.int64, count=len(snaps))
    if len(snaps) <= rows:
        rows = len(snaps)
        row_of = np.arange(rows)
    else:
        first, last = int(times.min()), int(times.max())
        width = max(1, last - first)
        row_of = np.minimum(rows - 1, ((times - first) * rows) // width)
    # A row's time is that of its first snapshot; rows no snapshot fell into (uneven
    # sampling) get their bucket's nominal time.
    first = int(times.min())
    row_times = first + (np.arange(rows) * max(1, int(times.max()) - first)) // rows - start_us
    seen = np.zeros(rows, dtype=bool)
    for index, row in enumerate(row_of.tolist()):
        if not seen[row]:
            row_times[row] = times[index] - start_us
            seen[row] = True

    edges = np.linspace(0.0, float(total), columns + 1)
    weighted = np.zeros((rows, columns))
    covered = np.zeros((rows, columns))
    by_target = _spans_by_target(spans)
    for snap, row in zip(snaps, row_of.tolist(), strict=True):
        positions, rates = _axis_regions(snap, by_target)
        if positions.size == 0:
            continue
        rate_integral, cover_integral = _integrals(positions, rates, edges)
        weighted[row] += rate_integral
        covered[row] += cover_integral
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(covered > 0, weighted / np.where(covered > 0, covered, 1.0), np.nan)
    return Heatmap(spans=spans, row_times_us=row_times, column_edges=edges, rates=mean)


def _spans_by_target(spans: Sequence[Span]) -> dict[int, tuple[Int64Array, Int64Array]]:
    grouped: dict[int, tuple[list[int], list[int]]] = {}
    for span in spans:
        starts, offsets = grouped.setdefault(span.target_id, ([], []))
        starts.append(span.start)
        offsets.append(span.offset)
    return {
        tid: (np.asarray(s, dtype=np.int64), np.asarray(o, dtype=np.int64))
        for tid, (s, o) in grouped.items()
    }


def _axis_regions(
    snap: snapshots.Snapshot, by_target: Mapping[int, tuple[Int64Array, Int64Array]]
) -> tuple[Int64Array, Float64Array]:
    """Region bounds on the heatmap axis, as (n, 2) [start, end) rows, and their rates."""
    bounds: list[Int64Array] = []
    rates: list[Float64Array] = []
    for target in sorted(snap.targets, key=lambda t: t.target_id):
        if not len(target):
            continue
        span_starts, span_offsets = by_target[target.target_id]
        which = np.searchsorted(span_starts, target.start, side="right") - 1
        shift = span_offsets[which] - span_starts[which]
        bounds.append(np.stack((target.start + shift, target.end + shift), axis=1))
        rates.append(np.asarray(snap.access_rate(target), dtype=np.float64))
    if not bounds:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    return np.concatenate(bounds), np.concatenate(rates)


def _integrals(
    positions: Int64Array, rates: Float64Array, edges: Float64Array
) -> tuple[Float64Array, Float64Array]:
    """Per column: integral of the access rate, and of coverage (monitored bytes)."""
    knots = positions.reshape(-1).astype(np.float64)
    lengths = (positions[:, 1] - positions[:, 0]).astype(np.float64)
    # Integral values at each region's start and end; flat across gaps between regions.
    # A region starts at exactly the previous one's end value, so zero-rate regions add
    # exactly nothing (no rounding noise showing up as a faint access).
    rate_at = _starts_and_ends(np.cumsum(rates * lengths))
    cover_at = _starts_and_ends(np.cumsum(lengths))
    rate_cum = np.interp(edges, knots, rate_at)
    cover_cum = np.interp(edges, knots, cover_at)
    return np.diff(rate_cum), np.diff(cover_cum)


def _starts_and_ends(cumulative: Float64Array) -> Float64Array:
    starts = np.concatenate(([0.0], cumulative[:-1]))
    return np.stack((starts, cumulative), axis=1).reshape(-1)


def cell_digit(rate: float) -> str:
    """One character per cell: blank where unmonitored, else 0 (no access) .. 9 (maximum)."""
    if math.isnan(rate):
        return " "
    if rate <= 0:
        return "0"
    return str(min(9, max(1, math.ceil(9 * rate - 1e-9))))


def render_text(heatmap: Heatmap, *, target_names: Mapping[int, str] | None = None) -> str:
    """Rows of digits, one row per time bucket, then the legend of the address axis."""
    names = target_names or {}
    nr_columns = heatmap.rates.shape[1]
    column_bytes = heatmap.total_bytes / nr_columns
    lines = [
        f"access heatmap: rows = time, columns = monitored address space"
        f" ({nr_columns} columns of {api_units.format_bytes(column_bytes)})",
        "digits: access rate, 0 = no access seen .. 9 = every sample; blank = not monitored",
    ]
    labels = [units.format_seconds(t) for t in heatmap.row_times_us.tolist()]
    label_width = max(len(label) for label in labels)
    for label, row in zip(labels, heatmap.rates, strict=True):
        cells = "".join(cell_digit(float(rate)) for rate in row)
        lines.append(f"{label:>{label_width}} |{cells}|")
    lines.append("address axis, left to right:")
    edges = heatmap.column_edges
    for span in heatmap.spans:
        first = int(np.searchsorted(edges, span.offset, side="right")) - 1
        last = int(np.searchsorted(edges, span.offset + span.size, side="left")) - 1
        first, last = max(0, first), min(nr_columns - 1, max(first, last))
        name = names.get(span.target_id)
        target = f"target {span.target_id}" + (f" ({name})" if name else "")
        lines.append(
            f"  columns {first:>3}..{last:<3} {target}"
            f"  {span.start:#x}-{span.end:#x} ({api_units.format_bytes(span.size)})"
        )
    return "\n".join(lines)


def render(
    snaps: Sequence[snapshots.Snapshot],
    *,
    start_us: int = 0,
    rows: int = TEXT_ROWS,
    columns: int = TEXT_COLUMNS,
    target_names: Mapping[int, str] | None = None,
) -> str:
    """The text heatmap of a recording's snapshots."""
    heatmap = build(snaps, rows=rows, columns=columns, start_us=start_us)
    return render_text(heatmap, target_names=target_names)


def write_png(
    snaps: Sequence[snapshots.Snapshot],
    path: pathlib.Path,
    *,
    start_us: int = 0,
    title: str = "access heatmap",
    target_names: Mapping[int, str] | None = None,
) -> None:
    """Draw the heatmap into a PNG at ``path`` (time on x, monitored address space on y)."""
    # Imported here: matplotlib takes a noticeable time to import, and only this needs it.
    from matplotlib import colormaps, figure  # noqa: PLC0415
    from matplotlib.backends import backend_agg  # noqa: PLC0415

    heatmap = build(snaps, rows=PNG_ROWS, columns=PNG_COLUMNS, start_us=start_us)
    names = target_names or {}
    fig = figure.Figure(figsize=(11, 6.5), dpi=100, layout="constrained")
    backend_agg.FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["inferno"].with_extremes(bad="#d0d0d0")
    # Each row is drawn centred on its time, one row spacing high.
    times_s = heatmap.row_times_us / 1e6
    spacing = (
        float(times_s[-1] - times_s[0]) / (times_s.size - 1)
        if times_s.size > 1
        else snaps[-1].aggr_us / 1e6
    )
    first_s = float(times_s[0]) - spacing / 2
    last_s = float(times_s[-1]) + spacing / 2
    total_mib = heatmap.total_bytes / 2**20
    image = ax.imshow(
        np.ma.masked_invalid(heatmap.rates.T * 100),
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap=cmap,
        vmin=0,
        vmax=100,
        extent=(first_s, last_s, 0.0, total_mib),
    )
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.set_label("access rate (% of samples)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("address (monitored spans only, gaps left out)")
    ax.set_title(title)
    _mark_spans(ax, heatmap, names)
    try:
        fig.savefig(path, format="png")
    except OSError as err:
        raise errors.OutputError(f"cannot write {path}: {err.strerror or err}") from err


def _mark_spans(ax: Any, heatmap: Heatmap, names: Mapping[int, str]) -> None:
    """Label where each span (and target) begins on the address axis."""
    # Too many labels overlap; mark target boundaries always and spans while they fit.
    label_spans = len(heatmap.spans) <= 16
    ticks: list[float] = []
    labels: list[str] = []
    previous_target: int | None = None
    for span in heatmap.spans:
        position = span.offset / 2**20
        new_target = span.target_id != previous_target
        if new_target or label_spans:
            ticks.append(position)
            name = names.get(span.target_id)
            prefix = ""
            if new_target:
                prefix = f"target {span.target_id}" + (f" ({name})" if name else "") + ": "
            labels.append(f"{prefix}{span.start:#x}")
        if span.offset and (new_target or label_spans):
            ax.axhline(position, color="white" if new_target else "#808080", linewidth=0.8)
        previous_target = span.target_id
    # A few addresses between the span starts (and the last end) so that sizes can be read.
    total = heatmap.total_bytes
    last = heatmap.spans[-1]
    extra = [(total, last.end)] if len(ticks) < 8 else []
    if len(ticks) < 8:
        for fraction in (0.2, 0.4, 0.6, 0.8):
            offset = int(total * fraction)
            span = next(sp for sp in heatmap.spans if sp.offset + sp.size >= offset)
            extra.append((offset, span.start + offset - span.offset))
    for offset, address in extra:
        position = offset / 2**20
        if all(abs(position - tick) > 0.05 * total / 2**20 for tick in ticks):
            ticks.append(position)
            labels.append(f"{address:#x}")
    ax.set_yticks(ticks, labels, fontsize=8)
