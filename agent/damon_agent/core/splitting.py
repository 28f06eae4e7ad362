"""Splitting regions after an aggregation, so that the next one can find finer patterns.

Kernel semantics (``kdamond_split_regions``): nothing is split while the total region
count is above max_nr_regions / 2. Otherwise every region is split in two, or in three
when the count did not change since the last split and is below max_nr_regions / 3 (the
interesting part may be in the middle). Each cut leaves a left piece of a random 10..90%
(in whole tenths) of the piece being cut, aligned down to a page; the second cut of a
three-way split cuts that left piece again. Regions not larger than two pages are not
split, and a cut that would leave an empty piece is skipped. The pieces inherit
nr_accesses, nr_accesses_bp, age and last_nr_accesses.

Vectorised: two random draws per region per cut, then one sort of the cut addresses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from damon_agent.core import regions


def nr_subregions(nr_regions: int, last_nr_regions: int, max_nr_regions: int) -> int:
    """How many pieces each region becomes: 0 (no split), 2 or 3."""
    if nr_regions > max_nr_regions // 2:
        return 0
    if nr_regions == last_nr_regions and nr_regions < max_nr_regions // 3:
        return 3
    return 2


def _cut_sizes(
    sizes: regions.Int64Array, tenths: regions.Int64Array, unit: int
) -> tuple[regions.Int64Array, NDArray[np.bool_]]:
    """Size of the left piece per region, and whether the cut is made."""
    left = (tenths * sizes // 10) // unit * unit
    made = (sizes > 2 * unit) & (left > 0) & (left < sizes)
    return left, made


def split_regions_of(
    target: regions.TargetRegions,
    nr_subs: int,
    rng: np.random.Generator,
    unit: int = regions.MIN_REGION_SIZE,
) -> None:
    """Split every region of one target in ``nr_subs`` pieces (fewer where too small)."""
    n = len(target)
    if n == 0 or nr_subs < 2:
        return
    sizes = target.sizes
    cuts: list[regions.Int64Array] = []
    remaining = sizes
    for _ in range(nr_subs - 1):
        tenths = rng.integers(1, 10, size=n, dtype=np.int64)
        left, made = _cut_sizes(remaining, tenths, unit)
        cuts.append(target.start[made] + left[made])
        # The next cut applies to the left piece (the kernel keeps cutting ``r``).
        remaining = np.where(made, left, remaining)
    new_starts = np.concatenate([target.start, *cuts])
    if new_starts.size == n:
        return
    new_starts.sort(kind="stable")
    parent = np.searchsorted(target.start, new_starts, side="right") - 1
    same_parent_next = np.zeros(new_starts.size, dtype=bool)
    same_parent_next[:-1] = parent[1:] == parent[:-1]
    next_start = np.empty_like(new_starts)
    next_start[:-1] = new_starts[1:]
    next_start[-1] = 0
    new_ends = np.where(same_parent_next, next_start, target.end[parent])
    target.rebuild_from_parents(new_starts, new_ends, parent)


def split_regions(
    targets: Sequence[regions.TargetRegions],
    last_nr_regions: int,
    max_nr_regions: int,
    rng: np.random.Generator,
) -> int:
    """Split every target as the kernel does; returns the count to remember as 'last'.

    The kernel remembers the count only when it splits; a skipped split leaves it as is.
    """
    count = sum(len(target) for target in targets)
    subs = nr_subregions(count, last_nr_regions, max_nr_regions)
    if subs == 0:
        return last_nr_regions
    for target in targets:
        split_regions_of(target, subs, rng)
    return count
