"""From a target's mapped address ranges to initial regions, and back after a layout change.

Pure rules, as the kernel applies them:

- ``leave_out_two_biggest_gaps``: a virtual address space is mostly empty; the two biggest
  holes (heap to mmap area, mmap area to stack) would only waste regions, so they are not
  monitored (mm/damon/vaddr.c, ``damon_va_three_regions``). Smaller holes stay inside the
  monitored ranges: they are cheap, and the adaptive merge absorbs them.
- ``initial_regions``: each range is split evenly so that the target starts with about
  ``min_nr_regions`` regions, then any region larger than total/min_nr_regions is cut
  down to that size (``damon_va_evenly_split_region`` + ``damon_apply_min_nr_regions``).
- ``fit_regions_to_ranges``: at an ops update, keep the state of regions that still overlap
  the new ranges, drop those that do not, stretch the first and last region of each range
  to its edges and fill holes with fresh regions (``damon_set_regions``). A region that
  overlaps several new ranges is cut into its overlaps, each keeping the state (the kernel
  leaves that case undefined).

Everything is vectorised over regions; the only Python loops are over ranges (three for a
vaddr target).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from damon_agent.core import errors, regions

AddressRange = tuple[int, int]


def _align_down(value: int, unit: int) -> int:
    return value - value % unit


def _align_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def normalize_ranges(
    ranges: Sequence[AddressRange], unit: int = regions.MIN_REGION_SIZE
) -> list[AddressRange]:
    """Page-align the ranges (start down, end up), check order, coalesce touching ones."""
    out: list[AddressRange] = []
    previous_end = -1
    for i, (raw_start, raw_end) in enumerate(ranges):
        if raw_start < 0 or raw_end <= raw_start:
            raise errors.InvalidLayoutError(
                f"ranges[{i}]: [{raw_start:#x}, {raw_end:#x}) is empty or negative"
            )
        if raw_start < previous_end:
            raise errors.InvalidLayoutError(
                f"ranges[{i}]: [{raw_start:#x}, {raw_end:#x}) overlaps or precedes the range "
                "before it (ranges must be sorted and disjoint)"
            )
        previous_end = raw_end
        start, end = _align_down(raw_start, unit), _align_up(raw_end, unit)
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def leave_out_two_biggest_gaps(ranges: Sequence[AddressRange]) -> list[AddressRange]:
    """Cover the ranges with at most three ranges, leaving out the two biggest gaps.

    On equal gap sizes the lower gap wins, as the kernel keeps the first one it finds.
    """
    spans = normalize_ranges(ranges)
    if len(spans) <= 3:
        return spans
    gaps = [(spans[i + 1][0] - spans[i][1], i) for i in range(len(spans) - 1)]
    # Sort by size descending, address ascending: the two first are the gaps left out.
    biggest = sorted(sorted(gaps, key=lambda gap: -gap[0])[:2], key=lambda gap: gap[1])
    first, second = biggest[0][1], biggest[1][1]
    return [
        (spans[0][0], spans[first][1]),
        (spans[first + 1][0], spans[second][1]),
        (spans[second + 1][0], spans[-1][1]),
    ]


def region_size_limit(total_size: int, min_nr_regions: int) -> int:
    """Largest size a region may reach by merging: total / min_nr_regions, at least a page."""
    limit = total_size // max(1, min_nr_regions)
    return max(regions.MIN_REGION_SIZE, limit)


def _evenly_split(start: int, end: int, nr_pieces: int) -> list[int]:
    """Start addresses of ``nr_pieces`` page-aligned pieces; the last absorbs the rounding."""
    size = end - start
    if nr_pieces <= 1:
        return [start]
    piece = _align_down(size // nr_pieces, regions.MIN_REGION_SIZE)
    if piece == 0:
        return [start]
    return [start + k * piece for k in range(nr_pieces)]


def split_to_size_limit(target: regions.TargetRegions, limit: int) -> None:
    """Cut every region larger than ``limit`` into ``limit``-sized pieces (the rest last)."""
    limit = _align_up(limit, regions.MIN_REGION_SIZE)
    sizes = target.sizes
    pieces = np.maximum(1, -(-sizes // limit))
    if not np.any(pieces > 1):
        return
    parent = np.repeat(np.arange(len(target), dtype=np.int64), pieces)
    first_of_parent = np.cumsum(pieces) - pieces
    offset = np.arange(parent.size, dtype=np.int64) - np.repeat(first_of_parent, pieces)
    start = target.start[parent] + offset * limit
    end = np.minimum(start + limit, target.end[parent])
    target.rebuild_from_parents(start, end, parent)


def initial_regions(
    target_id: int, ranges: Sequence[AddressRange], min_nr_regions: int
) -> regions.TargetRegions:
    """Fresh regions (all counters zero) covering ``ranges``, about min_nr_regions of them."""
    spans = normalize_ranges(ranges)
    if not spans:
        return regions.TargetRegions(target_id)
    total = sum(end - start for start, end in spans)
    piece_size = max(regions.MIN_REGION_SIZE, total // max(1, min_nr_regions))
    starts: list[int] = []
    ends: list[int] = []
    for start, end in spans:
        piece_starts = _evenly_split(start, end, (end - start) // piece_size)
        starts.extend(piece_starts)
        ends.extend([*piece_starts[1:], end])
    start_array = np.array(starts, dtype=np.int64)
    target = regions.TargetRegions(target_id, start=start_array, end=np.array(ends, np.int64))
    split_to_size_limit(target, region_size_limit(total, min_nr_regions))
    return target


def fit_regions_to_ranges(target: regions.TargetRegions, ranges: Sequence[AddressRange]) -> None:
    """Make the regions cover exactly ``ranges``, keeping the state of overlapping regions."""
    spans = normalize_ranges(ranges)
    zeros = np.zeros(0, dtype=np.int64)
    pieces: list[tuple[np.ndarray, ...]] = []  # (start, end, nr, age, last_nr, bp) per range
    for range_start, range_end in spans:
        overlap = (target.start < range_end) & (target.end > range_start)
        index = np.flatnonzero(overlap)
        if index.size == 0:
            one = np.array([range_start], dtype=np.int64)
            zero = np.zeros(1, dtype=np.int64)
            pieces.append((one, np.array([range_end], np.int64), zero, zero, zero, zero))
            continue
        start = np.maximum(target.start[index], range_start)
        end = np.minimum(target.end[index], range_end)
        start[0] = range_start
        end[-1] = range_end
        state = [
            target.nr_accesses[index],
            target.age[index],
            target.last_nr_accesses[index],
            target.nr_accesses_bp[index],
        ]
        holes = np.flatnonzero(start[1:] > end[:-1])
        if holes.size:
            hole_start = end[holes]
            hole_end = start[holes + 1]
            start = np.concatenate([start, hole_start])
            end = np.concatenate([end, hole_end])
            state = [np.concatenate([values, np.zeros(holes.size, np.int64)]) for values in state]
            order = np.argsort(start, kind="stable")
            start, end = start[order], end[order]
            state = [values[order] for values in state]
        pieces.append((start, end, *state))
    if not pieces:
        target.replace_all(
            zeros, zeros, nr_accesses=zeros, age=zeros, last_nr_accesses=zeros, nr_accesses_bp=zeros
        )
        return
    start, end, nr, age, last, bp = (
        np.concatenate([piece[c] for piece in pieces]) for c in range(6)
    )
    target.replace_all(
        start, end, nr_accesses=nr, age=age, last_nr_accesses=last, nr_accesses_bp=bp
    )
