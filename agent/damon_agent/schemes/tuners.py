"""Quota goals and the goal tuners.

Each goal's score is ``current * 10000 / target`` (10000: on target). With several goals
the highest score wins: it is the goal closest to being over-achieved, so following it
makes the scheme least aggressive.

``consist`` (the kernel's default, ``damon_feed_loop_next_input``): a proportional
feedback on the effective size in basis points of a byte (``esz_bp``), floored at 10000
(one byte) so that it can always grow again::

    score == 10000:  unchanged
    score >= 20000:  10000 (the floor)
    score <  10000:  esz_bp + esz_bp * (10000 - score) / 10000   (grows, at most x2)
    score >  10000:  max(esz_bp - esz_bp * (score - 10000) / 10000, 10000)

``temporal``: on/off: 0 bytes once the goal is reached (score >= 10000), otherwise the
size quota (or no limit without one) until it is.

Current values: ``*_psi_us`` metrics are cumulative stall times, so the current value is
the stall added since the previous tuning (one reset interval); the first reading is a
baseline (current 0), where the kernel would count the whole stall since boot. The
``*_bp`` metrics are read as they are. ``user_input`` is whatever the agent last set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from damon_agent.schemes import errors, model

GOAL_SCORE = 10_000
MIN_INPUT_BP = 10_000
MAX_INPUT_BP = model.UNBOUNDED
CUMULATIVE_METRICS = frozenset({"some_mem_psi_us", "pod_mem_psi_us"})


class MetricSource(Protocol):
    """Reads node metrics for goals and watermarks.

    ``some_mem_psi_us`` / ``pod_mem_psi_us``: cumulative "some" memory stall (us) of the
    node / of the cgroup ``path``; ``node_mem_used_bp`` / ``node_mem_free_bp``: of NUMA
    node ``nid``; ``node_memcg_*_bp``: of cgroup ``path`` on node ``nid``;
    ``active_mem_bp`` / ``inactive_mem_bp``; ``free_mem_rate``: free memory per thousand.
    Raise ``errors.MetricUnavailableError`` when a metric cannot be read.
    """

    def read(self, metric: str, *, nid: int | None = None, path: str | None = None) -> int: ...


def feed_loop_next_input(last_input: int, score: int) -> int:
    """The kernel's proportional feedback step (see the module docstring)."""
    if score == GOAL_SCORE:
        return last_input
    if score >= GOAL_SCORE * 2:
        return MIN_INPUT_BP
    over_achieving = score > GOAL_SCORE
    diff = score - GOAL_SCORE if over_achieving else GOAL_SCORE - score
    compensation = last_input * diff // GOAL_SCORE
    if over_achieving:
        return max(last_input - compensation, MIN_INPUT_BP)
    return min(last_input + compensation, MAX_INPUT_BP)


def consist_next_bp(esz_bp: int, score: int) -> int:
    return feed_loop_next_input(max(esz_bp, MIN_INPUT_BP), score)


def temporal_next_bp(score: int, size_quota_bytes: int) -> int:
    if score >= GOAL_SCORE:
        return 0
    if size_quota_bytes:
        return size_quota_bytes * 10_000
    return MAX_INPUT_BP


def goal_score(current: int, target: int) -> int:
    return current * GOAL_SCORE // max(1, target)


@dataclass
class GoalState:
    """A goal and its latest current value."""

    goal: model.QuotaGoal
    current: int = 0
    last_total: int | None = None

    def __post_init__(self) -> None:
        self.current = self.goal.initial_current

    def refresh(self, metrics: MetricSource) -> None:
        """Read the metric (not for user_input); keep the last value if it cannot be read."""
        if self.goal.metric == "user_input":
            return
        try:
            value = metrics.read(self.goal.metric, nid=self.goal.nid, path=self.goal.path)
        except errors.MetricUnavailableError:
            return
        if self.goal.metric in CUMULATIVE_METRICS:
            self.current = 0 if self.last_total is None else max(0, value - self.last_total)
            self.last_total = value
        else:
            self.current = value

    @property
    def score(self) -> int:
        return goal_score(self.current, self.goal.target)


def quota_score(goals: list[GoalState]) -> int:
    """The highest score among the goals (0 without goals)."""
    return max((g.score for g in goals), default=0)


def tune(tuner: str, esz_bp: int, score: int, size_quota_bytes: int) -> int:
    """The next ``esz_bp`` of a quota with goals."""
    if tuner == "temporal":
        return temporal_next_bp(score, size_quota_bytes)
    return consist_next_bp(esz_bp, score)


def tuned_bytes(esz_bp: int) -> int | None:
    """Bytes of an ``esz_bp``; ``None`` (no limit) at the top of the range."""
    return None if esz_bp >= MAX_INPUT_BP else esz_bp // 10_000
