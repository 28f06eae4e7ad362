"""The scheme spec models and the scheme file loader: defaults, canonical values, and
errors that name the field and the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from damon_agent.api import schemes as api
from damon_agent.api import units

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "schemes"


def _scheme(**fields: Any) -> dict[str, Any]:
    return {"name": "s", "action": "pageout", **fields}


def _error(data: Any) -> str:
    with pytest.raises(api.SchemeFileError) as caught:
        api.parse_scheme_file(data)
    return str(caught.value)


def test_every_example_scheme_file_loads() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    names = {f.name for f in files}
    assert {"stat.yaml", "pageout-cold.yaml", "pageout-psi-goal.yaml", "tiering.yaml"} <= names
    for path in files:
        loaded = api.load_scheme_file(path)
        assert loaded.schemes, f"{path.name} has no scheme"


def test_defaults_are_the_kernels_but_two_and_match_everything() -> None:
    spec = api.parse_scheme_file({"schemes": [_scheme()]})
    mon = spec.monitoring
    assert mon.attrs_kwargs() == {
        "sample_us": 5_000,
        "aggr_us": 200_000,  # the kernel's is 100 ms (Intervals says why)
        "update_us": 60_000_000,
        "min_nr_regions": 10,
        "max_nr_regions": 1000,
        "max_region_bytes": 32 << 20,  # the agent's own (Regions says why)
    }
    pattern = spec.schemes[0].access_pattern
    assert (pattern.size.min_bytes, pattern.size.max_bytes) == (0, units.UNBOUNDED)
    assert (pattern.access_rate.min_bp, pattern.access_rate.max_bp) == (0, 10_000)
    assert (pattern.age.min_us, pattern.age.max_us) == (0, units.UNBOUNDED)
    assert spec.schemes[0].apply_interval_us == 0
    assert spec.schemes[0].quota is None


def test_region_max_size_max_leaves_the_kernels_bound_and_a_sub_page_one_is_refused() -> None:
    unbounded = api.parse_scheme_file(
        {"monitoring": {"regions": {"maxSize": "max"}}, "schemes": [_scheme()]}
    )
    assert unbounded.monitoring.attrs_kwargs()["max_region_bytes"] is None
    assert "monitoring.regions: " in _error(
        {"monitoring": {"regions": {"maxSize": "1Ki"}}, "schemes": [_scheme()]}
    )
    assert "maxSize 1Ki is below a page" in _error(
        {"monitoring": {"regions": {"maxSize": "1Ki"}}, "schemes": [_scheme()]}
    )


def test_canonical_values_of_a_full_scheme() -> None:
    spec = api.load_scheme_file(EXAMPLES / "pageout-psi-goal.yaml")
    scheme = spec.schemes[0]
    assert scheme.access_pattern.age.min_us == 10_000_000
    assert scheme.quota is not None
    assert scheme.quota.size_bytes == 512 << 20
    assert scheme.quota.reset_interval_us == 1_000_000
    assert scheme.quota.goals[0].target_value == 1_000  # 1ms of stall, in us
    goals = api.load_scheme_file(EXAMPLES / "tiering-goals.yaml").schemes[0].quota
    assert goals is not None
    assert goals.goals[0].target_value == 500  # 5% in basis points
    assert goals.goals[0].nid == 0


def test_yaml_numbers_are_read_as_the_same_text() -> None:
    spec = api.parse_scheme_file(
        {"schemes": [_scheme(accessPattern={"size": {"min": 4096}, "age": {"min": 0}})]}
    )
    assert spec.schemes[0].access_pattern.size.min_bytes == 4096


def test_field_names_are_camel_case_in_files_and_schema() -> None:
    spec = api.parse_scheme_file(
        {"schemes": [_scheme(dryRun=True, applyInterval="1s", accessPattern={})]}
    )
    dumped = spec.model_dump(exclude_defaults=True)
    assert dumped["schemes"][0]["dryRun"] is True
    assert dumped["schemes"][0]["applyInterval"] == "1s"
    schema = json.dumps(api.SchemeFile.model_json_schema())
    for name in ("accessPattern", "resetInterval", "targetNid", "memcgPath", "intervalsGoal"):
        assert f'"{name}"' in schema
    assert '"access_pattern"' not in schema


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"schemes": [_scheme(accessPattern={"age": {"min": "30s", "max": "10s"}})]},
            "schemes[0].accessPattern.age: min 30s is greater than max 10s",
        ),
        (
            {"schemes": [_scheme(accessPattern={"size": {"min": "1Gi", "max": "4Ki"}})]},
            "schemes[0].accessPattern.size: min 1Gi is greater than max 4Ki",
        ),
        (
            {"schemes": [_scheme(accessPattern={"accessRate": {"min": "50%", "max": "5%"}})]},
            "schemes[0].accessPattern.accessRate: min 50% is greater than max 5%",
        ),
        (
            {"schemes": [_scheme(goals=[{"metric": "user_input", "target": 1}])]},
            "schemes[0]: goals belong under quota.goals",
        ),
        (
            {"schemes": [_scheme(action="reclaim")]},
            "schemes[0].action: 'reclaim' is not one of 'pageout'",
        ),
        (
            {"schemes": [_scheme(quota={"goals": [{"metric": "psi", "target": "1ms"}]})]},
            "schemes[0].quota.goals[0].metric: 'psi' is not one of 'user_input'",
        ),
        (
            {
                "schemes": [
                    _scheme(quota={"goals": [{"metric": "node_mem_free_bp", "target": "5%"}]})
                ]
            },
            "schemes[0].quota.goals[0]: metric node_mem_free_bp needs nid",
        ),
        (
            {
                "schemes": [
                    _scheme(quota={"goals": [{"metric": "some_mem_psi_us", "target": "5%"}]})
                ]
            },
            "schemes[0].quota.goals[0]: target of some_mem_psi_us: '5%' has unknown duration",
        ),
        (
            {
                "schemes": [
                    _scheme(quota={"goals": [{"metric": "pod_mem_psi_us", "target": "1ms"}]})
                ]
            },
            "schemes[0].quota.goals[0]: metric pod_mem_psi_us needs path",
        ),
        (
            {"schemes": [_scheme(watermarks={"high": "20%", "mid": "30%", "low": "5%"})]},
            "schemes[0].watermarks: watermarks must be high >= mid >= low",
        ),
        (
            {"schemes": [_scheme(filters=[{"type": "memcg"}])]},
            "schemes[0].filters[0]: a memcg filter needs memcgPath",
        ),
        (
            {"schemes": [_scheme(filters=[{"type": "anon", "memcgPath": "/a"}])]},
            "schemes[0].filters[0]: a anon filter takes no memcgPath",
        ),
        (
            {
                "schemes": [
                    _scheme(filters=[{"type": "addr", "addrStart": "8Ki", "addrEnd": "4Ki"}])
                ]
            },
            "schemes[0].filters[0]: addrStart 8Ki is not below addrEnd 4Ki",
        ),
        (
            {"schemes": [_scheme(action="migrate_cold")]},
            "schemes[0]: action migrate_cold needs exactly one of targetNid or tier",
        ),
        (
            {"schemes": [_scheme(targetNid=1)]},
            "schemes[0]: action pageout takes no targetNid or tier",
        ),
        (
            {"schemes": [_scheme(targetNid=5000, action="migrate_hot")]},
            "schemes[0].targetNid: Input should be less than or equal to 1023",
        ),
        ({"schemes": [_scheme(color="red")]}, "schemes[0].color: unknown field"),
        (
            {"schemes": [_scheme(kernelTiering="Coexist")]},
            "schemes[0].kernelTiering: only for migrate_hot and migrate_cold "
            "(this scheme's action is pageout)",
        ),
        (
            {"schemes": [_scheme(action="migrate_hot", tier="dram", kernelTiering="Fight")]},
            "schemes[0].kernelTiering: 'Fight' is not one of 'Coexist' or 'Refuse'",
        ),
        (
            {"schemes": [_scheme(quota={"size": "128Mx"})]},
            "schemes[0].quota.size: '128Mx' has unknown size unit 'Mx'",
        ),
        (
            {"schemes": [_scheme(quota={"resetInterval": "0"})]},
            "schemes[0].quota: resetInterval must be more than 0",
        ),
        (
            {"monitoring": {"intervals": {"sample": "1s", "aggregation": "100ms"}}},
            "monitoring.intervals: sample 1s is longer than aggregation 100ms",
        ),
        (
            {"monitoring": {"regions": {"min": 100, "max": 10}}},
            "monitoring.regions: min 100 is greater than max 10",
        ),
        (
            {"schemes": [_scheme(action="migrate_hot", tier="dram", fill={"dram": "120%"})]},
            "schemes[0].fill.dram: '120%' is more than 100%",
        ),
        (
            {"schemes": [_scheme(action="migrate_hot", tier="dram", fill={"dram": "0%"})]},
            "schemes[0].fill.dram: '0%' is no fill: write more than 0%",
        ),
        (
            {"schemes": [_scheme(action="migrate_hot", tier="dram", fill={"podShare": "5%"})]},
            "schemes[0].fill.dram: Field required",
        ),
        (
            {"schemes": [_scheme(fill={"dram": "90%"})]},
            "schemes[0]: fill steers migrate_hot and migrate_cold schemes, not pageout",
        ),
        (
            {"schemes": [_scheme(action="migrate_hot", targetNid=0, fill={"dram": "90%"})]},
            "schemes[0]: fill needs tier dram on a migrate_hot scheme",
        ),
        (
            {"schemes": [_scheme(action="migrate_cold", tier="dram", fill={"dram": "90%"})]},
            "schemes[0]: fill needs tier cxl on a migrate_cold scheme",
        ),
        (
            {
                "schemes": [
                    _scheme(
                        action="migrate_cold", tier="cxl", fill={"dram": "99%", "podShare": "100%"}
                    )
                ]
            },
            "schemes[0]: fill.podShare: 100% leaves nothing free",
        ),
        ({"schemes": [_scheme(), _scheme()]}, "scheme name 's' is used twice"),
        ({"schemes": [_scheme(name="Bad_Name")]}, "schemes[0].name: String should match"),
    ],
)
def test_bad_fields_are_named_with_the_reason(data: Any, message: str) -> None:
    assert message in _error(data)


def test_kernel_tiering_is_a_migrations_choice_absent_unless_given() -> None:
    spec = api.parse_scheme_file(
        {
            "schemes": [
                _scheme(name="up", action="migrate_hot", tier="dram", kernelTiering="Refuse"),
                _scheme(name="down", action="migrate_cold", tier="cxl", kernelTiering="Coexist"),
                _scheme(name="plain", action="migrate_cold", targetNid=1),
                _scheme(name="reclaim"),
            ]
        }
    )
    assert [s.kernel_tiering for s in spec.schemes] == ["Refuse", "Coexist", None, None]
    # An invalid action is named once, not also as a reason to refuse kernelTiering.
    error = _error({"schemes": [_scheme(action="nope", kernelTiering="Refuse")]})
    assert "schemes[0].action" in error and "kernelTiering" not in error


def test_loader_names_the_file_and_reports_yaml_and_io_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schemes:\n  - name: x\n    action: pageout\n    quota: {time: 5}\n")
    with pytest.raises(api.SchemeFileError, match=r"bad\.yaml: schemes\[0\]\.quota\.time: '5'"):
        api.load_scheme_file(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("schemes: [\n")
    with pytest.raises(api.SchemeFileError, match="not valid YAML"):
        api.load_scheme_file(broken)
    with pytest.raises(api.SchemeFileError, match="cannot read"):
        api.load_scheme_file(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert api.load_scheme_file(empty).schemes == []
