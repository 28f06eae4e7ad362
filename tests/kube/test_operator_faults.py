"""Operator faults against the real apiserver (issue 16, part 2): the operator killed with
SIGKILL in the middle of a scheme deletion, the active one of two peered replicas killed
with SIGKILL, and a scheme edited 50 times in 10 s.

"Written twice" is measured two ways: the DamonNode's ``metadata.generation``, which the
apiserver bumps once per change of its spec (its status is a subresource, so the agents'
heartbeats do not bump it), and the operator's own log lines for the writes it makes
("DamonNode N: updating spec", "KEY: writing status"), counted over every replica's log.
The tests act as the agents (they write DamonNode statuses); no kubelet runs.
"""

from __future__ import annotations

import json
import time
from typing import Any

import kube_support
import kubernetes
import pytest

from damon_agent.api import resources

pytestmark = pytest.mark.kube

# As in test_operator.py: resyncs every second, a heartbeat timeout a loaded machine meets.
FAST = ("--heartbeat-timeout", "30", "--resync", "1", "--totals-interval", "1")
# The peered replicas' record lifetime: short, so a takeover is quick. kopf touches the
# record every second at this lifetime (lifetime minus 5-10 s, at least 1 s).
PEERING_LIFETIME_S = 6
EDITS = 50
EDIT_EVERY_S = 0.2  # 50 edits in 10 s


def cluster_scheme(name: str, *schemes: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "ClusterDamonScheme",
        "metadata": {"name": name},
        "spec": {"wholeNode": True, "schemes": list(schemes) or [{"name": "s", "action": "stat"}]},
    }


def quota_scheme(edit: int) -> dict[str, Any]:
    """The scheme's one action, its quota telling the edits apart."""
    return {"name": "s", "action": "pageout", "quota": {"size": f"{edit + 1}Mi"}}


def running_report(scheme: dict[str, Any]) -> dict[str, Any]:
    """What an agent running ``scheme`` (a stored object) reports of it."""
    meta = scheme["metadata"]
    generation = meta["generation"]
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Applied",
        "message": "running",
        "observedGeneration": generation,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    return {
        "kind": scheme["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "observedGeneration": generation,
        "conditions": [ready],
    }


condition = kube_support.condition
assigned_keys = kube_support.assigned_keys


def keys_of(damon_node: dict[str, Any]) -> list[str]:
    return [
        resources.scheme_key(a["kind"], a.get("namespace"), a["name"])
        for a in damon_node.get("spec", {}).get("schemes", [])
    ]


def generation(kubectl: Any, kind: str, name: str) -> int:
    return int(kubectl.json(kind, name)["metadata"]["generation"])


def spec_writes(log: str, node: str) -> int:
    """The operator's DamonNode spec writes (creates and patches) for ``node``."""
    return log.count(f"DamonNode {node}: updating spec") + log.count(
        f"DamonNode {node}: creating spec"
    )


def status_writes(log: str, key: str) -> int:
    return log.count(f"{key}: writing status")


def instance_damon_nodes_listing(kubectl: Any, instance: str, key: str) -> list[str]:
    """DamonNodes of this session whose spec still assigns ``key``."""
    items = kubectl.json("damonnodes", "-l", f"damon.io/instance={instance}")["items"]
    return [item["metadata"]["name"] for item in items if key in keys_of(item)]


def test_an_operator_killed_mid_deletion_is_succeeded_and_the_deletion_completes(
    run_operator, apply, kubectl, make_node, wait_for, agent_report, instance, record_property
):
    node = make_node()
    first = run_operator(*FAST, name="first")
    name = f"{instance}-killed-mid-delete"
    key = f"ClusterDamonScheme/{name}"
    apply(cluster_scheme(name))
    wait_for(lambda: assigned_keys(kubectl, node) == [key], what="assigned")
    stored = wait_for(
        lambda: (o := kubectl.json("clusterdamonscheme", name))["metadata"].get("finalizers") and o,
        what="the finalizer",
    )
    ours = f"damon.io/teardown-{instance}"
    assert ours in stored["metadata"]["finalizers"]
    running = running_report(stored)
    agent_report(node, schemes=[running])

    # A fresh heartbeat just before the deletion: on a loaded CI machine the steps above
    # took long enough for the first report to count as a dead agent's (the operator then
    # let the scheme go at once, and there was nothing to kill it in the middle of).
    agent_report(node, schemes=[running])
    kubectl("delete", "clusterdamonscheme", name, "--wait=false")
    # The deletion handler runs: the node's spec drops the scheme, and the handler waits
    # for the node (still reporting it running) to tear it down. Kill it there.
    wait_for(lambda: assigned_keys(kubectl, node) == [], what="removed from the node's spec")
    dropped_at = generation(kubectl, "damonnode", node)
    assert first.kill() == -9
    # (Another test's schemes, left deleting, may be torn down by this operator: only
    # this scheme's line counts.)
    assert f"{key} is torn down on every live node" not in first.log(), first.log()[-2000:]
    remaining = kubectl.json("clusterdamonscheme", name)["metadata"]
    assert remaining.get("deletionTimestamp") and ours in remaining["finalizers"], remaining

    second = run_operator(*FAST, name="second")
    second.wait_for_log("Activity 'start' succeeded")
    # The agent still runs the scheme: the successor must wait for it as the first did,
    # not drop the finalizer because its predecessor had started the deletion.
    for _ in range(4):
        agent_report(node, schemes=[running])
        time.sleep(1)
    remaining = kubectl("get", "clusterdamonscheme", name, "-o", "json", check=False)
    assert remaining.returncode == 0, (
        "the successor let the scheme go while a live node still runs it "
        "(its index had not listed the DamonNodes yet?)"
    )
    assert ours in json.loads(remaining.stdout)["metadata"].get("finalizers", [])
    assert assigned_keys(kubectl, node) == [], "the successor gave the deleted scheme back"

    torn_down = time.monotonic()
    agent_report(node, schemes=[])
    wait_for(
        lambda: kubectl("get", "clusterdamonscheme", name, check=False).returncode != 0,
        timeout=30,
        what="the successor to complete the deletion (our finalizer removed)",
    )
    completed_s = time.monotonic() - torn_down
    assert f"{key} is torn down on every live node" in second.log()
    assert instance_damon_nodes_listing(kubectl, instance, key) == []
    # The successor found the node's spec already right: it wrote it no second time.
    assert generation(kubectl, "damonnode", node) == dropped_at
    assert spec_writes(second.log(), node) == 0, second.log()
    assert "Traceback" not in second.log()
    record_property("figures", f"deletion completed {completed_s:.1f} s after the teardown")


def test_the_standby_takes_over_from_a_killed_leader_and_writes_nothing_twice(
    run_operator, apply, kubectl, make_node, wait_for, instance, record_property
):
    peering = f"{instance}-peering-kill"
    kubectl(
        "apply", "-f", "-",
        input=json.dumps({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                          "metadata": {"name": peering}}),
    )  # fmt: skip
    node = make_node()
    common = ("--peering", peering, "--peering-lifetime", str(PEERING_LIFETIME_S), *FAST)
    leader = run_operator(*common, "--priority", "200", standalone=False, name="leader")
    wait_for(lambda: assigned_keys(kubectl, node) == [], what="the leader to create DamonNodes")
    leader.wait_for_log("Resuming operations")
    standby = run_operator(*common, "--priority", "100", standalone=False, name="standby")
    # It starts paused, and stays so once it has read the leader's record (no log line).
    standby.wait_for_log("Initial authentication has finished")

    before = f"{instance}-before-kill"
    before_key = f"ClusterDamonScheme/{before}"
    apply(cluster_scheme(before))
    wait_for(lambda: assigned_keys(kubectl, node) == [before_key], what="spec")
    wait_for(lambda: condition(kubectl.json("clusterdamonscheme", before), "Ready"), what="status")
    time.sleep(2)  # resyncs: nothing more is due
    assert spec_writes(standby.log(), node) == 0 and "writing status" not in standby.log()
    node_generation = generation(kubectl, "damonnode", node)
    status_before = kubectl.json("clusterdamonscheme", before)["status"]
    leader_writes = status_writes(leader.log(), before_key)

    assert leader.kill() == -9
    killed = time.monotonic()
    standby.wait_for_log("Resuming operations", timeout=PEERING_LIFETIME_S + 20)
    takeover_s = time.monotonic() - killed
    # Not before the dead leader's record expired (kopf touched it at most ~1 s before the
    # kill), and not much after.
    assert PEERING_LIFETIME_S - 2 <= takeover_s <= PEERING_LIFETIME_S + 10, takeover_s

    # The standby resyncs everything it now owns and finds it right: no write.
    time.sleep(3)
    assert generation(kubectl, "damonnode", node) == node_generation, (
        "the standby rewrote a DamonNode spec the leader had written"
    )
    assert spec_writes(standby.log(), node) == 0, standby.log()[-3000:]
    assert status_writes(standby.log(), before_key) == 0, standby.log()[-3000:]
    assert kubectl.json("clusterdamonscheme", before)["status"] == status_before

    # One change after the takeover: exactly one DamonNode spec write, by the standby.
    after = f"{instance}-after-kill"
    after_key = f"ClusterDamonScheme/{after}"
    apply(cluster_scheme(after))
    wait_for(
        lambda: sorted(assigned_keys(kubectl, node) or []) == sorted([before_key, after_key]),
        what="the standby to act on the change",
    )
    wait_for(lambda: condition(kubectl.json("clusterdamonscheme", after), "Ready"), what="status")
    time.sleep(3)  # resyncs: a second write would come now
    logs = leader.log() + standby.log()
    node_writes = generation(kubectl, "damonnode", node) - node_generation
    assert node_writes == 1, f"{node_writes} DamonNode spec changes for one scheme applied"
    assert spec_writes(standby.log(), node) == 1, standby.log()[-3000:]
    after_writes = status_writes(logs, after_key)
    assert after_writes == 1, f"{after_writes} status writes of an unchanging new scheme"
    assert status_writes(logs, before_key) == leader_writes, "the old scheme's status rewritten"
    assert "Traceback" not in standby.log()
    record_property(
        "figures",
        f"takeover {takeover_s:.1f} s after SIGKILL (peering lifetime {PEERING_LIFETIME_S} s); "
        f"writes for one change: {node_writes} DamonNode spec, {after_writes} status; "
        "on takeover: 0 spec, 0 status",
    )
    kubectl("delete", "clusterkopfpeering", peering, "--wait=false", check=False)


def test_fifty_edits_in_ten_seconds_end_on_the_last_generation_with_bounded_writes(
    run_operator, apply, kubectl, kube_client, make_node, wait_for, instance, record_property
):
    node = make_node()
    operator = run_operator(*FAST)
    name = f"{instance}-edited"
    key = f"ClusterDamonScheme/{name}"
    apply(cluster_scheme(name, quota_scheme(0)))
    wait_for(lambda: assigned_keys(kubectl, node) == [key], what="assigned")
    wait_for(
        lambda: kubectl.json("clusterdamonscheme", name).get("status", {}).get(
            "observedGeneration"
        ) == 1,
        what="the first status",
    )  # fmt: skip
    time.sleep(1.5)
    node_generation = generation(kubectl, "damonnode", node)
    log_before = operator.log()

    api = kubernetes.client.CustomObjectsApi(kube_client)
    started = time.monotonic()
    for edit in range(1, EDITS + 1):
        api.patch_cluster_custom_object(
            resources.GROUP, resources.VERSION, "clusterdamonschemes", name,
            {"spec": {"schemes": [quota_scheme(edit)]}},
        )  # fmt: skip
        time.sleep(max(0.0, started + edit * EDIT_EVERY_S - time.monotonic()))
    editing_s = time.monotonic() - started
    assert editing_s < 15, f"the {EDITS} edits took {editing_s:.1f} s: the machine is too slow"
    final = 1 + EDITS
    assert generation(kubectl, "clusterdamonscheme", name) == final

    def assigned() -> dict[str, Any]:
        found: dict[str, Any] = kubectl.json("damonnode", node)["spec"]["schemes"][0]
        return found

    wait_for(lambda: assigned()["generation"] == final, what=f"the node on generation {final}")
    last_edit = quota_scheme(EDITS)["quota"]["size"]
    assert assigned()["spec"]["schemes"][0]["quota"]["size"] == last_edit, assigned()
    wait_for(
        lambda: kubectl.json("clusterdamonscheme", name)["status"]["observedGeneration"] == final,
        what=f"the status observing generation {final}",
    )
    settled = time.monotonic() - started
    time.sleep(2)  # resyncs: nothing more is due
    log = operator.log()[len(log_before) :]
    node_writes = generation(kubectl, "damonnode", node) - node_generation
    writes_logged = spec_writes(log, node)
    statuses = status_writes(log, key)
    # The node-spec loop coalesces what arrives within coalesce_s (0.3 s) of a wake-up,
    # so an edit every 0.2 s costs at most one write per ~0.3 s: about 30 in 10 s, not 50.
    bound = int(editing_s / 0.3) + 3
    assert node_writes == writes_logged, (node_writes, writes_logged)
    assert node_writes <= bound, f"{node_writes} DamonNode spec writes for {EDITS} edits"
    assert statuses <= bound, f"{statuses} status writes for {EDITS} edits"
    assert "Traceback" not in operator.log()
    record_property(
        "figures",
        f"{EDITS} edits in {editing_s:.1f} s: {node_writes} DamonNode spec writes, "
        f"{statuses} status writes (bound {bound}); last generation on the node and in "
        f"the status {settled:.1f} s after the first edit",
    )
