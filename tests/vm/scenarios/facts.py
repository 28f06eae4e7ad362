"""Guest side of test_vm_facts: collect the node's facts into result.json."""

from __future__ import annotations

import os
from pathlib import Path

import guest_lib

from damon_agent.node import cgroups, numa, psi
from damon_agent.ops.kernel import capabilities, sysfs


def read(path: str | Path) -> str:
    return Path(path).read_text().strip()


nodes = {}
for nid in (0, 1):
    base = Path(f"/sys/devices/system/node/node{nid}")
    mem_kib = int(read(base / "meminfo").splitlines()[0].split()[-2])
    nodes[nid] = {"cpulist": read(base / "cpulist"), "mem_kib": mem_kib}
tiers = {
    tier.name: read(tier / "nodelist")
    for tier in Path("/sys/devices/virtual/memory_tiering").glob("memory_tier*")
}

admin = guest_lib.DAMON_ADMIN
(admin / "kdamonds/nr_kdamonds").write_text("1")
(admin / "kdamonds/0/contexts/nr_contexts").write_text("1")
avail = read(admin / "kdamonds/0/contexts/0/avail_operations").split()
(admin / "kdamonds/nr_kdamonds").write_text("0")

# The project's probe (scratch kdamond, removed again) on the same kernel.
report = capabilities.probe(sysfs.HostSysfs(), os.uname().release)

layout = cgroups.discover()
topology = numa.read_topology()
meminfo = dict(line.split(":", 1) for line in read("/proc/meminfo").splitlines())
guest_lib.write_json(
    "result.json",
    {
        "release": os.uname().release,
        "online": read("/sys/devices/system/node/online"),
        "has_cpu": read("/sys/devices/system/node/has_cpu"),
        "nodes": nodes,
        "tiers": tiers,
        "dram_nodes": list(topology.dram_nodes),
        "cxl_nodes": list(topology.cxl_nodes),
        "memory_version": layout.memory_version,
        "controllers": read("/sys/fs/cgroup/cgroup.controllers").split(),
        "avail_operations": avail,
        "probe": {
            "method": report.method,
            "operations": list(report.operations),
            "actions": list(report.actions),
            "filter_types": list(report.filter_types),
            "goal_metrics": list(report.goal_metrics),
            "features": report.features,
        },
        "nr_kdamonds_after_probe": guest_lib.nr_kdamonds(),
        "swaps": [line.split()[0] for line in read("/proc/swaps").splitlines()[1:]],
        "swap_total_kib": int(meminfo["SwapTotal"].split()[0]),
        "psi_some_total_us": psi.read_system(psi.Resource.MEMORY).some.total_us,
        "damon_reclaim_params": sorted(
            p.name for p in Path("/sys/module/damon_reclaim/parameters").iterdir()
        ),
        "demotion_enabled_file": Path("/sys/kernel/mm/numa/demotion_enabled").exists(),
        "soft_dirty": Path("/proc/self/clear_refs").exists(),
    },
)
