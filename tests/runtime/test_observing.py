"""Pod objects -> PodFacts through the node facts, on a checked-in kubelet tree.

The tree (tests/node/trees/systemd-v2: cgroup v2, systemd driver) is the node-facts
teammate's; the host itself has no kubelet layout.
"""

from __future__ import annotations

import os
from pathlib import Path

from damon_agent.runtime import observing, planning

TREE = Path(__file__).resolve().parents[1] / "node" / "trees" / "systemd-v2"
ROOTS = observing.NodeRoots(proc=TREE / "proc", sys=TREE / "sys")
UID = "0f6e1a9c-3b2d-4c5e-8f7a-1b2c3d4e5f60"
POD_CGROUP = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice"
)
APP = "a1" * 32


def _pod(uid: str, containers: list[str], phase: str = "Running") -> dict[str, object]:
    return {
        "metadata": {"namespace": "shop", "name": "cart-0", "uid": uid, "labels": {"app": "cart"}},
        "status": {
            "phase": phase,
            "qosClass": "Burstable",
            "containerStatuses": [{"containerID": f"containerd://{c}"} for c in containers],
        },
    }


def test_pod_resolves_to_its_cgroups_memcgs_and_container_pids() -> None:
    facts = observing.PodResolver(ROOTS).resolve(_pod(UID, [APP]))
    assert facts.key == "shop/cart-0" and facts.labels == (("app", "cart"),)
    assert facts.cgroup_path == POD_CGROUP
    container = f"{POD_CGROUP}/cri-containerd-{APP}.scope"
    assert facts.memcg_paths[0] == POD_CGROUP
    assert container in facts.memcg_paths
    # Only the listed container's processes (nested cgroups included), not the sandbox's.
    assert facts.pids == (1001, 1002, 1004)


def test_pod_psi_reads_the_pod_cgroup_total() -> None:
    resolver = observing.PodResolver(ROOTS)
    assert resolver.cgroup_pressure_total_us(POD_CGROUP) == 123456


def test_unknown_or_finished_pods_have_no_cgroups() -> None:
    resolver = observing.PodResolver(ROOTS)
    missing = resolver.resolve(_pod("11111111-2222-3333-4444-555555555555", []))
    assert (missing.memcg_paths, missing.pids, missing.cgroup_path) == ((), (), None)
    done = resolver.resolve(_pod(UID, [APP], phase="Succeeded"))
    assert done.memcg_paths == () and done.phase == "Succeeded"


def test_a_pod_being_deleted_is_done_and_needs_no_cgroup_lookup() -> None:
    pod = _pod(UID, [APP])
    pod["metadata"] = {
        "namespace": "shop",
        "name": "cart-0",
        "uid": UID,
        "deletionTimestamp": "2026-12-04T18:00:00Z",  # kubectl delete: still Running
    }
    going = observing.PodResolver(ROOTS).resolve(pod)
    assert going.deleting and going.done and going.phase == "Running"
    assert (going.memcg_paths, going.pids) == ((), ())
    assert not observing.PodResolver(ROOTS).resolve(_pod(UID, [APP])).done


def test_node_psi_and_numa_from_injected_roots(tmp_path: Path) -> None:
    (tmp_path / "pressure").mkdir()
    (tmp_path / "pressure" / "memory").write_text(
        "some avg10=2.50 avg60=1.00 avg300=0.50 total=777\n"
        "full avg10=1.00 avg60=0.50 avg300=0.10 total=333\n"
    )
    psi = observing.read_psi(observing.NodeRoots(proc=tmp_path, sys=tmp_path))
    assert (psi.some_avg10, psi.some_total_us, psi.full_total_us) == (2.5, 777, 333)
    empty = observing.NodeRoots(proc=tmp_path / "none", sys=tmp_path / "none")
    assert observing.read_psi(empty).some_total_us == 0
    assert observing.read_numa(empty) == []
    cxl_tree = Path(__file__).resolve().parents[1] / "node" / "trees" / "numa-cxl"
    numa = observing.read_numa(observing.NodeRoots(proc=cxl_tree / "proc", sys=cxl_tree / "sys"))
    assert observing.tiers_of(numa).get("cxl"), numa
    roots = observing.NodeRoots(proc=cxl_tree / "proc", sys=cxl_tree / "sys")
    assert observing.node_distances(roots) == {0: {0: 10, 1: 20}, 1: {0: 20, 1: 10}}
    assert observing.node_distances(empty) == {}


def test_placement_sums_a_pods_processes_per_node_and_skips_gone_ones() -> None:
    me = planning.PodFacts(namespace="t", name="me", uid="u", pids=(os.getpid(), 2**22 + 7))
    placed = observing.placement([me], observing.NodeRoots())
    assert set(placed) == {"t/me"}
    assert sum(placed["t/me"].values()) > 1 << 20  # this test process's resident memory


def test_memcg_checker_tells_a_present_memcg_from_a_gone_one(tmp_path: Path) -> None:
    check = observing.MemcgChecker(ROOTS)
    assert check(POD_CGROUP)
    assert not check("/kubepods.slice/kubepods-podgone.slice")
    # No cgroup layout to look in: present, and the kernel has the last word.
    assert observing.MemcgChecker(observing.NodeRoots(proc=tmp_path, sys=tmp_path))("/any")
