"""Boundary scheme spec -> sysfs model: units, bounds, filters, degradation."""

from __future__ import annotations

import pytest

from damon_agent.api import schemes as api
from damon_agent.ops.kernel import errors, from_spec, model


def _scheme(**fields: object) -> api.SchemeSpec:
    return api.SchemeFile.model_validate(
        {"schemes": [{"name": "s", "action": "pageout", **fields}]}
    ).schemes[0]


MONITORING = api.MonitoringSpec.model_validate(
    {"intervals": {"sample": "5ms", "aggregation": "100ms"}}
)


def test_access_rate_becomes_counts_rounding_inward() -> None:
    spec = _scheme(accessPattern={"accessRate": {"min": "5%", "max": "45%"}})
    pattern = from_spec.scheme(spec, MONITORING).access_pattern
    # max 20 sampling intervals per aggregation: 5% -> 1, 45% -> 9.
    assert (pattern.nr_accesses.min, pattern.nr_accesses.max) == (1, 9)
    spec = _scheme(accessPattern={"accessRate": {"min": "3%", "max": "100%"}})
    pattern = from_spec.scheme(spec, MONITORING).access_pattern
    assert (pattern.nr_accesses.min, pattern.nr_accesses.max) == (1, model.ULONG_MAX)


def test_age_becomes_aggregation_intervals_and_max_is_unbounded() -> None:
    spec = _scheme(accessPattern={"age": {"min": "2m", "max": "max"}, "size": {"min": "4Ki"}})
    pattern = from_spec.scheme(spec, MONITORING).access_pattern
    assert pattern.age == model.Range(1200, model.ULONG_MAX)
    assert pattern.sz == model.Range(4096, model.ULONG_MAX)


def test_quota_units_weights_and_goals() -> None:
    spec = _scheme(
        quota={
            "time": "10ms",
            "size": "128Mi",
            "resetInterval": "1s",
            "weights": {"size": 0, "accessRate": 300, "age": 700},
            "goals": [
                {"metric": "some_mem_psi_us", "target": "10ms"},
                {"metric": "node_mem_free_bp", "target": "5%", "nid": 0},
                {"metric": "user_input", "target": "100", "current": 40},
            ],
        }
    )
    quotas = from_spec.scheme(spec, MONITORING).quotas
    assert (quotas.ms, quotas.bytes, quotas.reset_interval_ms) == (10, 128 << 20, 1000)
    assert quotas.weights == model.Weights(0, 300, 700)
    assert quotas.goals == (
        model.QuotaGoal("some_mem_psi_us", 10_000),
        model.QuotaGoal("node_mem_free_bp", 500, nid=0),
        model.QuotaGoal("user_input", 100, current_value=40),
    )
    assert quotas.goal_tuner is None


def test_filters_split_into_core_and_ops_layers() -> None:
    spec = _scheme(
        filters=[
            {"type": "young", "allow": False},
            {"type": "addr", "addrStart": "0x1000", "addrEnd": "0x2000", "allow": True},
            {"type": "memcg", "memcgPath": "/a/b", "allow": True},
        ]
    )
    scheme = from_spec.scheme(spec, MONITORING)
    assert [f.type for f in scheme.core_filters] == ["addr"]
    assert [f.type for f in scheme.ops_filters] == ["young", "memcg"]
    assert scheme.core_filters[0].addr_start == 0x1000
    old = from_spec.scheme(spec, MONITORING, split_filters=False)
    assert [f.type for f in old.filters] == ["young", "addr", "memcg"]


def test_dry_run_and_watermarks() -> None:
    spec = _scheme(
        dryRun=True,
        watermarks={"metric": "free_mem_rate", "interval": "5s", "high": "50%", "mid": "40%",
                    "low": "5%"},
    )  # fmt: skip
    scheme = from_spec.scheme(spec, MONITORING)
    assert scheme.action == "stat"
    assert scheme.watermarks == model.Watermarks("free_mem_rate", 5_000_000, 500, 400, 50)


def test_unresolved_tier_and_agent_only_metric_are_config_errors() -> None:
    with pytest.raises(errors.ConfigError, match="tier"):
        from_spec.scheme(_scheme(action="migrate_cold", tier="cxl"), MONITORING)
    spec = _scheme(quota={"goals": [{"metric": "pod_mem_psi_us", "target": "5ms", "path": "/p"}]})
    with pytest.raises(errors.ConfigError) as caught:
        from_spec.scheme(spec, MONITORING, where="schemes[3]")
    assert caught.value.field == "schemes[3].quota.goals[0].metric"


def test_monitoring_attrs_with_intervals_goal() -> None:
    monitoring = api.MonitoringSpec.model_validate(
        {"intervalsGoal": {"access": "4%", "aggrs": 3}, "regions": {"min": 20, "max": 500}}
    )
    attrs = from_spec.monitoring_attrs(monitoring)
    assert attrs.intervals.intervals_goal == model.IntervalsGoal(400, 3, 5000, 10_000_000)
    assert attrs.nr_regions == model.Range(20, 500)
