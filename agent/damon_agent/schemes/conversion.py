"""From the api spec (human units, camelCase) to canonical dataclasses.

The api layer is the lowest layer and cannot build ``core.attrs.MonitoringAttrs`` itself,
so ``monitoring_attrs`` lives here; ``scheme`` and ``schemes`` build ``model.Scheme``.

A scheme's ``dryRun`` is not converted: it says how the node runs the scheme, which the
runtime's planner decides (it plans a dry run as the action ``stat``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from damon_agent.api import schemes as api
from damon_agent.api import units
from damon_agent.core import attrs as core_attrs
from damon_agent.schemes import model


def monitoring_attrs(spec: api.MonitoringSpec) -> core_attrs.MonitoringAttrs:
    goal = None
    if spec.intervals_goal is not None:
        goal = core_attrs.IntervalsGoal(
            access_bp=spec.intervals_goal.access_bp,
            aggrs=spec.intervals_goal.aggrs,
            min_sample_us=spec.intervals_goal.min_sample_us,
            max_sample_us=spec.intervals_goal.max_sample_us,
        )
    return core_attrs.MonitoringAttrs(**spec.attrs_kwargs(), intervals_goal=goal)


def _pattern(spec: api.AccessPattern) -> model.AccessPattern:
    return model.AccessPattern(
        min_size=spec.size.min_bytes,
        max_size=spec.size.max_bytes,
        min_rate_bp=spec.access_rate.min_bp,
        max_rate_bp=spec.access_rate.max_bp,
        min_age_us=spec.age.min_us,
        max_age_us=spec.age.max_us,
    )


def _quota(spec: api.Quota) -> model.Quota:
    return model.Quota(
        time_us=spec.time_us,
        size_bytes=spec.size_bytes,
        reset_interval_us=spec.reset_interval_us,
        weights=model.Weights(
            size=spec.weights.size,
            access_rate=spec.weights.access_rate,
            age=spec.weights.age,
        ),
        goals=tuple(
            model.QuotaGoal(
                metric=g.metric,
                target=g.target_value,
                nid=g.nid,
                path=g.path,
                initial_current=g.current or 0,
            )
            for g in spec.goals
        ),
        tuner=spec.tuner,
    )


def _watermarks(spec: api.Watermarks) -> model.Watermarks:
    return model.Watermarks(
        metric=spec.metric,
        interval_us=spec.interval_us,
        high=spec.high_permil,
        mid=spec.mid_permil,
        low=spec.low_permil,
    )


def _optional(parse: Callable[[str], int], value: str | None) -> int | None:
    return None if value is None else parse(value)


def _filter(spec: api.Filter) -> model.Filter:
    return model.Filter(
        type=spec.type,
        allow=spec.allow,
        matching=spec.matching,
        memcg_path=spec.memcg_path,
        addr_start=_optional(units.parse_address, spec.addr_start),
        addr_end=_optional(units.parse_address, spec.addr_end),
        target_index=spec.target_index,
        min_size=_optional(units.parse_size_bytes, spec.min_size),
        max_size=_optional(units.parse_size_bytes, spec.max_size),
    )


def scheme(spec: api.SchemeSpec) -> model.Scheme:
    return model.Scheme(
        name=spec.name,
        action=spec.action,
        pattern=_pattern(spec.access_pattern),
        target_nid=spec.target_nid,
        tier=spec.tier,
        apply_interval_us=spec.apply_interval_us,
        quota=None if spec.quota is None else _quota(spec.quota),
        watermarks=None if spec.watermarks is None else _watermarks(spec.watermarks),
        filters=tuple(_filter(f) for f in spec.filters),
        fill=(
            None
            if spec.fill is None
            else model.Fill(dram_bp=spec.fill.dram_bp, pod_share_bp=spec.fill.pod_share_bp)
        ),
    )


def schemes(specs: Sequence[api.SchemeSpec]) -> list[model.Scheme]:
    return [scheme(s) for s in specs]
