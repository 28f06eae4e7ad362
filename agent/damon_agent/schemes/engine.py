"""The DAMOS engine: applies schemes to the monitor's regions (``core.interfaces.SchemesHook``).

Per sampling interval the monitor calls ``apply`` (after the aggregation's merge, before
the reset), as the kernel's ``kdamond_apply_schemes``:

1. watermarks: each scheme's state is checked at its own interval (``watermarks``);
2. schemes whose apply interval came (counted in sampling intervals, like the kernel, so
   that applies line up with aggregations) and that are on take part;
3. quota: a charge window opens or rolls over (goals tuned, effective size set), and the
   score threshold is computed from the size-weighted histogram (``quotas``);
4. region walk: for each region, for each taking-part scheme: skip if the quota is used up
   or the region was charged in the previous window (the window resumes where the last
   one stopped); skip unless the region is in the access pattern and at or above the
   score threshold; split off what fits in the remaining quota; core filters (which may
   split too); then the operations act, the time and bytes are charged, the stats counted
   and, for every action but ``stat``, the region's age reset to 0.

The access rate compared with the patterns is the monitor's moving sum
``nr_accesses_bp // 10000`` (what the kernel's ``__damos_valid_target`` reads); at an
aggregation boundary it is the aggregated ``nr_accesses``.

Operations: ``apply_action`` of ``core.interfaces.ActionOperations``. Schemes with
ops-layer filters (anon, memcg, young, ...) need operations that also implement
``FilteringOperations.apply_action_filtered``; the engine refuses them otherwise
(``errors.SchemeConfigError``). ``stat`` does not call the operations unless
ops-layer filters are set (to count ``sz_ops_filter_passed``).

Action time for the time quota is measured with the injected ``action_timer_ns`` (the
process's monotonic clock by default; a fake one makes simulations reproducible).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from damon_agent.core import interfaces, regions
from damon_agent.schemes import errors, filters, model, patterns, quotas, stats, tuners
from damon_agent.schemes import watermarks as wmarks

if TYPE_CHECKING:
    from damon_agent.core.monitor import Monitor

DEFAULT_TIER_NIDS: Mapping[str, int] = {"dram": 0, "cxl": 1}
MAX_TRIED_REGIONS = 10_000


@dataclass(frozen=True)
class FilteredResult:
    applied_bytes: int
    filter_passed_bytes: int


@dataclass(frozen=True)
class GoalNow:
    """A quota goal and its latest current value (in the metric's unit)."""

    metric: str
    target: int
    current: int


@dataclass(frozen=True)
class QuotaNow:
    """A scheme's quota in the current charge window."""

    effective: int | None  # bytes; None: no size limit
    goals: tuple[GoalNow, ...] = ()


@runtime_checkable
class FilteringOperations(Protocol):
    def apply_action_filtered(
        self,
        target_id: int,
        start: int,
        end: int,
        action: str,
        target_nid: int | None,
        *,
        ops_filters: Sequence[model.Filter],
    ) -> FilteredResult:
        """Apply ``action`` to the pages of [start, end) the ops filters let through
        (evaluated in order; past the last, the default of the last filter's kind)."""
        ...


@dataclass
class _SchemeRun:
    """A scheme and everything the engine keeps for it between applies."""

    scheme: model.Scheme
    target_nid: int | None
    stats: stats.SchemeStats
    quota: quotas.QuotaState = field(default_factory=quotas.QuotaState)
    goals: list[tuners.GoalState] = field(default_factory=list)
    watermarks: wmarks.WatermarkState = field(default_factory=wmarks.WatermarkState)
    next_apply_sis: int | None = None


def _interval_samples(scheme: model.Scheme, sample_us: int, aggr_samples: int) -> int:
    if scheme.apply_interval_us == 0:
        return aggr_samples
    return max(1, scheme.apply_interval_us // max(1, sample_us))


class SchemesEngine:
    """Applies DAMOS schemes through an operations set; see the module docstring."""

    def __init__(
        self,
        schemes: Sequence[model.Scheme],
        ops: interfaces.ActionOperations,
        metrics: tuners.MetricSource,
        *,
        tier_nids: Mapping[str, int] = DEFAULT_TIER_NIDS,
        min_region_bytes: int = regions.MIN_REGION_SIZE,
        action_timer_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._ops = ops
        self._metrics = metrics
        self._min_region = min_region_bytes
        self._timer = action_timer_ns
        names = [s.name for s in schemes]
        if len(set(names)) != len(names):
            raise errors.SchemeConfigError(f"scheme names must be unique, got {names}")
        self._runs = [self._prepare(s, tier_nids) for s in schemes]

    def _prepare(self, scheme: model.Scheme, tier_nids: Mapping[str, int]) -> _SchemeRun:
        nid = scheme.target_nid
        if scheme.action in model.MIGRATION_ACTIONS and nid is None:
            if scheme.tier is None or scheme.tier not in tier_nids:
                raise errors.SchemeConfigError(
                    f"scheme {scheme.name}: {scheme.action} needs targetNid or a tier of "
                    f"{sorted(tier_nids)}, got {scheme.tier!r}"
                )
            nid = tier_nids[scheme.tier]
        if scheme.fill is not None:
            # Run directly, the engine has one DRAM node: the tiers' (``model.Fill``).
            if "dram" not in tier_nids:
                raise errors.SchemeConfigError(
                    f"scheme {scheme.name}: fill needs a dram tier, got {sorted(tier_nids)}"
                )
            scheme = model.with_fill_goals(scheme, (tier_nids["dram"],))
        if scheme.ops_filters and not isinstance(self._ops, FilteringOperations):
            raise errors.SchemeConfigError(
                f"scheme {scheme.name}: filter {scheme.ops_filters[0].type!r} is evaluated "
                f"by the operations set, and {type(self._ops).__name__} cannot"
            )
        goals = list(scheme.quota.goals) if scheme.quota else []
        return _SchemeRun(
            scheme=scheme,
            target_nid=nid,
            stats=stats.SchemeStats(name=scheme.name, action=scheme.action),
            goals=[tuners.GoalState(g) for g in goals],
        )

    # -- SchemesHook ---------------------------------------------------------------------

    def wants_monitoring(self, now_us: int) -> bool:
        """False only when every scheme is switched off by its watermarks."""
        self._update_watermarks(now_us)
        return not self._runs or any(run.watermarks.activated for run in self._runs)

    def apply(self, monitor: Monitor, now_us: int) -> None:
        self._update_watermarks(now_us)
        passed = monitor.passed_sample_intervals
        sample_us = monitor.attrs.sample_us
        due: list[_SchemeRun] = []
        for run in self._runs:
            every = _interval_samples(run.scheme, sample_us, monitor.aggr_samples)
            if run.next_apply_sis is None:
                # As if set when monitoring started (the monitor counts from 0), so that
                # applies meet aggregations: the first multiple of the interval from now.
                run.next_apply_sis = max(every, -(-passed // every) * every)
            if passed >= run.next_apply_sis:
                due.append(run)
        taking_part = [run for run in due if run.watermarks.activated]
        for run in taking_part:
            run.stats.nr_applies += 1
            run.stats.tried_regions = []
            self._adjust_quota(run, monitor, now_us)
        if taking_part:
            self._walk(taking_part, monitor)
        for run in due:
            run.next_apply_sis = passed + _interval_samples(
                run.scheme, sample_us, monitor.aggr_samples
            )

    # -- results -------------------------------------------------------------------------

    def stats(self) -> list[stats.SchemeStats]:
        """A copy of every scheme's stats, in scheme order."""
        result = []
        for run in self._runs:
            snapshot = run.stats.copy()
            snapshot.activated = run.watermarks.activated
            snapshot.effective_quota = run.quota.effective
            result.append(snapshot)
        return result

    def effective_quotas(self) -> dict[str, int | None]:
        """Scheme name -> effective size quota of the current window (None: no limit)."""
        return {run.scheme.name: run.quota.effective for run in self._runs}

    def quotas(self) -> dict[str, QuotaNow]:
        """Scheme name -> its quota now, for the schemes whose quota limits anything."""
        return {
            run.scheme.name: QuotaNow(
                effective=run.quota.effective,
                goals=tuple(GoalNow(g.goal.metric, g.goal.target, g.current) for g in run.goals),
            )
            for run in self._runs
            if run.scheme.quota is not None and run.scheme.quota.limits
        }

    def set_user_input(self, scheme_name: str, value: int, goal_index: int = 0) -> None:
        """Feed the current value of a ``user_input`` goal (used from the next tuning)."""
        for run in self._runs:
            if run.scheme.name == scheme_name:
                if not 0 <= goal_index < len(run.goals):
                    raise errors.SchemeConfigError(
                        f"scheme {scheme_name} has no quota goal {goal_index}"
                    )
                if run.goals[goal_index].goal.metric != "user_input":
                    raise errors.SchemeConfigError(
                        f"scheme {scheme_name} goal {goal_index} is "
                        f"{run.goals[goal_index].goal.metric}, not user_input"
                    )
                run.goals[goal_index].current = value
                return
        raise errors.SchemeConfigError(f"no scheme named {scheme_name!r}")

    # -- internals -----------------------------------------------------------------------

    def _update_watermarks(self, now_us: int) -> None:
        for run in self._runs:
            run.watermarks.update(run.scheme.watermarks, self._metrics, now_us)

    def _adjust_quota(self, run: _SchemeRun, monitor: Monitor, now_us: int) -> None:
        quota = run.scheme.quota
        state = run.quota
        if quota is None or not quota.limits:
            state.effective = None
            state.min_score = 0
            return
        if state.window_due(now_us, quota.reset_interval_us):
            if state.roll(now_us):
                run.stats.qt_exceeds += 1
            tuned: int | None = None
            if quota.goals:
                for goal in run.goals:
                    goal.refresh(self._metrics)
                score = tuners.quota_score(run.goals)
                state.tuned_bp = tuners.tune(quota.tuner, state.tuned_bp, score, quota.size_bytes)
                tuned = tuners.tuned_bytes(state.tuned_bp)
            state.effective = quotas.effective_size(
                quota, tuned, state.total_charged_sz, state.total_charged_ns
            )
        state.min_score = self._score_threshold(run, monitor)

    def _region_scores(
        self, run: _SchemeRun, monitor: Monitor, nr: regions.Int64Array, age: regions.Int64Array
    ) -> regions.Int64Array:
        weights = run.scheme.quota.weights if run.scheme.quota else model.Weights()
        return quotas.scores(
            run.scheme.action,
            nr,
            age,
            max_nr_accesses=monitor.attrs.max_nr_accesses,
            aggr_us=monitor.attrs.aggr_us,
            weights=weights,
        )

    def _score_threshold(self, run: _SchemeRun, monitor: Monitor) -> int:
        effective = run.quota.effective
        if effective is None:
            return 0
        histogram = np.zeros(quotas.MAX_SCORE + 1, dtype=np.int64)
        for target in monitor.targets:
            nr = target.nr_accesses_bp // 10_000
            mask = patterns.matches(
                run.scheme.pattern,
                target.sizes,
                nr,
                target.age,
                max_nr_accesses=monitor.attrs.max_nr_accesses,
                aggr_us=monitor.attrs.aggr_us,
            )
            scores = self._region_scores(run, monitor, nr[mask], target.age[mask])
            histogram += quotas.score_histogram(scores, target.sizes[mask])
        return quotas.min_score(histogram, effective)

    def _candidates(
        self, run: _SchemeRun, monitor: Monitor, target: regions.TargetRegions
    ) -> NDArray[np.bool_]:
        nr = target.nr_accesses_bp // 10_000
        mask = patterns.matches(
            run.scheme.pattern,
            target.sizes,
            nr,
            target.age,
            max_nr_accesses=monitor.attrs.max_nr_accesses,
            aggr_us=monitor.attrs.aggr_us,
        )
        if run.quota.min_score > 0:
            mask &= self._region_scores(run, monitor, nr, target.age) >= run.quota.min_score
        return mask

    def _walk(self, runs: list[_SchemeRun], monitor: Monitor) -> None:
        # Resume points left by an earlier window; one not reached by the end of its
        # target (every region there ended before it) is dropped there.
        runs = [run for run in runs if not run.quota.exhausted]
        pending = {id(run): (run.quota.resume_target, run.quota.resume_serial) for run in runs}
        for target_index, target in enumerate(monitor.targets):
            # Vectorised pre-selection; a region created by a split is re-checked exactly.
            masks = [self._candidates(run, monitor, target) for run in runs]
            index = 0
            while index < len(target):
                for k, run in enumerate(runs):
                    if not masks[k][index]:
                        continue
                    before = len(target)
                    self._apply_to_region(run, monitor, target_index, target, index)
                    added = len(target) - before
                    if added:
                        masks = [np.insert(m, index + 1, [True] * added) for m in masks]
                index += 1
            for run in runs:
                if pending[id(run)] == (run.quota.resume_target, run.quota.resume_serial) and (
                    run.quota.resume_target == target_index
                ):
                    run.quota.resume_target = None

    def _skip_charged(
        self, run: _SchemeRun, target_index: int, target: regions.TargetRegions, index: int
    ) -> bool:
        """Whether the region was charged in the previous window; may split off the charged
        part (then the uncharged rest comes next in the walk)."""
        state = run.quota
        if state.resume_target is None:
            return False
        if target_index < state.resume_target:
            return True
        start, end = int(target.start[index]), int(target.end[index])
        if target_index == state.resume_target:
            if end <= state.resume_addr:
                return True
            if start < state.resume_addr:
                split_at = state.resume_addr - (state.resume_addr - start) % self._min_region
                state.resume_target = None
                if split_at <= start:
                    return False
                regions.split_region(target, index, split_at)
                return True
        state.resume_target = None
        return False

    def _apply_to_region(
        self,
        run: _SchemeRun,
        monitor: Monitor,
        target_index: int,
        target: regions.TargetRegions,
        index: int,
    ) -> None:
        scheme = run.scheme
        state = run.quota
        if state.exhausted:
            return
        if self._skip_charged(run, target_index, target, index):
            return
        start, end = int(target.start[index]), int(target.end[index])
        nr = int(target.nr_accesses_bp[index]) // 10_000
        age = int(target.age[index])
        if not patterns.region_matches(
            scheme.pattern,
            end - start,
            nr,
            age,
            max_nr_accesses=monitor.attrs.max_nr_accesses,
            aggr_us=monitor.attrs.aggr_us,
        ):
            return
        if state.min_score > 0:
            score = self._region_scores(
                run, monitor, np.array([nr], dtype=np.int64), np.array([age], dtype=np.int64)
            )
            if int(score[0]) < state.min_score:
                return

        size = state.size_to_charge(end - start, self._min_region)
        if size <= 0:
            return
        if size < end - start:
            regions.split_region(target, index, start + size)
            end = start + size

        verdict = filters.evaluate(
            scheme.core_filters,
            has_ops_filters=bool(scheme.ops_filters),
            target_index=target_index,
            start=start,
            end=end,
            min_region_bytes=self._min_region,
        )
        if verdict.end < end:
            regions.split_region(target, index, verdict.end)
            end = verdict.end
        if not verdict.allowed:
            return

        began = self._timer()
        applied, passed = self._act(run, target.target_id, start, end, verdict.explicitly_allowed)
        elapsed = self._timer() - began

        state.charge(end - start, elapsed, target_index, end)
        if scheme.action != "stat":
            target.age[index] = 0
        s = run.stats
        s.nr_tried += 1
        s.sz_tried += end - start
        if applied:
            s.nr_applied += 1
            s.sz_applied += applied
        s.sz_ops_filter_passed += passed
        if len(s.tried_regions) < MAX_TRIED_REGIONS:
            s.tried_regions.append(stats.TriedRegion(target.target_id, start, end, nr, age))

    def _act(
        self, run: _SchemeRun, target_id: int, start: int, end: int, core_allowed: bool
    ) -> tuple[int, int]:
        """(bytes applied, bytes that passed the ops-layer filters)."""
        scheme = run.scheme
        action = scheme.action
        ops_filters = () if core_allowed else scheme.ops_filters
        if ops_filters:
            assert isinstance(self._ops, FilteringOperations)
            result = self._ops.apply_action_filtered(
                target_id, start, end, action, run.target_nid, ops_filters=ops_filters
            )
            applied = 0 if action == "stat" else result.applied_bytes
            return applied, result.filter_passed_bytes
        if action == "stat":
            return 0, 0
        applied = self._ops.apply_action(target_id, start, end, action, run.target_nid)
        return applied, applied
