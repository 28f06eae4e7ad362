"""The custom resources' models: selectors, conditions, confinement, API serialization."""

from __future__ import annotations

import datetime

import pydantic
import pytest

from damon_agent.api import conditions, crds, resources, selectors

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
SCHEMES = [{"name": "cold", "action": "pageout"}]


def selector(**raw: object) -> selectors.LabelSelector:
    return selectors.LabelSelector.model_validate(raw)


@pytest.mark.parametrize(
    ("raw", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"app": "cart"}}, {"app": "cart", "x": "y"}, True),
        ({"matchLabels": {"app": "cart"}}, {"app": "shop"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
         {"tier": "b"}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
         {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"tier": "a"},
         False),
        ({"matchLabels": {"app": "cart"},
          "matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"app": "cart"}, False),
    ],
)  # fmt: skip
def test_label_selector_semantics(raw: dict[str, object], labels: dict[str, str], expected: bool):
    assert selector(**raw).matches(labels) is expected


def test_selector_operators_check_their_values():
    with pytest.raises(pydantic.ValidationError, match="needs at least one value"):
        selector(matchExpressions=[{"key": "k", "operator": "In"}])
    with pytest.raises(pydantic.ValidationError, match="takes no values"):
        selector(matchExpressions=[{"key": "k", "operator": "Exists", "values": ["v"]}])
    assert selectors.matches(None, {"any": "thing"})


def test_condition_transition_time_moves_only_when_status_flips():
    first = conditions.set_condition(
        [], type="Ready", status="False", reason="Pending", message="0/2", generation=1, at=T0
    )
    later = T0 + datetime.timedelta(minutes=5)
    same = conditions.set_condition(
        first, type="Ready", status="False", reason="Pending", message="1/2", generation=2, at=later
    )
    assert same[0].last_transition_time == T0
    assert (same[0].message, same[0].observed_generation) == ("1/2", 2)
    flipped = conditions.set_condition(
        same, type="Ready", status="True", reason="AllNodesReady", message="2/2", generation=2,
        at=later,
    )  # fmt: skip
    assert flipped[0].last_transition_time == later
    assert conditions.is_true(flipped, "Ready") and not conditions.is_true(flipped, "Degraded")


def test_conditions_keep_their_order_and_serialize_in_camel_case():
    conds = conditions.set_condition(
        [], type="Accepted", status="True", reason="Valid", message="", generation=3, at=T0
    )
    conds = conditions.set_condition(
        conds, type="Ready", status="False", reason="NodesNotReady", message="x", generation=3,
        at=T0,
    )  # fmt: skip
    conds = conditions.set_condition(
        conds, type="Accepted", status="False", reason="InvalidSpec", message="y", generation=4,
        at=T0,
    )  # fmt: skip
    assert [c.type for c in conds] == ["Accepted", "Ready"]
    dumped = resources.to_api(resources.SchemeStatus(conditions=conds))
    assert dumped["conditions"][0]["observedGeneration"] == 4
    assert dumped["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    with pytest.raises(pydantic.ValidationError):
        conditions.Condition(type="Ready", status="Maybe", reason="X", last_transition_time=T0)


def test_damon_scheme_spec_needs_a_pod_selector_and_a_scheme():
    spec = resources.DamonSchemeSpec.model_validate({"podSelector": {}, "schemes": SCHEMES})
    assert spec.pod_selector.matches({"anything": "goes"})
    with pytest.raises(pydantic.ValidationError, match="podSelector"):
        resources.DamonSchemeSpec.model_validate({"schemes": SCHEMES})
    with pytest.raises(pydantic.ValidationError, match="at least one scheme"):
        resources.DamonSchemeSpec.model_validate({"podSelector": {}})
    with pytest.raises(pydantic.ValidationError, match="namespaceSelector"):
        resources.DamonSchemeSpec.model_validate(
            {"podSelector": {}, "namespaceSelector": {}, "schemes": SCHEMES}
        )


def test_cluster_scheme_targets_pods_or_a_whole_node():
    resources.ClusterDamonSchemeSpec.model_validate({"wholeNode": True, "schemes": SCHEMES})
    resources.ClusterDamonSchemeSpec.model_validate(
        {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {}, "schemes": SCHEMES}
    )
    with pytest.raises(pydantic.ValidationError, match="takes no pod selectors"):
        resources.ClusterDamonSchemeSpec.model_validate(
            {"wholeNode": True, "podSelector": {}, "schemes": SCHEMES}
        )
    with pytest.raises(pydantic.ValidationError, match="podSelector is needed"):
        resources.ClusterDamonSchemeSpec.model_validate({"schemes": SCHEMES})


def assigned(**overrides: object) -> resources.AssignedScheme:
    raw: dict[str, object] = {
        "kind": "DamonScheme", "namespace": "shop", "name": "cold", "uid": "u1", "generation": 2,
        "namespaces": ["shop"], "podSelector": {"matchLabels": {"app": "cart"}},
        "spec": {"schemes": SCHEMES},
    }  # fmt: skip
    raw.update(overrides)
    return resources.AssignedScheme.model_validate(raw)


def test_a_namespaced_assignment_cannot_reach_another_namespace():
    scheme = assigned()
    assert scheme.selects_pod("shop", {"app": "cart"})
    assert not scheme.selects_pod("bank", {"app": "cart"})
    assert not scheme.selects_pod("shop", {"app": "db"})
    for widened in (["shop", "bank"], ["bank"], None):
        with pytest.raises(pydantic.ValidationError, match="can only target that namespace"):
            assigned(namespaces=widened)
    with pytest.raises(pydantic.ValidationError, match="cannot target a whole node"):
        assigned(wholeNode=True, podSelector=None)


def test_cluster_assignments_and_keys():
    everywhere = assigned(kind="ClusterDamonScheme", namespace=None, namespaces=None)
    assert everywhere.selects_pod("any", {"app": "cart"})
    assert everywhere.key == "ClusterDamonScheme/cold"
    node_wide = assigned(
        kind="ClusterDamonScheme", namespace=None, namespaces=None, podSelector=None, wholeNode=True
    )
    assert not node_wide.selects_pod("shop", {"app": "cart"})
    assert assigned().key == "DamonScheme/shop/cold"
    with pytest.raises(pydantic.ValidationError, match="has no namespace"):
        assigned(kind="ClusterDamonScheme", namespaces=None)


def test_node_status_summaries_and_totals():
    status = resources.DamonNodeStatus.model_validate(
        {
            "heartbeat": "2026-01-01T00:00:00Z",
            "backend": "kernel",
            "numa": [{"nid": 1, "tier": "cxl", "hasCpus": False}, {"nid": 0, "tier": "dram"}],
            "schemes": [
                {
                    "kind": "DamonScheme", "namespace": "shop", "name": "cold",
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Applied",
                                    "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                    "stats": [{"name": "a", "appliedBytes": 1536, "triedBytes": 4096},
                              {"name": "b", "appliedBytes": 512}],
                },
                {"kind": "ClusterDamonScheme", "name": "tiering"},
            ],
            "futureField": "ignored by an older reader",
        }
    )  # fmt: skip
    assert status.tiers == "dram:0 cxl:1"
    assert status.schemes_ready == "1/2"
    assert status.applied == "2.000 KiB"
    report = status.scheme("DamonScheme/shop/cold")
    assert report is not None and report.ready and report.applied_bytes == 2048
    dumped = resources.to_api(status)
    assert dumped["schemesReady"] == "1/2" and dumped["numa"][0]["hasCpus"] is False
    assert "futureField" not in dumped


def test_to_api_leaves_out_nulls_and_empty_strings():
    dumped = resources.to_api(
        resources.SchemeStatus(failing_nodes=[resources.NodeFailure(node="n1", reason="X")])
    )
    assert dumped["failingNodes"] == [{"node": "n1", "reason": "X"}]
    assert "actions" not in dumped and "applied" not in dumped
    assert resources.SchemeStatus.model_validate(dumped).failing_nodes[0].message == ""


def test_bounded_numbers():
    with pytest.raises(pydantic.ValidationError):
        resources.Psi(some_avg10=101)
    with pytest.raises(pydantic.ValidationError):
        resources.SchemeStats(name="s", applied_bytes=-1)
    with pytest.raises(pydantic.ValidationError):
        resources.NumaNode(nid=5000)


def test_filter_passed_bytes_tell_zero_from_not_counted_on_the_wire():
    counted_none = resources.SchemeStats(name="s", filter_passed_bytes=0)
    not_counted = resources.SchemeStats(name="s")
    assert resources.to_api(counted_none)["filterPassedBytes"] == 0
    assert "filterPassedBytes" not in resources.to_api(not_counted)
    read_back = resources.SchemeStats.model_validate({"name": "s", "filterPassedBytes": 4096})
    assert read_back.filter_passed_bytes == 4096
    assert resources.SchemeStats.model_validate({"name": "s"}).filter_passed_bytes is None
    with pytest.raises(pydantic.ValidationError):
        resources.SchemeStats(name="s", filter_passed_bytes=-1)


def test_the_damonnode_crd_carries_filter_passed_bytes_beside_the_other_counters():
    (kind,) = [k for k in crds.KINDS if k.kind == "DamonNode"]
    schema = crds.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schemes = schema["properties"]["status"]["properties"]["schemes"]["items"]["properties"]
    stats = schemes["stats"]["items"]["properties"]
    assert stats["filterPassedBytes"] == stats["appliedBytes"]  # int64, at least 0
    assert "filterPassedBytes" not in schemes["stats"]["items"].get("required", [])


@pytest.mark.parametrize(
    ("value", "modes", "promotes"),
    [
        (None, [], False),  # a kernel without NUMA balancing
        (0, [], False),
        (1, ["normal"], True),  # moves pages toward the CPUs that touch them
        (2, ["tiering"], True),
        (3, ["normal", "tiering"], True),
        (6, ["tiering"], True),  # a bit the agent does not know is kept, not named
        (4, [], False),
    ],
)
def test_kernel_tiering_names_the_numa_balancing_bits(
    value: int | None, modes: list[str], promotes: bool
):
    found = resources.KernelTiering(numa_balancing=value, demotion_enabled=False)
    assert found.numa_balancing_modes == modes
    assert found.promotes is promotes
    wire = resources.to_api(found)
    assert wire.get("numaBalancing") == value and wire["numaBalancingModes"] == modes
    assert wire["demotionEnabled"] is False
    assert resources.KernelTiering.model_validate(wire) == found  # the modes are derived


def test_a_node_status_without_kernel_tiering_leaves_it_out():
    assert "kernelTiering" not in resources.to_api(resources.DamonNodeStatus())
    with pytest.raises(pydantic.ValidationError):
        resources.KernelTiering(numa_balancing=-1)


def test_the_agent_refuses_kernel_tiering_on_a_pageout_in_its_damonnode_spec():
    assigned = {
        "kind": "ClusterDamonScheme",
        "name": "n",
        "uid": "u",
        "generation": 1,
        "wholeNode": True,
        "spec": {"schemes": [{"name": "s", "action": "pageout", "kernelTiering": "Refuse"}]},
    }
    with pytest.raises(pydantic.ValidationError) as raised:
        resources.DamonNodeSpec.model_validate({"schemes": [assigned]})
    assert resources.describe(raised.value) == (
        "schemes[0].spec.schemes[0].kernelTiering: only for migrate_hot and migrate_cold "
        "(this scheme's action is pageout)"
    )
