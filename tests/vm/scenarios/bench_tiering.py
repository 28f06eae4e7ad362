"""Guest side of bench/vm_tiering.py: CXL tiering variants, one after the other.

One workload (a container in a kubelet-shaped cgroup) allocates its hot and cold arrays
on the last CXL-like node (node 2 where the bench gives the guest two) and keeps writing
the hot one. Before every variant all its pages are moved back there (``move_pages``), so
each variant starts from the same placement. Variants:

- ``none``: no tiering;
- ``ours``: the project's pair of schemes through its kernel driver (paddr kdamond over
  both nodes; ``migrate_hot`` to DRAM and ``migrate_cold`` to CXL, memcg filter on the
  container; ``guest_lib.tiering_kdamond``, the same as the tiering test's);
- ``numa_balancing``: the kernel's memory tiering by NUMA balancing
  (``kernel.numa_balancing=2`` with demotion enabled; node 1 is in a lower tier by HMAT);
- ``ours_fixed`` and ``ours_goal``: the agent as a user runs it, ``damon-agent run
  --backend kernel --cgroup CONTAINER`` with examples/schemes/tiering.yaml (fixed quotas,
  the monitoring defaults but its 100 ms aggregation) and tiering-fill.yaml (the DRAM fill
  as quota goals, the maintainer's self-tuned shape; goals need 6.16 or later);
- ``ours_fixed_paddr``: tiering.yaml with ``monitoring.mode: paddr`` (the agent's `auto`
  picks vaddr for one process): per-source-node copies instead of vaddr's weighted
  ``dests``, which interleave the pages they move over both CXL nodes.

With ``phases: 2`` the hot set moves once, ``seconds`` into the run: the workload then
writes the first pages of its cold array (still on CXL) and leaves its old hot array (on
DRAM by then) idle, so a policy must promote the new hot set and demote the old one.

Every second: the share of the pages written now on the DRAM node, of the never-written
cold pages on a CXL node and on the CXL node the workload did not start on (moved within
the lower tier), of the old hot array on CXL once the hot set moved, the hot loop count
and the node's migration counters.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import guest_lib
import numpy as np
import yaml

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
# With two CXL-like nodes the workload lives on the last: the agent's schemes must find it
# there (a tier is all its nodes), and may demote to either.
cxl_nodes = frozenset(topology.cxl_nodes)
cxl = max(cxl_nodes)
bench = vm_common.GuestBench(node=cxl)
app, driver = bench.app, bench.driver
# Phases of ``seconds`` each: with 2, the hot set moves once, at the start of the second.
PHASES = int(bench.params.get("phases", 1))


Span = tuple[int, int]


def on_node(span: Span, nodes: frozenset[int]) -> float:
    """The share of the pages of ``span`` on one of ``nodes``."""
    pages = np.arange(span[0], span[1], guest_lib.PAGE, dtype=np.uint64)
    where = numa.page_nodes(app.pid, pages)
    return float(np.count_nonzero(np.isin(where, list(nodes)))) / max(1, where.size)


def hot_and_cold() -> tuple[Span, Span]:
    """The span the workload writes now, and the never-written rest of the cold array
    (``Workload.move_hot_set``)."""
    hot = app.hot_now
    return hot, (hot[1], app.cold[1]) if app.moved else app.cold


REPO = Path(os.environ["REPO"])
# Variant -> the example it runs, and the monitoring mode it is given (None: the file's).
AGENT_SCHEMES = {
    "ours_fixed": ("tiering.yaml", None),
    "ours_fixed_paddr": ("tiering.yaml", "paddr"),
    "ours_goal": ("tiering-fill.yaml", None),
}
agents: dict[str, subprocess.Popen[bytes]] = {}


def scheme_file(variant: str) -> Path:
    name, mode = AGENT_SCHEMES[variant]
    example = REPO / "examples" / "schemes" / name
    if mode is None:
        return example
    spec = yaml.safe_load(example.read_text())
    spec.setdefault("monitoring", {})["mode"] = mode
    written = Path(f"/tmp/{variant}.yaml")
    written.write_text(yaml.safe_dump(spec))
    return written


def start(variant: str) -> None:
    if variant == "ours":
        driver.start(guest_lib.tiering_kdamond(model, dram=dram, cxl=cxl, memcg=bench.memcg))
    elif variant == "numa_balancing":
        DEMOTION.write_text("true")
        NUMA_BALANCING.write_text("2")
    elif variant in AGENT_SCHEMES:
        agents[variant] = bench.start_agent(variant, scheme_file(variant))


def stop(variant: str) -> None:
    if variant == "ours":
        driver.stop_all()
    elif variant == "numa_balancing":
        NUMA_BALANCING.write_text("0")
        DEMOTION.write_text("false")
    elif variant in agents:
        bench.stop_agent(variant, agents.pop(variant))


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


def sample(t0: float, phase: int) -> dict[str, Any]:
    hot, cold = hot_and_cold()
    return {
        "vmstat": vmstat(),
        "t": round(time.monotonic() - t0, 2),
        "phase": phase,
        "hot_on_dram": on_node(hot, frozenset({dram})),
        "cold_on_cxl": on_node(cold, cxl_nodes),
        "cold_on_other_cxl": on_node(cold, cxl_nodes - {cxl}),
        # Once the hot set moved, the old one is idle: a policy should demote it.
        "old_hot_on_cxl": on_node(app.hot, cxl_nodes) if app.moved else None,
        "loops": app.loops(),
    }


def started(variant: str) -> float:
    """Seconds until an agent variant's kdamonds run; 0 for the others."""
    return bench.wait_for_kdamond(agents[variant]) if variant in agents else 0.0


def reset() -> int:
    """Every page back on the workload's CXL node: each variant starts from there."""
    return sum(guest_lib.move_range(app.pid, *span, cxl) for span in (app.hot, app.cold))


def measure(index: int, variant: str) -> dict[str, Any]:
    # An agent starts first and the pages are moved once its kdamonds run (its Python's
    # start under emulation is not the policy's time). The others start on the reset
    # placement: NUMA balancing that scanned a task with nothing to move stretches its
    # scan period (see above), so it must not see the pages before they are on CXL.
    failed = 0 if variant in AGENT_SCHEMES else reset()
    with vm_common.running(variant, start, stop):
        start_s = started(variant)
        if variant in AGENT_SCHEMES:
            failed = reset()
        t0 = time.monotonic()
        series = [sample(t0, 1)]
        moved_at = None
        while time.monotonic() - t0 < bench.seconds * PHASES:
            time.sleep(1.0)
            if moved_at is None and PHASES > 1 and time.monotonic() - t0 >= bench.seconds:
                # Phase 2: the hot set moves into the cold array, still on CXL; the old
                # hot set, on DRAM by now, is idle from here.
                app.move_hot_set()
                moved_at = round(time.monotonic() - t0, 2)
            series.append(sample(t0, 2 if moved_at is not None else 1))
    if app.moved:
        app.move_hot_set()  # back, for the next variant
    return {
        "series": series,
        "reset_failed_pages": failed,
        "start_s": start_s,
        "moved_at": moved_at,
    }


results = bench.run(measure, reset=lambda: NUMA_BALANCING.write_text("0"))
bench.finish(results, dram=dram, cxl=cxl)
