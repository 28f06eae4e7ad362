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


def node_span(nid: int) -> tuple[int, int]:
    ranges = guest_lib.node_phys_ranges(nid)
    return min(s for s, _ in ranges), max(e for _, e in ranges)


def not_node(nid: int) -> model.Filter:
    # Reject the other node's range (matching=True). The positive form, matching=False on
    # the wanted range, rejects everything on 6.12: its paddr operations evaluate every
    # filter per folio, and an addr filter never "matches" there.
    start, end = node_span(nid)
    return model.Filter(type="addr", matching=True, addr_start=start, addr_end=end)


samples = [sample()]
only_app = model.Filter(type="memcg", matching=False, memcg_path=memcg)
# Page-level checks of the accessed bit on top of the region-level pattern:
# promote only pages found young, and never demote a young one. Without them a
# just-promoted hot page lands in a large idle DRAM region and migrate_cold sends
# it back (seen here: the hot share on node 0 swung between 50 and 90 %).
not_young = model.Filter(type="young", matching=False)
young = model.Filter(type="young", matching=True)
sample_us, aggr_us = 40_000, 800_000
max_accesses = aggr_us // sample_us
schemes = (
    # Accessed in a quarter of the samples, for a whole aggregation (~1 s); the young
    # filter keeps the cold pages of regions that mix both (the first aggregations see a
    # few huge ones) where they are. Sampling is slow enough (40 ms) that the hot loop
    # re-touches its pages between two checks even under a loaded host.
    model.Scheme(
        action="migrate_hot",
        target_nid=dram,
        access_pattern=model.AccessPattern(
            nr_accesses=model.Range(max_accesses // 4, model.ULONG_MAX),
            age=model.Range(1, model.ULONG_MAX),
        ),
        filters=(not_node(dram), only_app, not_young),
    ),
    model.Scheme(
        action="migrate_cold",
        target_nid=cxl,
        access_pattern=model.AccessPattern(
            nr_accesses=model.Range(0, 0),
            age=model.Range(3_000_000 // aggr_us, model.ULONG_MAX),
        ),
        filters=(not_node(cxl), only_app, young),
    ),
)
regions = tuple(
    model.Region(*node_span(nid)) for nid in sorted((dram, cxl), key=lambda n: node_span(n)[0])
)
config = model.Kdamond(
    contexts=(
        model.Context(
            operations="paddr",
            monitoring_attrs=model.MonitoringAttrs(
                intervals=model.Intervals(sample_us=sample_us, aggr_us=aggr_us, update_us=1_000_000)
            ),
            targets=(model.Target(regions=regions),),
            schemes=schemes,
        ),
    )
)
driver = kernel_driver.KdamondDriver(sysfs.HostSysfs(), Path("/tmp/damon-state"))
handle = driver.start(config)
try:
    # Until most hot pages moved (and a few samples more, to see them stay), at most 40 s.
    settled = 0
    while time.monotonic() - t0 < 40 and settled < 4:
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
