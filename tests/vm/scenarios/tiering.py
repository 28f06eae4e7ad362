"""Guest side of test_vm_tiering: migrate_hot/migrate_cold between the DRAM and CXL nodes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import guest_lib
import numpy as np

from damon_agent.node import cgroups, numa
from damon_agent.ops.kernel import driver as kernel_driver
from damon_agent.ops.kernel import model, sysfs

# The guest boots with NUMA balancing in its normal mode: off, so only DAMOS moves pages.
Path("/proc/sys/kernel/numa_balancing").write_text("0")
params = json.loads(Path("params.json").read_text())
app_path = guest_lib.kubelet_pod_cgroup(params["pod_uid"], params["container_id"], "burstable")
guest_lib.make_cgroup(app_path)
topology = numa.read_topology()
(dram,) = topology.dram_nodes
(cxl,) = topology.cxl_nodes
app = guest_lib.Workload.start(
    hot_mib=params["hot_mib"], cold_mib=params["cold_mib"], cgroup=app_path, node=cxl, pause_s=0.01
)
layout = cgroups.discover()
container = cgroups.find_pod(layout, params["pod_uid"]).container(params["container_id"])
memcg = cgroups.memcg_path(layout, container.path)


def placement(span: tuple[int, int]) -> dict[int, int]:
    pages = np.arange(span[0], span[1], guest_lib.PAGE, dtype=np.uint64)
    values, counts = np.unique(numa.page_nodes(app.pid, pages), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


t0 = time.monotonic()


def sample() -> dict[str, Any]:
    return {
        "t": round(time.monotonic() - t0, 2),
        "hot": placement(app.hot),
        "cold": placement(app.cold),
        "loops": app.loops(),
    }


samples = [sample()]
config = guest_lib.tiering_kdamond(model, dram=dram, cxl=cxl, memcg=memcg)
driver = kernel_driver.KdamondDriver(sysfs.HostSysfs(), Path("/tmp/damon-state"))
handle = driver.start(config)
try:
    # Until most hot pages moved (and a few samples more, to see them stay), at most 60 s.
    settled = 0
    while time.monotonic() - t0 < 60 and settled < 4:
        time.sleep(1.0)
        samples.append(sample())
        hot = samples[-1]["hot"]
        if hot.get(dram, 0) >= 0.9 * sum(hot.values()):
            settled += 1
    stats = driver.schemes_stats(handle)
finally:
    driver.stop_all()
    nr_left = guest_lib.nr_kdamonds()
app.stop()
guest_lib.write_json(
    "result.json",
    {
        "dram": dram,
        "cxl": cxl,
        "samples": samples,
        "nr_kdamonds_left": nr_left,
        "sz_applied": [s.sz_applied for s in stats],
    },
)
