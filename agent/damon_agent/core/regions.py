"""Per-target region state as parallel numpy arrays.

Regions of a target are sorted by address and do not overlap; ``start[i] < end[i]``.
``age`` counts aggregation intervals. Every operation on them is vectorised: nothing here
iterates over pages.

``nr_accesses_bp`` is the kernel's pseudo moving sum of ``nr_accesses`` (in basis points of
one access), updated at every sampling interval; at an aggregation boundary it equals
``nr_accesses * 10000``. DAMOS reads it so that schemes whose apply interval differs from
the aggregation interval see a rate that does not collapse to zero right after a reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Int64Array = NDArray[np.int64]

MIN_REGION_SIZE = 4096
"""The kernel's DAMON_MIN_REGION (one page): regions are never split below it."""


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
    # Pseudo moving sum of nr_accesses, in basis points (see the module docstring).
    nr_accesses_bp: Int64Array = field(default_factory=_empty)

    def __post_init__(self) -> None:
        # Older callers build regions without the newer per-region arrays: give them zeros
        # so that every array always has one entry per region.
        n = self.start.size
        for name in ("nr_accesses", "age", "last_nr_accesses", "nr_accesses_bp"):
            if getattr(self, name).size != n:
                setattr(self, name, np.zeros(n, dtype=np.int64))
        if self.sampling_addr.size != n:
            self.sampling_addr = self.start.copy()

    def __len__(self) -> int:
        return int(self.start.size)

    @property
    def sizes(self) -> Int64Array:
        return self.end - self.start

    @property
    def total_size(self) -> int:
        return int(self.sizes.sum())

    def replace_all(
        self,
        start: Int64Array,
        end: Int64Array,
        *,
        nr_accesses: Int64Array,
        age: Int64Array,
        last_nr_accesses: Int64Array,
        nr_accesses_bp: Int64Array,
    ) -> None:
        """Swap in a new set of regions (arrays are taken as they are, not copied)."""
        self.start = start
        self.end = end
        self.nr_accesses = nr_accesses
        self.age = age
        self.last_nr_accesses = last_nr_accesses
        self.nr_accesses_bp = nr_accesses_bp
        self.sampling_addr = start.copy()

    def rebuild_from_parents(self, start: Int64Array, end: Int64Array, parent: Int64Array) -> None:
        """New regions [start, end), each inheriting the state of region ``parent``."""
        self.replace_all(
            start,
            end,
            nr_accesses=self.nr_accesses[parent],
            age=self.age[parent],
            last_nr_accesses=self.last_nr_accesses[parent],
            nr_accesses_bp=self.nr_accesses_bp[parent],
        )

    def take(self, index: Int64Array) -> None:
        """Keep only the regions at ``index`` (in that order)."""
        self.replace_all(
            self.start[index],
            self.end[index],
            nr_accesses=self.nr_accesses[index],
            age=self.age[index],
            last_nr_accesses=self.last_nr_accesses[index],
            nr_accesses_bp=self.nr_accesses_bp[index],
        )


def split_region(regions: TargetRegions, index: int, addr: int) -> None:
    """Split region ``index`` at ``addr`` into [start, addr) and [addr, end).

    Both pieces inherit the region's nr_accesses, nr_accesses_bp, age and
    last_nr_accesses, as the kernel's damon_split_region_at() does. ``addr`` must lie
    strictly inside the region.
    """
    if not 0 <= index < len(regions):
        raise IndexError(f"region index {index} out of range (0..{len(regions) - 1})")
    start = int(regions.start[index])
    end = int(regions.end[index])
    if not start < addr < end:
        raise ValueError(f"split address {addr:#x} is not inside region [{start:#x}, {end:#x})")
    at = index + 1
    regions.start = np.insert(regions.start, at, addr)
    regions.end = np.insert(regions.end, at, end)
    regions.end[index] = addr
    for name in ("nr_accesses", "age", "last_nr_accesses", "nr_accesses_bp"):
        values: Int64Array = getattr(regions, name)
        setattr(regions, name, np.insert(values, at, values[index]))
    sampling = np.insert(regions.sampling_addr, at, addr)
    if sampling[index] >= addr:
        sampling[index] = start
    regions.sampling_addr = sampling
