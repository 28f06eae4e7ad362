"""Scenario 4: CXL tiering with the kernel's migrate_hot and migrate_cold DAMOS actions.

One boot. The workload binds its memory to node 1 (the CPU-less, lower-tier node: CXL as
a guest sees it) while it allocates, then drops the binding, so that both arrays start on
node 1. The project's ``node.numa`` classifies the nodes (DRAM vs CXL) and queries the
page placement (``move_pages`` with no target nodes); the project's kernel driver starts
one paddr kdamond over both nodes with two schemes, the usual pair for tiering:

- ``migrate_hot`` to the DRAM node for accessed regions on the CXL node,
- ``migrate_cold`` to the CXL node for regions on the DRAM node idle for a while,

each kept to its source node by an ``addr`` filter (the node's physical range) and to
the workload's container by a ``memcg`` filter.

Expected: most hot pages end on node 0 while the hot loop runs, and the cold pages stay
on node 1.
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.vm

HOT_MIB = 32
COLD_MIB = 192

SCRIPT = r"""
import json, time
from pathlib import Path
import numpy as np
import guest_lib
from damon_agent.node import cgroups, numa
from damon_agent.ops.kernel import driver as kernel_driver, model, sysfs

ids = json.loads(Path("ids.json").read_text())
app_path = guest_lib.kubelet_pod_cgroup(ids["pod_uid"], ids["container_id"], "burstable")
guest_lib.make_cgroup(app_path)
topology = numa.read_topology()
(dram,) = topology.dram_nodes
(cxl,) = topology.cxl_nodes
app = guest_lib.Workload.start(hot_mib=HOT_MIB, cold_mib=COLD_MIB, cgroup=app_path, node=cxl,
                               pause_s=0.01)
layout = cgroups.discover()
memcg = cgroups.memcg_path(layout, cgroups.find_pod(layout, ids["pod_uid"]).container(ids["container_id"]).path)

def placement(span):
    pages = np.arange(span[0], span[1], guest_lib.PAGE, dtype=np.uint64)
    values, counts = np.unique(numa.page_nodes(app.pid, pages), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}

t0 = time.monotonic()
def sample():
    return {"t": round(time.monotonic() - t0, 2), "hot": placement(app.hot),
            "cold": placement(app.cold), "loops": app.loops()}

samples = [sample()]
ranges = {nid: guest_lib.node_phys_ranges(nid) for nid in (dram, cxl)}
def span(nid):
    return min(s for s, _ in ranges[nid]), max(e for _, e in ranges[nid])
def only_node(nid):
    start, end = span(nid)
    return model.Filter(type="addr", matching=False, addr_start=start, addr_end=end)
only_app = model.Filter(type="memcg", matching=False, memcg_path=memcg)
aggr_us = 200_000
schemes = (
    model.Scheme(action="migrate_hot", target_nid=dram,
                 access_pattern=model.AccessPattern(nr_accesses=model.Range(1, model.ULONG_MAX)),
                 filters=(only_node(cxl), only_app)),
    model.Scheme(action="migrate_cold", target_nid=cxl,
                 access_pattern=model.AccessPattern(nr_accesses=model.Range(0, 0),
                                                    age=model.Range(2_000_000 // aggr_us, model.ULONG_MAX)),
                 filters=(only_node(dram), only_app)),
)
regions = tuple(model.Region(*span(nid)) for nid in sorted((dram, cxl), key=lambda n: span(n)[0]))
config = model.Kdamond(contexts=(model.Context(
    operations="paddr",
    monitoring_attrs=model.MonitoringAttrs(
        intervals=model.Intervals(sample_us=10_000, aggr_us=aggr_us, update_us=1_000_000)),
    targets=(model.Target(regions=regions),),
    schemes=schemes,
),))
driver = kernel_driver.KdamondDriver(sysfs.HostSysfs(), Path("/tmp/damon-state"))
handle = driver.start(config)
try:
    for _ in range(12):
        time.sleep(1.0)
        samples.append(sample())
    stats = driver.schemes_stats(handle)
finally:
    driver.stop_all()
    nr_left = int((guest_lib.DAMON_ADMIN / "kdamonds/nr_kdamonds").read_text())
app.stop()
guest_lib.write_json("result.json", {
    "dram": dram, "cxl": cxl, "samples": samples, "nr_kdamonds_left": nr_left,
    "sz_applied": [s.sz_applied for s in stats],
    "hot_pages": (app.hot[1] - app.hot[0]) // guest_lib.PAGE,
    "cold_pages": (app.cold[1] - app.cold[0]) // guest_lib.PAGE,
})
""".replace("HOT_MIB", str(HOT_MIB)).replace("COLD_MIB", str(COLD_MIB))


@pytest.fixture(scope="module")
def observed(vm: Any) -> dict[str, Any]:
    ids = {"pod_uid": str(uuid.uuid4()), "container_id": secrets.token_hex(32)}
    run = vm.python(SCRIPT, files={"ids.json": json.dumps(ids)})
    harness.Figures(__name__ + "::boot").record_run(run)
    result: dict[str, Any] = run.json()
    return result


def _share(placement: dict[str, int], node: int) -> float:
    total = sum(placement.values())
    return placement.get(str(node), 0) / total if total else 0.0


def test_nodes_classified_dram_and_cxl(observed: dict[str, Any]) -> None:
    assert (observed["dram"], observed["cxl"]) == (0, 1)


def test_workload_starts_on_the_cxl_node(observed: dict[str, Any]) -> None:
    first = observed["samples"][0]
    assert _share(first["hot"], observed["cxl"]) >= 0.95, first
    assert _share(first["cold"], observed["cxl"]) >= 0.95, first


def test_hot_pages_promoted_cold_pages_stay(
    observed: dict[str, Any], vm_figures: harness.Figures
) -> None:
    samples = observed["samples"]
    dram, cxl = observed["dram"], observed["cxl"]
    hot_on_dram = [round(_share(s["hot"], dram), 3) for s in samples]
    cold_on_cxl = [round(_share(s["cold"], cxl), 3) for s in samples]
    vm_figures.record(
        hot_on_node0=hot_on_dram,
        cold_on_node1=cold_on_cxl,
        sz_applied_mib=[b >> 20 for b in observed["sz_applied"]],
        loops=[s["loops"] for s in samples],
    )
    assert observed["nr_kdamonds_left"] == 0
    assert hot_on_dram[-1] >= 0.8, hot_on_dram
    assert min(cold_on_cxl) >= 0.9, cold_on_cxl
    # The workload kept running while its pages moved.
    assert samples[-1]["loops"] > samples[0]["loops"]
