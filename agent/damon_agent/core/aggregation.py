"""What happens to regions when an aggregation interval closes: aging, merging, reset.

Kernel semantics (mm/damon/core.c, ``kdamond_merge_regions`` and friends):

- Age: a region's age (in aggregation intervals) restarts from 0 when its nr_accesses
  moved by more than the merge threshold since the last aggregation, or moved between
  zero and non-zero (a region that just became idle, or just woke up, is not "old");
  otherwise it grows by one.
- Merge: walking the regions in address order, a region joins its (possibly already
  merged) left neighbour when they touch, their nr_accesses differ by at most the
  threshold, and the merged size stays within the size limit (total / min_nr_regions).
  The merged nr_accesses and age are size-weighted averages (integer division), and
  nr_accesses_bp becomes nr_accesses * 10000.
- Threshold: max(nr_accesses) / 10 over the snapshot. While the total region count is
  above max_nr_regions, merge again with the threshold doubled, up to the largest
  possible nr_accesses.
- Reset: last_nr_accesses takes nr_accesses, which restarts from 0.

Aging is done once per aggregation, before the first merge pass; the kernel re-runs it on
every extra pass, which would age regions by several intervals in one.

The merge is a left-to-right scan whose decisions depend on the previous merges, so it is
a loop over regions, run once per aggregation interval (not per sample) on plain Python
integers, and O(regions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from damon_agent.core import regions


def merge_threshold(max_nr_accesses: int) -> int:
    """The kernel's nr_accesses difference threshold: a tenth of the highest count."""
    return max_nr_accesses // 10


def update_ages(target: regions.TargetRegions, threshold: int) -> None:
    """Age every region, or restart its age after a change of access frequency."""
    nr = target.nr_accesses
    last = target.last_nr_accesses
    changed = (np.abs(nr - last) > threshold) | ((nr == 0) != (last == 0))
    target.age = np.where(changed, 0, target.age + 1)


def merge_regions_of(target: regions.TargetRegions, threshold: int, size_limit: int) -> None:
    """One left-to-right merge pass over the regions of one target."""
    n = len(target)
    if n < 2:
        return
    starts = target.start.tolist()
    ends = target.end.tolist()
    nrs = target.nr_accesses.tolist()
    ages = target.age.tolist()
    lasts = target.last_nr_accesses.tolist()
    bps = target.nr_accesses_bp.tolist()
    out_start = [starts[0]]
    out_end = [ends[0]]
    out_nr = [nrs[0]]
    out_age = [ages[0]]
    out_last = [lasts[0]]
    out_bp = [bps[0]]
    for i in range(1, n):
        left_size = out_end[-1] - out_start[-1]
        right_size = ends[i] - starts[i]
        if (
            out_end[-1] == starts[i]
            and abs(out_nr[-1] - nrs[i]) <= threshold
            and left_size + right_size <= size_limit
        ):
            total = left_size + right_size
            merged_nr = (out_nr[-1] * left_size + nrs[i] * right_size) // total
            out_nr[-1] = merged_nr
            out_bp[-1] = merged_nr * 10_000
            out_age[-1] = (out_age[-1] * left_size + ages[i] * right_size) // total
            out_end[-1] = ends[i]
        else:
            out_start.append(starts[i])
            out_end.append(ends[i])
            out_nr.append(nrs[i])
            out_age.append(ages[i])
            out_last.append(lasts[i])
            out_bp.append(bps[i])
    if len(out_start) == n:
        return
    target.replace_all(
        np.array(out_start, dtype=np.int64),
        np.array(out_end, dtype=np.int64),
        nr_accesses=np.array(out_nr, dtype=np.int64),
        age=np.array(out_age, dtype=np.int64),
        last_nr_accesses=np.array(out_last, dtype=np.int64),
        nr_accesses_bp=np.array(out_bp, dtype=np.int64),
    )


def merge_regions(
    targets: Sequence[regions.TargetRegions],
    threshold: int,
    size_limit: int,
    max_nr_regions: int,
    max_threshold: int,
) -> int:
    """Age, then merge every target; repeat with a doubled threshold while over the max.

    Returns the threshold of the last pass.
    """
    for target in targets:
        update_ages(target, threshold)
    while True:
        for target in targets:
            merge_regions_of(target, threshold, size_limit)
        count = sum(len(target) for target in targets)
        used = threshold
        threshold = max(1, threshold * 2)
        if count <= max_nr_regions or threshold // 2 >= max_threshold:
            return used


def reset_aggregated(target: regions.TargetRegions) -> None:
    """Close the aggregation interval: keep this interval's count as the last one."""
    target.last_nr_accesses = target.nr_accesses
    target.nr_accesses = np.zeros(len(target), dtype=np.int64)
    target.nr_accesses_bp = target.last_nr_accesses * 10_000
