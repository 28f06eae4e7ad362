"""Guest side of test_vm_pod_monitoring: kubelet-shaped pods, pod selection, vaddr monitoring."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import guest_lib

from damon_agent.node import cgroups
from damon_agent.ops.kernel import driver as kernel_driver
from damon_agent.ops.kernel import model, sysfs

params = json.loads(Path("params.json").read_text())
target_uid, decoy_uid = params["target_uid"], params["decoy_uid"]
pause_path = guest_lib.kubelet_pod_cgroup(target_uid, params["pause_id"], "burstable")
app_path = guest_lib.kubelet_pod_cgroup(target_uid, params["app_id"], "burstable")
decoy_path = guest_lib.kubelet_pod_cgroup(decoy_uid, params["decoy_id"], "besteffort")
for path in (pause_path, app_path, decoy_path):
    guest_lib.make_cgroup(path)

pause = subprocess.Popen(["/bin/sleep", "3600"])
(guest_lib.CGROUP_ROOT / pause_path.lstrip("/") / "cgroup.procs").write_text(str(pause.pid))
app = guest_lib.Workload.start(
    hot_mib=params["hot_mib"], cold_mib=params["cold_mib"], cgroup=app_path, pause_s=0.01
)
decoy = guest_lib.Workload.start(
    hot_mib=8, cold_mib=16, cgroup=decoy_path, pause_s=0.05, name="decoy"
)

layout = cgroups.discover()
pods = cgroups.list_pods(layout)
pod = cgroups.find_pod(layout, target_uid)
app_pids = cgroups.pids(layout, pod.container(params["app_id"]).path)
decoy_pod = cgroups.find_pod(layout, decoy_uid)
result = {
    "driver": str(layout.driver),
    "pods": [
        [p.pod_uid, str(p.qos), p.path, sorted(c.container_id for c in p.containers)] for p in pods
    ],
    "pod_path": pod.path,
    "selected_pids": list(cgroups.pids(layout, pod.path)),
    "expected_pids": sorted([pause.pid, app.pid]),
    "app_container_pids": list(app_pids),
    "app_pid": app.pid,
    "decoy_pids": list(cgroups.pids(layout, decoy_pod.path)),
    "decoy_pid": decoy.pid,
    "memcg_path": cgroups.memcg_path(layout, pod.path),
    "pod_memory_bytes": cgroups.memory_usage_bytes(layout, pod.path),
}

# Monitor the app container's process (the one pid its cgroup holds) with vaddr.
(target_pid,) = app_pids
driver = kernel_driver.KdamondDriver(sysfs.HostSysfs(), Path("/tmp/damon-state"))
config = model.Kdamond(
    contexts=(
        model.Context(
            operations="vaddr",
            monitoring_attrs=model.MonitoringAttrs(
                intervals=model.Intervals(sample_us=10_000, aggr_us=200_000, update_us=1_000_000)
            ),
            targets=(model.Target(pid_target=target_pid),),
            schemes=(model.Scheme(action="stat"),),
        ),
    )
)
snapshots = []
started = time.monotonic()
handle = driver.start(config)
try:
    loops_before = app.loops()
    for _ in range(8):
        time.sleep(1.0)
        regions = driver.tried_regions(handle)[0].regions
        snapshots.append(
            {
                "t": round(time.monotonic() - started, 2),
                "regions": [[r.start, r.end, r.nr_accesses, r.age] for r in regions],
            }
        )
    loops_after = app.loops()
finally:
    driver.stop_all()
    nr_left = guest_lib.nr_kdamonds()
    for one in (app, decoy):
        one.stop()
    pause.kill()
result.update(
    hot=app.hot,
    cold=app.cold,
    snapshots=snapshots,
    loops=[loops_before, loops_after],
    nr_kdamonds_left=nr_left,
)
guest_lib.write_json("result.json", result)
