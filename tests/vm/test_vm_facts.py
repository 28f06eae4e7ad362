"""Scenario 1: the guest is the node the other scenarios assume.

One boot collects the facts; each test asserts one of them: two NUMA nodes with node 1
CPU-less and in a lower memory tier (HMAT), cgroup v2 with the memory controller (as the
project's ``node.cgroups`` discovers it), DAMON sysfs offering vaddr and paddr, zram swap
on, PSI readable (through ``node.psi``), and the kernel's own baselines (DAMON_RECLAIM,
NUMA-balancing tiering) present.
"""

from __future__ import annotations

from typing import Any

import harness
import pytest

pytestmark = pytest.mark.vm

FACTS = r"""
import json, os
from pathlib import Path
import guest_lib
from damon_agent.node import cgroups, psi

def read(path):
    return Path(path).read_text().strip()

nodes = {}
for nid in (0, 1):
    base = Path(f"/sys/devices/system/node/node{nid}")
    mem_kib = int(read(base / "meminfo").splitlines()[0].split()[-2])
    nodes[nid] = {"cpulist": read(base / "cpulist"), "mem_kib": mem_kib}
tiers = {}
for tier in Path("/sys/devices/virtual/memory_tiering").glob("memory_tier*"):
    tiers[tier.name] = read(tier / "nodelist")

admin = guest_lib.DAMON_ADMIN
(admin / "kdamonds/nr_kdamonds").write_text("1")
(admin / "kdamonds/0/contexts/nr_contexts").write_text("1")
avail = read(admin / "kdamonds/0/contexts/0/avail_operations").split()
(admin / "kdamonds/nr_kdamonds").write_text("0")

layout = cgroups.discover()
system_psi = psi.read_system(psi.Resource.MEMORY)
swaps = read("/proc/swaps").splitlines()[1:]
guest_lib.write_json("result.json", {
    "release": os.uname().release,
    "online": read("/sys/devices/system/node/online"),
    "has_cpu": read("/sys/devices/system/node/has_cpu"),
    "nodes": nodes,
    "tiers": tiers,
    "memory_version": layout.memory_version,
    "controllers": read("/sys/fs/cgroup/cgroup.controllers").split(),
    "avail_operations": avail,
    "swaps": [line.split()[0] for line in swaps],
    "swap_total_kib": int([l for l in read("/proc/meminfo").splitlines() if l.startswith("SwapTotal")][0].split()[1]),
    "psi_some_total_us": system_psi.some.total_us,
    "damon_reclaim_params": sorted(p.name for p in Path("/sys/module/damon_reclaim/parameters").iterdir()),
    "numa_balancing": read("/proc/sys/kernel/numa_balancing"),
    "demotion_enabled_file": Path("/sys/kernel/mm/numa/demotion_enabled").exists(),
    "soft_dirty": Path("/proc/self/clear_refs").exists(),
})
"""


@pytest.fixture(scope="module")
def facts(vm: Any) -> dict[str, Any]:
    run = vm.python(FACTS)
    harness.Figures(__name__ + "::boot").record_run(run)
    result: dict[str, Any] = run.json()
    return result


def test_two_numa_nodes_node1_without_cpus(facts: dict[str, Any]) -> None:
    assert facts["online"] == "0-1", facts
    assert facts["has_cpu"] == "0", facts
    assert facts["nodes"]["1"]["cpulist"] == "", facts["nodes"]
    assert facts["nodes"]["0"]["cpulist"] != "", facts["nodes"]
    # Both nodes carry the memory the harness gave them (1 GiB each, minus reservations).
    for nid in ("0", "1"):
        assert facts["nodes"][nid]["mem_kib"] > 900 * 1024, facts["nodes"]


def test_node1_is_in_a_lower_memory_tier(
    facts: dict[str, Any], vm_figures: harness.Figures
) -> None:
    tier_of = {}
    for name, nodelist in facts["tiers"].items():
        for nid in nodelist.split(","):
            if nid:
                tier_of[int(nid)] = int(name.removeprefix("memory_tier"))
    vm_figures.record(tiers=tier_of)
    assert set(tier_of) == {0, 1}, facts["tiers"]
    # A larger tier id is a slower (lower) tier.
    assert tier_of[1] > tier_of[0], facts["tiers"]


def test_cgroup_v2_with_memory_controller(facts: dict[str, Any]) -> None:
    assert facts["memory_version"] == 2
    assert "memory" in facts["controllers"]


def test_damon_sysfs_offers_vaddr_and_paddr(facts: dict[str, Any]) -> None:
    assert {"vaddr", "paddr"} <= set(facts["avail_operations"]), facts["avail_operations"]


def test_zram_swap_is_on(facts: dict[str, Any], vm_figures: harness.Figures) -> None:
    vm_figures.record(swap_total_kib=facts["swap_total_kib"], release=facts["release"])
    assert facts["swaps"] == ["/dev/zram0"]
    assert facts["swap_total_kib"] > 256 * 1024


def test_psi_and_kernel_baselines_present(facts: dict[str, Any]) -> None:
    assert facts["psi_some_total_us"] >= 0
    assert {"enabled", "min_age", "quota_sz"} <= set(facts["damon_reclaim_params"])
    assert facts["demotion_enabled_file"]
    assert facts["soft_dirty"]
