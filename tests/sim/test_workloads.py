"""Workload files: the examples load, and every bad field is named with the reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from damon_agent.ops import workloads

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workloads"
GOOD: dict[str, Any] = {
    "name": "w",
    "targets": [
        {
            "name": "app",
            "ranges": [{"name": "hot", "size": "64Mi"}, {"name": "cold", "size": "1Ti"}],
            "phases": [{"name": "p", "duration": "10s", "access": {"hot": {"probability": 0.5}}}],
        }
    ],
}


@pytest.mark.parametrize("name", ["hot-cold", "phase-change", "sparse-hot", "tiering"])
def test_examples_load(name: str) -> None:
    workload = workloads.load_workload(EXAMPLES / f"{name}.yaml")
    assert workload.name == name
    assert workload.targets
    assert all(t.cycle_us > 0 for t in workload.targets)


def test_a_good_workload_parses_with_units() -> None:
    workload = workloads.parse_workload(GOOD)
    target = workload.targets[0]
    assert [r.size for r in target.ranges] == [64 << 20, 1 << 40]
    assert target.phases[0].duration_us == 10_000_000
    assert target.phases[0].pattern_of("hot") == workloads.AccessPattern(0.5, False)
    assert target.phases[0].pattern_of("cold") == workloads.COLD
    assert workload.interval_us == 5_000


def test_repeated_groups_get_indexed_names() -> None:
    spec = copy.deepcopy(GOOD)
    spec["targets"][0]["ranges"] = [
        {"repeat": 3, "ranges": [{"name": "spot", "size": "1Mi"}, {"name": "hot", "size": 4096}]}
    ]
    target = workloads.parse_workload(spec).targets[0]
    assert [r.name for r in target.ranges] == [
        "spot[0]",
        "hot[0]",
        "spot[1]",
        "hot[1]",
        "spot[2]",
        "hot[2]",
    ]
    assert {r.group for r in target.ranges} == {"spot", "hot"}


def _with(path: list[str | int], value: object) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    node: Any = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "field", "reason"),
    [
        (["targets", 0, "ranges", 1, "size"], "12Q", "targets[0].ranges[1].size", "12Q"),
        (["targets", 0, "ranges", 1, "size"], 1000, "targets[0].ranges[1].size", "4096-byte pages"),
        (["targets", 0, "ranges", 1, "size"], "2Pi", "targets[0].ranges[1].size", "1Pi limit"),
        (["targets", 0, "ranges", 0, "node"], 3, "targets[0].ranges[0].node", "not a node"),
        (["targets", 0, "ranges", 0, "colour"], "red", "targets[0].ranges[0].colour", "unknown"),
        (["targets", 0, "phases", 0, "duration"], "10", "targets[0].phases[0].duration", "no unit"),
        (
            ["targets", 0, "phases", 0, "access", "hot", "probability"],
            1.5,
            "targets[0].phases[0].access.hot.probability",
            "outside 0..1",
        ),
        (
            ["targets", 0, "phases", 0, "access", "hot", "pattern"],
            "zigzag",
            "targets[0].phases[0].access.hot.pattern",
            "zigzag",
        ),
        (
            ["targets", 0, "phases", 0, "access", "warm"],
            "hot",
            "targets[0].phases[0].access.warm",
            "no range named 'warm'",
        ),
        (["targets", 0, "phases"], [], "targets[0].phases", "non-empty list"),
        (["targets", 0, "start"], "0x1001", "targets[0].start", "page-aligned"),
        (["interval"], "soon", "interval", "soon"),
        (["costs"], {"refault_ns": -1}, "costs.refault_ns", "outside"),
    ],
)
def test_bad_fields_are_named_with_the_reason(
    path: list[str | int], value: object, field: str, reason: str
) -> None:
    with pytest.raises(workloads.WorkloadError) as raised:
        workloads.parse_workload(_with(path, value))
    assert raised.value.field == field
    assert reason in raised.value.reason
    assert str(raised.value).startswith(f"{field}: ")


def test_duplicate_range_names_are_refused() -> None:
    spec = _with(["targets", 0, "ranges", 1, "name"], "hot")
    with pytest.raises(workloads.WorkloadError, match=r"targets\[0\]\.ranges: range names repeat"):
        workloads.parse_workload(spec)


def test_missing_required_field() -> None:
    spec = copy.deepcopy(GOOD)
    del spec["targets"][0]["ranges"]
    with pytest.raises(workloads.WorkloadError, match=r"targets\[0\]\.ranges: is required"):
        workloads.parse_workload(spec)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - ranges: [{name: a, size: 12Q}]\n    phases: [{duration: 1s}]\n")
    with pytest.raises(workloads.WorkloadError) as raised:
        workloads.load_workload(bad)
    assert str(raised.value).startswith(f"{bad}: targets[0].ranges[0].size: '12Q'")
    broken = tmp_path / "broken.yaml"
    broken.write_text("targets: [\n")
    with pytest.raises(workloads.WorkloadError, match="not valid YAML"):
        workloads.load_workload(broken)
    with pytest.raises(workloads.WorkloadError, match="cannot read"):
        workloads.load_workload(tmp_path / "missing.yaml")


def test_workload_error_is_a_value_error_and_a_sim_error() -> None:
    with pytest.raises(ValueError):
        workloads.parse_workload({"targets": "none"})
    with pytest.raises(workloads.SimError):
        workloads.parse_workload([])
