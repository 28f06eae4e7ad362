"""Guest side of bench/vm_tiering.py: CXL tiering variants, one after the other.

One workload (a container in a kubelet-shaped cgroup) allocates its hot and cold arrays
on the CXL node (node 1) and keeps writing the hot one. Before every variant all its
pages are moved back to the CXL node (``move_pages``), so each variant starts from the
same placement. Variants:

- ``none``: no tiering;
- ``ours``: the project's pair of schemes through its kernel driver (paddr kdamond over
  both nodes; ``migrate_hot`` to DRAM and ``migrate_cold`` to CXL, memcg filter on the
  container; ``guest_lib.tiering_kdamond``, the same as the tiering test's);
- ``numa_balancing``: the kernel's memory tiering by NUMA balancing
  (``kernel.numa_balancing=2`` with demotion enabled; node 1 is in a lower tier by HMAT).

Every second: the share of the hot and cold arrays on each node, and the hot loop count.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import guest_lib
import numpy as np

from damon_agent.node import numa
from damon_agent.ops.kernel import model

sys.path.insert(0, os.path.join(os.environ["REPO"], "bench"))
import vm_common

NUMA_BALANCING = Path("/proc/sys/kernel/numa_balancing")
DEMOTION = Path("/sys/kernel/mm/numa/demotion_enabled")

# NUMA balancing stays off (GuestBench turns it off before the workload starts) until its
# own variant: a task it scanned without finding anything to move gets its scan period
# stretched to a minute, which would leave the tiering mode nothing to do in its turn.
topology = numa.read_topology()
(dram,) = topology.dram_nodes
(cxl,) = topology.cxl_nodes
bench = vm_common.GuestBench(node=cxl)
app, driver = bench.app, bench.driver


def on_node(span: tuple[int, int], node: int) -> float:
    pages = np.arange(span[0], span[1], guest_lib.PAGE, dtype=np.uint64)
    where = numa.page_nodes(app.pid, pages)
    return float(np.count_nonzero(where == node)) / max(1, where.size)


def start(variant: str) -> None:
    if variant == "ours":
        driver.start(guest_lib.tiering_kdamond(model, dram=dram, cxl=cxl, memcg=bench.memcg))
    elif variant == "numa_balancing":
        DEMOTION.write_text("true")
        NUMA_BALANCING.write_text("2")


def stop(variant: str) -> None:
    if variant == "ours":
        driver.stop_all()
    elif variant == "numa_balancing":
        NUMA_BALANCING.write_text("0")
        DEMOTION.write_text("false")


VMSTAT_FIELDS = (
    "numa_pte_updates",
    "numa_hint_faults",
    "pgpromote_candidate",
    "pgpromote_success",
    "pgmigrate_success",
)


def vmstat() -> dict[str, int]:
    values = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return {name: int(values.get(name, -1)) for name in VMSTAT_FIELDS}


def sample(t0: float) -> dict[str, Any]:
    return {
        "vmstat": vmstat(),
        "t": round(time.monotonic() - t0, 2),
        "hot_on_dram": on_node(app.hot, dram),
        "cold_on_cxl": on_node(app.cold, cxl),
        "loops": app.loops(),
    }


def measure(index: int, variant: str) -> dict[str, Any]:
    failed = sum(guest_lib.move_range(app.pid, *span, cxl) for span in (app.hot, app.cold))
    t0 = time.monotonic()
    series = [sample(t0)]
    with vm_common.running(variant, start, stop):
        while time.monotonic() - t0 < bench.seconds:
            time.sleep(1.0)
            series.append(sample(t0))
    return {"series": series, "reset_failed_pages": failed}


results = bench.run(measure, reset=lambda: NUMA_BALANCING.write_text("0"))
bench.finish(results, dram=dram, cxl=cxl)
