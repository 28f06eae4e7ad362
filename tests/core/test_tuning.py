"""Intervals auto-tuning: the feedback loop and the direction it moves the intervals."""

from __future__ import annotations

from core_support import make_regions

from damon_agent.core import attrs, regions, tuning

PAGE = regions.MIN_REGION_SIZE


def test_feedback_loop_steps() -> None:
    assert tuning.feed_loop_next_input(100_000, 10_000) == 100_000
    assert tuning.feed_loop_next_input(100_000, 0) == 200_000
    assert tuning.feed_loop_next_input(100_000, 5_000) == 150_000
    assert tuning.feed_loop_next_input(100_000, 15_000) == 50_000
    assert tuning.feed_loop_next_input(100_000, 20_000) == 10_000
    assert tuning.feed_loop_next_input(12_000, 19_000) == 10_000  # floored at the minimum


def test_adaptation_factor_is_between_half_and_double() -> None:
    assert tuning.adaptation_bp(0) == 20_000
    assert tuning.adaptation_bp(5_000) == 15_000
    assert tuning.adaptation_bp(10_000) == 10_000
    # Shrinking is rescaled from [0, 1] into [0.5, 1]: 15000 -> 0.5 -> 0.75.
    assert tuning.adaptation_bp(15_000) == 7_500
    assert tuning.adaptation_bp(40_000) == 5_000


def test_score_counts_size_weighted_access_events() -> None:
    target = make_regions([(0, PAGE), (PAGE, 4 * PAGE)], nr_accesses=[20, 0])
    # Events in bytes: 4096 * 20 = 81920; possible: 16384 * 20 = 327680; the goal is 4% of
    # that, 13107 (integer division); 81920 / 13107 = 6.25 -> 62500 bp.
    assert tuning.intervals_score_bp([target], 20, 400) == 62_500


def _goal_attrs() -> attrs.MonitoringAttrs:
    goal = attrs.IntervalsGoal(access_bp=400, aggrs=3, min_sample_us=1_000, max_sample_us=50_000)
    return attrs.MonitoringAttrs(sample_us=5_000, aggr_us=100_000, intervals_goal=goal)


def test_too_few_accesses_lengthen_the_intervals() -> None:
    target = make_regions([(0, 100 * PAGE)], nr_accesses=[0])
    tuned = tuning.tuned_attrs(_goal_attrs(), [target], 20)
    assert tuned.sample_us == 10_000
    assert tuned.aggr_us == 200_000  # keeps 20 samples per aggregation


def test_too_many_accesses_shorten_the_intervals() -> None:
    target = make_regions([(0, 100 * PAGE)], nr_accesses=[20])
    tuned = tuning.tuned_attrs(_goal_attrs(), [target], 20)
    assert tuned.sample_us == 2_500
    assert tuned.aggr_us == 50_000


def test_tuned_interval_stays_within_bounds() -> None:
    target = make_regions([(0, 100 * PAGE)], nr_accesses=[20])
    low = attrs.MonitoringAttrs(
        sample_us=1_200, aggr_us=24_000, intervals_goal=_goal_attrs().intervals_goal
    )
    assert tuning.tuned_attrs(low, [target], 20).sample_us == 1_000
    idle = make_regions([(0, 100 * PAGE)], nr_accesses=[0])
    high = attrs.MonitoringAttrs(
        sample_us=40_000, aggr_us=800_000, intervals_goal=_goal_attrs().intervals_goal
    )
    assert tuning.tuned_attrs(high, [idle], 20).sample_us == 50_000


def test_on_goal_nothing_changes() -> None:
    # 4% of 25 pages * 20 samples = 20 page-samples: one page seen 20 times.
    target = make_regions([(0, PAGE), (PAGE, 25 * PAGE)], nr_accesses=[20, 0])
    current = _goal_attrs()
    assert tuning.tuned_attrs(current, [target], 20) is current
