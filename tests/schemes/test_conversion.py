"""api spec (human units) -> canonical scheme dataclasses."""

from __future__ import annotations

from pathlib import Path

from damon_agent.api import schemes as api
from damon_agent.core import attrs
from damon_agent.schemes import conversion, model

SPEC = {
    "monitoring": {
        "mode": "paddr",
        "intervals": {"sample": "10ms", "aggregation": "200ms", "update": "2s"},
        "intervalsGoal": {"access": "4%", "aggrs": 3, "minSample": "5ms", "maxSample": "10s"},
        "regions": {"min": 20, "max": 500},
    },
    "schemes": [
        {
            "name": "demote",
            "action": "migrate_cold",
            "tier": "cxl",
            "applyInterval": "1s",
            "dryRun": True,
            "accessPattern": {
                "size": {"min": "4Ki", "max": "1Gi"},
                "accessRate": {"min": "0%", "max": "0.05%"},
                "age": {"min": "2m", "max": "max"},
            },
            "quota": {
                "time": "10ms",
                "size": "128Mi",
                "resetInterval": "1s",
                "weights": {"size": 1, "accessRate": 2, "age": 3},
                "goals": [
                    {"metric": "node_mem_free_bp", "target": "5%", "nid": 0},
                    {"metric": "user_input", "target": 100, "current": 7},
                ],
                "tuner": "temporal",
            },
            "watermarks": {"interval": "5s", "high": "50%", "mid": "40%", "low": "5%"},
            "filters": [
                {"type": "addr", "addrStart": "0x1000", "addrEnd": "1Mi", "allow": True},
                {"type": "memcg", "memcgPath": "/kubepods/pod1", "matching": False},
                {"type": "hugepage_size", "minSize": "2Mi", "maxSize": "2Mi"},
            ],
        }
    ],
}


def test_full_scheme_converts_to_canonical_units() -> None:
    spec = api.parse_scheme_file(SPEC)
    (scheme,) = conversion.schemes(spec.schemes)
    assert scheme == model.Scheme(
        name="demote",
        action="migrate_cold",
        tier="cxl",
        apply_interval_us=1_000_000,
        pattern=model.AccessPattern(
            min_size=4096,
            max_size=1 << 30,
            min_rate_bp=0,
            max_rate_bp=5,
            min_age_us=120_000_000,
            max_age_us=model.UNBOUNDED,
        ),
        quota=model.Quota(
            time_us=10_000,
            size_bytes=128 << 20,
            reset_interval_us=1_000_000,
            weights=model.Weights(size=1, access_rate=2, age=3),
            goals=(
                model.QuotaGoal("node_mem_free_bp", 500, nid=0),
                model.QuotaGoal("user_input", 100, initial_current=7),
            ),
            tuner="temporal",
        ),
        watermarks=model.Watermarks(interval_us=5_000_000, high=500, mid=400, low=50),
        filters=(
            model.Filter("addr", allow=True, addr_start=0x1000, addr_end=1 << 20),
            model.Filter("memcg", matching=False, memcg_path="/kubepods/pod1"),
            model.Filter("hugepage_size", min_size=2 << 20, max_size=2 << 20),
        ),
    )
    assert [f.type for f in scheme.core_filters] == ["addr"]
    assert [f.type for f in scheme.ops_filters] == ["memcg", "hugepage_size"]


def test_dry_run_is_left_to_the_planner() -> None:
    # The canonical scheme says what the user's scheme does; the planner alone turns a
    # dry run into a stat scheme (runtime.planning).
    spec = api.parse_scheme_file(SPEC)
    assert spec.schemes[0].dry_run
    (scheme,) = conversion.schemes(spec.schemes)
    assert (scheme.action, scheme.tier) == ("migrate_cold", "cxl")
    assert not hasattr(scheme, "dry_run")


def test_monitoring_converts_to_attrs() -> None:
    spec = api.parse_scheme_file(SPEC)
    assert conversion.monitoring_attrs(spec.monitoring) == attrs.MonitoringAttrs(
        sample_us=10_000,
        aggr_us=200_000,
        update_us=2_000_000,
        min_nr_regions=20,
        max_nr_regions=500,
        max_region_bytes=32 << 20,
        intervals_goal=attrs.IntervalsGoal(
            access_bp=400, aggrs=3, min_sample_us=5_000, max_sample_us=10_000_000
        ),
    )


def test_fill_is_converted_in_basis_points_and_written_as_goals_per_node() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "schemes"
    spec = api.load_scheme_file(examples / "tiering-fill.yaml")
    promote, demote = conversion.schemes(spec.schemes)
    assert promote.fill == model.Fill(dram_bp=9_970)
    assert demote.fill == model.Fill(dram_bp=9_950)
    # A promotion fills its DRAM node; a demotion keeps its DRAM node free, and the two
    # meet at the same fill; the user's own goals come first.
    assert model.with_fill_goals(promote, (0, 1)).quota == model.Quota(
        size_bytes=256 << 20,
        goals=(
            model.QuotaGoal("node_mem_used_bp", 9_970, nid=0),
            model.QuotaGoal("node_mem_used_bp", 9_970, nid=1),
        ),
    )
    assert model.with_fill_goals(demote, (0,)).quota == model.Quota(
        size_bytes=256 << 20, goals=(model.QuotaGoal("node_mem_free_bp", 50, nid=0),)
    )
    shared = model.Fill(dram_bp=9_000, pod_share_bp=2_000)
    assert shared.goals("migrate_cold", (1,), "/kubepods/pod-a") == (
        model.QuotaGoal("node_mem_free_bp", 1_000, nid=1),
        model.QuotaGoal("node_memcg_free_bp", 8_000, nid=1, path="/kubepods/pod-a"),
    )
    assert model.with_fill_goals(model.Scheme("s", "stat"), (0,)) == model.Scheme("s", "stat")
