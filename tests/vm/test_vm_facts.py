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


@pytest.fixture(scope="module")
def facts(vm: harness.Runner) -> dict[str, Any]:
    run = vm.scenario("facts")
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


def test_project_probe_sees_what_the_scenarios_use(
    facts: dict[str, Any], vm_figures: harness.Figures
) -> None:
    probe = facts["probe"]
    vm_figures.record(probe_method=probe["method"], features=probe["features"])
    assert probe["method"] == "probed"
    assert facts["nr_kdamonds_after_probe"] == 0
    assert {"vaddr", "paddr"} <= set(probe["operations"])
    assert {"pageout", "migrate_hot", "migrate_cold", "stat"} <= set(probe["actions"])
    assert {"memcg", "addr"} <= set(probe["filter_types"])
    assert "user_input" in probe["goal_metrics"]
    for feature in ("quota_goals", "effective_quotas", "target_nid", "tried_regions"):
        assert probe["features"].get(feature), (feature, probe["features"])
    # 6.12 predates these; the scenarios must not depend on them.
    for feature in ("core_ops_filters", "filter_allow", "dests"):
        assert not probe["features"].get(feature), (feature, probe["features"])


def test_zram_swap_is_on(facts: dict[str, Any], vm_figures: harness.Figures) -> None:
    vm_figures.record(swap_total_kib=facts["swap_total_kib"], release=facts["release"])
    assert facts["swaps"] == ["/dev/zram0"]
    assert facts["swap_total_kib"] > 256 * 1024


def test_project_classifies_node1_as_cxl(facts: dict[str, Any]) -> None:
    assert facts["dram_nodes"] == [0]
    assert facts["cxl_nodes"] == [1]


def test_psi_and_kernel_baselines_present(facts: dict[str, Any]) -> None:
    assert facts["psi_some_total_us"] >= 0
    assert {"enabled", "min_age", "quota_sz"} <= set(facts["damon_reclaim_params"])
    assert facts["demotion_enabled_file"]
    assert facts["soft_dirty"]
