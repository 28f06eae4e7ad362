"""The operator's Events against the real apiserver: a rejected scheme gets a Warning
naming the field, an accepted one Accepted then Ready, a ClusterDamonScheme's Events live
in "default"; a node flapping between failing and ready makes one Event object per
reason whose ``count`` says how often, not one object per flap. The tests act as the
agents (they write DamonNode statuses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.kube

INTERVAL_S = 4
FAST = ("--heartbeat-timeout", "30", "--resync", "1", "--totals-interval", "1")
FLAPS = 5


def events_of(kubectl: Any, name: str, namespace: str) -> list[dict[str, Any]]:
    """The Events whose involvedObject is ``name``, as the API lists them."""
    found = kubectl.json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )
    items: list[dict[str, Any]] = found.get("items", [])
    return items


def by_reason(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        grouped.setdefault(item["reason"], []).append(item)
    return grouped


def report(scheme: dict[str, Any], ready: bool) -> dict[str, Any]:
    meta = scheme["metadata"]
    generation = meta["generation"]
    return {
        "kind": "DamonScheme",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "Applied" if ready else "ApplyFailed",
                "message": "running" if ready else "SysfsInvalidError: the kernel said no",
                "observedGeneration": generation,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_]
    return found[0] if found else {}


def test_condition_changes_become_events_one_object_per_reason_with_a_count(
    run_operator: Callable[..., Any],
    apply: Callable[..., Any],
    namespace: str,
    kubectl: Any,
    make_node: Callable[..., str],
    wait_for: Callable[..., Any],
    agent_report: Callable[..., Any],
    load_manifest: Callable[[str], dict[str, Any]],
    instance: str,
) -> None:
    node = make_node()
    operator = run_operator(*FAST, "--event-interval", str(INTERVAL_S))

    def wait(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        try:
            return wait_for(predicate, timeout=timeout, what=what)
        except pytest.fail.Exception as failed:
            pytest.fail(f"{failed}\n--- operator log ---\n{operator.log()[-4000:]}")

    apply("contradictory.yaml", namespace)
    apply("reclaim-cold.yaml", namespace)
    wrong_mode = load_manifest("wrong-mode.yaml")
    wrong_mode["metadata"]["name"] = f"{instance}-events-wrong-mode"
    apply(wrong_mode)

    rejected = wait(
        lambda: by_reason(events_of(kubectl, "contradictory", namespace)).get("Rejected"),
        what="a Rejected Event on the contradictory scheme",
    )
    (event,) = rejected
    assert event["type"] == "Warning"
    assert "schemes[0].accessPattern.age: min 30s is greater than max 10s" in event["message"]
    assert event["involvedObject"]["kind"] == "DamonScheme"
    assert event["source"]["component"] == "damon-operator"
    # A cluster-scoped scheme's Events are in "default", found by the object's name.
    (cluster,) = wait(
        lambda: by_reason(events_of(kubectl, f"{instance}-events-wrong-mode", "default")).get(
            "Rejected"
        ),
        what="a Rejected Event on the ClusterDamonScheme",
    )
    assert "willneed" in cluster["message"]
    accepted = wait(
        lambda: by_reason(events_of(kubectl, "reclaim-cold", namespace)).get("Accepted"),
        what="an Accepted Event on the good scheme",
    )
    assert accepted[0]["type"] == "Normal"

    scheme = kubectl.json("damonscheme", "reclaim-cold", "-n", namespace)
    wait(lambda: kubectl.get("damonnode", node), what="the DamonNode")
    agent_report(node, [report(scheme, ready=True)])
    wait(
        lambda: by_reason(events_of(kubectl, "reclaim-cold", namespace)).get("Ready"),
        what="a Ready Event",
    )

    # A burst: the node fails and recovers FLAPS times, each seen by the operator.
    for _ in range(FLAPS):
        for ready, degraded in ((False, "True"), (True, "False")):
            agent_report(node, [report(scheme, ready=ready)])
            wait(
                lambda d=degraded: (
                    condition(
                        kubectl.json("damonscheme", "reclaim-cold", "-n", namespace), "Degraded"
                    ).get("status")
                    == d
                ),
                what=f"Degraded={degraded}",
            )

    def settled() -> dict[str, list[dict[str, Any]]] | None:
        grouped = by_reason(events_of(kubectl, "reclaim-cold", namespace))
        counts = {
            reason: sum(e.get("count", 1) for e in found) for reason, found in grouped.items()
        }
        want = {"Degraded": FLAPS, "NotReady": FLAPS, "Recovered": FLAPS, "Ready": FLAPS + 1}
        return grouped if all(counts.get(r) == n for r, n in want.items()) else None

    grouped = wait(settled, timeout=3 * INTERVAL_S + 30, what="the counts of the burst")
    assert set(grouped) == {"Accepted", "Ready", "NotReady", "Degraded", "Recovered"}
    for reason, found in grouped.items():
        assert len(found) == 1, f"{reason}: {len(found)} Event objects, one expected"
    (degraded,) = grouped["Degraded"]
    assert degraded["type"] == "Warning" and degraded["count"] == FLAPS
    assert f"{node}: ApplyFailed (SysfsInvalidError: the kernel said no)" in degraded["message"]
    assert degraded["firstTimestamp"] <= degraded["lastTimestamp"]
    (recovered,) = grouped["Recovered"]
    assert recovered["type"] == "Normal"
    # The resyncs since changed nothing: nothing more was posted.
    assert len(events_of(kubectl, "reclaim-cold", namespace)) == 5
