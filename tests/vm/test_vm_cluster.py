"""The full path: a guest as a node of the host's control plane, schemes through kubectl.

The control plane (etcd + kube-apiserver, ``scripts/controlplane.sh``) and the operator
run on the host; the guest is the node. The guest reaches the apiserver at 10.0.2.2 (QEMU
user networking), which the serving certificate names; its kubeconfig is the host's admin
kubeconfig pointed there, handed over through the share. ``scenarios/cluster_agent.py``
starts workloads whose memory starts on node 1 and the agent daemon beside them.

The host then does what a cluster admin would: ``kubectl apply`` of schemes, waits for
their ``Ready`` condition and for the node's DamonNode to report applied bytes, lets the
pages settle, deletes the schemes and waits for the node's status to drop them. The
guest's samples (written to the share every second) give the placement and residency of
the hot and cold pages over time and whether the agent's monitoring went away.

``test_kubectl_apply_on_host_tiers_the_guest_node``, on the default guest (6.12, the
kernel backend): a whole-node ClusterDamonScheme, or a DamonScheme selecting one pod
beside a decoy cgroup, with migrate_hot to the dram tier and migrate_cold to the cxl
tier, as in examples/cxl-tiering.yaml. The schemes carry the example's ``young`` filters
(promote only pages found accessed, never demote one found accessed). The guest's 6.12
DAMON has no allow filters, so this also runs the agent's reject-only rewrite end to end:
the promotion's "allow young" reaches the kernel as "reject not young". The demotion's
minimum age (10 s) is short enough that it acts while the promotion runs, so the
placement checked shows that the two do not fight: hot pages promoted stay promoted.

``test_userspace_backend_reclaims_and_tiers_pods_on_debian12_kernel``, on Debian 12's
stock 6.1 guest, which has no DAMON at all: the agent runs with ``--backend auto`` and
must fall back to its own userspace engine (soft-dirty access checks, process_madvise,
move_pages). Three pods on the node, each a workload with a hot and a cold array on
node 1: ``reclaimed`` (selected by a pageout scheme for memory idle 5 s), ``tiered``
(selected by a migrate_hot scheme to the dram tier) and ``decoy`` (selected by none).
Both schemes have the same monitoring, so the agent runs them in one context over both
pods' processes, kept apart by ``target`` filters: the tiered pod's cold array is as
cold as the reclaimed pod's and must stay resident, the reclaimed pod's hot array is as
hot as the tiered pod's and must stay on node 1, and the decoy must not change at all.

The boot runs in a worker thread while the test drives the cluster (``GuestNode``,
tests/support/cluster_guest.py); the host learns the boot's share directory from the
fresh work directory it gives the boot. Whatever fails, the host writes ``teardown`` into
the share (the guest then ends its watch) and waits for the boot, the guest powers off
(its own deadline, then the host's), and the operator stops. The control plane and the
operator are tests/vm/conftest.py's fixtures.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import cluster_guest
import harness
import pytest
from cluster_guest import (
    INSTANCE_LABEL,
    GuestNode,
    PodRef,
    make_namespace,
    make_node,
    make_pod,
    remove_pods,
    wait_for,
    wait_for_agent,
)
from cluster_guest import condition as _condition
from kube_support import Kubectl

pytestmark = [pytest.mark.vm, pytest.mark.kube]

REPO = harness.REPO_ROOT
SCHEME = "vm-cxl-tiering"
HOT_MIB = 32
COLD_MIB = 192
# Guest: watch at most this long from the script's start, and at most this long after the
# host says it deleted the schemes; the VM's own deadline comes after both. Limits for a
# loaded host: emulation slows down with it (the agent took 35 s to start on a quiet host,
# over 2 min beside image builds); a quiet run ends in under 2 min, at the teardown.
WATCH_LIMIT_S = 360
TEARDOWN_LIMIT_S = 40
VM = harness.VmConfig(net=True, deadline_s=420, margin_s=60)
# Host: after the apply, wait this long for Ready with applied bytes, and this long in all
# for the hot pages to settle on node 0 (then the guest's samples are judged as they are).
# (The agent's start: cluster_guest.AGENT_START_S.)
READY_TIMEOUT_S = 120
SETTLE_LIMIT_S = 80
POD_LABELS = {"app": "vm-tiering"}

# The userspace-backend test: Debian 12's stock kernel, which has no DAMON at all.
USERSPACE_SERIES = "6.1"
RECLAIM_SCHEME = "vm-reclaim-cold"
PROMOTE_SCHEME = "vm-promote-hot"
USERSPACE_WORKLOADS = {
    # pod name -> (hot MiB, cold MiB); every pod is labelled app=vm-<name>.
    "reclaimed": (32, 128),
    "tiered": (32, 128),
    "decoy": (16, 32),
}
# After the apply: all in, this long for both schemes to settle (most of the reclaimed
# pod's cold array out, most of the tiered pod's hot array on node 0).
USERSPACE_SETTLE_LIMIT_S = 120


def tiering_scheme(instance: str, node_label: str, pod: PodRef | None) -> dict[str, Any]:
    """The scheme the host applies: whole node (ClusterDamonScheme), or one pod's namespace
    (DamonScheme selecting the pod, monitoring mode ``auto``)."""
    # Intervals and regions as in the kernel tiering scenario (guest_lib.tiering_kdamond
    # says why): under emulation a 5 ms sampling interval costs the guest too much, and
    # 40 ms still catches every hot-loop pass; 100 regions find scattered hot huge pages.
    monitoring: dict[str, Any] = {
        "intervals": {"sample": "40ms", "aggregation": "800ms", "update": "1s"},
        "regions": {"min": 100, "max": 1000},
    }
    spec: dict[str, Any] = {
        "nodeSelector": {"matchLabels": {"damon.io/vm-node": node_label}},
        "monitoring": monitoring,
        "schemes": [
            {
                "name": "promote-hot",
                "action": "migrate_hot",
                "tier": "dram",
                "accessPattern": {
                    "accessRate": {"min": "25%", "max": "100%"},
                    # Five aggregations: the regions split hot from cold first. A page
                    # DAMON never checked reads as young, so a young-filtered promotion of
                    # a region still half cold moves its cold pages too (one run ended
                    # with 21 % of the cold array on node 0 at 1 aggregation's age).
                    "age": {"min": "4s", "max": "max"},
                },
                "filters": [{"type": "young", "allow": True}],
            },
            {
                "name": "demote-cold",
                "action": "migrate_cold",
                "tier": "cxl",
                "accessPattern": {
                    "accessRate": {"min": "0%", "max": "0%"},
                    "age": {"min": "10s", "max": "max"},
                },
                "filters": [{"type": "young", "allow": False}],
            },
        ],
    }
    metadata: dict[str, Any] = {"name": SCHEME, "labels": {INSTANCE_LABEL: instance}}
    if pod is None:
        monitoring["mode"] = "paddr"
        spec["wholeNode"] = True
        kind = "ClusterDamonScheme"
    else:
        # auto: vaddr where it can, but 6.12's vaddr cannot migrate, so the agent
        # monitors physical memory with the pod's memcgs (one kernel scheme per memcg).
        spec["podSelector"] = {"matchLabels": POD_LABELS}
        metadata["namespace"] = pod.namespace
        kind = "DamonScheme"
    return {"apiVersion": "damon.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


def _node_scheme(damon_node: dict[str, Any] | None, name: str = SCHEME) -> dict[str, Any]:
    return cluster_guest.node_scheme(damon_node, name)


def _applied_bytes(node_scheme: dict[str, Any]) -> int:
    return sum(int(s.get("appliedBytes", 0)) for s in node_scheme.get("stats") or [])


def _share_of(placement: dict[str, int], node: int) -> float:
    total = sum(placement.values())
    return placement.get(str(node), 0) / total if total else 0.0


def _of(sample: dict[str, Any], workload: str) -> dict[str, Any]:
    """One workload's part of a guest sample (placements, residency, faults, loops)."""
    part: dict[str, Any] = sample["workloads"][workload]
    return part


def host_agent_processes(node: str) -> list[int]:
    """Host processes whose command line names the guest node (an agent for it would)."""
    return [pid for pid in harness.processes_using(Path(node)) if pid != os.getpid()]


@pytest.mark.parametrize("target", ["node", "pod"])
def test_kubectl_apply_on_host_tiers_the_guest_node(
    vm: harness.Runner,
    vm_figures: harness.Figures,
    kubectl: Kubectl,
    kubeconfig: Path,
    instance: str,
    operator: Path,
    target: str,
) -> None:
    """``node``: a whole-node ClusterDamonScheme. ``pod``: a DamonScheme selecting one
    pod; a second workload outside it (a "decoy" cgroup) must not move."""
    node, label = make_node(kubectl, instance)
    pod = None
    workloads: list[dict[str, Any]] = [{"name": "app", "hot_mib": HOT_MIB, "cold_mib": COLD_MIB}]
    if target == "pod":
        pod = make_pod(kubectl, make_namespace(kubectl, instance), node, "workload", POD_LABELS)
        workloads[0]["pod"] = pod.guest_pod()
        # As hot as the pod's workload, in a cgroup no scheme selects: it must stay put.
        workloads.append({"name": "decoy", "hot_mib": 16, "cold_mib": 16, "cgroup": "/decoy"})
    params: dict[str, Any] = {
        "node": node,
        "backend": "kernel",
        "workloads": workloads,
        "status_interval_s": 3,
        "watch_limit_s": WATCH_LIMIT_S,
        "teardown_limit_s": TEARDOWN_LIMIT_S,
    }
    guest = GuestNode(
        assets=vm.assets, config=VM, work_root=vm.work_dir, params=params, kubeconfig=kubeconfig
    )
    figures: dict[str, Any] = {}
    try:
        figures = _drive_cluster(kubectl, node, instance, label, pod, guest)
    finally:
        guest.teardown()
        if pod is not None:
            remove_pods(kubectl, pod.namespace, [pod], [SCHEME])
        try:
            run = guest.result()
        finally:
            vm_figures.record(**figures)
    vm_figures.record_run(run)
    agent_log = run.text("agent.log") if run.path("agent.log").exists() else ""
    run.check()
    result = run.json()
    samples = result["samples"]
    dram, cxl = result["dram"], result["cxl"]
    hot_on_dram = [round(_share_of(_of(s, "app")["hot"], dram), 3) for s in samples]
    cold_on_cxl = [round(_share_of(_of(s, "app")["cold"], cxl), 3) for s in samples]
    kdamond_from = next((s["t"] for s in samples if s["kdamonds"]), None)
    hot_from = next((s["t"] for s, h in zip(samples, hot_on_dram, strict=True) if h >= 0.7), None)
    vm_figures.record(
        guest_kdamond_started_s=kdamond_from,
        guest_hot_70pct_s=hot_from,
        hot_on_node0=[(s["t"], h) for s, h in zip(samples, hot_on_dram, strict=True)][::3],
        cold_on_node1_min=min(cold_on_cxl),
        cold_on_node1_last=cold_on_cxl[-1],
        kdamonds=[s["kdamonds"] for s in samples],
        kdamonds_gone_s=result["monitoring_gone_s"],
        kdamond_schemes=result.get("kdamond_schemes"),
        teardown_seen_s=result["teardown_seen_s"],
        test_s=round(time.monotonic() - guest.started, 1),
    )
    tail = agent_log[-3000:]
    assert (dram, cxl) == (0, 1)
    assert result["damon_sysfs"], "the default guest must have DAMON sysfs"
    # The workload started on the CXL node, and the cluster's scheme moved it.
    assert _share_of(_of(samples[0], "app")["hot"], cxl) >= 0.95, samples[0]
    # One kdamond per source tier: promotion watches the CXL node, demotion the DRAM node
    # (runtime.planning, "Migrations on paddr").
    assert max(s["kdamonds"] for s in samples) == 2, tail
    before_teardown = [
        h
        for s, h in zip(samples, hot_on_dram, strict=True)
        if result["teardown_seen_s"] is None or s["t"] < result["teardown_seen_s"]
    ]
    assert before_teardown[-1] >= 0.7, hot_on_dram
    assert cold_on_cxl[-1] >= 0.9, cold_on_cxl
    assert _of(samples[-1], "app")["loops"] > _of(samples[0], "app")["loops"]
    # Deleting the scheme on the host turned the guest's kdamond off while the agent ran.
    assert result["agent_running_at_end"], tail
    assert result["monitoring_gone_s"] is not None, ([s["kdamonds"] for s in samples], tail)
    assert result["nr_kdamonds_after_agent"] == 0
    assert result["agent_rc"] == 0, tail
    if pod is not None:
        # The decoy's hot pages are as hot as the pod's, but not the pod's: they stay.
        decoy_on_cxl = [round(_share_of(_of(s, "decoy")["hot"], cxl), 3) for s in samples]
        vm_figures.record(decoy_hot_on_node1_min=min(decoy_on_cxl))
        assert min(decoy_on_cxl) >= 0.95, decoy_on_cxl


def _drive_cluster(
    kubectl: Kubectl,
    node: str,
    instance: str,
    label: str,
    pod: PodRef | None,
    guest: GuestNode,
) -> dict[str, Any]:
    """Apply, wait for Ready and applied bytes and settled pages, delete; return figures."""
    guest_started = guest.first_sample()
    wait_for_agent(kubectl, node, guest)
    agent_s = round(time.monotonic() - guest_started, 1)
    kubectl.apply(tiering_scheme(instance, label, pod))
    scheme_ref = (
        ("clusterdamonscheme", SCHEME)
        if pod is None
        else ("damonscheme", SCHEME, "-n", pod.namespace)
    )
    applied_at = time.monotonic()

    def ready_and_applied() -> tuple[dict[str, Any], dict[str, Any]] | None:
        guest.check_alive()
        scheme = kubectl.get(*scheme_ref)
        per_node = _node_scheme(kubectl.get("damonnode", node))
        ready = _condition(scheme, "Ready").get("status") == "True"
        # The operator sums the nodes' reports into the scheme's status a moment after
        # the node's own status shows them: wait for both.
        totals = int(((scheme or {}).get("status") or {}).get("appliedBytes", 0))
        if ready and _applied_bytes(per_node) > 0 and totals > 0 and scheme is not None:
            return scheme, per_node
        return None

    found = wait_for(
        ready_and_applied,
        timeout=READY_TIMEOUT_S,
        what="scheme Ready, applied bytes on the guest node and in the scheme's status",
        describe=lambda: {
            "scheme_status": (kubectl.get(*scheme_ref) or {}).get("status"),
            "node_status": _node_scheme(kubectl.get("damonnode", node)),
            "kdamond_schemes": guest.share.progress().get("kdamond_schemes"),
        },
    )
    assert found is not None
    scheme, per_node = found
    ready_s = round(time.monotonic() - applied_at, 1)

    def hot_settled() -> bool:
        guest.check_alive()
        progress = guest.share.progress()
        recent = progress.get("samples", [])[-3:]
        dram = progress.get("dram", 0)
        return len(recent) == 3 and all(
            _share_of(_of(s, "app")["hot"], dram) >= 0.9 for s in recent
        )

    deadline = applied_at + SETTLE_LIMIT_S
    while time.monotonic() < deadline and not hot_settled():
        time.sleep(1.0)
    settled_s = round(time.monotonic() - applied_at, 1)
    scheme = kubectl.get(*scheme_ref) or scheme
    per_node = _node_scheme(kubectl.get("damonnode", node)) or per_node
    status = scheme.get("status") or {}
    figures = {
        "submit_to_first_sample_s": round(guest_started - guest.started, 1),
        "agent_status_after_first_sample_s": agent_s,
        "ready_after_apply_s": ready_s,
        "settled_after_apply_s": settled_s,
        "conditions": {
            c["type"]: f"{c['status']}/{c.get('reason', '')}" for c in status.get("conditions", [])
        },
        "scheme_applied": status.get("applied"),
        "node_applied_mib": {
            s["name"]: int(s.get("appliedBytes", 0)) >> 20 for s in per_node.get("stats", [])
        },
    }
    assert _condition(scheme, "Accepted").get("status") == "True", status
    assert _condition(scheme, "Ready").get("status") == "True", status
    assert int(status.get("appliedBytes", 0)) > 0, status

    deleting = time.monotonic()
    kubectl("delete", *scheme_ref, "--timeout=60s")
    wait_for(
        lambda: not _node_scheme(kubectl.get("damonnode", node)),
        timeout=60,
        what="the guest node's status without the scheme",
    )
    figures["node_status_dropped_after_delete_s"] = round(time.monotonic() - deleting, 1)
    return figures


# ---------------------------------------------------------------------------------------
# The userspace backend on a kernel without DAMON


def userspace_schemes(instance: str, namespace: str, node_label: str) -> list[dict[str, Any]]:
    """Two DamonSchemes of one namespace: pageout for the ``reclaimed`` pod, migrate_hot to
    the dram tier for the ``tiered`` pod. Equal monitoring: the agent runs one context.

    Sampling every 50 ms and aggregating every 500 ms, as tests/vm/test_userspace_engine.py
    does for this engine under emulation (clear_refs once per sampling interval per
    process). A region is cold when no sample of 5 s saw it written (soft-dirty sees
    writes only, and the hot loops write); hot when at least half the samples of an
    aggregation saw it written. No filters beyond the pods': the userspace backend
    evaluates address and target filters only, and the planner's target filters are
    what keep each scheme to its own pod.
    """
    monitoring = {
        "mode": "auto",
        "intervals": {"sample": "50ms", "aggregation": "500ms", "update": "2s"},
        "regions": {"min": 100, "max": 400},
    }
    reclaim = {
        "name": "pageout-cold",
        "action": "pageout",
        "accessPattern": {
            "accessRate": {"min": "0%", "max": "0%"},
            "age": {"min": "5s", "max": "max"},
        },
    }
    promote = {
        "name": "promote-hot",
        "action": "migrate_hot",
        "tier": "dram",
        "accessPattern": {
            "accessRate": {"min": "50%", "max": "100%"},
            "age": {"min": "1s", "max": "max"},
        },
    }
    return [
        {
            "apiVersion": "damon.io/v1alpha1",
            "kind": "DamonScheme",
            # The instance label: only this test's operator takes it (handlers.py).
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {INSTANCE_LABEL: instance},
            },
            "spec": {
                "nodeSelector": {"matchLabels": {"damon.io/vm-node": node_label}},
                "podSelector": {"matchLabels": {"app": f"vm-{pod}"}},
                "monitoring": monitoring,
                "schemes": [scheme],
            },
        }
        for name, pod, scheme in (
            (RECLAIM_SCHEME, "reclaimed", reclaim),
            (PROMOTE_SCHEME, "tiered", promote),
        )
    ]


def _resident_share(
    sample: dict[str, Any], workload: str, array: str, progress: dict[str, Any]
) -> float:
    start, end = progress["spans"][workload][array]
    pages = (end - start) // progress["page"]
    return _of(sample, workload)[f"{array}_resident"] / pages if pages else 0.0


def _reclaimed(sample: dict[str, Any], progress: dict[str, Any]) -> float:
    """Share of the reclaimed pod's cold array no longer resident."""
    return 1.0 - _resident_share(sample, "reclaimed", "cold", progress)


def _promoted(sample: dict[str, Any], progress: dict[str, Any]) -> float:
    """Share of the tiered pod's hot array on the dram node."""
    return _share_of(_of(sample, "tiered")["hot"], progress["dram"])


def test_userspace_backend_reclaims_and_tiers_pods_on_debian12_kernel(
    vm_figures: harness.Figures,
    kubectl: Kubectl,
    kubeconfig: Path,
    instance: str,
    operator: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``damon-agent daemon --backend auto`` on 6.1 (no DAMON): the userspace engine
    reclaims one pod's cold memory and promotes another pod's hot memory, each scheme
    only within its pod, and leaves a decoy pod alone."""
    try:
        assets = harness.VmAssets.from_cache(series=USERSPACE_SERIES)
    except harness.VmAssetsMissingError as error:
        pytest.fail(str(error))
    node, label = make_node(kubectl, instance)
    namespace = make_namespace(kubectl, instance)
    pods = {
        name: make_pod(kubectl, namespace, node, name, {"app": f"vm-{name}"})
        for name in USERSPACE_WORKLOADS
    }
    params: dict[str, Any] = {
        "node": node,
        "backend": "auto",
        "workloads": [
            {"name": name, "hot_mib": hot, "cold_mib": cold, "pod": pods[name].guest_pod()}
            for name, (hot, cold) in USERSPACE_WORKLOADS.items()
        ],
        "status_interval_s": 3,
        "watch_limit_s": WATCH_LIMIT_S,
        "teardown_limit_s": TEARDOWN_LIMIT_S,
    }
    guest = GuestNode(
        assets=assets,
        config=VM,
        # Short: virtiofsd's socket path under it must fit a sockaddr_un.
        work_root=tmp_path_factory.mktemp("vm-us"),
        params=params,
        kubeconfig=kubeconfig,
    )
    figures: dict[str, Any] = {}
    try:
        node_status = _drive_userspace(kubectl, instance, node, label, namespace, guest, figures)
    finally:
        guest.teardown()
        remove_pods(kubectl, namespace, list(pods.values()), [RECLAIM_SCHEME, PROMOTE_SCHEME])
        try:
            run = guest.result()
        finally:
            vm_figures.record(**figures)
    vm_figures.record_run(run)
    agent_log = run.text("agent.log") if run.path("agent.log").exists() else ""
    tail = agent_log[-3000:]
    run.check()
    result = run.json()
    samples = result["samples"]
    dram, cxl, page = result["dram"], result["cxl"], result["page"]
    teardown_s = result["teardown_seen_s"]
    watched = [s for s in samples if teardown_s is None or s["t"] < teardown_s]
    first, last = watched[0], watched[-1]
    reclaimed = [round(_reclaimed(s, result), 3) for s in samples]
    promoted = [round(_promoted(s, result), 3) for s in samples]

    def series(workload: str, array: str, measure: str) -> list[float]:
        if measure == "resident":
            return [round(_resident_share(s, workload, array, result), 3) for s in samples]
        nid = dram if measure == "dram" else cxl
        return [round(_share_of(_of(s, workload)[array], nid), 3) for s in samples]

    def majflt(workload: str) -> int:
        return int(_of(samples[-1], workload)["majflt"] - _of(samples[0], workload)["majflt"])

    hot_pages = {
        name: (result["spans"][name]["hot"][1] - result["spans"][name]["hot"][0]) // page
        for name in USERSPACE_WORKLOADS
    }
    # What the agent reported while both schemes ran (the host deletes them one by one).
    reports = [
        s["agent"] for s in watched if s["agent"] and len(s["agent"].get("schemes", [])) == 2
    ]
    fallback_lines = [line for line in agent_log.splitlines() if "trying the userspace" in line]
    backend_condition = _condition({"status": node_status}, "BackendAvailable")
    vm_figures.record(
        kernel=result["kernel"],
        swap_mib=result["swap_kib"] >> 10,
        reclaimed_cold_share=[(s["t"], r) for s, r in zip(samples, reclaimed, strict=True)][::5],
        reclaimed_cold_share_last=round(_reclaimed(last, result), 3),
        reclaimed_hot_resident_min=min(series("reclaimed", "hot", "resident")),
        reclaimed_hot_resident_last=round(_resident_share(last, "reclaimed", "hot", result), 3),
        reclaimed_hot_on_node1_min=min(series("reclaimed", "hot", "cxl")),
        reclaimed_majflt=majflt("reclaimed"),
        reclaimed_hot_pages=hot_pages["reclaimed"],
        tiered_hot_on_node0=[(s["t"], p) for s, p in zip(samples, promoted, strict=True)][::5],
        tiered_hot_on_node0_last=round(_promoted(last, result), 3),
        tiered_cold_on_node1_min=min(series("tiered", "cold", "cxl")),
        tiered_cold_resident_min=min(series("tiered", "cold", "resident")),
        decoy_resident_min=min(
            series("decoy", "hot", "resident") + series("decoy", "cold", "resident")
        ),
        decoy_on_node1_min=min(series("decoy", "hot", "cxl") + series("decoy", "cold", "cxl")),
        decoy_majflt=majflt("decoy"),
        agent_reports=reports[-1:] or None,
        fallback_log=fallback_lines[:1],
        backend_condition=backend_condition,
        monitoring_gone_s=result["monitoring_gone_s"],
        teardown_seen_s=teardown_s,
        agents_left_in_guest=result["agents_left"],
        test_s=round(time.monotonic() - guest.started, 1),
    )
    # The guest is what the test says it is: Debian 12's kernel, no DAMON, two tiers.
    assert result["kernel"].startswith("6.1."), result["kernel"]
    assert not result["damon_sysfs"], "the 6.1 guest must have no DAMON sysfs"
    assert (dram, cxl) == (0, 1)
    # Anonymous memory is paged out to swap: without it pageout cannot reclaim a page.
    assert result["swap_kib"] > 0, (
        "no swap in the guest (its console says why /init could not start zram; "
        "scripts/vm-assets.sh rebuilds the initramfs)"
    )
    # --backend auto fell back to userspace, and said why: in the status and in its log.
    assert node_status.get("backend") == "userspace", node_status.get("backend")
    assert backend_condition.get("status") == "True", backend_condition
    assert backend_condition.get("reason") == "FellBack", backend_condition
    assert "damon/admin" in backend_condition.get("message", ""), backend_condition
    assert fallback_lines and "damon/admin" in fallback_lines[0], tail
    assert "access checks with soft_dirty" in agent_log, tail
    # One vaddr context over both selected pods' processes; the decoy's is not in it.
    assert reports, (
        "the agent never reported both schemes running at /v1/snapshot; it answered: "
        f"{sorted({json.dumps(s['agent']) for s in watched})[:5]}"
    )
    assert reports[-1]["backend"] == "userspace", reports[-1]
    assert reports[-1]["operations"] == ["vaddr"], reports[-1]
    assert reports[-1]["targets"] == [2], reports[-1]
    # Every array started resident on node 1.
    for name in USERSPACE_WORKLOADS:
        for array in ("hot", "cold"):
            assert _share_of(_of(first, name)[array], cxl) >= 0.95, (name, array, first)
            assert _resident_share(first, name, array, result) >= 0.95, (name, array, first)
    # Reclaim: most of the reclaimed pod's cold array went out; its hot array stayed in
    # (at most a quarter of its pages came back from swap in all) and on node 1.
    assert _reclaimed(last, result) >= 0.8, reclaimed
    assert _resident_share(last, "reclaimed", "hot", result) >= 0.95, series(
        "reclaimed", "hot", "resident"
    )
    assert majflt("reclaimed") <= hot_pages["reclaimed"] // 4, majflt("reclaimed")
    assert min(series("reclaimed", "hot", "cxl")) >= 0.7, series("reclaimed", "hot", "cxl")
    # Tiering: most of the tiered pod's hot array is on node 0; its cold array, as cold
    # as the reclaimed pod's, stayed resident (no pageout) and on node 1 (no promotion).
    assert _promoted(last, result) >= 0.8, promoted
    assert min(series("tiered", "cold", "cxl")) >= 0.9, series("tiered", "cold", "cxl")
    assert min(series("tiered", "cold", "resident")) >= 0.95, series("tiered", "cold", "resident")
    # The decoy pod, selected by neither scheme: every page resident on node 1 throughout.
    for array in ("hot", "cold"):
        assert min(series("decoy", array, "resident")) >= 0.95, series("decoy", array, "resident")
        assert min(series("decoy", array, "cxl")) >= 0.95, series("decoy", array, "cxl")
    for name in USERSPACE_WORKLOADS:
        assert _of(last, name)["loops"] > _of(first, name)["loops"], name
    # Deleting the schemes stopped the agent's monitoring while it ran; then it stopped
    # cleanly and left no process, in the guest or on the host.
    assert result["agent_running_at_end"], tail
    assert result["monitoring_gone_s"] is not None, ([s["agent"] for s in samples[-5:]], tail)
    assert result["agent_rc"] == 0, tail
    assert result["agents_left"] == [], result["agents_left"]
    assert host_agent_processes(node) == []


def _drive_userspace(
    kubectl: Kubectl,
    instance: str,
    node: str,
    label: str,
    namespace: str,
    guest: GuestNode,
    figures: dict[str, Any],
) -> dict[str, Any]:
    """Apply both schemes, wait for Ready and applied bytes and settled pages, delete them;
    return the DamonNode status seen once settled. ``figures`` fills as it goes."""
    guest_started = guest.first_sample()
    figures["submit_to_first_sample_s"] = round(guest_started - guest.started, 1)

    wait_for_agent(kubectl, node, guest)
    figures["agent_status_after_first_sample_s"] = round(time.monotonic() - guest_started, 1)
    for obj in userspace_schemes(instance, namespace, label):
        kubectl.apply(obj)
    applied_at = time.monotonic()
    refs = {
        name: ("damonscheme", name, "-n", namespace) for name in (RECLAIM_SCHEME, PROMOTE_SCHEME)
    }

    def ready_and_applied() -> dict[str, Any] | None:
        guest.check_alive()
        damon_node = kubectl.get("damonnode", node)
        for name, ref in refs.items():
            scheme = kubectl.get(*ref)
            ready = _condition(scheme, "Ready").get("status") == "True"
            totals = int(((scheme or {}).get("status") or {}).get("appliedBytes", 0))
            if not (ready and totals > 0 and _applied_bytes(_node_scheme(damon_node, name)) > 0):
                return None
        return damon_node

    def seen() -> dict[str, Any]:
        damon_node = kubectl.get("damonnode", node) or {}
        return {
            "schemes": {
                name: (kubectl.get(*ref) or {}).get("status") for name, ref in refs.items()
            },
            "node_status": damon_node.get("status"),
            "guest_agent": [s.get("agent") for s in guest.share.progress().get("samples", [])[-1:]],
        }

    wait_for(
        ready_and_applied,
        timeout=READY_TIMEOUT_S,
        what="both schemes Ready, with applied bytes on the guest node and in their status",
        describe=seen,
    )
    figures["ready_after_apply_s"] = round(time.monotonic() - applied_at, 1)

    def settled() -> bool:
        guest.check_alive()
        progress = guest.share.progress()
        recent = progress.get("samples", [])[-3:]
        return len(recent) == 3 and all(
            _reclaimed(s, progress) >= 0.9 and _promoted(s, progress) >= 0.9 for s in recent
        )

    deadline = applied_at + USERSPACE_SETTLE_LIMIT_S
    while time.monotonic() < deadline and not settled():
        time.sleep(1.0)
    figures["settled_after_apply_s"] = round(time.monotonic() - applied_at, 1)
    node_status: dict[str, Any] = (kubectl.get("damonnode", node) or {}).get("status") or {}
    figures |= {
        "status_backend": node_status.get("backend"),
        "status_kernel_release": (node_status.get("capabilities") or {}).get("kernelRelease"),
        "node_conditions": {
            c["type"]: f"{c['status']}/{c.get('reason', '')}: {c.get('message', '')}"
            for c in node_status.get("conditions", [])
        },
        "node_applied_mib": {
            f"{s['name']}/{one['name']}": int(one.get("appliedBytes", 0)) >> 20
            for s in node_status.get("schemes", [])
            for one in s.get("stats", [])
        },
        "node_scheme_conditions": {
            s["name"]: {c["type"]: f"{c['status']}/{c.get('reason', '')}" for c in s["conditions"]}
            for s in node_status.get("schemes", [])
        },
    }
    for name, ref in refs.items():
        scheme = kubectl.get(*ref)
        status = (scheme or {}).get("status") or {}
        assert _condition(scheme, "Accepted").get("status") == "True", (name, status)
        assert _condition(scheme, "Ready").get("status") == "True", (name, status)
        # On the node, as planned: no warning (a pageout without swap would carry one).
        on_node = _node_scheme({"status": node_status}, name)
        degraded = _condition({"status": on_node}, "Degraded")
        assert degraded.get("status") == "False", (name, on_node)

    deleting = time.monotonic()
    for ref in refs.values():
        kubectl("delete", *ref, "--timeout=60s")
    wait_for(
        lambda: not any(_node_scheme(kubectl.get("damonnode", node), n) for n in refs),
        timeout=60,
        what="the guest node's status without either scheme",
    )
    figures["node_status_dropped_after_delete_s"] = round(time.monotonic() - deleting, 1)
    return node_status
