"""From mapped ranges to regions: the two-biggest-gaps rule, initial split, ops update."""

from __future__ import annotations

import pytest
from core_support import make_regions

from damon_agent.core import errors, regions, vaddr_layout

PAGE = regions.MIN_REGION_SIZE


def pages(*bounds: tuple[int, int]) -> list[tuple[int, int]]:
    return [(s * PAGE, e * PAGE) for s, e in bounds]


def test_two_biggest_gaps_are_left_out() -> None:
    ranges = pages((0, 10), (20, 30), (1000, 1010), (5000, 5010), (5020, 5030))
    # Gaps: 10, 970, 3990, 10 pages: the 970 and 3990 page gaps go.
    assert vaddr_layout.leave_out_two_biggest_gaps(ranges) == pages(
        (0, 30), (1000, 1010), (5000, 5030)
    )


def test_equal_gaps_leave_out_the_lowest_ones() -> None:
    ranges = pages((0, 1), (11, 12), (22, 23), (33, 34))
    assert vaddr_layout.leave_out_two_biggest_gaps(ranges) == pages((0, 1), (11, 12), (22, 34))


def test_three_ranges_or_fewer_are_kept_and_touching_ones_join() -> None:
    assert vaddr_layout.leave_out_two_biggest_gaps(pages((0, 5), (9, 10))) == pages((0, 5), (9, 10))
    assert vaddr_layout.leave_out_two_biggest_gaps(pages((0, 5), (5, 10), (20, 30))) == pages(
        (0, 10), (20, 30)
    )


def test_ranges_are_page_aligned_outward() -> None:
    assert vaddr_layout.normalize_ranges([(100, PAGE + 1)]) == [(0, 2 * PAGE)]


@pytest.mark.parametrize(
    ("ranges", "index"),
    [
        ([(0, PAGE), (PAGE // 2, 3 * PAGE)], 1),  # overlap
        ([(4 * PAGE, 5 * PAGE), (0, PAGE)], 1),  # unsorted
        ([(0, PAGE), (2 * PAGE, 2 * PAGE)], 1),  # empty
    ],
)
def test_bad_ranges_are_refused_naming_the_range(ranges: list[tuple[int, int]], index: int) -> None:
    with pytest.raises(errors.InvalidLayoutError, match=rf"ranges\[{index}\]"):
        vaddr_layout.normalize_ranges(ranges)


def test_initial_regions_split_evenly_into_min_nr_regions() -> None:
    target = vaddr_layout.initial_regions(7, [(0, 1000 * PAGE)], 10)
    assert target.target_id == 7
    assert len(target) == 10
    assert target.sizes.tolist() == [100 * PAGE] * 10
    assert target.nr_accesses.tolist() == [0] * 10


def test_initial_regions_cover_every_range_and_respect_the_size_limit() -> None:
    ranges = pages((0, 950), (2000, 2030), (9000, 9020))
    target = vaddr_layout.initial_regions(0, ranges, 10)
    limit = vaddr_layout.region_size_limit(1000 * PAGE, 10)
    assert target.total_size == 1000 * PAGE
    assert int(target.sizes.max()) <= limit
    assert len(target) >= 10
    assert target.start.tolist()[0] == 0
    assert target.end.tolist()[-1] == 9020 * PAGE


def test_region_size_limit_is_total_over_min_regions_at_least_a_page() -> None:
    assert vaddr_layout.region_size_limit(1000 * PAGE, 10) == 100 * PAGE
    assert vaddr_layout.region_size_limit(5 * PAGE, 10) == PAGE


def test_split_to_size_limit() -> None:
    target = make_regions([(0, 10 * PAGE), (10 * PAGE, 12 * PAGE)], nr_accesses=[4, 9])
    vaddr_layout.split_to_size_limit(target, 4 * PAGE)
    assert target.sizes.tolist() == [4 * PAGE, 4 * PAGE, 2 * PAGE, 2 * PAGE]
    assert target.nr_accesses.tolist() == [4, 4, 4, 9]


def test_fit_keeps_state_of_overlapping_regions_and_fills_holes() -> None:
    target = make_regions(
        pages((0, 10), (10, 20), (30, 40), (100, 110)), nr_accesses=[1, 2, 3, 4], age=[5, 6, 7, 8]
    )
    vaddr_layout.fit_regions_to_ranges(target, pages((5, 50), (200, 210)))
    # [0,10) is clipped to start at 5; [10,20) kept; hole [20,30) new; [30,40) stretched to
    # 50; [100,110) overlaps nothing and goes; [200,210) is new.
    assert list(zip(target.start.tolist(), target.end.tolist(), strict=True)) == pages(
        (5, 10), (10, 20), (20, 30), (30, 50), (200, 210)
    )
    assert target.nr_accesses.tolist() == [1, 2, 0, 3, 0]
    assert target.age.tolist() == [5, 6, 0, 7, 0]


def test_fit_cuts_a_region_that_spans_two_new_ranges() -> None:
    target = make_regions(pages((0, 100)), nr_accesses=[3])
    vaddr_layout.fit_regions_to_ranges(target, pages((10, 20), (50, 60)))
    assert list(zip(target.start.tolist(), target.end.tolist(), strict=True)) == pages(
        (10, 20), (50, 60)
    )
    assert target.nr_accesses.tolist() == [3, 3]
