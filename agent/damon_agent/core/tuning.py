"""Intervals auto-tuning (kernel 6.15): steer the sampling interval toward an access goal.

Every ``intervals_goal.aggrs`` aggregations, the monitor compares the access events it
observed in the closing aggregation interval (sum over regions of size * nr_accesses) with
the goal (``access_bp`` of all possible events, size * samples per aggregation). The
score (observed / goal, in basis points) drives the kernel's proportional feedback loop
``damon_feed_loop_next_input``; the resulting factor scales the sampling interval:

- too few accesses seen (score < 10000): the interval grows, up to 2x per step;
- too many (score > 10000): it shrinks, down to 0.5x per step (the kernel rescales the
  shrinking side into [0.5, 1] to avoid collapsing);

kept within [min_sample_us, max_sample_us]. The aggregation interval keeps its number of
samples, so the access counts stay comparable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from damon_agent.core import attrs as attrs_module
from damon_agent.core import regions

FEEDBACK_GOAL = 10_000
_FEEDBACK_MIN_INPUT = 10_000
_ADAPTATION_BASE_INPUT = 100_000_000


def feed_loop_next_input(last_input: int, score: int) -> int:
    """The kernel's proportional feedback step toward a score of 10000.

    next = last * (1 + (goal - score) / goal), at least 10000; a score of twice the goal or
    more drops straight to the minimum.
    """
    if score == FEEDBACK_GOAL:
        return last_input
    if score >= FEEDBACK_GOAL * 2:
        return _FEEDBACK_MIN_INPUT
    compensation = last_input * abs(FEEDBACK_GOAL - score) // FEEDBACK_GOAL
    if score > FEEDBACK_GOAL:
        return max(last_input - compensation, _FEEDBACK_MIN_INPUT)
    return last_input + compensation


def intervals_score_bp(
    targets: Sequence[regions.TargetRegions], aggr_samples: int, access_bp: int
) -> int:
    """Observed access events as a share of the goal's events, in basis points."""
    access_events = 0
    max_events = 0
    for target in targets:
        sizes = target.sizes
        access_events += int((sizes * target.nr_accesses).sum())
        max_events += int(sizes.sum()) * aggr_samples
    goal_events = max(1, max_events * access_bp // 10_000)
    return access_events * 10_000 // goal_events


def adaptation_bp(score_bp: int) -> int:
    """Factor (in basis points) to scale the sampling interval by."""
    factor = feed_loop_next_input(_ADAPTATION_BASE_INPUT, score_bp) // 10_000
    if factor <= 10_000:
        factor = 5_000 + factor // 2
    return factor


def tuned_attrs(
    current: attrs_module.MonitoringAttrs,
    targets: Sequence[regions.TargetRegions],
    aggr_samples: int,
) -> attrs_module.MonitoringAttrs:
    """The attributes after one tuning step (the same object when nothing changes)."""
    goal = current.intervals_goal
    if goal is None:
        return current
    factor = adaptation_bp(intervals_score_bp(targets, aggr_samples, goal.access_bp))
    if factor == 10_000:
        return current
    sample_us = current.sample_us * factor // 10_000
    sample_us = max(goal.min_sample_us, min(goal.max_sample_us, sample_us))
    return dataclasses.replace(current, sample_us=sample_us, aggr_us=sample_us * aggr_samples)
