"""Guest side of test_vm_psi: a user_input quota goal fed with the container's memory PSI."""

from __future__ import annotations

import dataclasses
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


def stall_rate(since: tuple[int, float]) -> tuple[int, tuple[int, float]]:
    total, now = psi.read_cgroup(layout, container).some.total_us, time.monotonic()
    return int((total - since[0]) / (now - since[1])), (total, now)


# The brake: the agent's defaults (a 1 s quota reset interval, the pod's stall fed once a
# second), the quota grown in calm, then a sudden squeeze. The quota is read every 0.1 s
# (each reading is a kdamond command, so it lands up to an aggregation later).
brake_scheme = dataclasses.replace(
    scheme,
    quotas=dataclasses.replace(scheme.quotas, reset_interval_ms=params["brake_reset_interval_ms"]),
)
brake_config = model.Kdamond(
    contexts=(dataclasses.replace(config.contexts[0], schemes=(brake_scheme,)),)
)
brake: dict[str, object] = {"reset_interval_s": params["brake_reset_interval_ms"] / 1000}
handle = driver.start(brake_config)
try:
    mark = (psi.read_cgroup(layout, container).some.total_us, time.monotonic())
    grown_by = time.monotonic() + 40
    effective = 0
    while time.monotonic() < grown_by and effective < params["brake_from_bytes"]:
        time.sleep(1.0)
        rate, mark = stall_rate(mark)
        driver.commit_quota_goals(handle, {(0, 0): max(rate, 0)})
        effective = driver.effective_quotas(handle)[0]
    brake["effective_before_bytes"] = effective
    (app_dir / "memory.high").write_text(str(24 << 20))
    squeezed = time.monotonic()
    fed_at = None
    next_feed = squeezed + 1.0
    readings = []
    while time.monotonic() < squeezed + 10:
        time.sleep(0.1)
        if time.monotonic() >= next_feed:
            rate, mark = stall_rate(mark)
            driver.commit_quota_goals(handle, {(0, 0): max(rate, 0)})
            next_feed += 1.0
            if fed_at is None and rate > 2 * target:
                fed_at = time.monotonic()
                brake["first_rate_above_twice_target"] = rate
        asked = time.monotonic()
        effective = driver.effective_quotas(handle)[0]
        readings.append((round(asked - squeezed, 2), effective))
        if fed_at is not None and effective <= 1 << 20:
            brake["after_squeeze_s"] = round(asked - squeezed, 2)
            brake["after_feed_s"] = round(asked - fed_at, 2)
            break
    brake["readings_s_bytes"] = readings
finally:
    driver.stop_all()
    (app_dir / "memory.high").write_text("max")
    nr_left = guest_lib.nr_kdamonds()
app.stop()
guest_lib.write_json(
    "result.json",
    {"steps": steps, "nr_kdamonds_left": nr_left, "sz_applied": stats.sz_applied, "brake": brake},
)
