"""The boundary scheme model (``damon_agent.api.schemes``) -> the sysfs model (``model``).

Units: human units were parsed by the api models into canonical integers; here they
become the kernel's files' units:

- access rate (basis points of the maximum) -> ``nr_accesses`` counts, with the maximum
  ``aggr_us / sample_us`` sampling intervals per aggregation (the kernel keeps that ratio
  when it auto-tunes intervals, so the counts stay right). The lower bound rounds up and
  the upper bound down, so "at least 5%" never admits a region below 5%; 100% is
  written as "no bound";
- age (microseconds) -> aggregation intervals, rounded down; ``max`` -> no bound;
- quota time and reset interval (microseconds) -> milliseconds;
- ``max`` sizes (``units.UNBOUNDED``) -> ``ULONG_MAX``.

Filters go to ``core_filters`` (addr, target) and ``ops_filters`` (the others) on kernels
that have the split directories (6.15), else all to ``filters``; the kernel evaluates
core-layer filters first either way, and each layer's default comes from its own last
filter.

``dryRun`` turns the action into ``stat``. What no kernel can express raises
``ConfigError`` (a ``tier`` the planner did not resolve to a node, ``pod_mem_psi_us``
goals, which the planner must turn into ``user_input``).
"""

from __future__ import annotations

from damon_agent.api import schemes as api
from damon_agent.api import units
from damon_agent.ops.kernel import errors, model


def _bound(value: int) -> int:
    return model.ULONG_MAX if value >= units.UNBOUNDED else value


def max_nr_accesses(monitoring: api.MonitoringSpec) -> int:
    return max(1, monitoring.intervals.aggregation_us // monitoring.intervals.sample_us)


def monitoring_attrs(monitoring: api.MonitoringSpec) -> model.MonitoringAttrs:
    goal = None
    if monitoring.intervals_goal is not None:
        spec_goal = monitoring.intervals_goal
        goal = model.IntervalsGoal(
            access_bp=spec_goal.access_bp,
            aggrs=spec_goal.aggrs,
            min_sample_us=spec_goal.min_sample_us,
            max_sample_us=spec_goal.max_sample_us,
        )
    return model.MonitoringAttrs(
        intervals=model.Intervals(
            sample_us=monitoring.intervals.sample_us,
            aggr_us=monitoring.intervals.aggregation_us,
            update_us=monitoring.intervals.update_us,
            intervals_goal=goal,
        ),
        nr_regions=model.Range(monitoring.regions.min, monitoring.regions.max),
    )


def access_pattern(
    pattern: api.AccessPattern, monitoring: api.MonitoringSpec
) -> model.AccessPattern:
    max_nr = max_nr_accesses(monitoring)
    aggr_us = monitoring.intervals.aggregation_us
    rate = pattern.access_rate
    min_nr = -(-rate.min_bp * max_nr // 10_000)
    max_nr_bound = model.ULONG_MAX if rate.max_bp >= 10_000 else rate.max_bp * max_nr // 10_000
    age_max = pattern.age.max_us
    return model.AccessPattern(
        sz=model.Range(pattern.size.min_bytes, _bound(pattern.size.max_bytes)),
        nr_accesses=model.Range(min_nr, max_nr_bound),
        age=model.Range(
            pattern.age.min_us // aggr_us,
            model.ULONG_MAX if age_max >= units.UNBOUNDED else age_max // aggr_us,
        ),
    )


def quotas(quota: api.Quota | None, where: str) -> model.Quotas:
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
                target_value=goal.target_value,
                current_value=goal.current or 0,
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


def watermarks(spec: api.Watermarks | None) -> model.Watermarks:
    if spec is None:
        return model.Watermarks()
    return model.Watermarks(
        metric=spec.metric,
        interval_us=spec.interval_us,
        high=spec.high_permil,
        mid=spec.mid_permil,
        low=spec.low_permil,
    )


def one_filter(spec: api.Filter) -> model.Filter:
    def opt(parse: object, value: str | None) -> int | None:
        if value is None:
            return None
        assert callable(parse)
        return _bound(int(parse(value)))

    return model.Filter(
        type=spec.type,
        matching=spec.matching,
        allow=spec.allow,
        memcg_path=spec.memcg_path,
        addr_start=opt(units.parse_address, spec.addr_start),
        addr_end=opt(units.parse_address, spec.addr_end),
        min=opt(units.parse_size_bytes, spec.min_size),
        max=opt(units.parse_size_bytes, spec.max_size),
        damon_target_idx=spec.target_index,
    )


def scheme(
    spec: api.SchemeSpec,
    monitoring: api.MonitoringSpec,
    *,
    split_filters: bool = True,
    where: str = "scheme",
) -> model.Scheme:
    if spec.tier is not None and spec.target_nid is None:
        raise errors.ConfigError(
            f"{where}.tier", f"tier {spec.tier} must be resolved to a NUMA node first"
        )
    filters = tuple(one_filter(f) for f in spec.filters)
    if split_filters:
        core = tuple(f for f in filters if f.type in model.CORE_FILTER_TYPES)
        ops = tuple(f for f in filters if f.type not in model.CORE_FILTER_TYPES)
        generic: tuple[model.Filter, ...] = ()
    else:
        core, ops, generic = (), (), filters
    return model.Scheme(
        action="stat" if spec.dry_run else spec.action,
        access_pattern=access_pattern(spec.access_pattern, monitoring),
        apply_interval_us=None if spec.apply_interval is None else spec.apply_interval_us,
        target_nid=spec.target_nid,
        quotas=quotas(spec.quota, where),
        watermarks=watermarks(spec.watermarks),
        filters=generic,
        core_filters=core,
        ops_filters=ops,
    )
