"""The region container and the split helper DAMOS uses."""

from __future__ import annotations

import numpy as np
import pytest
from core_support import make_regions

from damon_agent.core import regions

PAGE = regions.MIN_REGION_SIZE


def test_split_region_children_inherit_the_state() -> None:
    target = make_regions(
        [(0, 4 * PAGE), (4 * PAGE, 8 * PAGE)],
        nr_accesses=[3, 9],
        age=[2, 4],
        last_nr_accesses=[1, 8],
    )
    regions.split_region(target, 1, 5 * PAGE)
    assert target.start.tolist() == [0, 4 * PAGE, 5 * PAGE]
    assert target.end.tolist() == [4 * PAGE, 5 * PAGE, 8 * PAGE]
    assert target.nr_accesses.tolist() == [3, 9, 9]
    assert target.age.tolist() == [2, 4, 4]
    assert target.last_nr_accesses.tolist() == [1, 8, 8]
    assert target.nr_accesses_bp.tolist() == [30_000, 90_000, 90_000]
    assert len(target.sampling_addr) == 3


@pytest.mark.parametrize("addr", [0, 4 * PAGE, 9 * PAGE])
def test_split_region_refuses_addresses_outside_the_region(addr: int) -> None:
    target = make_regions([(0, 4 * PAGE)])
    with pytest.raises(ValueError, match="not inside region"):
        regions.split_region(target, 0, addr)


def test_split_region_refuses_a_bad_index() -> None:
    with pytest.raises(IndexError):
        regions.split_region(make_regions([(0, 4 * PAGE)]), 3, PAGE)


def test_regions_built_without_counters_get_zeros() -> None:
    target = regions.TargetRegions(
        1, start=np.array([0, PAGE], np.int64), end=np.array([PAGE, 2 * PAGE], np.int64)
    )
    assert target.nr_accesses.tolist() == [0, 0]
    assert target.nr_accesses_bp.tolist() == [0, 0]
    assert target.sampling_addr.tolist() == [0, PAGE]
    assert target.total_size == 2 * PAGE
