"""CXL tiering with the userspace engine: soft-dirty write tracking plus move_pages.

For kernels whose DAMON cannot migrate by virtual address (or that have no DAMON vaddr),
the agent runs its own monitor and DAMOS engine over ``ops.userspace``. One boot of the
guest (6.12: soft-dirty, no idle page tracking; node 1 CPU-less and in a lower tier):

- the probe must pick soft-dirty, and say idle page tracking is missing;
- the kernel's NUMA balancing is switched off, so that only the engine moves pages;
- the workload binds its memory to node 1 while it allocates (both arrays start there),
  then writes one word of every page of its *hot* array in a loop and never touches its
  *cold* array again;
- ``core.monitor.Monitor`` over ``UserspaceOperations`` (clear_refs once per sampling
  interval, pagemap bit 55 of the sampled pages) with a ``SchemesEngine`` holding one
  ``migrate_hot`` scheme to node 0 (``node.actions.migrate``: move_pages, bandwidth
  limited) runs for a fixed time; placement of both arrays is queried page by page
  with ``move_pages(nodes=NULL)`` through ``node.numa`` every few seconds.

Expected: most hot pages end on node 0, the cold pages stay on node 1, and the hot loop
keeps running. Migration moves whole folios: a region boundary inside a transparent huge
page of the cold array takes its 2 MiB along (seen: 1.6% of the cold bytes).
"""

from __future__ import annotations

from typing import Any

import harness
import pytest

pytestmark = pytest.mark.vm

HOT_MIB = 32
COLD_MIB = 128
MONITOR_S = 30

SCRIPT = r"""
import time
from pathlib import Path
import numpy as np
import guest_lib
from damon_agent.core import attrs, clock, monitor
from damon_agent.node import actions, numa
from damon_agent.ops import userspace, userspace_access
from damon_agent.schemes import engine, errors, model

# The kernel's NUMA balancing would also pull the hot pages towards node 0's CPUs: off,
# so that every page that moves was moved by the engine under test.
balancing = Path("/proc/sys/kernel/numa_balancing")
numa_balancing_before = balancing.read_text().strip()
balancing.write_text("0")
topology = numa.read_topology()
(dram,) = topology.dram_nodes
(cxl,) = topology.cxl_nodes
support = userspace_access.probe()
app = guest_lib.Workload.start(hot_mib=HOT_MIB, cold_mib=COLD_MIB, node=cxl, pause_s=0.01)

def placement(span):
    pages = np.arange(span[0], span[1], guest_lib.PAGE, dtype=np.uint64)
    values, counts = np.unique(numa.page_nodes(app.pid, pages), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}

t0 = time.monotonic()
def sample():
    return {"t": round(time.monotonic() - t0, 2), "hot": placement(app.hot),
            "cold": placement(app.cold), "loops": app.loops()}

class NoMetrics:
    def read(self, metric, *, nid=None, path=None):
        raise errors.MetricUnavailableError(metric + ": no goals or watermarks here")

ops = userspace.build(actions, prefer="soft_dirty", migrate_bandwidth_bytes_per_s=128 << 20)
aggr_us = 500_000
promote = model.Scheme(name="promote-hot", action="migrate_hot", target_nid=dram,
                       pattern=model.AccessPattern(min_rate_bp=8_000))
schemes = engine.SchemesEngine([promote], ops, NoMetrics())
mon = monitor.Monitor(
    attrs.MonitoringAttrs(sample_us=50_000, aggr_us=aggr_us, update_us=5_000_000,
                          min_nr_regions=100, max_nr_regions=400),
    ops, [app.pid], clock=clock.WallClock(), rng=np.random.default_rng(0), schemes=schemes)
samples = [sample()]
cpu0 = time.process_time()
deadline = time.monotonic() + MONITOR_S
while time.monotonic() < deadline:
    mon.run(3_000_000)
    samples.append(sample())
cpu_s = time.process_time() - cpu0
(stats,) = schemes.stats()
app.stop()
guest_lib.write_json("result.json", {
    "dram": dram, "cxl": cxl, "samples": samples, "numa_balancing": numa_balancing_before,
    "hot_bytes": app.hot[1] - app.hot[0],
    "access_check": ops.access_check.name,
    "support": {p.name: [p.available, p.detail] for p in support.primitives},
    "sz_applied": stats.sz_applied, "nr_applied": stats.nr_applied,
    "counters": {"prepares": ops.counters.access_prepares,
                 "checks": ops.counters.access_checks,
                 "applied": ops.counters.applied_bytes,
                 "failed_pages": ops.counters.failed_pages},
    "nr_regions": mon.nr_regions, "sampling_intervals": mon.passed_sample_intervals,
    "monitor_cpu_s": round(cpu_s, 2), "monitor_wall_s": round(time.monotonic() - t0, 2),
})
"""
SCRIPT = (
    SCRIPT.replace("HOT_MIB", str(HOT_MIB))
    .replace("COLD_MIB", str(COLD_MIB))
    .replace("MONITOR_S", str(MONITOR_S))
)


@pytest.fixture(scope="module")
def observed(vm: Any) -> dict[str, Any]:
    run = vm.python(SCRIPT, config=harness.VmConfig(deadline_s=150.0))
    harness.Figures(__name__ + "::boot").record_run(run)
    result: dict[str, Any] = run.json()
    return result


def _share(placement: dict[str, int], node: int) -> float:
    total = sum(placement.values())
    return placement.get(str(node), 0) / total if total else 0.0


def test_probe_picks_soft_dirty(observed: dict[str, Any]) -> None:
    support = observed["support"]
    assert support["soft_dirty"][0] is True, support
    assert support["idle_page"][0] is False, support
    assert "CONFIG_IDLE_PAGE_TRACKING" in support["idle_page"][1]
    assert observed["access_check"] == "soft_dirty"
    # clear_refs once per sampling interval for the one target process.
    counters = observed["counters"]
    assert counters["prepares"] == observed["sampling_intervals"]


def test_workload_starts_on_node_1(observed: dict[str, Any]) -> None:
    first = observed["samples"][0]
    assert _share(first["hot"], observed["cxl"]) >= 0.95, first
    assert _share(first["cold"], observed["cxl"]) >= 0.95, first


def test_userspace_engine_promotes_hot_pages_and_leaves_cold_ones(
    observed: dict[str, Any], vm_figures: harness.Figures
) -> None:
    samples = observed["samples"]
    dram, cxl = observed["dram"], observed["cxl"]
    hot_on_dram = [round(_share(s["hot"], dram), 3) for s in samples]
    cold_on_cxl = [round(_share(s["cold"], cxl), 3) for s in samples]
    counters = observed["counters"]
    vm_figures.record(
        times_s=[s["t"] for s in samples],
        hot_on_node0=hot_on_dram,
        cold_on_node1=cold_on_cxl,
        numa_balancing_default=observed["numa_balancing"],
        sz_applied_mib=observed["sz_applied"] >> 20,
        nr_applied=observed["nr_applied"],
        failed_pages=counters["failed_pages"],
        nr_regions=observed["nr_regions"],
        sampling_intervals=observed["sampling_intervals"],
        monitor_cpu_s=observed["monitor_cpu_s"],
        monitor_wall_s=observed["monitor_wall_s"],
        loops=[s["loops"] for s in samples],
    )
    assert hot_on_dram[-1] >= 0.8, hot_on_dram
    assert min(cold_on_cxl) >= 0.9, cold_on_cxl
    # NUMA balancing was off, so the engine moved them. Its count is below the hot bytes:
    # numpy backs big arrays with transparent huge pages, move_pages moves whole 2 MiB
    # folios, and the pages of a folio moved along with a neighbouring region are
    # "already there" when their own region's turn comes.
    assert 0 < observed["sz_applied"] <= observed["hot_bytes"] + 16 * 2**20
    assert samples[-1]["loops"] > samples[0]["loops"], "the hot loop must keep running"
