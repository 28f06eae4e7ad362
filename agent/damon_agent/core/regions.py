"""Per-target region state as parallel numpy arrays.

Regions of a target are sorted by address and do not overlap; ``start[i] < end[i]``.
``age`` counts aggregation intervals. Every operation on them is vectorised: nothing here
iterates over pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Int64Array = NDArray[np.int64]


def _empty() -> Int64Array:
    return np.zeros(0, dtype=np.int64)


@dataclass
class TargetRegions:
    """The regions of one monitoring target (one address space, or physical memory)."""

    target_id: int
    start: Int64Array = field(default_factory=_empty)
    end: Int64Array = field(default_factory=_empty)
    nr_accesses: Int64Array = field(default_factory=_empty)
    age: Int64Array = field(default_factory=_empty)
    last_nr_accesses: Int64Array = field(default_factory=_empty)
    # Address sampled in the current sampling interval, per region.
    sampling_addr: Int64Array = field(default_factory=_empty)

    def __len__(self) -> int:
        return int(self.start.size)

    @property
    def sizes(self) -> Int64Array:
        return self.end - self.start

    @property
    def total_size(self) -> int:
        return int(self.sizes.sum())
