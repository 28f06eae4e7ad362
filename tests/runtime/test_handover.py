"""``runtime.handover``: a stopping agent leaves its kdamonds running only while its
DaemonSet will put a successor on the node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from damon_agent.ops.kernel import driver, model
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.runtime import backends, handover

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


# -- a successor on another backend -------------------------------------------------------------


def _kdamond_left_running(tmp_path: Path) -> tuple[fake_sysfs.FakeDamonSysfs, Path]:
    """A kernel-backend predecessor that handed its one kdamond over (left it on)."""
    tree = fake_sysfs.FakeDamonSysfs(tmp_path / "admin")
    state_dir = tmp_path / "state"
    predecessor = driver.KdamondDriver(tree, state_dir)
    predecessor.start(model.Kdamond(contexts=(model.Context(operations="paddr"),)))
    assert tree.read("kdamonds/0/state") == "on"
    return tree, state_dir


def test_a_successor_on_another_backend_turns_off_what_was_handed_over(tmp_path: Path) -> None:
    tree, state_dir = _kdamond_left_running(tmp_path)
    request = backends.BackendRequest(choice="userspace", state_dir=state_dir, adopt=True)
    backends.turn_off_handed_over(request, fs=tree)
    assert ("kdamonds/0/state", "off") in tree.log
    assert tree.read("kdamonds/nr_kdamonds") == "0"  # alone: the list emptied too


def test_without_adoption_or_a_record_nothing_is_touched(tmp_path: Path) -> None:
    tree, state_dir = _kdamond_left_running(tmp_path)
    # ``run`` (no adoption) leaves another agent's handover alone: it is not its successor.
    backends.turn_off_handed_over(
        backends.BackendRequest(choice="userspace", state_dir=state_dir), fs=tree
    )
    # Another state directory records nothing: the kdamond is not provably ours.
    backends.turn_off_handed_over(
        backends.BackendRequest(choice="userspace", state_dir=tmp_path / "other", adopt=True),
        fs=tree,
    )
    assert tree.read("kdamonds/0/state") == "on"
