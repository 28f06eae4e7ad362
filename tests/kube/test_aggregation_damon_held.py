"""The operator's aggregation on nodes whose DAMON someone else holds (pure, no cluster)."""

from __future__ import annotations

import datetime
from typing import Any

from damon_agent.api import conditions
from damon_operator import aggregation, index, validation

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
HELD = (
    "DAMON is held by DAMON_STAT: DAMON_STAT runs, and DAMON's modules run exclusively: "
    "no kdamond can start. To free it: echo N > /sys/module/damon_stat/parameters/enabled"
)


def _condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def _node(
    name: str, *, held: bool | None, ready: tuple[str, str] | None, generation: int = 1
) -> dict[str, Any]:
    node_conditions = []
    if held is not None:
        node_conditions.append(
            _condition("DamonAvailable", "False", "DamonHeld", HELD)
            if held
            else _condition("DamonAvailable", "True", "Free")
        )
    schemes = []
    if ready is not None:
        schemes.append(
            {
                "kind": "ClusterDamonScheme",
                "name": "t",
                "uid": "uid-t",
                "observedGeneration": generation,
                "conditions": [_condition("Ready", ready[0], ready[1], "SysfsBusyError: busy")],
            }
        )
    return {
        "metadata": {"name": name},
        "spec": {},
        "status": {
            "heartbeat": NOW.isoformat(),
            "conditions": node_conditions,
            "schemes": schemes,
        },
    }


def test_nodes_with_a_held_damon_fail_with_the_holder_and_remedy() -> None:
    cluster = index.Index()
    cluster.put_scheme(
        "ClusterDamonScheme",
        {
            "metadata": {"name": "t", "uid": "uid-t", "generation": 1},
            "spec": {"wholeNode": True, "schemes": [{"name": "s", "action": "pageout"}]},
        },
    )
    entry = cluster.schemes["ClusterDamonScheme/t"]
    nodes = {
        # An agent that reported the failure only generically, and one that did not
        # report this scheme yet: both get the node's reason.
        "stat-node": _node("stat-node", held=True, ready=("False", "ApplyFailed")),
        "new-node": _node("new-node", held=True, ready=None),
        # Ready wherever it runs, held or not (e.g. nothing to do there).
        "idle-node": _node("idle-node", held=True, ready=("True", "NoPodsOnNode")),
        # A reason more specific than DAMON's is kept.
        "old-kernel": _node("old-kernel", held=True, ready=("False", "ActionUnsupported")),
        # A free node's failures are its own.
        "free-node": _node("free-node", held=False, ready=("False", "ApplyFailed")),
        "pending": _node("pending", held=None, ready=None),
    }
    for body in nodes.values():
        cluster.put_damon_node(body)
    outcomes = {
        n: aggregation.node_outcome(
            entry, n, cluster.damon_nodes.get(n), now=NOW, heartbeat_timeout_s=60
        )
        for n in nodes
    }
    summary = {n: (o.state, o.reason) for n, o in outcomes.items()}
    assert summary == {
        "stat-node": ("failing", "DamonHeld"),
        "new-node": ("failing", "DamonHeld"),
        "idle-node": ("ready", ""),
        "old-kernel": ("failing", "ActionUnsupported"),
        "free-node": ("failing", "ApplyFailed"),
        "pending": ("pending", "Pending"),
    }
    assert outcomes["stat-node"].message == HELD
    status = aggregation.aggregate(
        entry,
        list(outcomes.values()),
        aggregation.previous_status(None),
        tier_verdict=validation.ACCEPTED,
        now=NOW,
    )
    degraded = conditions.find(status.conditions, "Degraded")
    assert degraded is not None and degraded.status == "True"
    assert f"stat-node: DamonHeld ({HELD})" in degraded.message
    failing = {f.node: f for f in status.failing_nodes}
    assert failing["new-node"].reason == "DamonHeld"
    assert "echo N > /sys/module/damon_stat/parameters/enabled" in failing["new-node"].message
