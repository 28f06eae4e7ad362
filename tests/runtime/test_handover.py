"""``runtime.handover``: a stopping agent leaves its kdamonds running only while its
DaemonSet will put a successor on the node."""

from __future__ import annotations

from typing import Any

import pytest

from damon_agent.runtime import handover

OWNER = handover.Owner("damon-system", "damon-k8s-agent")


def _daemonset(selector: dict[str, str] | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": OWNER.name, "namespace": OWNER.namespace}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-03T06:00:00Z"
    return {"metadata": meta, "spec": {"template": {"spec": {"nodeSelector": selector}}}}


def _node(labels: dict[str, str], deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "n1", "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-03T06:00:00Z"
    return {"metadata": meta}


def test_a_pod_deleted_under_a_live_daemonset_hands_over() -> None:
    decision = handover.decide(OWNER, _daemonset({"damon": "on"}), _node({"damon": "on"}))
    assert decision.hand_over
    assert "successor" in decision.reason


def test_no_node_selector_selects_every_node() -> None:
    assert handover.decide(OWNER, _daemonset(None), _node({})).hand_over


@pytest.mark.parametrize(
    ("daemonset", "node", "why"),
    [
        (None, _node({}), "DaemonSet damon-system/damon-k8s-agent is gone"),
        (_daemonset(deleting=True), _node({}), "is being deleted"),
        (_daemonset(), None, "Node object is gone"),
        (_daemonset(), _node({}, deleting=True), "Node object is being deleted"),
        (
            _daemonset({"damon": "on", "zone": "a"}),
            _node({"damon": "off", "zone": "a"}),
            "no longer selects this node (nodeSelector damon)",
        ),
        (_daemonset({"damon": "on"}), _node({}), "nodeSelector damon"),
    ],
)
def test_no_successor_coming_turns_the_kdamonds_off(
    daemonset: dict[str, Any] | None, node: dict[str, Any] | None, why: str
) -> None:
    decision = handover.decide(OWNER, daemonset, node)
    assert not decision.hand_over
    assert why in decision.reason


@pytest.mark.parametrize("text", ["", "name", "/name", "ns/", "a/b/c"])
def test_owner_must_be_namespace_slash_name(text: str) -> None:
    with pytest.raises(ValueError, match="is not NAMESPACE/NAME"):
        handover.Owner.parse(text)


def test_owner_round_trips() -> None:
    assert str(handover.Owner.parse("damon-system/agent")) == "damon-system/agent"
