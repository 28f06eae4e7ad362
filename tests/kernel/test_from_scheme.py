"""Canonical schemes and monitoring -> sysfs model: units, bounds, filters, refusals."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from damon_agent.core import attrs
from damon_agent.ops.kernel import errors, from_scheme, model
from damon_agent.schemes import model as schemes

# 5 ms sampling, 100 ms aggregation: at most 20 accesses per aggregation.
ATTRS = attrs.MonitoringAttrs(sample_us=5_000, aggr_us=100_000)
MI = 1 << 20


def _scheme(**fields: Any) -> schemes.Scheme:
    return replace(schemes.Scheme("s", "pageout"), **fields)


def test_access_rate_becomes_counts_rounding_inward() -> None:
    spec = _scheme(pattern=schemes.AccessPattern(min_rate_bp=500, max_rate_bp=4_500))
    pattern = from_scheme.scheme(spec, ATTRS).access_pattern
    # max 20 sampling intervals per aggregation: 5% -> 1, 45% -> 9.
    assert (pattern.nr_accesses.min, pattern.nr_accesses.max) == (1, 9)
    spec = _scheme(pattern=schemes.AccessPattern(min_rate_bp=300, max_rate_bp=10_000))
    pattern = from_scheme.scheme(spec, ATTRS).access_pattern
    assert (pattern.nr_accesses.min, pattern.nr_accesses.max) == (1, model.ULONG_MAX)


def test_age_becomes_aggregation_intervals_and_unbounded_is_no_bound() -> None:
    spec = _scheme(pattern=schemes.AccessPattern(min_size=4096, min_age_us=120_000_000))
    pattern = from_scheme.scheme(spec, ATTRS).access_pattern
    assert pattern.age == model.Range(1200, model.ULONG_MAX)
    assert pattern.sz == model.Range(4096, model.ULONG_MAX)
    spec = _scheme(pattern=schemes.AccessPattern(min_age_us=150_000, max_age_us=1_050_000))
    # Whole aggregations inside the asked range: the minimum rounds up, the maximum down
    # (as the in-process engine's patterns.aggregation_bounds does).
    assert from_scheme.scheme(spec, ATTRS).access_pattern.age == model.Range(2, 10)


def test_quota_units_weights_and_goals() -> None:
    quota = schemes.Quota(
        time_us=10_000,
        size_bytes=128 * MI,
        reset_interval_us=1_000_000,
        weights=schemes.Weights(size=0, access_rate=300, age=700),
        goals=(
            schemes.QuotaGoal("some_mem_psi_us", 10_000),
            schemes.QuotaGoal("node_mem_free_bp", 500, nid=0),
            schemes.QuotaGoal("user_input", 100, initial_current=40),
        ),
    )
    quotas = from_scheme.scheme(_scheme(quota=quota), ATTRS).quotas
    assert (quotas.ms, quotas.bytes, quotas.reset_interval_ms) == (10, 128 * MI, 1000)
    assert quotas.weights == model.Weights(0, 300, 700)
    assert quotas.goals == (
        model.QuotaGoal("some_mem_psi_us", 10_000),
        model.QuotaGoal("node_mem_free_bp", 500, nid=0),
        model.QuotaGoal("user_input", 100, current_value=40),
    )
    assert quotas.goal_tuner is None
    tuned = schemes.Quota(size_bytes=MI, tuner="temporal")
    assert from_scheme.scheme(_scheme(quota=tuned), ATTRS).quotas.goal_tuner == "temporal"
    assert from_scheme.scheme(_scheme(), ATTRS).quotas == model.Quotas()


def test_filters_split_into_core_and_ops_layers() -> None:
    spec = _scheme(
        filters=(
            schemes.Filter("young"),
            schemes.Filter("addr", allow=True, addr_start=0x1000, addr_end=schemes.UNBOUNDED),
            schemes.Filter("memcg", allow=True, memcg_path="/a/b"),
            schemes.Filter("hugepage_size", min_size=2 * MI, max_size=schemes.UNBOUNDED),
        )
    )
    scheme = from_scheme.scheme(spec, ATTRS)
    assert [f.type for f in scheme.core_filters] == ["addr"]
    assert [f.type for f in scheme.ops_filters] == ["young", "memcg", "hugepage_size"]
    assert (scheme.core_filters[0].addr_start, scheme.core_filters[0].addr_end) == (
        0x1000,
        model.ULONG_MAX,
    )
    assert (scheme.ops_filters[2].min, scheme.ops_filters[2].max) == (2 * MI, model.ULONG_MAX)
    old = from_scheme.scheme(spec, ATTRS, split_filters=False)
    assert [f.type for f in old.filters] == ["young", "addr", "memcg", "hugepage_size"]
    assert old.core_filters == old.ops_filters == ()


def test_action_and_destination_as_planned_and_watermarks() -> None:
    marks = schemes.Watermarks("free_mem_rate", 5_000_000, high=500, mid=400, low=50)
    scheme = from_scheme.scheme(
        _scheme(action="migrate_cold", target_nid=1, watermarks=marks), ATTRS
    )
    assert (scheme.action, scheme.target_nid) == ("migrate_cold", 1)
    assert scheme.watermarks == model.Watermarks("free_mem_rate", 5_000_000, 500, 400, 50)
    assert from_scheme.scheme(_scheme(), ATTRS).watermarks == model.Watermarks()


def test_an_apply_interval_of_every_aggregation_is_the_kernels_default() -> None:
    assert from_scheme.scheme(_scheme(), ATTRS).apply_interval_us is None
    every_second = _scheme(apply_interval_us=1_000_000)
    assert from_scheme.scheme(every_second, ATTRS).apply_interval_us == 1_000_000


def test_a_plain_stat_scheme_is_the_match_all_snapshot_scheme() -> None:
    assert from_scheme.scheme(_scheme(action="stat"), ATTRS) == model.Scheme(action="stat")


def test_unresolved_tier_and_agent_only_metric_are_config_errors() -> None:
    with pytest.raises(errors.ConfigError, match="tier"):
        from_scheme.scheme(_scheme(action="migrate_cold", tier="cxl"), ATTRS)
    quota = schemes.Quota(goals=(schemes.QuotaGoal("pod_mem_psi_us", 5_000, path="/p"),))
    with pytest.raises(errors.ConfigError) as caught:
        from_scheme.scheme(_scheme(quota=quota), ATTRS, where="schemes[3]")
    assert caught.value.field == "schemes[3].quota.goals[0].metric"


def test_monitoring_attrs_with_intervals_goal() -> None:
    monitoring = attrs.MonitoringAttrs(
        min_nr_regions=20, max_nr_regions=500, intervals_goal=attrs.IntervalsGoal()
    )
    converted = from_scheme.monitoring_attrs(monitoring)
    assert converted.intervals == model.Intervals(
        5_000, 100_000, 60_000_000, model.IntervalsGoal(400, 3, 5000, 10_000_000)
    )
    assert converted.nr_regions == model.Range(20, 500)
    assert from_scheme.monitoring_attrs(ATTRS).intervals.intervals_goal is None
