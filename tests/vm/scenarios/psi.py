"""Guest side of test_vm_psi: a user_input quota goal fed with the container's memory PSI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import guest_lib

from damon_agent.node import cgroups, psi
from damon_agent.ops.kernel import driver as kernel_driver
from damon_agent.ops.kernel import model, sysfs

# The guest boots with NUMA balancing on (mode 1): its page scanning and hint faults slow
# the hot loop while the task is young, which would skew throughput comparisons.
Path("/proc/sys/kernel/numa_balancing").write_text("0")
params = json.loads(Path("params.json").read_text())
target = params["target_stall_us_per_s"]
app_path = guest_lib.kubelet_pod_cgroup(params["pod_uid"], params["container_id"], "burstable")
app_dir = guest_lib.make_cgroup(app_path)
app = guest_lib.Workload.start(hot_mib=48, cold_mib=64, cgroup=app_path, pause_s=0.01)
layout = cgroups.discover()
container = cgroups.find_pod(layout, params["pod_uid"]).container(params["container_id"]).path

aggr_us = 200_000
scheme = model.Scheme(
    action="pageout",
    access_pattern=model.AccessPattern(
        nr_accesses=model.Range(0, 0), age=model.Range(1_000_000 // aggr_us, model.ULONG_MAX)
    ),
    quotas=model.Quotas(
        bytes=256 << 20,
        reset_interval_ms=200,
        goals=(model.QuotaGoal(target_metric="user_input", target_value=target),),
    ),
    filters=(
        model.Filter(
            type="memcg", matching=False, memcg_path=cgroups.memcg_path(layout, container)
        ),
    ),
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
steps = []
t0 = time.monotonic()
phases = (("calm", "max", 8), ("pressure", str(24 << 20), 10), ("calm2", "max", 10))
try:
    last_total = psi.read_cgroup(layout, container).some.total_us
    last_t = time.monotonic()
    for phase, memory_high, seconds in phases:
        (app_dir / "memory.high").write_text(memory_high)
        phase_end = time.monotonic() + seconds
        while time.monotonic() < phase_end:
            time.sleep(0.5)
            total = psi.read_cgroup(layout, container).some.total_us
            now = time.monotonic()
            rate = int((total - last_total) / (now - last_t))
            last_total, last_t = total, now
            # The agent's feedback step: the stall rate is the goal's current value.
            driver.commit_quota_goals(handle, {(0, 0): max(rate, 0)})
            steps.append(
                {
                    "t": round(now - t0, 2),
                    "phase": phase,
                    "stall_us_per_s": rate,
                    "effective_bytes": driver.effective_quotas(handle)[0],
                    "loops": app.loops(),
                }
            )
    stats = driver.schemes_stats(handle)[0]
finally:
    driver.stop_all()
    nr_left = guest_lib.nr_kdamonds()
app.stop()
guest_lib.write_json(
    "result.json",
    {"steps": steps, "nr_kdamonds_left": nr_left, "sz_applied": stats.sz_applied},
)
