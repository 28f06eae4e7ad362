"""Monitoring cost as the simulated memory grows from 1 GiB to 1 TiB.

One target: an eighth hot (random, probability 0.5 per 5 ms), the rest cold. The monitor
runs with the default attributes; after a warm-up, we measure per aggregation interval
(100 ms simulated): access checks, and the CPU time of the monitor plus the sim's answers
(process time, the best of ``--repeats`` runs: the machine is shared, and interference
only ever adds time).

Baseline: a page-granular monitor that checks every page at every sampling interval
(checks = pages * 20 per aggregation). Its CPU time is measured on small sizes with a
vectorised numpy implementation (one random draw per page per sample, the cheapest
possible check) and extrapolated linearly above ``--baseline-max``.

Targets (issue 2): CPU per aggregation at 1 TiB / at 1 GiB <= 1.2; at 64 GiB, at least
1000x fewer checks than the page-granular baseline.

    python bench/monitor_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from damon_agent.api import units
from damon_agent.core import attrs, clock, monitor
from damon_agent.ops import sim, workloads

GiB = 1 << 30
PAGE = workloads.PAGE_SIZE
COST_RATIO_TARGET = 1.2
CHECKS_RATIO_TARGET = 1000


def workload_of(size: int) -> workloads.Workload:
    hot = size // 8
    return workloads.parse_workload(
        {
            "name": "scaled",
            "targets": [
                {
                    "ranges": [{"name": "hot", "size": hot}, {"name": "cold", "size": size - hot}],
                    "phases": [{"duration": "1h", "access": {"hot": {"probability": 0.5}}}],
                }
            ],
        }
    )


def measure_damon(size: int, warmup_s: float, measure_s: float, seed: int) -> tuple[float, float]:
    """(access checks, CPU seconds) per aggregation interval."""
    sim_clock = clock.SimClock()
    ops = sim.SimOperations(workload_of(size), clock=sim_clock, rng=np.random.default_rng(seed))
    mon = monitor.Monitor(
        attrs.MonitoringAttrs(), ops, [0], clock=sim_clock, rng=np.random.default_rng(seed + 1)
    )
    mon.run(int(warmup_s * 1e6))
    checks_before = mon.nr_access_checks
    aggregations_before = mon.nr_aggregations
    started = time.process_time()
    mon.run(int(measure_s * 1e6))
    cpu = time.process_time() - started
    aggregations = mon.nr_aggregations - aggregations_before
    return (mon.nr_access_checks - checks_before) / aggregations, cpu / aggregations


def measure_page_granular(size: int, samples: int, seed: int) -> float:
    """CPU seconds per aggregation of checking every page at every sample."""
    pages = size // PAGE
    hot_pages = pages // 8
    rng = np.random.default_rng(seed)
    counts = np.zeros(pages, dtype=np.int32)
    probability = np.zeros(pages, dtype=np.float32)
    probability[:hot_pages] = 0.5
    started = time.process_time()
    for _ in range(samples):
        counts += rng.random(pages, dtype=np.float32) < probability
    return (time.process_time() - started) * 20 / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes, shorter runs")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--baseline-max", default="4Gi", help="largest measured baseline size")
    args = parser.parse_args()
    quick = args.quick
    sizes_gib = [1, 4, 16, 64, 256, 1024]
    repeats = args.repeats or (3 if quick else 5)
    warmup_s, measure_s = (3.0, 5.0) if quick else (10.0, 20.0)
    baseline_max = units.parse_size_bytes(args.baseline_max)

    print(
        f"monitor cost per aggregation interval (100 ms simulated), default attrs, "
        f"checks: median, CPU: best of {repeats}; baseline checks every page every 5 ms"
    )
    header = (
        f"{'memory':>8}{'checks':>10}{'cpu ms':>9}{'baseline checks':>17}"
        f"{'baseline cpu ms':>17}{'checks ratio':>14}"
    )
    print(header)
    print("-" * len(header))
    baseline_ms_per_byte: float | None = None
    results: dict[int, tuple[float, float]] = {}
    for size_gib in sizes_gib:
        size = size_gib * GiB
        runs = [measure_damon(size, warmup_s, measure_s, seed) for seed in range(repeats)]
        checks = statistics.median(run[0] for run in runs)
        cpu_ms = min(run[1] for run in runs) * 1e3
        results[size_gib] = (checks, cpu_ms)
        baseline_checks = size // PAGE * 20
        if size <= baseline_max:
            baseline_ms = measure_page_granular(size, 5 if quick else 20, 0) * 1e3
            baseline_ms_per_byte = baseline_ms / size
            baseline_text = f"{baseline_ms:.1f}"
        else:
            assert baseline_ms_per_byte is not None
            baseline_text = f"~{baseline_ms_per_byte * size:.0f} (extrap.)"
        print(
            f"{size_gib:>6}Gi{checks:>10.0f}{cpu_ms:>9.2f}{baseline_checks:>17,}"
            f"{baseline_text:>17}{baseline_checks / checks:>13,.0f}x"
        )
    cost_ratio = results[1024][1] / results[1][1]
    checks_64 = results[64][0]
    ratio_64 = (64 * GiB // PAGE * 20) / checks_64
    print()
    print(f"{'target':<52}{'measured':>12}  met")
    print(
        f"{'CPU per aggregation, 1 TiB / 1 GiB <= 1.2':<52}{cost_ratio:>12.2f}  "
        f"{'yes' if cost_ratio <= COST_RATIO_TARGET else 'NO'}"
    )
    print(
        f"{'fewer checks than page-granular at 64 GiB >= 1000x':<52}{ratio_64:>11,.0f}x  "
        f"{'yes' if ratio_64 >= CHECKS_RATIO_TARGET else 'NO'}"
    )


if __name__ == "__main__":
    main()
