"""Memory tiering on the sim operations: promote with migrate_hot, demote with migrate_cold.

The ``tiering`` example workload starts with its hot set (and a warm range) on the slow
tier (node 1, CXL-like: 300 ns per access) and its cold bulk on the fast tier (node 0,
100 ns). Policies compared, each over the same simulated time and seed:

- ``none``: no migration (the starting placement);
- ``promote``: ``migrate_hot`` to the fast tier (access rate >= 5%, hottest first,
  256 MiB/s);
- ``promote+demote``: plus ``migrate_cold`` to the slow tier of what was idle for 5 s
  (coldest first, 256 MiB/s) -- the example ``examples/schemes/tiering.yaml`` with a
  shorter demotion age;
- ``oracle``: the ideal placement from the start (every accessed range on the fast tier).

Reported: the share of the hot bytes on the fast tier over time, the average access cost
per page access in each second and over the run (against the oracle and no migration),
and the bytes each policy moved and left on each tier.

    .venv/bin/python bench/tiering_sim.py --quick     # < 1 minute
    .venv/bin/python bench/tiering_sim.py
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from damon_agent.api import schemes as api
from damon_agent.core import attrs, clock, monitor
from damon_agent.ops import sim, workloads
from damon_agent.schemes import conversion, engine, errors, model

ROOT = Path(__file__).resolve().parents[1]
MI = 1 << 20
ATTRS = attrs.MonitoringAttrs(sample_us=5_000, aggr_us=100_000, update_us=1_000_000)


class NoMetrics:
    def read(self, metric: str, *, nid: int | None = None, path: str | None = None) -> int:
        raise errors.MetricUnavailableError(f"{metric} is not simulated")


def example_schemes(demote_age_us: int) -> list[model.Scheme]:
    spec = api.load_scheme_file(ROOT / "examples" / "schemes" / "tiering.yaml")
    promote, demote = conversion.schemes(spec.schemes)
    demote = dataclasses.replace(
        demote, pattern=dataclasses.replace(demote.pattern, min_age_us=demote_age_us)
    )
    return [promote, demote]


def oracle_workload(workload: workloads.Workload) -> workloads.Workload:
    """The same workload with every range accessed in the first phase on node 0."""
    targets = []
    for target in workload.targets:
        phase = target.phases[0]
        ranges = tuple(
            dataclasses.replace(r, node=0 if phase.pattern_of(r.group).accessed else 1)
            for r in target.ranges
        )
        targets.append(dataclasses.replace(target, ranges=ranges))
    return dataclasses.replace(workload, targets=tuple(targets))


def run(
    workload: workloads.Workload, schemes: list[model.Scheme], seconds: int, seed: int
) -> tuple[list[tuple[int, float, float]], sim.SimCounters, list[int]]:
    """Per second: (t, hot share on the fast tier, average cost of that second's accesses)."""
    sim_clock = clock.SimClock()
    ops = sim.SimOperations(workload, clock=sim_clock, rng=np.random.default_rng(seed))
    eng = engine.SchemesEngine(schemes, ops, NoMetrics())
    mon = monitor.Monitor(
        ATTRS, ops, ops.target_ids, clock=sim_clock, rng=np.random.default_rng(seed + 1),
        schemes=eng,
    )  # fmt: skip
    series = [(0, ops.counters().hot_fast_share, float("nan"))]
    last = ops.counters()
    for second in range(1, seconds + 1):
        mon.run(1_000_000)
        now = ops.counters()
        accesses = now.page_accesses - last.page_accesses
        cost = (now.access_cost_ns + now.refault_cost_ns) - (
            last.access_cost_ns + last.refault_cost_ns
        )
        series.append((second, now.hot_fast_share, cost / accesses if accesses else 0.0))
        last = now
    return series, ops.counters(), [s.sz_applied for s in eng.stats()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run (< 1 min)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    began = time.monotonic()
    seconds = 12 if args.quick else 40
    workload = workloads.load_workload(ROOT / "examples" / "workloads" / "tiering.yaml")
    promote, demote = example_schemes(demote_age_us=5_000_000)
    policies: list[tuple[str, workloads.Workload, list[model.Scheme]]] = [
        ("none", workload, []),
        ("promote", workload, [promote]),
        ("promote+demote", workload, [promote, demote]),
        ("oracle", oracle_workload(workload), []),
    ]
    results = {name: run(wl, schemes, seconds, args.seed) for name, wl, schemes in policies}
    costs = workload.costs
    print(
        f"tiering workload: hot 192Mi + warm 64Mi start on the slow tier "
        f"({costs.slow_access_ns} ns/access), cold 768Mi on the fast tier "
        f"({costs.fast_access_ns} ns); {seconds} s simulated"
    )
    print()
    print("share of hot bytes on the fast tier / average access cost (ns) in each second")
    names = [name for name, _, _ in policies]
    print(f"{'t (s)':>5} " + " ".join(f"{n:>22}" for n in names))
    step = 1 if seconds <= 12 else 2
    for index in range(0, seconds + 1, step):
        cells = []
        for name in names:
            _, share, cost = results[name][0][index]
            cost_text = "   -" if np.isnan(cost) else f"{cost:5.0f}"
            cells.append(f"{share * 100:14.1f}% {cost_text:>6}")
        print(f"{index:5d} " + " ".join(cells))
    print()
    oracle_cost = results["oracle"][1].average_access_cost_ns
    none_cost = results["none"][1].average_access_cost_ns
    header = (
        f"{'policy':<16} {'avg ns/access':>13} {'vs oracle':>9} {'vs none':>8} "
        f"{'hot on fast':>11} {'moved MiB':>9} {'fast MiB':>8} {'slow MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        _, counters, applied = results[name]
        cost = counters.average_access_cost_ns
        print(
            f"{name:<16} {cost:13.1f} {cost / oracle_cost:8.2f}x {cost / none_cost:7.2f}x "
            f"{counters.hot_fast_share * 100:10.1f}% {sum(applied) / MI:9.0f} "
            f"{counters.node_bytes[0] / MI:8.0f} {counters.node_bytes[1] / MI:8.0f}"
        )
    gap_closed = (none_cost - results["promote+demote"][1].average_access_cost_ns) / (
        none_cost - oracle_cost
    )
    print(
        f"\npromote+demote closes {gap_closed * 100:.0f}% of the gap between no migration "
        f"and the oracle placement (over the whole run, warm-up included)"
    )
    print(f"(ran in {time.monotonic() - began:.1f} s)")


if __name__ == "__main__":
    main()
