"""Canonical schemes (``schemes.model``) and monitoring (``core.attrs``) -> the sysfs model.

The runtime's planner hands over integers already rewritten for this kernel (dry runs as
``stat``, tiers resolved to nodes, the filters that keep a scheme to its pods). Here they
become the units of the kernel's files:

- access rate (basis points of the maximum) -> ``nr_accesses`` counts, with the maximum
  ``aggr_us / sample_us`` sampling intervals per aggregation (the kernel keeps that ratio
  when it auto-tunes intervals, so the counts stay right). The lower bound rounds up and
  the upper bound down, so "at least 5%" never admits a region below 5%; 100% is
  written as "no bound";
- age (microseconds) -> aggregation intervals (the minimum rounded up, the maximum down),
  at the aggregation's real length where the caller measured it (a kdamond that samples
  slower than asked stretches every aggregation); ``UNBOUNDED`` -> no bound;
- quota time and reset interval (microseconds) -> milliseconds;
- ``UNBOUNDED`` sizes and addresses -> ``ULONG_MAX``;
- an apply interval of 0 (every aggregation) is the kernel's default: not written.

Filters go to ``core_filters`` (addr, target) and ``ops_filters`` (the others) on kernels
that have the split directories (6.15), else all to ``filters``; the kernel evaluates
core-layer filters first either way, and each layer's default comes from its own last
filter.

A migration to several nodes (``dests``) is written as the kernel's ``dests`` (6.17).

What no kernel can express raises ``ConfigError`` (a ``tier`` the planner did not resolve
to a node, a ``fill`` it did not write as goals, ``pod_mem_psi_us`` goals, which the
planner must turn into ``user_input``).
"""

from __future__ import annotations

from damon_agent.core import attrs as core_attrs
from damon_agent.ops.kernel import errors, model
from damon_agent.schemes import model as schemes
from damon_agent.schemes import patterns


def _bound(value: int) -> int:
    return model.ULONG_MAX if value >= schemes.UNBOUNDED else value


def _optional_bound(value: int | None) -> int | None:
    return None if value is None else _bound(value)


def monitoring_attrs(attrs: core_attrs.MonitoringAttrs) -> model.MonitoringAttrs:
    goal = None
    if attrs.intervals_goal is not None:
        wanted = attrs.intervals_goal
        goal = model.IntervalsGoal(
            access_bp=wanted.access_bp,
            aggrs=wanted.aggrs,
            min_sample_us=wanted.min_sample_us,
            max_sample_us=wanted.max_sample_us,
        )
    return model.MonitoringAttrs(
        intervals=model.Intervals(
            sample_us=attrs.sample_us,
            aggr_us=attrs.aggr_us,
            update_us=attrs.update_us,
            intervals_goal=goal,
        ),
        nr_regions=model.Range(attrs.min_nr_regions, attrs.max_nr_regions),
    )


def access_pattern(
    pattern: schemes.AccessPattern,
    attrs: core_attrs.MonitoringAttrs,
    *,
    aggr_period_us: int | None = None,
) -> model.AccessPattern:
    """``aggr_period_us``: how long an aggregation really takes, when it is known to take
    longer than ``attrs.aggr_us`` (the ages are counted in aggregations; the access counts
    keep the nominal samples per aggregation)."""
    max_nr = attrs.max_nr_accesses
    max_rate = pattern.max_rate_bp
    min_age, max_age = patterns.age_bounds(pattern, aggr_period_us or attrs.aggr_us)
    return model.AccessPattern(
        sz=model.Range(pattern.min_size, _bound(pattern.max_size)),
        nr_accesses=model.Range(
            -(-pattern.min_rate_bp * max_nr // 10_000),
            model.ULONG_MAX if max_rate >= 10_000 else max_rate * max_nr // 10_000,
        ),
        # Whole aggregations inside the asked ages, as the in-process engine compares.
        age=model.Range(min_age, model.ULONG_MAX if max_age >= schemes.UNBOUNDED else max_age),
    )


def quotas(quota: schemes.Quota | None, where: str) -> model.Quotas:
    if quota is None:
        return model.Quotas()
    goals = []
    for index, goal in enumerate(quota.goals):
        if goal.metric == "pod_mem_psi_us":
            raise errors.ConfigError(
                f"{where}.quota.goals[{index}].metric",
                "pod_mem_psi_us is the agent's metric, no kernel has it; the planner feeds "
                "it as a user_input goal",
            )
        goals.append(
            model.QuotaGoal(
                target_metric=goal.metric,
                target_value=goal.target,
                current_value=goal.initial_current,
                nid=goal.nid,
                path=goal.path,
            )
        )
    return model.Quotas(
        ms=quota.time_us // 1000,
        bytes=quota.size_bytes,
        reset_interval_ms=quota.reset_interval_us // 1000,
        weights=model.Weights(
            sz_permil=quota.weights.size,
            nr_accesses_permil=quota.weights.access_rate,
            age_permil=quota.weights.age,
        ),
        goals=tuple(goals),
        # The kernel's default tuner is "consist": only another one needs the file (6.19).
        goal_tuner=None if quota.tuner == "consist" else quota.tuner,
    )


def watermarks(marks: schemes.Watermarks | None) -> model.Watermarks:
    if marks is None:
        return model.Watermarks()
    return model.Watermarks(
        metric=marks.metric,
        interval_us=marks.interval_us,
        high=marks.high,
        mid=marks.mid,
        low=marks.low,
    )


def one_filter(one: schemes.Filter) -> model.Filter:
    return model.Filter(
        type=one.type,
        matching=one.matching,
        allow=one.allow,
        memcg_path=one.memcg_path,
        addr_start=_optional_bound(one.addr_start),
        addr_end=_optional_bound(one.addr_end),
        min=_optional_bound(one.min_size),
        max=_optional_bound(one.max_size),
        damon_target_idx=one.target_index,
    )


def scheme(
    planned: schemes.Scheme,
    attrs: core_attrs.MonitoringAttrs,
    *,
    split_filters: bool = True,
    where: str = "scheme",
    aggr_period_us: int | None = None,
) -> model.Scheme:
    if planned.tier is not None and planned.target_nid is None:
        raise errors.ConfigError(
            f"{where}.tier", f"tier {planned.tier} must be resolved to a NUMA node first"
        )
    if planned.fill is not None:
        raise errors.ConfigError(
            f"{where}.fill", "a fill must be written as quota goals per NUMA node first"
        )
    filters = tuple(one_filter(f) for f in planned.filters)
    if split_filters:
        core = tuple(f for f in filters if f.type in model.CORE_FILTER_TYPES)
        ops = tuple(f for f in filters if f.type not in model.CORE_FILTER_TYPES)
        generic: tuple[model.Filter, ...] = ()
    else:
        core, ops, generic = (), (), filters
    return model.Scheme(
        action=planned.action,
        access_pattern=access_pattern(planned.pattern, attrs, aggr_period_us=aggr_period_us),
        apply_interval_us=planned.apply_interval_us or None,
        target_nid=planned.target_nid,
        quotas=quotas(planned.quota, where),
        watermarks=watermarks(planned.watermarks),
        filters=generic,
        core_filters=core,
        ops_filters=ops,
        dests=tuple(model.Dest(id=d.nid, weight=d.weight) for d in planned.dests),
    )
