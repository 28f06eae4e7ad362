"""Aging, merging and reset: each kernel rule pinned with exact numbers."""

from __future__ import annotations

import numpy as np
from core_support import make_regions

from damon_agent.core import aggregation, regions

PAGE = regions.MIN_REGION_SIZE


def bounds_of(target: regions.TargetRegions) -> list[tuple[int, int]]:
    return list(zip(target.start.tolist(), target.end.tolist(), strict=True))


def test_threshold_is_a_tenth_of_the_highest_count() -> None:
    assert aggregation.merge_threshold(25) == 2
    assert aggregation.merge_threshold(9) == 0
    assert aggregation.merge_threshold(20) == 2


def test_age_grows_when_the_count_stays_within_the_threshold() -> None:
    target = make_regions(
        [(0, PAGE), (PAGE, 2 * PAGE), (2 * PAGE, 3 * PAGE), (3 * PAGE, 4 * PAGE)],
        nr_accesses=[5, 0, 9, 3],
        last_nr_accesses=[6, 0, 5, 3],
        age=[7, 4, 9, 0],
    )
    aggregation.update_ages(target, threshold=2)
    # 5 vs 6: within 2 -> 8; 0 vs 0 -> 5; 9 vs 5: moved by 4 -> 0; 3 vs 3 -> 1.
    assert target.age.tolist() == [8, 5, 0, 1]


def test_age_restarts_between_zero_and_non_zero_even_within_the_threshold() -> None:
    target = make_regions(
        [(0, PAGE), (PAGE, 2 * PAGE)],
        nr_accesses=[1, 0],
        last_nr_accesses=[0, 1],
        age=[10, 10],
    )
    aggregation.update_ages(target, threshold=2)
    assert target.age.tolist() == [0, 0]


def test_adjacent_similar_regions_merge_with_size_weighted_averages() -> None:
    target = make_regions(
        [(0, PAGE), (PAGE, 3 * PAGE), (3 * PAGE, 4 * PAGE)],
        nr_accesses=[10, 11, 20],
        age=[3, 9, 1],
    )
    aggregation.merge_regions_of(target, threshold=2, size_limit=100 * PAGE)
    assert bounds_of(target) == [(0, 3 * PAGE), (3 * PAGE, 4 * PAGE)]
    # (10*1 + 11*2) / 3 = 10.67 -> 10; age (3*1 + 9*2) / 3 = 7.
    assert target.nr_accesses.tolist() == [10, 20]
    assert target.age.tolist() == [7, 1]
    assert target.nr_accesses_bp.tolist()[0] == 100_000


def test_merge_compares_with_the_already_merged_left_neighbour() -> None:
    target = make_regions(
        [(0, PAGE), (PAGE, 2 * PAGE), (2 * PAGE, 3 * PAGE)], nr_accesses=[10, 12, 14]
    )
    aggregation.merge_regions_of(target, threshold=2, size_limit=100 * PAGE)
    # 10 and 12 merge into 11; 11 vs 14 is 3 apart, so 14 stays alone (12 vs 14 would merge).
    assert bounds_of(target) == [(0, 2 * PAGE), (2 * PAGE, 3 * PAGE)]
    assert target.nr_accesses.tolist() == [11, 14]


def test_merge_needs_touching_regions() -> None:
    target = make_regions([(0, PAGE), (2 * PAGE, 3 * PAGE)], nr_accesses=[5, 5])
    aggregation.merge_regions_of(target, threshold=0, size_limit=100 * PAGE)
    assert len(target) == 2


def test_merge_respects_the_size_limit() -> None:
    target = make_regions(
        [(0, PAGE), (PAGE, 3 * PAGE), (3 * PAGE, 4 * PAGE)], nr_accesses=[5, 5, 5]
    )
    aggregation.merge_regions_of(target, threshold=0, size_limit=3 * PAGE)
    # 1 + 2 pages = 3 pages fits; adding the third page would make 4 > 3.
    assert bounds_of(target) == [(0, 3 * PAGE), (3 * PAGE, 4 * PAGE)]


def test_threshold_doubles_until_the_region_count_fits() -> None:
    bounds = [(i * PAGE, (i + 1) * PAGE) for i in range(8)]
    target = make_regions(bounds, nr_accesses=[0, 4] * 4)
    used = aggregation.merge_regions(
        [target], threshold=0, size_limit=100 * PAGE, max_nr_regions=3, max_threshold=20
    )
    # Thresholds 0, 1, 2 cannot merge 0 with 4; 4 can: everything becomes one region.
    assert used == 4
    assert len(target) == 1
    # The running integer average truncates at every step, as the kernel's does:
    # 0|4 -> 2, |0 -> 1, |4 -> 1, |0 -> 0, |4 -> 0, ... -> 0 (not the exact mean 2).
    assert target.nr_accesses.tolist() == [0]


def test_threshold_doubling_stops_at_the_largest_possible_count() -> None:
    bounds = [(i * PAGE, (i + 1) * PAGE) for i in range(8)]
    target = make_regions(bounds, nr_accesses=[0, 20] * 4)
    # The size limit forbids every merge: the loop must end anyway.
    used = aggregation.merge_regions(
        [target], threshold=0, size_limit=PAGE, max_nr_regions=3, max_threshold=20
    )
    assert len(target) == 8
    # 0, 1, 2, 4, 8, 16, then one last pass at 32 (the first threshold whose half
    # reaches the maximum), as the kernel makes sure the largest threshold is tried.
    assert used == 32


def test_ages_are_updated_once_per_aggregation_even_with_several_passes() -> None:
    bounds = [(i * PAGE, (i + 1) * PAGE) for i in range(4)]
    target = make_regions(bounds, nr_accesses=[0, 4, 0, 4], last_nr_accesses=[0, 4, 0, 4])
    aggregation.merge_regions(
        [target], threshold=0, size_limit=PAGE, max_nr_regions=1, max_threshold=20
    )
    assert target.age.tolist() == [1, 1, 1, 1]


def test_reset_keeps_the_count_as_the_last_one() -> None:
    target = make_regions([(0, PAGE), (PAGE, 2 * PAGE)], nr_accesses=[3, 0])
    aggregation.reset_aggregated(target)
    assert target.last_nr_accesses.tolist() == [3, 0]
    assert target.nr_accesses.tolist() == [0, 0]
    assert target.nr_accesses_bp.tolist() == [30_000, 0]
    assert target.nr_accesses.dtype == np.int64
