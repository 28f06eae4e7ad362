"""The pod scope of both scheme kinds (qosClasses, containers, protection): the models,
the shared verdict (``validation.judge``: the operator's index and the admission webhook),
the CRD schema, and the Kubernetes quantities a ``requests`` floor reads."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from damon_agent.api import crds, resources, units
from damon_operator import validation

PAGEOUT = [{"name": "cold", "action": "pageout"}]


def verdict(kind: str, **spec: Any) -> validation.Verdict:
    return validation.judge(kind, {"schemes": PAGEOUT, **spec})[1]


@pytest.mark.parametrize("kind", ["DamonScheme", "ClusterDamonScheme"])
def test_a_full_pod_scope_is_accepted_and_serialized_in_camel_case(kind: str) -> None:
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {"app": "cart"}},
        "qosClasses": ["Burstable", "BestEffort"],
        "containers": ["app", "sidecar-1"],
        "protection": {"floor": "memoryLow", "minimum": "64Mi"},
        "schemes": PAGEOUT,
    }
    parsed, judged = validation.judge(kind, spec)
    assert judged == validation.ACCEPTED and parsed is not None
    assert parsed.qos_classes == ["Burstable", "BestEffort"]
    assert parsed.protection is not None and parsed.protection.minimum_bytes == 64 << 20
    dumped = resources.to_api(parsed)
    assert dumped["qosClasses"] == ["Burstable", "BestEffort"]
    assert dumped["protection"] == {"floor": "memoryLow", "minimum": "64Mi"}
    assert dumped["containers"] == ["app", "sidecar-1"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"qosClasses": ["Burstable", "Gold"]},
            "qosClasses[1]: 'Gold' is not one of 'Guaranteed', 'Burstable' or 'BestEffort'",
        ),
        ({"qosClasses": ["Burstable", "Burstable"]}, "qosClasses: 'Burstable' is listed twice"),
        ({"qosClasses": []}, "qosClasses: List should have at least 1 item"),
        ({"containers": ["app", "App_2"]}, "containers[1]: String should match pattern"),
        ({"containers": ["app", "app"]}, "containers: 'app' is listed twice"),
        (
            {"protection": {"floor": "high"}},
            "protection.floor: 'high' is not one of 'memoryLow', 'memoryMin', 'requests' or 'none'",
        ),
        (
            {"protection": {"floor": "none"}},
            "protection: floor none and minimum 0 protect nothing",
        ),
        ({"protection": {"minimum": "max"}}, "protection: minimum: 'max' would never let"),
        ({"protection": {"minimum": "64Zi"}}, "protection.minimum: '64Zi' has unknown size unit"),
        ({"protection": {"floor": "requests", "ceiling": "1Gi"}}, "protection.ceiling: unknown"),
    ],
)
def test_bad_pod_scope_is_refused_naming_the_field(spec: dict[str, Any], message: str) -> None:
    for kind in ("DamonScheme", "ClusterDamonScheme"):
        judged = verdict(kind, podSelector={}, **spec)
        assert (judged.accepted, judged.reason) == (False, "InvalidSpec")
        assert message in judged.message, judged.message


@pytest.mark.parametrize(
    "field",
    [
        {"qosClasses": ["Guaranteed"]},
        {"containers": ["app"]},
        {"protection": {"floor": "requests"}},
    ],
)
def test_whole_node_selects_no_pods_so_it_takes_no_pod_scope(field: dict[str, Any]) -> None:
    judged = verdict("ClusterDamonScheme", wholeNode=True, **field)
    (name,) = field
    assert not judged.accepted
    assert judged.message == f"{name}: wholeNode targets physical memory and selects no pods"
    assert verdict("ClusterDamonScheme", wholeNode=True).accepted


def test_a_floor_needs_a_pageout_to_hold_back() -> None:
    judged = validation.judge(
        "DamonScheme",
        {
            "podSelector": {},
            "protection": {"floor": "requests"},
            "schemes": [{"name": "count", "action": "stat"}],
        },
    )[1]
    assert (
        judged.message == "protection: a floor holds back pageout schemes, and this spec has none"
    )
    # A dry-run pageout is still a pageout: its preview leaves the same pods alone.
    dry = [{"name": "preview", "action": "pageout", "dryRun": True}]
    spec = {"podSelector": {}, "protection": {"floor": "requests"}, "schemes": dry}
    assert validation.judge("DamonScheme", spec)[1].accepted


def test_an_assignment_cannot_carry_a_pod_scope_to_a_whole_node() -> None:
    base: dict[str, Any] = {
        "kind": "ClusterDamonScheme",
        "name": "node",
        "uid": "u",
        "generation": 1,
        "wholeNode": True,
        "spec": {"schemes": PAGEOUT},
    }
    with pytest.raises(pydantic.ValidationError, match="wholeNode targets physical memory"):
        resources.AssignedScheme.model_validate({**base, "qosClasses": ["Burstable"]})
    scoped = resources.AssignedScheme.model_validate(
        {
            **base,
            "wholeNode": False,
            "podSelector": {},
            "containers": ["app"],
            "protection": {"floor": "memoryMin"},
        }
    )
    assert scoped.containers == ["app"]
    assert scoped.protection == resources.Protection(floor="memoryMin")


def test_the_crd_schema_lists_the_qos_classes_and_floors() -> None:
    for kind in crds.KINDS:
        if kind.kind not in resources.SCHEME_KINDS:
            continue
        schema = crds.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        spec = schema["properties"]["spec"]["properties"]
        assert spec["qosClasses"]["items"]["enum"] == ["Guaranteed", "Burstable", "BestEffort"]
        assert spec["protection"]["properties"]["floor"]["enum"] == [
            "memoryLow",
            "memoryMin",
            "requests",
            "none",
        ]
        assert spec["containers"]["items"]["pattern"].startswith("^[a-z0-9]")


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("128Mi", 128 << 20),
        ("1G", 10**9),
        ("129e6", 129_000_000),
        ("1E+2", 100),
        ("0.5Gi", 512 << 20),
        ("1500m", 2),  # milli-bytes round up to whole bytes
        ("64", 64),
        ("1Ei", 1 << 60),
        (".5k", 500),
    ],
)
def test_kubernetes_quantities_read_as_bytes(quantity: str, expected: int) -> None:
    assert units.parse_quantity_bytes(quantity) == expected


@pytest.mark.parametrize("quantity", ["", "abc", "-1Gi", "1ki", "1.5.2", "1 Gi"])
def test_what_is_no_quantity_is_a_unit_error(quantity: str) -> None:
    with pytest.raises(units.UnitError, match="is not a Kubernetes quantity"):
        units.parse_quantity_bytes(quantity)
