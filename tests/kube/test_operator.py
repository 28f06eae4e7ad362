"""The operator against the real apiserver: acceptance, node targeting, aggregation,
finalizers, namespace confinement and peering. The tests act as the agents (they write
DamonNode statuses); no kubelet runs, Node and Pod objects are created by the tests."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import kube_support
import pytest

from damon_agent.api import resources

pytestmark = pytest.mark.kube

# Fast resyncs so the tests take seconds. The heartbeat timeout stays long enough for a
# loaded machine; tests that need a silent agent report an old heartbeat instead of waiting.
FAST = ("--heartbeat-timeout", "30", "--resync", "1", "--totals-interval", "1")
LONG_AGO = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


condition = kube_support.condition
assigned_keys = kube_support.assigned_keys


def scheme_report(
    kind: str,
    name: str,
    uid: str,
    generation: int,
    *,
    namespace: str | None = None,
    ready: bool = True,
    reason: str = "Applied",
    message: str = "running",
    applied: int = 0,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "uid": uid,
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "stats": [{"name": "s", "triedBytes": applied * 2, "appliedBytes": applied}],
    }
    if namespace:
        report["namespace"] = namespace
    return report


def cluster_scheme(name: str, action: str = "stat", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "ClusterDamonScheme",
        "metadata": {"name": name},
        "spec": {"wholeNode": True, "schemes": [{"name": "s", "action": action}], **spec},
    }


def test_operator_rejects_what_the_schema_cannot_express(
    run_operator, apply, namespace, kubectl, make_node, wait_for, load_manifest, instance
):
    node = make_node()
    operator = run_operator(*FAST)
    apply("contradictory.yaml", namespace)
    wrong_mode = load_manifest("wrong-mode.yaml")
    wrong_mode["metadata"]["name"] = f"{instance}-wrong-mode"
    apply(wrong_mode)
    apply("reclaim-cold.yaml", namespace)

    def accepted(kind: str, name: str, *where: str) -> dict[str, Any] | None:
        return condition(kubectl.json(kind, name, *where), "Accepted")

    bad = wait_for(
        lambda: accepted("damonscheme", "contradictory", "-n", namespace), what="verdict"
    )
    assert bad["status"] == "False"
    assert bad["reason"] == "InvalidSpec"
    assert "schemes[0].accessPattern.age: min 30s is greater than max 10s" in bad["message"]
    mode = wait_for(lambda: accepted("clusterdamonscheme", f"{instance}-wrong-mode"), what="mode")
    assert (mode["status"], mode["reason"]) == ("False", "UnsupportedAction")
    assert "willneed" in mode["message"]
    good = wait_for(lambda: accepted("damonscheme", "reclaim-cold", "-n", namespace), what="ok")
    assert good["status"] == "True"
    # Rejected schemes never reach a node; the accepted one does.
    keys = wait_for(lambda: assigned_keys(kubectl, node), what="DamonNode spec")
    assert keys == [f"DamonScheme/{namespace}/reclaim-cold"]
    assert operator.process.poll() is None, "the operator must not crash on bad specs"
    assert "Traceback" not in operator.log()


def test_a_tier_no_targeted_node_has_is_not_accepted(
    run_operator, apply, kubectl, make_node, wait_for, agent_report, load_manifest, instance
):
    node = make_node(labels={"damon.io/tiering": "true"})
    run_operator(*FAST)
    tiering = load_manifest("tiering.yaml")
    name = tiering["metadata"]["name"] = f"{instance}-tiering"
    apply(tiering)
    wait_for(lambda: assigned_keys(kubectl, node) is not None, what="DamonNode created")
    agent_report(node, numa=[{"nid": 0, "tier": "dram"}])

    def verdict(reason: str) -> dict[str, Any] | None:
        found = condition(kubectl.json("clusterdamonscheme", name), "Accepted")
        return found if found and found["reason"] == reason else None

    rejected = wait_for(lambda: verdict("TierUnavailable"), what="TierUnavailable")
    assert rejected["status"] == "False"
    assert "no targeted node has a cxl memory tier" in rejected["message"]
    assert wait_for(lambda: assigned_keys(kubectl, node) == [], what="not assigned")
    # The node gains a CXL tier: the scheme is accepted and assigned.
    agent_report(node, numa=[{"nid": 0, "tier": "dram"}, {"nid": 1, "tier": "cxl"}])
    assert wait_for(lambda: verdict("Valid"), what="accepted")["status"] == "True"
    wait_for(
        lambda: assigned_keys(kubectl, node) == [f"ClusterDamonScheme/{name}"], what="assigned"
    )


def test_damon_node_specs_follow_node_labels_and_scheme_changes(
    run_operator, apply, namespace, kubectl, make_node, wait_for, load_manifest
):
    fast_node = make_node(labels={"tier": "fast"})
    slow_node = make_node()
    run_operator(*FAST)
    scheme = load_manifest("reclaim-cold.yaml")
    scheme["spec"]["nodeSelector"] = {"matchLabels": {"tier": "fast"}}
    apply(scheme, namespace)
    key = f"DamonScheme/{namespace}/reclaim-cold"

    wait_for(lambda: assigned_keys(kubectl, fast_node) == [key], what="fast node assigned")
    wait_for(lambda: assigned_keys(kubectl, slow_node) == [], what="slow node has a DamonNode")
    owner = kubectl.json("damonnode", fast_node)["metadata"]["ownerReferences"][0]
    node_uid = kubectl.json("node", fast_node)["metadata"]["uid"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Node", fast_node, node_uid)

    kubectl("label", "node", slow_node, "tier=fast")
    wait_for(lambda: assigned_keys(kubectl, slow_node) == [key], what="relabelled node gains it")
    kubectl("label", "node", fast_node, "tier-")
    wait_for(lambda: assigned_keys(kubectl, fast_node) == [], what="unlabelled node loses it")

    joined = make_node(labels={"tier": "fast"})
    wait_for(lambda: assigned_keys(kubectl, joined) == [key], what="a joining node gets it")
    kubectl("delete", "node", joined)
    wait_for(lambda: assigned_keys(kubectl, joined) is None, what="a leaving node's DamonNode")

    # A spec change reaches the nodes with the new generation.
    kubectl(
        "patch", "damonscheme", "reclaim-cold", "-n", namespace, "--type=json",
        "-p", '[{"op": "replace", "path": "/spec/schemes/0/action", "value": "cold"}]',
    )  # fmt: skip

    def assigned_action() -> tuple[str, int] | None:
        spec = kubectl.json("damonnode", slow_node)["spec"]["schemes"][0]
        return (spec["spec"]["schemes"][0]["action"], spec["generation"])

    assert wait_for(lambda: assigned_action() == ("cold", 2), what="new generation") is True


def test_node_statuses_aggregate_into_ready_and_degraded(
    run_operator, apply, kubectl, make_node, wait_for, agent_report, instance
):
    good, bad = make_node(), make_node()
    run_operator(*FAST)
    name = f"{instance}-reclaim"
    apply(cluster_scheme(name, "pageout"))
    wait_for(lambda: assigned_keys(kubectl, bad) == [f"ClusterDamonScheme/{name}"], what="spec")
    meta = kubectl.json("clusterdamonscheme", name)["metadata"]
    uid, generation = meta["uid"], meta["generation"]

    def report(node: str, **kw: Any) -> None:
        agent_report(
            node, schemes=[scheme_report("ClusterDamonScheme", name, uid, generation, **kw)]
        )

    report(good, applied=3 << 20)
    report(bad, ready=False, reason="KdamondFailed", message="state write: EBUSY", applied=1 << 20)

    def status_with(predicate: Any) -> dict[str, Any] | None:
        status = kubectl.json("clusterdamonscheme", name).get("status", {})
        return status if predicate(status) else None

    status = wait_for(lambda: status_with(lambda s: s.get("nodesReady") == "1/2"), what="1/2")
    ready, degraded = (
        condition({"status": status}, "Ready"),
        condition({"status": status}, "Degraded"),
    )
    assert (ready["status"], ready["message"]) == ("False", "1/2 nodes ready")
    assert degraded["status"] == "True"
    assert bad in degraded["message"] and "KdamondFailed" in degraded["message"]
    assert "EBUSY" in degraded["message"]
    assert status["failingNodes"] == [
        {"node": bad, "reason": "KdamondFailed", "message": "state write: EBUSY"}
    ]
    assert status["appliedBytes"] == 4 << 20
    assert status["triedBytes"] == 8 << 20
    assert all(c["observedGeneration"] == generation for c in status["conditions"])
    assert status["observedGeneration"] == generation
    printed = kubectl("get", "clusterdamonscheme", name).stdout.splitlines()[1]
    assert printed.split()[1:3] == ["pageout", "1/2"] and " 4.000 MiB " in printed

    report(bad, applied=1 << 20)
    status = wait_for(lambda: status_with(lambda s: s.get("nodesReady") == "2/2"), what="2/2")
    assert condition({"status": status}, "Ready")["status"] == "True"
    assert condition({"status": status}, "Degraded")["status"] == "False"
    assert status["failingNodes"] == []

    # An agent that stops reporting becomes a failure once its heartbeat is too old.
    stale = LONG_AGO
    agent_report(
        bad, heartbeat=stale, schemes=[scheme_report("ClusterDamonScheme", name, uid, generation)]
    )

    def unresponsive(s: dict[str, Any]) -> bool:
        return any(f["reason"] == "NodeUnresponsive" for f in s.get("failingNodes", []))

    status = wait_for(lambda: status_with(unresponsive), what="NodeUnresponsive")
    assert status["failingNodes"][0]["node"] == bad


def test_deletion_waits_for_live_nodes_to_tear_down(
    run_operator, apply, kubectl, make_node, wait_for, agent_report, instance
):
    node = make_node()
    run_operator(*FAST)
    name = f"{instance}-teardown"
    apply(cluster_scheme(name))
    key = f"ClusterDamonScheme/{name}"
    wait_for(lambda: assigned_keys(kubectl, node) == [key], what="assigned")
    meta = wait_for(
        lambda: (m := kubectl.json("clusterdamonscheme", name)["metadata"]).get("finalizers") and m,
        what="the finalizer",
    )
    assert f"damon.io/teardown-{instance}" in meta["finalizers"]
    still_running = scheme_report("ClusterDamonScheme", name, meta["uid"], meta["generation"])
    agent_report(node, schemes=[still_running])

    kubectl("delete", "clusterdamonscheme", name, "--wait=false")
    wait_for(lambda: assigned_keys(kubectl, node) == [], what="removed from the node's spec")
    # The agent still reports it running (and is alive): the scheme must stay.
    for _ in range(3):
        agent_report(node, schemes=[still_running])
        time.sleep(1)
    remaining = kubectl("get", "clusterdamonscheme", name, "-o", "json", check=False)
    assert remaining.returncode == 0, "deleted before the live node tore it down"
    assert json.loads(remaining.stdout)["metadata"].get("deletionTimestamp")
    # The agent tears it down: now it goes.
    agent_report(node, schemes=[])
    wait_for(
        lambda: kubectl("get", "clusterdamonscheme", name, check=False).returncode != 0,
        what="the scheme to be deleted",
    )


@pytest.mark.parametrize("how", ["silent agent", "node deleted"])
def test_a_gone_node_does_not_block_deletion(
    how, run_operator, apply, kubectl, make_node, wait_for, agent_report, instance
):
    alive, gone = make_node(), make_node()
    run_operator(*FAST)
    name = f"{instance}-gone-{how.split()[1]}"
    apply(cluster_scheme(name))
    wait_for(lambda: assigned_keys(kubectl, gone) == [f"ClusterDamonScheme/{name}"], what="spec")
    meta = kubectl.json("clusterdamonscheme", name)["metadata"]
    running = scheme_report("ClusterDamonScheme", name, meta["uid"], meta["generation"])
    agent_report(alive, schemes=[running])
    if how == "node deleted":
        agent_report(gone, schemes=[running])
        kubectl("delete", "node", gone)
    else:  # its agent stopped long ago: the last heartbeat is older than the timeout
        agent_report(gone, schemes=[running], heartbeat=LONG_AGO)
    started = time.monotonic()
    kubectl("delete", "clusterdamonscheme", name, "--wait=false")
    agent_report(alive, schemes=[])  # the live node tears down; the gone one never will
    wait_for(
        lambda: kubectl("get", "clusterdamonscheme", name, check=False).returncode != 0,
        timeout=30,
        what=f"deletion despite a {how}",
    )
    assert time.monotonic() - started < 25


def test_a_namespaced_scheme_never_selects_pods_of_another_namespace(
    run_operator, apply, kubectl, make_node, wait_for, instance
):
    node = make_node()
    tenant, other = f"{instance}-tenant", f"{instance}-other"
    for ns in (tenant, other):
        kubectl("create", "namespace", ns, check=False)
        kubectl("create", "serviceaccount", "default", "-n", ns, check=False)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "cart-0", "namespace": ns, "labels": {"app": "cart"}},
            "spec": {
                "nodeName": node,
                # No token controller runs: a token mount would be refused.
                "automountServiceAccountToken": False,
                "containers": [{"name": "c", "image": "busybox"}],
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(pod))
    run_operator(*FAST)
    greedy = {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "DamonScheme",
        "metadata": {"name": "everything"},
        # The widest selector there is: every pod, every node.
        "spec": {"podSelector": {}, "schemes": [{"name": "s", "action": "pageout"}]},
    }
    apply(greedy, tenant)
    wait_for(lambda: assigned_keys(kubectl, node), what="assignment")
    raw = kubectl.json("damonnode", node)["spec"]["schemes"][0]
    assignment = resources.AssignedScheme.model_validate(raw)
    assert assignment.namespaces == [tenant]
    pods = kubectl.json("pods", "-A", "--field-selector", f"spec.nodeName={node}")["items"]
    assert {p["metadata"]["namespace"] for p in pods} == {tenant, other}
    selected = {
        p["metadata"]["namespace"]
        for p in pods
        if assignment.selects_pod(p["metadata"]["namespace"], p["metadata"].get("labels"))
    }
    assert selected == {tenant}
    # Even a hand-written DamonNode spec cannot widen a DamonScheme beyond its namespace.
    with pytest.raises(ValueError, match="can only target that namespace"):
        resources.AssignedScheme.model_validate({**raw, "namespaces": [tenant, other]})
    for ns in (tenant, other):
        kubectl("delete", "pod", "cart-0", "-n", ns, "--wait=false", check=False)
    strip = '{"metadata":{"finalizers":null}}'
    kubectl("patch", "damonscheme", "everything", "-n", tenant, "--type=merge", "-p", strip)
    kubectl("delete", "damonscheme", "everything", "-n", tenant, "--wait=false", check=False)


def test_an_operator_confined_to_a_namespace_serves_only_its_schemes(
    run_operator, apply, kubectl, make_node, wait_for, instance
):
    # ``damon-operator --namespace NS``: DamonSchemes of NS only, while nodes (cluster
    # scoped) still get their DamonNodes and ClusterDamonSchemes are still served.
    node = make_node()
    served, ignored = f"{instance}-served", f"{instance}-ignored"
    for ns in (served, ignored):
        kubectl("create", "namespace", ns, check=False)
    operator = run_operator(*FAST, "--namespace", served)
    apply("reclaim-cold.yaml", served)
    apply("reclaim-cold.yaml", ignored)
    whole = cluster_scheme(f"{instance}-whole")
    apply(whole)
    expected = sorted(
        [f"DamonScheme/{served}/reclaim-cold", f"ClusterDamonScheme/{instance}-whole"]
    )
    wait_for(lambda: sorted(assigned_keys(kubectl, node) or []) == expected, what="assignment")
    accepted = wait_for(
        lambda: condition(kubectl.json("damonscheme", "reclaim-cold", "-n", served), "Accepted"),
        what="Accepted on the served namespace's scheme",
    )
    assert accepted["status"] == "True"
    # A few resyncs later the other namespace's scheme is still untouched: no condition,
    # no finalizer, never assigned.
    time.sleep(3)
    untouched = kubectl.json("damonscheme", "reclaim-cold", "-n", ignored)
    assert condition(untouched, "Accepted") is None, untouched.get("status")
    assert not untouched["metadata"].get("finalizers"), untouched["metadata"]
    assert sorted(assigned_keys(kubectl, node) or []) == expected
    assert "Traceback" not in operator.log()
    strip = '{"metadata":{"finalizers":null}}'
    for ns in (served, ignored):
        kubectl("patch", "damonscheme", "reclaim-cold", "-n", ns, "--type=merge", "-p", strip)
        kubectl("delete", "damonscheme", "reclaim-cold", "-n", ns, "--wait=false", check=False)


def test_two_replicas_with_peering_act_once(
    run_operator, apply, kubectl, make_node, wait_for, instance
):
    peering = f"{instance}-peering"
    kubectl(
        "apply", "-f", "-",
        input=json.dumps({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                          "metadata": {"name": peering}}),
    )  # fmt: skip
    node = make_node()
    common = ("--peering", peering, "--peering-lifetime", "10", *FAST)
    leader = run_operator(*common, "--priority", "200", standalone=False, name="leader")
    wait_for(lambda: assigned_keys(kubectl, node) == [], what="the leader to create DamonNodes")
    leader.wait_for_log("Resuming operations")  # kopf starts paused until peering is read
    standby = run_operator(*common, "--priority", "100", standalone=False, name="standby")
    standby.wait_for_log("Initial authentication has finished")

    name = f"{instance}-peered"
    apply(cluster_scheme(name))
    wait_for(lambda: assigned_keys(kubectl, node) == [f"ClusterDamonScheme/{name}"], what="spec")
    wait_for(lambda: condition(kubectl.json("clusterdamonscheme", name), "Ready"), what="status")
    time.sleep(2)
    # The standby saw a peer of higher priority and never resumed, nor wrote anything.
    acted = standby.log()
    assert "Resuming operations" not in acted, acted
    assert "DamonNode" not in acted and "writing status" not in acted, acted
    assert "writing status" in leader.log()

    # The leader leaves: the standby takes over and acts on the next change.
    leader.stop()
    standby.wait_for_log("Resuming operations", timeout=30)
    kubectl("label", "node", node, "extra=1")
    other = f"{instance}-after"
    apply(cluster_scheme(other))
    wait_for(
        lambda: f"ClusterDamonScheme/{other}" in (assigned_keys(kubectl, node) or []),
        what="the standby to act",
    )
    assert f"ClusterDamonScheme/{other}: writing status" in standby.log() or wait_for(
        lambda: f"ClusterDamonScheme/{other}: writing status" in standby.log(), what="standby"
    )
