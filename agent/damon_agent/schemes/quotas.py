"""Quotas: prioritization scores, the score threshold, and the effective size quota.

Scores (the kernel's ``damon_hot_score`` / ``damon_cold_score``), all integer arithmetic:

- frequency subscore = ``nr_accesses * 100 / max_nr_accesses`` (0..100)
- age in log = bit length of the age in seconds, capped at 32; negated when the
  frequency subscore is 0 (a long-idle region is colder, not hotter)
- age subscore = ``(age_in_log + 32) * 100 / 32 / 2`` (0..100)
- hot = ``(w_rate * freq + w_age * age_sub) / (w_rate + w_age)`` (0 when both weights are
  0), scaled to 0..99 by ``* 99 / 100``; cold = ``99 - hot``.

Actions that free or demote memory rank by coldness, promotions by hotness, the rest
give every region 99 (see ``model``).

Threshold: a size-weighted histogram of the scores of the regions in the access pattern;
walking down from the highest score, the first score at which the cumulated size reaches
the effective quota (or score 0) is the minimum score acted on this window.

Effective size (``damos_set_effective_quota``): with goals, the tuned size; with a time
quota, at most ``throughput * time`` where throughput is the bytes charged over the time
spent acting, since the start (4 MiB per ms before anything was measured); at most the
size quota. ``None`` means no limit, 0 means act on nothing this window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from damon_agent.core.regions import Int64Array
from damon_agent.schemes import model

MAX_SCORE = 99
MAX_SUBSCORE = 100
MAX_AGE_IN_LOG = 32
# Throughput assumed before any action was timed: PAGE_SIZE * 1024 bytes per millisecond.
INITIAL_THROUGHPUT_BYTES_PER_MS = 4096 * 1024


def _age_in_log(age_seconds: Int64Array) -> Int64Array:
    # Bit length capped at 32: count the powers of two not above the age.
    powers = np.left_shift(np.int64(1), np.arange(MAX_AGE_IN_LOG, dtype=np.int64))
    return (age_seconds[:, None] >= powers[None, :]).sum(axis=1).astype(np.int64)


def hot_scores(
    nr_accesses: Int64Array,
    ages: Int64Array,
    *,
    max_nr_accesses: int,
    aggr_us: int,
    weights: model.Weights,
) -> Int64Array:
    """Hotness of each region, 0..99."""
    freq = np.minimum(nr_accesses * MAX_SUBSCORE // max(1, max_nr_accesses), MAX_SUBSCORE)
    age_log = _age_in_log(ages * aggr_us // 1_000_000)
    age_log = np.where(freq == 0, -age_log, age_log) + MAX_AGE_IN_LOG
    age_sub = age_log * MAX_SUBSCORE // MAX_AGE_IN_LOG // 2
    hotness = weights.access_rate * freq + weights.age * age_sub
    if weights.access_rate + weights.age:
        hotness = hotness // (weights.access_rate + weights.age)
    return np.asarray(hotness * MAX_SCORE // MAX_SUBSCORE, dtype=np.int64)


def scores(
    action: str,
    nr_accesses: Int64Array,
    ages: Int64Array,
    *,
    max_nr_accesses: int,
    aggr_us: int,
    weights: model.Weights,
) -> Int64Array:
    """The score the action is prioritised by, per region (higher = acted on first)."""
    if action in model.COLD_FIRST_ACTIONS or action in model.HOT_FIRST_ACTIONS:
        hot = hot_scores(
            nr_accesses, ages, max_nr_accesses=max_nr_accesses, aggr_us=aggr_us, weights=weights
        )
        return hot if action in model.HOT_FIRST_ACTIONS else MAX_SCORE - hot
    return np.full(nr_accesses.shape, MAX_SCORE, dtype=np.int64)


def score_histogram(region_scores: Int64Array, sizes: Int64Array) -> Int64Array:
    """Bytes per score 0..99."""
    return np.bincount(region_scores, weights=sizes, minlength=MAX_SCORE + 1).astype(np.int64)


def min_score(histogram: Int64Array, effective_size: int) -> int:
    """Lowest score acted on: walking down from the highest score present, the first one at
    which the cumulated size reaches ``effective_size``, else 0."""
    present = np.flatnonzero(histogram)
    if present.size == 0:
        return 0
    cumulated = 0
    for score in range(int(present[-1]), -1, -1):
        cumulated += int(histogram[score])
        if cumulated >= effective_size:
            return score
    return 0


def effective_size(
    quota: model.Quota, tuned_bytes: int | None, total_charged_sz: int, total_charged_ns: int
) -> int | None:
    """The size quota for the next window; ``tuned_bytes`` is the goal tuner's output
    (``None`` when unlimited or without goals)."""
    if not quota.time_us and not quota.goals:
        return quota.size_bytes or None
    esz = tuned_bytes if quota.goals else None
    if quota.time_us:
        if total_charged_ns:
            by_time = total_charged_sz * quota.time_us * 1_000 // total_charged_ns
        else:
            by_time = INITIAL_THROUGHPUT_BYTES_PER_MS * quota.time_us // 1_000
        esz = by_time if esz is None else min(esz, by_time)
    if quota.size_bytes and (esz is None or quota.size_bytes < esz):
        esz = quota.size_bytes
    return esz


@dataclass
class QuotaState:
    """The charge window of one scheme.

    A window opens at the first apply and rolls over at the first apply at least
    ``reset_interval_us`` later (so windows start at apply times, as in the kernel). When
    the quota runs out within a window, ``resume_target`` / ``resume_addr`` remember where
    the last charged region ended, and the next window continues from there instead of
    starting over at the lowest address.
    """

    effective: int | None = None
    tuned_bp: int = 0
    charged_sz: int = 0
    charged_from_us: int | None = None
    total_charged_sz: int = 0
    total_charged_ns: int = 0
    min_score: int = 0
    resume_target: int | None = None
    resume_addr: int = 0
    resume_serial: int = 0
    """Counts resume points set, to tell a new one from an old one."""

    @property
    def exhausted(self) -> bool:
        return self.effective is not None and self.charged_sz >= self.effective

    def window_due(self, now_us: int, reset_interval_us: int) -> bool:
        """Whether a window opens now (the first one, or a rollover)."""
        return self.charged_from_us is None or now_us >= self.charged_from_us + reset_interval_us

    def roll(self, now_us: int) -> bool:
        """Close the current window (if any) and open one; True if the closed window ran out
        of quota (a ``qt_exceeds``)."""
        exceeded = False
        if self.charged_from_us is not None:
            exceeded = bool(self.effective) and self.charged_sz >= (self.effective or 0)
            self.total_charged_sz += self.charged_sz
        self.charged_from_us = now_us
        self.charged_sz = 0
        return exceeded

    def size_to_charge(self, region_size: int, min_region_bytes: int) -> int:
        """How much of a region fits in what is left of the quota, in whole minimum regions."""
        if self.effective is None or self.charged_sz + region_size <= self.effective:
            return region_size
        left = self.effective - self.charged_sz
        return left - left % min_region_bytes

    def charge(self, size: int, elapsed_ns: int, target_index: int, region_end: int) -> None:
        self.charged_sz += size
        self.total_charged_ns += max(0, elapsed_ns)
        if self.exhausted:
            self.resume_target = target_index
            self.resume_addr = region_end
            self.resume_serial += 1
