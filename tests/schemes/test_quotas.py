"""Scores, the histogram threshold and the effective size, pinned to exact numbers."""

from __future__ import annotations

import numpy as np
import pytest

from damon_agent.schemes import model, quotas

EQUAL = model.Weights(size=0, access_rate=1000, age=1000)


def _hot(nr: int, age: int, weights: model.Weights = EQUAL) -> int:
    # 20 samples per aggregation interval of 100 ms.
    result = quotas.hot_scores(
        np.array([nr], dtype=np.int64),
        np.array([age], dtype=np.int64),
        max_nr_accesses=20,
        aggr_us=100_000,
        weights=weights,
    )
    return int(result[0])


@pytest.mark.parametrize(
    ("nr", "age", "hot"),
    [
        # freq 50; age 5 s -> log 3 -> 35 -> 35*100/32/2 = 54; (50+54)/2 = 52; *99/100 = 51
        (10, 50, 51),
        # freq 0; age 60 s -> log 6, negated -> 26 -> 40; (0+40)/2 = 20 -> 19
        (0, 600, 19),
        # freq 0; age 0 -> log 0 -> 32 -> 50; 25 -> 24
        (0, 0, 24),
        # freq 100; age 0 -> 50; 75 -> 74
        (20, 0, 74),
        # freq 100; age 1 h = 3600 s -> log 12 -> 44 -> 68; 84 -> 83
        (20, 36_000, 83),
        # freq capped at 100 even when nr exceeds the maximum
        (25, 0, 74),
    ],
)
def test_hot_score_follows_the_kernel_formula(nr: int, age: int, hot: int) -> None:
    assert _hot(nr, age) == hot


def test_age_log_is_capped_at_32() -> None:
    # 2^40 s of age: log capped at 32 -> 64 -> 100; freq 100 -> 100 -> 99
    assert _hot(20, (1 << 40) * 10) == 99
    # freq 0 with huge age: -32 + 32 = 0 -> age subscore 0 -> hot 0 (coldest)
    assert _hot(0, (1 << 40) * 10) == 0


def test_weights_mix_the_subscores() -> None:
    only_freq = model.Weights(access_rate=1000, age=0)
    only_age = model.Weights(access_rate=0, age=1000)
    assert _hot(10, 50, only_freq) == 49  # 50 * 99 / 100
    assert _hot(10, 50, only_age) == 53  # 54 * 99 / 100
    assert _hot(10, 50, model.Weights(access_rate=3000, age=1000)) == 50  # (150+54)/4 = 51 -> 50
    assert _hot(10, 50, model.Weights(access_rate=0, age=0)) == 0


def test_cold_actions_rank_by_coldness_and_others_give_the_top_score() -> None:
    nr = np.array([10, 0], dtype=np.int64)
    age = np.array([50, 600], dtype=np.int64)
    kw = {"max_nr_accesses": 20, "aggr_us": 100_000, "weights": EQUAL}
    assert quotas.scores("pageout", nr, age, **kw).tolist() == [48, 80]
    assert quotas.scores("migrate_cold", nr, age, **kw).tolist() == [48, 80]
    assert quotas.scores("migrate_hot", nr, age, **kw).tolist() == [51, 19]
    assert quotas.scores("stat", nr, age, **kw).tolist() == [99, 99]
    assert quotas.scores("willneed", nr, age, **kw).tolist() == [99, 99]


def test_histogram_threshold_is_the_first_score_whose_cumulated_size_fits() -> None:
    scores = np.array([80, 75, 80, 10], dtype=np.int64)
    sizes = np.array([4096, 8192, 4096, 102_400], dtype=np.int64)
    hist = quotas.score_histogram(scores, sizes)
    assert hist[80] == 8192 and hist[75] == 8192 and hist[10] == 102_400
    assert quotas.min_score(hist, 8192) == 80  # the two 80s fill it exactly
    assert quotas.min_score(hist, 4096) == 80
    assert quotas.min_score(hist, 10_000) == 75  # 8 Ki at 80, 16 Ki at 75
    assert quotas.min_score(hist, 16_384) == 75
    assert quotas.min_score(hist, 16_385) == 10
    assert quotas.min_score(hist, 1 << 30) == 0  # never fills: everything
    assert quotas.min_score(np.zeros(100, dtype=np.int64), 1) == 0


def test_effective_size_without_goals_or_time_is_the_size_quota() -> None:
    assert quotas.effective_size(model.Quota(size_bytes=1 << 20), None, 0, 0) == 1 << 20
    assert quotas.effective_size(model.Quota(), None, 0, 0) is None


def test_time_quota_uses_initial_then_measured_throughput() -> None:
    quota = model.Quota(time_us=10_000)  # 10 ms
    # Nothing measured yet: 4 MiB per ms -> 40 MiB.
    assert quotas.effective_size(quota, None, 0, 0) == 40 << 20
    # 64 MiB charged in 32 ms of action time: 2 MiB/ms -> 20 MiB.
    assert quotas.effective_size(quota, None, 64 << 20, 32_000_000) == 20 << 20
    # The size quota caps it.
    capped = model.Quota(time_us=10_000, size_bytes=1 << 20)
    assert quotas.effective_size(capped, None, 64 << 20, 32_000_000) == 1 << 20


def test_goal_tuned_size_is_capped_by_time_and_size() -> None:
    goal = (model.QuotaGoal("user_input", 100),)
    assert quotas.effective_size(model.Quota(goals=goal), 12_345, 0, 0) == 12_345
    assert quotas.effective_size(model.Quota(goals=goal), None, 0, 0) is None
    both = model.Quota(goals=goal, time_us=1_000, size_bytes=8192)
    assert quotas.effective_size(both, 1 << 30, 0, 0) == 8192
    # Temporal tuner's "stop": 0 bytes, whatever the caps.
    assert quotas.effective_size(both, 0, 0, 0) == 0


def test_charge_window_counts_exceeds_and_remembers_where_to_resume() -> None:
    state = quotas.QuotaState()
    assert state.window_due(0, 1_000_000)
    assert state.roll(0) is False  # the first window closes nothing
    state.effective = 20 * 1024
    assert state.size_to_charge(16 * 1024, 4096) == 16 * 1024
    state.charge(16 * 1024, 100, target_index=0, region_end=0x10000 + 16 * 1024)
    assert not state.exhausted and state.resume_target is None
    # 4 Ki left: a 16 Ki region is cut to 4 Ki; a 6 Ki remainder rounds down to pages.
    assert state.size_to_charge(16 * 1024, 4096) == 4096
    state.charge(4096, 50, target_index=0, region_end=0x15000)
    assert state.exhausted
    assert (state.resume_target, state.resume_addr) == (0, 0x15000)
    assert state.total_charged_ns == 150
    assert not state.window_due(999_999, 1_000_000)
    assert state.window_due(1_000_000, 1_000_000)
    assert state.roll(1_000_000) is True  # used up: one qt_exceeds
    assert state.charged_sz == 0 and state.total_charged_sz == 20 * 1024
    assert state.roll(2_000_000) is False  # nothing charged in that window


def test_partial_page_left_is_not_charged() -> None:
    state = quotas.QuotaState(effective=4096 + 100, charged_sz=4096)
    assert state.size_to_charge(8192, 4096) == 0
