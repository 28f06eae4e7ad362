"""Guest side of test_vm_reclaim: a paddr pageout scheme on one container's cold memory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import guest_lib

from damon_agent.node import cgroups
from damon_agent.ops.kernel import driver as kernel_driver
from damon_agent.ops.kernel import model, sysfs

# The guest boots with NUMA balancing on (mode 1): its page scanning and hint faults slow
# the hot loop while the task is young, which would skew throughput comparisons.
Path("/proc/sys/kernel/numa_balancing").write_text("0")
params = json.loads(Path("params.json").read_text())
app_path = guest_lib.kubelet_pod_cgroup(params["pod_uid"], params["container_id"], "burstable")
guest_lib.make_cgroup(app_path)
app = guest_lib.Workload.start(
    hot_mib=params["hot_mib"], cold_mib=params["cold_mib"], cgroup=app_path, pause_s=0.01
)
layout = cgroups.discover()
pod = cgroups.find_pod(layout, params["pod_uid"])
# A DAMOS memcg filter matches one memory cgroup exactly, not its descendants, and pages
# are charged to the container's (leaf) cgroup: the filter must name the container.
memcg = cgroups.memcg_path(layout, pod.container(params["container_id"]).path)


def sample(t0: float) -> dict[str, Any]:
    return {
        "t": round(time.monotonic() - t0, 2),
        "cold_resident": guest_lib.resident_pages(app.pid, *app.cold),
        "hot_resident": guest_lib.resident_pages(app.pid, *app.hot),
        "pod_memory": cgroups.memory_usage_bytes(layout, pod.path),
        "loops": app.loops(),
    }


t0 = time.monotonic()
samples = [sample(t0)]
time.sleep(3.0)
samples.append(sample(t0))
reclaim_from = len(samples) - 1

aggr_us = 200_000
scheme = model.Scheme(
    action="pageout",
    access_pattern=model.AccessPattern(
        nr_accesses=model.Range(0, 0),
        age=model.Range(2_000_000 // aggr_us, model.ULONG_MAX),
    ),
    filters=(model.Filter(type="memcg", matching=False, memcg_path=memcg),),
)
config = model.Kdamond(
    contexts=(
        model.Context(
            operations="paddr",
            monitoring_attrs=model.MonitoringAttrs(
                intervals=model.Intervals(sample_us=10_000, aggr_us=aggr_us, update_us=1_000_000)
            ),
            targets=(model.Target(regions=(guest_lib.all_ram_region(model),)),),
            schemes=(scheme,),
        ),
    )
)
driver = kernel_driver.KdamondDriver(sysfs.HostSysfs(), Path("/tmp/damon-state"))
handle = driver.start(config)
try:
    for _ in range(15):
        time.sleep(1.0)
        samples.append(sample(t0))
    stats = driver.schemes_stats(handle)[0]
finally:
    driver.stop_all()
    nr_left = guest_lib.nr_kdamonds()
swap_used_kib = guest_lib.swap_used_kib()  # before the workload exits and frees its swap
app.stop()
guest_lib.write_json(
    "result.json",
    {
        "samples": samples,
        "reclaim_from": reclaim_from,
        "cold_pages": (app.cold[1] - app.cold[0]) // guest_lib.PAGE,
        "hot_pages": (app.hot[1] - app.hot[0]) // guest_lib.PAGE,
        "sz_applied": stats.sz_applied,
        "swap_used_kib": swap_used_kib,
        "nr_kdamonds_left": nr_left,
        "page": guest_lib.PAGE,
    },
)
