"""Splitting: when, in how many pieces, and where."""

from __future__ import annotations

import numpy as np
import pytest
from core_support import make_regions

from damon_agent.core import regions, splitting

PAGE = regions.MIN_REGION_SIZE


@pytest.mark.parametrize(
    ("count", "last", "maximum", "expected"),
    [
        (501, 501, 1000, 0),  # above max/2: no split at all
        (500, 100, 1000, 2),  # at max/2, count changed: two pieces
        (200, 200, 1000, 3),  # unchanged and below max/3: three pieces
        (333, 333, 1000, 2),  # unchanged but not below max/3 (333): two
        (332, 332, 1000, 3),
    ],
)
def test_number_of_pieces(count: int, last: int, maximum: int, expected: int) -> None:
    assert splitting.nr_subregions(count, last, maximum) == expected


def test_two_way_split_cuts_at_whole_tenths_aligned_to_pages() -> None:
    size = 1000 * PAGE
    target = make_regions(
        [(0, size), (size, 2 * size)], nr_accesses=[7, 3], age=[5, 2], last_nr_accesses=[6, 1]
    )
    tenths = np.random.default_rng(99).integers(1, 10, size=2, dtype=np.int64)
    splitting.split_regions_of(target, 2, np.random.default_rng(99))
    cuts = [int(t) * size // 10 // PAGE * PAGE for t in tenths]
    assert target.start.tolist() == [0, cuts[0], size, size + cuts[1]]
    assert target.end.tolist() == [cuts[0], size, size + cuts[1], 2 * size]
    # Children inherit the parent's counters.
    assert target.nr_accesses.tolist() == [7, 7, 3, 3]
    assert target.age.tolist() == [5, 5, 2, 2]
    assert target.last_nr_accesses.tolist() == [6, 6, 1, 1]


def test_three_way_split_cuts_the_left_piece_again() -> None:
    size = 1000 * PAGE
    target = make_regions([(0, size)])
    draws = np.random.default_rng(5)
    first = int(draws.integers(1, 10, size=1, dtype=np.int64)[0])
    second = int(draws.integers(1, 10, size=1, dtype=np.int64)[0])
    splitting.split_regions_of(target, 3, np.random.default_rng(5))
    left = first * size // 10 // PAGE * PAGE
    inner = second * left // 10 // PAGE * PAGE
    assert target.start.tolist() == [0, inner, left]
    assert target.end.tolist() == [inner, left, size]


def test_pieces_stay_between_ten_and_ninety_percent() -> None:
    size = 10_000 * PAGE
    bounds = [(i * size, (i + 1) * size) for i in range(200)]
    target = make_regions(bounds)
    splitting.split_regions_of(target, 2, np.random.default_rng(0))
    left_sizes = target.sizes[0::2]
    assert len(target) == 400
    assert left_sizes.min() >= size // 10
    assert left_sizes.max() <= size * 9 // 10


def test_regions_of_two_pages_or_less_are_not_split() -> None:
    target = make_regions([(0, 2 * PAGE), (2 * PAGE, 3 * PAGE), (3 * PAGE, 13 * PAGE)])
    splitting.split_regions_of(target, 3, np.random.default_rng(0))
    assert target.start.tolist()[:2] == [0, 2 * PAGE]
    assert len(target) > 3  # the 10-page region was split
    assert target.total_size == 13 * PAGE


def test_split_keeps_gaps_between_regions() -> None:
    target = make_regions([(0, 100 * PAGE), (500 * PAGE, 600 * PAGE)])
    splitting.split_regions_of(target, 2, np.random.default_rng(3))
    assert target.end.tolist()[1] == 100 * PAGE
    assert target.start.tolist()[2] == 500 * PAGE
    assert target.total_size == 200 * PAGE


def test_split_regions_remembers_the_count_only_when_it_splits() -> None:
    target = make_regions([(i * 100 * PAGE, (i + 1) * 100 * PAGE) for i in range(6)])
    remembered = splitting.split_regions([target], 6, 10, np.random.default_rng(0))
    assert remembered == 6  # count 6 > 10/2: skipped, last stays
    assert len(target) == 6
    remembered = splitting.split_regions([target], 0, 12, np.random.default_rng(0))
    assert remembered == 6
    assert len(target) == 12
