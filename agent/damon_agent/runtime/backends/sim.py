"""The sim backend: the in-process monitor and DAMOS engine over a simulated workload.

The workload file (``ops.workloads``) stands in for the node's physical memory: each
context monitors its own copy of the workload's targets (``ops.sim.SimOperations``), so
one scheme's actions never change what another context sees, and a sim context has one
target per workload target whatever pods it selects. Filters evaluated page by page
(memcg, anon, young...) are planned as on a real node but left out when run: simulated
memory has no page attributes, and the simulated pods no cgroups.

Two things the DAMOS engine needs are modelled so that a seeded run stays reproducible:

- action time, for the time quota: every action costs ``SIM_ACTION_COST_NS`` (a fake
  timer), instead of the wall time of the Python that simulates it;
- node metrics, for quota goals and watermarks (``SimMetrics``), derived from the sim's
  counters, e.g. memory PSI from the time spent on refaults.

``run`` steps it in virtual time; the daemon paces it to the wall clock
(``inprocess.Pacing``). The monitoring itself is the same in both.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np

from damon_agent.core import clock as clock_mod
from damon_agent.ops import sim, workloads
from damon_agent.runtime import backend, errors, planning
from damon_agent.runtime.backends import inprocess
from damon_agent.schemes import errors as schemes_errors

# Fake duration of one DAMOS action for the time quota (see the module docstring).
SIM_ACTION_COST_NS: Final = 10_000
# The simulated node's memory, as a multiple of what the workload maps: node metrics
# (free/used shares, watermarks) need a capacity, and the sim models only the workload.
SIM_NODE_CAPACITY_FACTOR: Final = 2
# Filter types the sim evaluates (on regions; it has no page attributes).
SIM_FILTER_TYPES: Final = frozenset({"addr", "target"})

CAPABILITIES: Final = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": frozenset(sim.SUPPORTED_ACTIONS)},
    # Accepted so pod schemes plan as on a real node; per-page ones are left out when run.
    filter_types=frozenset({"anon", "memcg", "young", "addr", "target"}),
    goal_metrics=frozenset(
        {"user_input", "some_mem_psi_us", "node_mem_used_bp", "node_mem_free_bp"}
    ),
    intervals_goal=True,
    tiers={"dram": (0,), "cxl": (1,)},
)


class SimMetrics:
    """Node metrics of the simulated machine, for quota goals and watermarks.

    - ``some_mem_psi_us``: cumulative time tasks stalled on refaults (the sim's refault
      cost), the part of memory pressure that reclaim causes;
    - ``node_mem_used_bp`` / ``node_mem_free_bp`` of node 0 or 1: resident bytes on the
      node against its capacity (``SIM_NODE_CAPACITY_FACTOR`` x the workload's mapping);
    - ``free_mem_rate`` (permil, for watermarks): the same for the whole node.

    Anything else (cgroup metrics, PSI of pods) is not simulated and is unavailable.
    """

    def __init__(self, ops: sim.SimOperations) -> None:
        self._ops = ops

    def read(self, metric: str, *, nid: int | None = None, path: str | None = None) -> int:
        counters = self._ops.counters()
        capacity = max(1, SIM_NODE_CAPACITY_FACTOR * counters.mapped_bytes)
        if metric == "some_mem_psi_us":
            return int(counters.refault_cost_ns // 1_000)
        if metric == "free_mem_rate":
            return max(0, 1_000 - counters.resident_bytes * 1_000 // capacity)
        if metric in ("node_mem_used_bp", "node_mem_free_bp"):
            if nid not in (0, 1):
                raise schemes_errors.MetricUnavailableError(
                    f"{metric}: the sim has NUMA nodes 0 and 1, not {nid}"
                )
            node_capacity = max(1, capacity // 2)
            # Resident share of the node's bytes; paged-out bytes free memory.
            resident_share = counters.resident_bytes / max(1, counters.mapped_bytes)
            used = int(counters.node_bytes[nid] * resident_share)
            used_bp = min(10_000, used * 10_000 // node_capacity)
            return used_bp if metric == "node_mem_used_bp" else 10_000 - used_bp
        raise schemes_errors.MetricUnavailableError(f"{metric} is not simulated")


def fake_action_timer() -> Callable[[], int]:
    """A timer whose consecutive reads are ``SIM_ACTION_COST_NS`` apart: the engine reads
    it right before and after each action, so every action "takes" that long."""
    ticks = itertools.count(step=SIM_ACTION_COST_NS)
    return lambda: next(ticks)


def open_sim(
    workload_path: Path, *, pacing: inprocess.Pacing, seed: int = 0
) -> inprocess.InProcessBackend:
    """The sim backend over the workload file (``BackendError`` naming it when bad)."""
    try:
        workload = workloads.load_workload(workload_path)
    except workloads.SimError as err:
        raise errors.BackendError(f"workload {workload_path}: {err}") from err

    def make_parts(context: planning.Context, seed: int, start_us: int) -> inprocess.ContextParts:
        del context  # every sim context monitors the whole workload
        # Separate streams for the workload's accesses and the monitor's sampling: adding
        # a scheme must not change which addresses the monitor samples.
        workload_seed, monitor_seed = np.random.SeedSequence(seed).spawn(2)
        clock = clock_mod.SimClock(start_us)
        ops = sim.SimOperations(workload, clock=clock, rng=np.random.default_rng(workload_seed))
        return inprocess.ContextParts(
            ops=ops,
            target_ids=tuple(ops.target_ids),
            target_names={i: ops.target_name(t) for i, t in enumerate(ops.target_ids)},
            metrics=SimMetrics(ops),
            clock=clock,
            rng=np.random.default_rng(monitor_seed),
            filter_types=SIM_FILTER_TYPES,
            action_timer_ns=fake_action_timer(),
        )

    info = backend.BackendInfo(backend="sim", capabilities=CAPABILITIES)
    return inprocess.InProcessBackend(info, make_parts, pacing=pacing, seed=seed)
