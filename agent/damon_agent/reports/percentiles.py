"""Percentiles as the distribution reports (wss, footprints) show them.

Each percentile is a value that occurred: for ``p`` over ``n`` sorted values it is the one
at index ``floor(p / 100 * (n - 1))``, so 0 is the minimum, 100 the maximum and 50 the
lower median. Reported sizes are then real observations, never interpolated byte counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

from damon_agent.core.regions import Int64Array

DEFAULT_PERCENTILES: Final = (0, 25, 50, 75, 100)


def percentiles(
    values: Sequence[int] | Int64Array,
    points: Sequence[int] = DEFAULT_PERCENTILES,
) -> dict[int, int]:
    """``{p: value}`` for each percentile point; ``values`` must not be empty."""
    ordered = np.sort(np.asarray(values, dtype=np.int64))
    if ordered.size == 0:
        raise ValueError("percentiles of no values")
    last = ordered.size - 1
    return {p: int(ordered[(p * last) // 100]) for p in points}


def average(values: Sequence[int] | Int64Array) -> float:
    """Arithmetic mean; ``values`` must not be empty."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("average of no values")
    return float(array.mean())
