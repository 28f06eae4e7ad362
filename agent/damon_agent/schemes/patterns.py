"""Access pattern matching: which regions a scheme may act on.

A region matches when its size, access rate and age all fall in the scheme's closed
ranges. The rate is compared exactly in integers: ``nr_accesses / max_nr_accesses`` in
[min_bp, max_bp] / 10000, i.e. ``min_bp * max_nr <= nr * 10000 <= max_bp * max_nr``; the
kernel's sysfs takes nr_accesses bounds instead, which ``nr_accesses_bounds`` gives
(rounded inwards, so both forms select the same regions). Ages count aggregation
intervals: ``age * aggr_us`` is compared with the range in microseconds.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from damon_agent.core.regions import Int64Array
from damon_agent.schemes import model


def matches(
    pattern: model.AccessPattern,
    sizes: Int64Array,
    nr_accesses: Int64Array,
    ages: Int64Array,
    *,
    max_nr_accesses: int,
    aggr_us: int,
) -> NDArray[np.bool_]:
    """Per-region mask of the regions in the pattern (vectorised)."""
    nr = nr_accesses * 10_000
    age_us = ages * aggr_us
    in_range = (
        (sizes >= pattern.min_size)
        & (sizes <= pattern.max_size)
        & (nr >= pattern.min_rate_bp * max_nr_accesses)
        & (nr <= pattern.max_rate_bp * max_nr_accesses)
        & (age_us >= pattern.min_age_us)
        & (age_us <= pattern.max_age_us)
    )
    return np.asarray(in_range, dtype=np.bool_)


def region_matches(
    pattern: model.AccessPattern,
    size: int,
    nr_accesses: int,
    age: int,
    *,
    max_nr_accesses: int,
    aggr_us: int,
) -> bool:
    """The scalar form of ``matches``, for one region."""
    nr = nr_accesses * 10_000
    age_us = age * aggr_us
    return (
        pattern.min_size <= size <= pattern.max_size
        and pattern.min_rate_bp * max_nr_accesses <= nr <= pattern.max_rate_bp * max_nr_accesses
        and pattern.min_age_us <= age_us <= pattern.max_age_us
    )


def nr_accesses_bounds(pattern: model.AccessPattern, max_nr_accesses: int) -> tuple[int, int]:
    """The kernel's ``access_pattern/nr_accesses/{min,max}`` for this pattern."""
    low = -(-pattern.min_rate_bp * max_nr_accesses // 10_000)  # ceil
    high = pattern.max_rate_bp * max_nr_accesses // 10_000
    return low, high


def age_bounds(pattern: model.AccessPattern, aggr_us: int) -> tuple[int, int]:
    """The kernel's ``access_pattern/age/{min,max}`` in aggregation intervals."""
    low = -(-pattern.min_age_us // aggr_us)
    if pattern.max_age_us >= model.UNBOUNDED:
        return low, model.UNBOUNDED
    return low, pattern.max_age_us // aggr_us
