"""The shape users deploy: the image, ``helm install``, a DaemonSet on a kubelet, real pods.

One VM guest (the default 6.12 kernel, cgroup v2, node 1 CPU-less in a lower memory
tier) is a real node of the host's control plane (``vm_node.VmNode``). The images are the
ones scripts/build-images.sh builds from the project's Dockerfile (and the workload's),
imported into the node's containerd. ``deployed.Deployment`` then walks the user's path:

1. ``helm install`` of helm/damon-k8s with the test image: the operator (Deployment) and
   the agent (DaemonSet) run as pods with the chart's own securityContext and mounts, and
   become Ready;
2. the workload image runs as pods in a namespace, started during the install: a
   ``warehouse`` pod whose memory starts on node 0 (DRAM), then two ``cart`` pods (the
   example's selector) and a ``catalog`` pod whose memory starts on node 1 (CXL); each
   has 32 MiB hot and 96 MiB cold;
3. ``kubectl apply`` of examples/reclaim-cold.yaml (age 10 s instead of 2 minutes; scaled
   to the emulated guest, which stalls more and is slower: memory PSI target 200 ms per
   second instead of 1 ms, time quota 200 ms instead of 20 ms, aggregation 1 s instead of
   100 ms): the cart pods' cold memory is paged out, as their memory cgroups show
   (memory.current down, memory.swap.current up), their hot arrays stay resident, the
   other pods are untouched; ``kubectl get damonschemes`` shows it Ready on 1/1 node;
4. ``kubectl apply`` of examples/cxl-tiering.yaml (demotion age 10 s instead of 30 s,
   aggregation 1 s as above): the catalog's hot pages move to node 0 and the
   warehouse's hot pages stay there; the share of the catalog's cold pages left on node 1
   is recorded, not asserted (the promotion sometimes takes cold pages along: issue 15);
   ``kubectl describe`` shows the scheme Ready and the node's figures;
5. the kdamond the node's status reports is the one running in the guest;
6. ``kubectl delete pod`` of the agent: the kdamonds stay on meanwhile, and its successor
   adopts them (the same kdamond threads, so no gap in monitoring) and reports them; the
   hot pages are still on node 0 after it (the two tiering schemes do not fight); the
   warehouse's cold pages are demoted to node 1 (90 % of them within
   ``WAREHOUSE_DEMOTED_BY_S`` of the tiering's apply);
7. ``helm uninstall``: once the agents' pods are deleted, no kdamond is left on in the
   guest; the CRDs are kept; its hook released the operator's finalizers, so the
   scheme left behind deletes at once.

Figures: image sizes, install to Ready, memory saved per pod, hot share on DRAM over time,
the schemes' counters (tried, applied, effective quota) over the reclaim and the tiering,
the agent pod's CPU and RSS, where the node's CPU went, probe to probe, and where the
uninstall's time went (each release pod's stages, and the hook's log).
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import cluster_guest
import deployed
import harness
import kube_support
import pytest
import vm_node
from deployed import Deployment, Seen, Workload

pytestmark = [pytest.mark.vm, pytest.mark.kube, pytest.mark.images]

# The guest's own deadline. The walk takes 13-15 minutes of the guest's time on these
# 2 cores (images cached); at 900 s one run's guest ended during helm uninstall, whose
# hook may take up to deployed.HOOK_DEADLINE_S.
VM = vm_node.node_vm_config(deadline_s=1800)
COLD = 96 * deployed.MIB
CART = Workload("cart", replicas=2)
CATALOG = Workload("catalog", numa_node=1)
WAREHOUSE = Workload("warehouse", numa_node=0)
DRAM, CXL = 0, 1
SHORT_AGE = "10s"
PSI_TARGET = "200ms"
# Both below: what made the reclaim take 90-280 s, traced on 2026-12-05 (docs/outcome.md).
# The example's 20 ms of kernel time per second, scaled to the emulated guest (every page
# table walk and zram write emulated). At 20 ms the kernel's measured throughput held the
# quota at 110-160 MiB/s in the walks, spent round the processes' whole cold virtual
# space, unmapped gaps included (in a standalone run an array waited 80 s for its turn).
TIME_QUOTA = "200ms"
# The example's 100 ms aggregation, lengthened for the emulated guest: its two cores are
# saturated through the walk, and a cart's hot array, descheduled for a whole 100 ms,
# read as idle in 8-10 % of the aggregations. It then merged with its cold neighbour, and
# when its accesses came back the merged region's age restarted at 0: the cold arrays
# stayed under the minimum age for 160 s. At 1 s no aggregation saw the hot arrays idle,
# and the cold arrays went at their first eligible try. The tiering's demotion churned
# the same way (the warehouse's cold pages 0-46 % on CXL at the handover in four walks;
# with 1 s, 100 % at the handover in the four runs measured).
GUEST_INTERVALS = {"sample": "20ms", "aggregation": "1s", "update": "1s"}
# The tiering's deadline for the warehouse's cold pages on CXL, from the apply. The four
# runs measured had them all there at their handovers, 119-277 s after the apply
# (when they were looked at, not when they arrived); this leaves a margin over those.
WAREHOUSE_DEMOTED_BY_S = 330.0


@pytest.fixture(scope="module")
def kubeconfig() -> Iterator[Path]:
    with kube_support.held_controlplane() as path:
        yield path


def test_helm_install_on_a_real_node_reclaims_and_tiers_pods(
    vm: harness.Runner, vm_figures: harness.Figures, kubeconfig: Path
) -> None:
    try:
        images = deployed.build_images()
        vm_node.build_binaries()
        vm_node.build_node_images()
    except (deployed.DeployError, vm_node.NodeError) as error:
        pytest.fail(str(error))
    vm_figures.record(
        image_mib={k: round(v["size"] / deployed.MIB, 1) for k, v in images.items()},
    )
    for attempt in (1, 2):
        node, failure = _deploy_and_walk(vm, vm_figures, kubeconfig)
        if failure is None:
            return
        if attempt == 2 or not node.oopsed_on_int3():
            pytest.fail(failure)
        # The emulator's race with the kernel's run-time text patching (harness.VmConfig)
        # killed the node: the walk once more on a fresh node. (On one host thread, free of
        # the race, the walk ran twice as slow and missed its deadlines.)
        vm_figures.record(emulator_int3_oops_retried=True)
        sys.stderr.write("\nthe node oopsed on int3 under multi-threaded TCG; the walk again\n")


def _deploy_and_walk(
    vm: harness.Runner, figures: harness.Figures, kubeconfig: Path
) -> tuple[vm_node.VmNode, str | None]:
    """One node, one release, the whole walk; the node and why it failed (None: passed)."""
    instance = f"e2e-{uuid.uuid4().hex[:6]}"
    node = vm_node.VmNode(
        name=f"vm-{instance}",
        kubeconfig=kubeconfig,
        assets=vm.assets,
        work_root=vm.work_dir,
        config=VM,
        image_dirs=deployed.image_dirs(),
        labels={"damon.io/cxl": "true", deployed.INSTANCE_LABEL: instance},
    )
    began = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {line}", flush=True)

    deployment = Deployment(node=node, kubeconfig=kubeconfig, instance=instance, say=say)
    try:
        with node:
            node.wait_ready(300)
            try:
                _walk(deployment, figures)
            except (deployed.DeployError, vm_node.NodeError, AssertionError) as error:
                # The pods' logs while the guest is still up (kubectl logs cannot reach it).
                raise deployed.DeployError(f"{error}\n{deployment.pod_logs()}") from error
    except (deployed.DeployError, vm_node.NodeError) as error:
        return node, f"{error}\n{node.describe()}"
    finally:
        # Where the node's two vCPUs went, probe to probe: (s, % busy, % workloads, %
        # kdamonds, top processes), to tell the node's own load from the agent's when a
        # step is slow.
        figures.record(
            guest_cpu_timeline=[
                (t, cpu["busy"], cpu["workloads"], cpu["kdamonds"], top)
                for t, cpu, top in deployment.cpu_timeline
            ]
        )
        deployment.cleanup()
    return node, None


def _walk(deployment: Deployment, figures: harness.Figures) -> None:
    # 1. helm install, and the workloads meanwhile: they need nothing of the release, and
    # on these two emulated cores each Python start (agent, operator, workloads) mostly
    # waits its turn, so starting them together saves the waits between them.
    # The warehouse first, alone: its arrays then lie in physical memory apart from the
    # other workloads' (pods allocating at once interleave their pages, and
    # physical-address monitoring, whose regions are address ranges, sees such cold
    # pages among hot ones).
    pods: dict[str, dict[str, str]] = {}

    def reported(*workloads: Workload) -> bool:
        found = {w.app: deployment.workload_pods(w.app) for w in workloads}
        if any(len(found[w.app]) != w.replicas for w in workloads):
            return False
        seen = deployment.probe()
        if not all(uid in seen.workloads for by_name in found.values() for uid in by_name.values()):
            return False
        pods.update(found)
        return True

    started = time.monotonic()
    deployment.deploy_workloads([WAREHOUSE])
    deployment.install()
    deployment.wait_for("the warehouse pod running", lambda: reported(WAREHOUSE), 300)
    deployment.deploy_workloads([CART, CATALOG])
    deployment.wait_for("the operator and the agent Ready", deployment.release_ready, 300)
    figures.record(install_to_ready_s=round(time.monotonic() - started, 1))

    def damon_node_reported() -> dict[str, Any] | None:
        found = deployment.damon_node()
        return found if (found or {}).get("status", {}).get("backend") else None

    damon_node = deployment.wait_for(
        "the agent's status in its DamonNode", damon_node_reported, 120
    )
    assert damon_node["status"]["backend"] == "kernel", damon_node["status"]
    # The node's own tiering, as the agent reads it (the node script turns NUMA
    # balancing off: the promotion below must be the scheme's).
    figures.record(node_kernel_tiering=damon_node["status"].get("kernelTiering"))

    # 2. The workloads, until each has reported its arrays (and so has them in memory).
    deployment.wait_for("the cart and catalog pods running", lambda: reported(CART, CATALOG), 300)
    figures.record(workloads_running_s=round(time.monotonic() - started, 1))
    carts = list(pods["cart"].values())
    catalog, warehouse = (
        next(iter(pods["catalog"].values())),
        next(iter(pods["warehouse"].values())),
    )
    before = deployment.probe()
    assert before.share(catalog, "hot", lambda n: n == CXL) > 0.95, before.workloads[catalog]
    assert before.share(warehouse, "cold", lambda n: n == DRAM) > 0.95
    # Nothing but the tiering scheme may move the catalog's hot pages: the node script
    # turns the kernel's NUMA balancing off (with it on, even mode 1, they were all on
    # node 0 within minutes in one walk, no scheme applied).
    assert (damon_node["status"].get("kernelTiering") or {}).get("numaBalancing") == 0, damon_node[
        "status"
    ]

    # 3. Reclaim: the example, with a 10 s age, scaled to the emulated guest.
    def scaled_to_the_guest(scheme: dict[str, Any]) -> None:
        pageout = scheme["spec"]["schemes"][0]
        pageout["accessPattern"]["age"]["min"] = SHORT_AGE
        # The emulated guest stalls on memory far more than a real node (every fault and
        # every zram page is emulated): with the example's 1 ms of PSI per second the
        # kernel's tuning shrinks the quota to a trickle (one run took over 300 s). At
        # 50 ms (2026-12-04) one walk's effective quota reached 256 MiB and was back at
        # nothing 11 s later (the kernel's tuning falls to its minimum when the stall
        # passes twice the target), and that reclaim took 186 s; at 200 ms the next
        # took 129 s.
        (goal,) = pageout["quota"]["goals"]
        goal["target"] = PSI_TARGET
        pageout["quota"]["time"] = TIME_QUOTA
        scheme["spec"]["monitoring"]["intervals"] = GUEST_INTERVALS

    reclaim = deployment.example("reclaim-cold", scaled_to_the_guest)
    reclaim_applied = time.monotonic()
    print(deployment.apply(reclaim))
    # (s since applied, the pageout's counters from the DamonNode status)
    reclaiming: list[tuple[float, dict[str, Any]]] = []

    def cold_paged_out() -> Seen | None:
        seen = deployment.probe()
        counters = _scheme_counters(deployment, "reclaim-cold")
        if counters:
            # Beside the kernel's counters, what reached swap: on vaddr, applied bytes are
            # no measure of it (docs/outcome.md).
            swapped = [round(seen.workloads[uid]["swap_current"] / deployed.MIB) for uid in carts]
            counters["swap_mib"] = swapped
            # And the node's free DRAM and swap in use: the kernel's own reclaim, when
            # node 0 runs short, swaps pods' pages too.
            counters["node0_free_swap_used_mib"] = (
                seen.memory.get("node0_free_mib"),
                seen.memory.get("swap_used_mib"),
            )
            reclaiming.append((round(time.monotonic() - reclaim_applied, 1), counters))
        # Each cart's cold array, nearly whole (the probe's swap figure is the pod's
        # memory cgroup's, which holds a few MiB of other pages too).
        ok = all(seen.workloads[uid]["swap_current"] >= 0.9 * COLD for uid in carts)
        return seen if ok else None

    try:
        # 47 s in the walk of 2026-12-05 with the intervals and quota above (90-283 s
        # before, for half of it).
        reclaimed = deployment.wait_for("the cart pods' cold memory paged out", cold_paged_out, 240)
    finally:
        figures.record(reclaim_counters_timeline=_changes(reclaiming))
    figures.record(
        reclaim_s=round(time.monotonic() - reclaim_applied, 1),
        saved_mib_per_pod={
            uid[:8]: round(
                (
                    before.workloads[uid]["memory_current"]
                    - reclaimed.workloads[uid]["memory_current"]
                )
                / deployed.MIB,
                1,
            )
            for uid in carts
        },
        swap_mib_per_pod={
            uid[:8]: round(reclaimed.workloads[uid]["swap_current"] / deployed.MIB, 1)
            for uid in carts
        },
    )
    for uid in carts:
        # The hot array stays in memory: it is accessed all the time.
        assert reclaimed.share(uid, "hot", lambda n: n >= 0) > 0.9, reclaimed.workloads[uid]
        # Its memory cgroup's use fell by most of what went to swap (the rest of the
        # pod's memory may grow meanwhile).
        assert (
            reclaimed.workloads[uid]["memory_current"]
            < before.workloads[uid]["memory_current"] - 0.7 * COLD
        )
    for uid in (catalog, warehouse):
        # Not selected: untouched.
        assert reclaimed.workloads[uid]["swap_current"] == 0, reclaimed.workloads[uid]
    # Nothing has moved the catalog's hot pages yet, so the promotion below is the tiering
    # scheme's.
    assert reclaimed.share(catalog, "hot", lambda n: n == CXL) > 0.9, reclaimed.workloads[catalog]
    listed = deployment.kubectl("get", "damonschemes", "-n", deployment.namespace)
    print(listed)
    row = next(line for line in listed.splitlines() if line.startswith("reclaim-cold"))
    assert row.split()[1:3] == ["pageout", "1/1"], listed
    found = deployment.get("damonscheme", "reclaim-cold", "-n", deployment.namespace)
    assert (deployed.condition(found, "Ready") or {}).get("status") == "True", found

    # The reclaim scheme goes; the finalizer (the operator) lets it.
    deployment.kubectl("delete", "damonscheme", "reclaim-cold", "-n", deployment.namespace)

    # 4. Tiering: the example, demoting after 10 s instead of 30 s, at the guest's intervals.
    def shorter_demotion_age(scheme: dict[str, Any]) -> None:
        for one in scheme["spec"]["schemes"]:
            if one["action"] == "migrate_cold":
                one["accessPattern"]["age"]["min"] = SHORT_AGE
        scheme["spec"]["monitoring"]["intervals"] = GUEST_INTERVALS

    tiering = deployment.example("cxl-tiering", shorter_demotion_age)
    tiering_name = tiering["metadata"]["name"]
    tiering_applied = time.monotonic()
    print(deployment.apply(tiering))
    # (s since applied, the catalog's hot share on DRAM, the warehouse's cold share on CXL)
    timeline: list[tuple[float, float, float]] = []
    tiering_counters: list[tuple[float, dict[str, Any]]] = []  # (s, both schemes' counters)

    def promoted() -> Seen | None:
        seen = deployment.probe()
        at = round(time.monotonic() - tiering_applied, 1)
        hot_up = seen.share(catalog, "hot", lambda n: n == DRAM)
        cold_down = seen.share(warehouse, "cold", lambda n: n == CXL)
        timeline.append((at, round(hot_up, 3), round(cold_down, 3)))
        counters = _scheme_counters(deployment, tiering_name)
        if counters:
            tiering_counters.append((at, counters))
        return seen if hot_up >= 0.9 else None

    try:
        what = "the catalog's hot pages promoted to DRAM"
        placed = deployment.wait_for(what, promoted, 240)
    finally:
        figures.record(tiering_timeline_s_hot_on_dram_cold_on_cxl=timeline)
    figures.record(promotion_s=timeline[-1][0])
    # The catalog's cold pages staying on CXL: a figure for now. In one run of four they
    # were promoted too (0.04 left on CXL): the promotion's paddr regions mix the hot and
    # cold arrays (issue 15, "only 56% of the cold pages stayed on CXL").
    figures.record(catalog_cold_on_cxl=round(placed.share(catalog, "cold", lambda n: n == CXL), 3))
    assert placed.share(warehouse, "hot", lambda n: n == DRAM) >= 0.9, placed.workloads[warehouse]

    # The scheme's Ready comes from the operator's next aggregation of the node's status,
    # which the promotion can beat: in one walk the hot pages were on DRAM 5 s after the
    # apply, and `kubectl describe` then showed 0/1 nodes ready.
    def tiering_ready() -> bool:
        found = deployment.get("clusterdamonscheme", tiering_name)
        return (deployed.condition(found, "Ready") or {}).get("status") == "True"

    deployment.wait_for("the tiering scheme Ready", tiering_ready, 120)
    described = deployment.kubectl("describe", "clusterdamonscheme", tiering_name)
    print(described)
    assert "AllNodesReady" in described and "Applied" in described, described
    node_row = deployment.kubectl("get", "damonnode", deployment.node.name)
    print(node_row)

    # 5. The agent's kdamond is the one the status reports; the agent's own cost.
    status = (deployment.damon_node() or {}).get("status") or {}
    pids = {c["kdamondPid"] for c in status.get("contexts") or [] if c.get("kdamondPid")}
    assert pids, status
    seen = deployment.probe()
    assert set(seen.running_kdamonds().values()) == pids, (seen.kdamonds, pids)
    # The agent's own cost over the reclaim and tiering work, when the same process ran
    # throughout (kubelet restarts it when its liveness probe fails: then a figure too).
    (agent_then,) = before.agents
    (agent_now,) = seen.agents
    figures.record(
        agent_rss_mib=round(agent_now["rss_bytes"] / deployed.MIB, 1),
        agent_restarted=agent_now["pid"] != agent_then["pid"],
    )
    if agent_now["pid"] == agent_then["pid"]:
        cpu_s = agent_now["cpu_s"] - agent_then["cpu_s"]
        figures.record(agent_cpu_percent=round(100 * cpu_s / (seen.at - before.at), 2))
    # 6. kubectl delete pod of the agent: its successor adopts the running kdamonds
    # (the same threads: no gap in monitoring) and reports them.
    (old_pod,) = deployment.agent_pods()
    old_name = old_pod["metadata"]["name"]
    replaced_at = time.monotonic()
    # Not waiting in kubectl: the old pod's termination is timed below with the rest.
    deployment.kubectl("delete", "pod", "-n", deployment.system_namespace, old_name, "--wait=false")
    milestones: dict[str, float] = {}
    kept = deployment.probe()
    assert kept.running_kdamonds() == seen.running_kdamonds(), (
        "the replaced agent did not leave its kdamonds running",
        kept.kdamonds,
        deployment.pod_logs(),
    )

    def reached(milestone: str) -> None:
        milestones.setdefault(milestone, round(time.monotonic() - replaced_at, 1))

    def successor_reports() -> bool:
        pods = deployment.agent_pods()
        if old_name not in [p["metadata"]["name"] for p in pods]:
            reached("old_pod_gone")
        if [p["metadata"]["name"] for p in pods] == [old_name] or len(pods) != 1:
            return False
        reached("successor_created")
        status = pods[0].get("status") or {}
        if status.get("phase") == "Running":
            reached("successor_running")
        ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
        if not ready or ready[0]["status"] != "True":
            return False
        reached("successor_ready")
        now = (deployment.damon_node() or {}).get("status") or {}
        reported = {c.get("kdamondPid") for c in now.get("contexts") or []}
        backend = [c for c in now.get("conditions") or [] if c["type"] == "BackendAvailable"]
        return reported == pids and bool(backend) and backend[0]["status"] == "True"

    # The DaemonSet makes the successor once kubelet has removed the old pod's sandbox.
    # That took 20-80 s in most walks, and 209 s in one (2026-12-05): the agent's container
    # stopped in 4 s, but kubelet's second StopPodSandbox spent 127 s in the CNI teardown
    # (bridge and portmap: iptables-nft) while its own iptables canary checks took 50-55 s,
    # on the saturated emulated cores. The successor's own start is about a minute more.
    deployment.wait_for("the successor agent Ready, reporting the same kdamonds",
                        successor_reports, 420)  # fmt: skip
    reached("successor_reports_the_kdamonds")
    figures.record(agent_replacement_s=milestones)
    (successor,) = deployment.agent_pods()
    _record_startup(deployment, successor, figures)
    adopted = deployment.probe()
    assert adopted.running_kdamonds() == seen.running_kdamonds(), (adopted.kdamonds, pids)
    counters = _scheme_counters(deployment, tiering_name)
    if counters:
        tiering_counters.append((round(adopted.at - tiering_applied, 1), counters))
    figures.record(tiering_counters_timeline=_changes(tiering_counters))
    # The tiering went on through the handover, minutes now, and the two schemes did not
    # fight: the catalog's and the warehouse's hot pages are still on DRAM.
    figures.record(
        tiering_s_at_handover=round(adopted.at - tiering_applied, 1),
        catalog_after_handover_hot_on_dram_cold_on_cxl=(
            round(adopted.share(catalog, "hot", lambda n: n == DRAM), 3),
            round(adopted.share(catalog, "cold", lambda n: n == CXL), 3),
        ),
    )
    assert adopted.share(catalog, "hot", lambda n: n == DRAM) >= 0.9, adopted.workloads[catalog]
    assert adopted.share(warehouse, "hot", lambda n: n == DRAM) >= 0.9, adopted.workloads[warehouse]

    # The warehouse's cold pages demoted to CXL. At the guest's 1 s aggregation they were
    # all there at the handover in the four runs measured (119-277 s after the apply;
    # 0.0-0.71 at the promotion's end, 7-30 s in). At 100 ms they came at no steady
    # time (0.0 at 179 s, 1.0 at 231 s): docs/outcome.md says why an idle hot neighbour
    # resets a region's age.
    def demoted(seen: Seen) -> Seen | None:
        return seen if seen.share(warehouse, "cold", lambda n: n == CXL) >= 0.9 else None

    figures.record(
        warehouse_cold_on_cxl_at_handover=round(
            adopted.share(warehouse, "cold", lambda n: n == CXL), 3
        )
    )
    # Looked at again only when the handover's look did not find them there yet.
    done = demoted(adopted) or deployment.wait_for(
        "the warehouse's cold pages on CXL",
        lambda: demoted(deployment.probe()),
        max(WAREHOUSE_DEMOTED_BY_S - (time.monotonic() - tiering_applied), 1),
    )
    figures.record(warehouse_cold_on_cxl_by_s=round(done.at - tiering_applied, 1))

    # 7. helm uninstall: the agent stops its kdamonds; the CRDs stay. Where its time goes
    # (the hook's Job, the operator's and the agents' pods), from the release's pods.
    # The agent turns its kdamonds off as it exits, so the guest is looked at directly,
    # once every agent pod is marked for deletion (its DaemonSet gone, nothing starts
    # another). Not the pods' removal: this kubelet (1.20) reports no container of a
    # deleted pod terminated and removes the object 40-60 s after the process exits (the
    # hook waits that out for the operator's pod).
    def kdamonds_off() -> Seen | None:
        if not all(p["metadata"].get("deletionTimestamp") for p in deployment.agent_pods()):
            return None
        seen = deployment.probe()
        return None if seen.running_kdamonds() else seen

    watch = deployed.PodWatch(deployment, log_components=("release-finalizers",))
    try:
        with watch:  # its thread stopped on the way out, before what it saw is read
            deployment.uninstall()
            left = deployment.wait_for("no kdamond left on in the guest", kdamonds_off, 180)
    finally:
        figures.record(uninstall_s=dict(sorted(watch.milestones.items(), key=lambda m: m[1])))
        for name, text in watch.logs.items():
            log_file = deployment.node.work_dir / f"{name}.log"
            log_file.write_text(text)
            print(f"{name}'s log ({log_file}):\n{text}")
    assert left.running_kdamonds() == {}, left.kdamonds
    for crd in ("damonschemes.damon.io", "clusterdamonschemes.damon.io", "damonnodes.damon.io"):
        assert deployment.get("crd", crd) is not None, crd
    # The uninstall's hook released the operator's finalizer: the scheme left behind (the
    # reclaim one was deleted in step 3) deletes at once.
    kept_scheme = deployment.get("clusterdamonscheme", tiering_name)
    assert kept_scheme is not None, tiering_name
    assert not kept_scheme["metadata"].get("finalizers"), kept_scheme["metadata"]
    deployment.kubectl("delete", "clusterdamonscheme", tiering_name, "--timeout=60s")


def _scheme_counters(deployment: Deployment, scheme: str) -> dict[str, Any]:
    """Each DAMOS scheme's counters, of the named DamonScheme or ClusterDamonScheme, from
    the node's status, in MiB: tried and applied so far, the quota's effective size now
    (None: no size limit) and how often the quota ran out (qt_exceeds)."""
    found: dict[str, Any] = {}
    for stats in cluster_guest.node_scheme(deployment.damon_node(), scheme).get("stats") or []:
        quota = stats.get("effectiveQuotaBytes")
        found[stats["name"]] = (
            round(stats.get("triedBytes", 0) / deployed.MIB, 1),
            round(stats.get("appliedBytes", 0) / deployed.MIB, 1),
            None if quota is None else round(quota / deployed.MIB, 1),
            stats.get("qtExceeds", 0),
        )
    return found


def _changes(timeline: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, dict[str, Any]]]:
    """The timeline's entries that differ from the one before: the figure stays short
    while the counters stand still."""
    kept: list[tuple[float, dict[str, Any]]] = []
    for at, counters in timeline:
        if not kept or counters != kept[-1][1]:
            kept.append((at, counters))
    return kept


def _record_startup(deployment: Deployment, pod: dict[str, Any], figures: harness.Figures) -> None:
    """The successor agent's log, kept beside the run, and how long its start took by its
    own clock: from its first line to its first applied plan (the readiness it waits for)."""
    name, container = pod["metadata"]["name"], pod["spec"]["containers"][0]["name"]
    text = deployment.node.pod_log(deployment.system_namespace, name, container, tail=400)
    kept = deployment.node.work_dir / "successor-agent.log"
    kept.write_text(text)
    print(f"successor agent's log: {kept}")
    # kubelet's log lines start with an RFC 3339 time: 2026-12-03T10:00:00.123456789Z ...
    stamps = []
    for line in text.splitlines():
        found = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", line)
        if found:
            fraction = float(found.group(2) or 0)
            stamps.append((datetime.fromisoformat(found.group(1)).timestamp() + fraction, line))
    if not stamps:
        return
    first = stamps[0][0]
    applied = next((t for t, line in stamps if "applied:" in line), None)
    if applied is not None:
        figures.record(successor_log_first_line_to_applied_s=round(applied - first, 1))
