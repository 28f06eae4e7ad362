"""Scenarios 2 and 5: pod targeting through kubelet-shaped cgroups, then vaddr monitoring.

One boot. The guest builds the cgroup v2 tree a systemd-driver kubelet builds
(``kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<UID>.slice/cri-containerd-<id>.scope``)
with two pods: the target (Burstable; a pause container and the app, a hot/cold workload)
and a decoy (BestEffort; another workload). Pod UIDs and container IDs are fresh for
every run. The project's ``node.cgroups`` then has to find the target pod and select
exactly its processes; the app container's process is monitored by the kernel's DAMON
(vaddr), driven by the project's kernel driver (``ops.kernel.driver``), and the monitoring
result has to show the workload's hot array as accessed and its cold array as idle.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.vm

HOT_MIB = 32
COLD_MIB = 192

SCRIPT = r"""
import json, subprocess, time
from pathlib import Path
import guest_lib
from damon_agent.node import cgroups
from damon_agent.ops.kernel import driver as kernel_driver, model, sysfs

ids = json.loads(Path("ids.json").read_text())
target_uid, decoy_uid = ids["target_uid"], ids["decoy_uid"]
pause_path = guest_lib.kubelet_pod_cgroup(target_uid, ids["pause_id"], "burstable")
app_path = guest_lib.kubelet_pod_cgroup(target_uid, ids["app_id"], "burstable")
decoy_path = guest_lib.kubelet_pod_cgroup(decoy_uid, ids["decoy_id"], "besteffort")
for path in (pause_path, app_path, decoy_path):
    guest_lib.make_cgroup(path)

pause = subprocess.Popen(["/bin/sleep", "3600"])
(guest_lib.CGROUP_ROOT / pause_path.lstrip("/") / "cgroup.procs").write_text(str(pause.pid))
app = guest_lib.Workload.start(hot_mib=HOT_MIB, cold_mib=COLD_MIB, cgroup=app_path, pause_s=0.01, name="app")
decoy = guest_lib.Workload.start(hot_mib=8, cold_mib=16, cgroup=decoy_path, pause_s=0.05, name="decoy")

layout = cgroups.discover()
pods = cgroups.list_pods(layout)
pod = cgroups.find_pod(layout, target_uid)
selected = cgroups.pids(layout, pod.path)
app_pids = cgroups.pids(layout, pod.container(ids["app_id"]).path)
decoy_pod = cgroups.find_pod(layout, decoy_uid)
result = {
    "driver": str(layout.driver),
    "pods": [[p.pod_uid, str(p.qos), p.path, sorted(c.container_id for c in p.containers)] for p in pods],
    "pod_path": pod.path,
    "pod_qos": str(pod.qos),
    "selected_pids": list(selected),
    "expected_pids": sorted([pause.pid, app.pid]),
    "app_container_pids": list(app_pids),
    "app_pid": app.pid,
    "decoy_pids": list(cgroups.pids(layout, decoy_pod.path)),
    "decoy_pid": decoy.pid,
    "memcg_path": cgroups.memcg_path(layout, pod.path),
    "pod_memory_bytes": cgroups.memory_usage_bytes(layout, pod.path),
}

# Monitor the app container's process (the one pid the selection gave) with vaddr.
(target_pid,) = app_pids
driver = kernel_driver.KdamondDriver(sysfs.HostSysfs(), Path("/tmp/damon-state"))
config = model.Kdamond(contexts=(model.Context(
    operations="vaddr",
    monitoring_attrs=model.MonitoringAttrs(
        intervals=model.Intervals(sample_us=10_000, aggr_us=200_000, update_us=1_000_000)),
    targets=(model.Target(pid_target=target_pid),),
    schemes=(model.Scheme(action="stat"),),
),))
snapshots = []
started = time.monotonic()
handle = driver.start(config)
try:
    loops_before = app.loops()
    for _ in range(8):
        time.sleep(1.0)
        regions = driver.tried_regions(handle)[0].regions
        snapshots.append({
            "t": round(time.monotonic() - started, 2),
            "regions": [[r.start, r.end, r.nr_accesses, r.age] for r in regions],
        })
    loops_after = app.loops()
finally:
    driver.stop_all()
    nr_left = int((guest_lib.DAMON_ADMIN / "kdamonds/nr_kdamonds").read_text())
    for one in (app, decoy):
        one.stop()
    pause.kill()
result.update(hot=app.hot, cold=app.cold, snapshots=snapshots, loops=[loops_before, loops_after],
              nr_kdamonds_left=nr_left)
guest_lib.write_json("result.json", result)
""".replace("HOT_MIB", str(HOT_MIB)).replace("COLD_MIB", str(COLD_MIB))


@pytest.fixture(scope="module")
def observed(vm: Any) -> dict[str, Any]:
    ids = {
        "target_uid": str(uuid.uuid4()),
        "decoy_uid": str(uuid.uuid4()),
        "pause_id": secrets.token_hex(32),
        "app_id": secrets.token_hex(32),
        "decoy_id": secrets.token_hex(32),
    }
    import json

    run = vm.python(SCRIPT, files={"ids.json": json.dumps(ids)})
    harness.Figures(__name__ + "::boot").record_run(run)
    result: dict[str, Any] = run.json()
    result["ids"] = ids
    return result


def _overlap(start: int, end: int, span: list[int]) -> int:
    return max(0, min(end, span[1]) - max(start, span[0]))


def _accessed_share(regions: list[list[int]], span: list[int]) -> float:
    """Share of ``span``'s bytes that lie in regions DAMON saw accessed."""
    accessed = sum(_overlap(s, e, span) for s, e, nr_accesses, _ in regions if nr_accesses > 0)
    return accessed / (span[1] - span[0])


def test_kubelet_layout_and_both_pods_discovered(observed: dict[str, Any]) -> None:
    ids = observed["ids"]
    assert observed["driver"] == "systemd"
    by_uid = {uid.replace("_", "-"): (qos, containers) for uid, qos, _, containers in observed["pods"]}
    assert set(by_uid) == {ids["target_uid"], ids["decoy_uid"]}, observed["pods"]
    assert by_uid[ids["target_uid"]] == ("burstable", sorted([ids["pause_id"], ids["app_id"]]))
    assert by_uid[ids["decoy_uid"]] == ("besteffort", [ids["decoy_id"]])


def test_pod_selection_is_exactly_the_pods_processes(
    observed: dict[str, Any], vm_figures: harness.Figures
) -> None:
    vm_figures.record(
        selected_pids=observed["selected_pids"], pod_memory_mib=observed["pod_memory_bytes"] >> 20
    )
    assert observed["selected_pids"] == observed["expected_pids"]
    assert observed["app_container_pids"] == [observed["app_pid"]]
    assert observed["decoy_pids"] == [observed["decoy_pid"]]
    assert not set(observed["decoy_pids"]) & set(observed["selected_pids"])
    assert observed["memcg_path"] == observed["pod_path"]
    # The app's arrays are charged to the pod's memory cgroup.
    assert observed["pod_memory_bytes"] >= (HOT_MIB + COLD_MIB) << 20


def test_vaddr_monitoring_finds_the_hot_range(
    observed: dict[str, Any], vm_figures: harness.Figures
) -> None:
    snapshots = observed["snapshots"]
    hot_share = [round(_accessed_share(s["regions"], observed["hot"]), 3) for s in snapshots]
    cold_share = [round(_accessed_share(s["regions"], observed["cold"]), 3) for s in snapshots]
    vm_figures.record(
        hot_accessed_share=hot_share,
        cold_accessed_share=cold_share,
        regions=[len(s["regions"]) for s in snapshots],
        workload_loops=observed["loops"],
    )
    assert observed["nr_kdamonds_left"] == 0
    # The hot loop ran throughout.
    assert observed["loops"][1] > observed["loops"][0]
    # After a few aggregation intervals of adaptive splitting, the last snapshots show
    # (nearly) all of the hot array accessed and (nearly) none of the cold one.
    settled_hot = hot_share[-3:]
    settled_cold = cold_share[-3:]
    assert min(settled_hot) >= 0.8, hot_share
    assert max(settled_cold) <= 0.1, cold_share
