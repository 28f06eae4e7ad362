"""Goal scores, goal selection and both tuners, step by step."""

from __future__ import annotations

from schemes_support import Metrics

from damon_agent.schemes import model, tuners


def test_feed_loop_steps_exactly() -> None:
    # Under target: grow by the missing share (score 0 doubles).
    assert tuners.feed_loop_next_input(10_000, 0) == 20_000
    assert tuners.feed_loop_next_input(20_000, 5_000) == 30_000
    assert tuners.feed_loop_next_input(30_000, 9_000) == 33_000
    # On target: unchanged.
    assert tuners.feed_loop_next_input(33_000, 10_000) == 33_000
    # Over target: shrink by the excess share, floored at 10000.
    assert tuners.feed_loop_next_input(33_000, 12_000) == 26_400
    assert tuners.feed_loop_next_input(26_400, 19_999) == 10_000  # 26400 - 26397 -> floor
    assert tuners.feed_loop_next_input(1_000_000, 20_000) == 10_000  # twice the target: floor
    assert tuners.feed_loop_next_input(1_000_000, 15_000) == 500_000


def test_consist_tuner_starts_at_one_byte_and_doubles_while_idle() -> None:
    bp = 0
    sizes = []
    for _ in range(5):
        bp = tuners.consist_next_bp(bp, 0)
        sizes.append(tuners.tuned_bytes(bp))
    assert sizes == [2, 4, 8, 16, 32]
    # Then the metric overshoots by 50%: halve.
    bp = tuners.consist_next_bp(bp, 15_000)
    assert tuners.tuned_bytes(bp) == 16


def test_temporal_tuner_is_all_or_nothing() -> None:
    assert tuners.temporal_next_bp(9_999, 1 << 20) == (1 << 20) * 10_000
    assert tuners.tuned_bytes(tuners.temporal_next_bp(9_999, 0)) is None  # no limit
    assert tuners.temporal_next_bp(10_000, 1 << 20) == 0
    assert tuners.temporal_next_bp(30_000, 0) == 0
    assert tuners.tune("temporal", 123_456, 5_000, 4096) == 4096 * 10_000
    assert tuners.tune("consist", 20_000, 5_000, 4096) == 30_000


def test_goal_score_and_highest_score_wins() -> None:
    metrics = Metrics()
    metrics.set("node_mem_free_bp", 250, nid=0)  # 2.5% free, target 5% -> score 5000
    metrics.set("node_mem_used_bp", 9_000, nid=0)  # 90% used, target 60% -> score 15000
    free = tuners.GoalState(model.QuotaGoal("node_mem_free_bp", 500, nid=0))
    used = tuners.GoalState(model.QuotaGoal("node_mem_used_bp", 6_000, nid=0))
    user = tuners.GoalState(model.QuotaGoal("user_input", 400, initial_current=100))
    for goal in (free, used, user):
        goal.refresh(metrics)
    assert (free.score, used.score, user.score) == (5_000, 15_000, 2_500)
    assert tuners.quota_score([free, used, user]) == 15_000
    assert tuners.quota_score([free, user]) == 5_000
    assert tuners.quota_score([]) == 0
    assert metrics.reads == ["node_mem_free_bp", "node_mem_used_bp"]  # user_input is not read


def test_psi_goal_counts_the_stall_since_the_previous_tuning() -> None:
    metrics = Metrics()
    goal = tuners.GoalState(model.QuotaGoal("some_mem_psi_us", 1_000))
    metrics.set("some_mem_psi_us", 5_000_000)  # since boot: only a baseline
    goal.refresh(metrics)
    assert goal.current == 0
    metrics.set("some_mem_psi_us", 5_000_400)
    goal.refresh(metrics)
    assert (goal.current, goal.score) == (400, 4_000)
    metrics.set("some_mem_psi_us", 5_002_400)
    goal.refresh(metrics)
    assert (goal.current, goal.score) == (2_000, 20_000)


def test_unreadable_metric_keeps_the_last_value() -> None:
    metrics = Metrics()
    goal = tuners.GoalState(model.QuotaGoal("node_mem_free_bp", 500, nid=1))
    metrics.set("node_mem_free_bp", 700, nid=1)
    goal.refresh(metrics)
    metrics.values.clear()
    goal.refresh(metrics)
    assert goal.current == 700


def test_pod_psi_is_read_with_its_cgroup_path() -> None:
    metrics = Metrics()
    goal = tuners.GoalState(model.QuotaGoal("pod_mem_psi_us", 100, path="/kubepods/pod1"))
    metrics.set("pod_mem_psi_us", 10, path="/kubepods/pod1")
    goal.refresh(metrics)
    metrics.set("pod_mem_psi_us", 60, path="/kubepods/pod1")
    goal.refresh(metrics)
    assert goal.score == 5_000
