"""Convergence time after a phase change: how long until the snapshots are right again.

The phase-change example workload moves its hot set every 5 s. After each change, we
take the snapshots in order and report the time from the change until the first one
whose aggregation interval lies entirely in the new phase and whose hot-set F1 reaches
``--f1`` (default 0.95, the accuracy target), and until its working-set-size error falls
within ``--wss`` (default 5%, the WSS target). One aggregation interval (100 ms) is the
floor: a snapshot cannot reflect a phase before it has been observed for a whole
interval.

    python bench/monitor_convergence.py [--quick] [--seeds N]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from damon_agent.core import attrs, clock, monitor, snapshots
from damon_agent.ops import sim

WORKLOAD = Path(__file__).resolve().parents[1] / "examples" / "workloads" / "phase-change.yaml"


def convergence(
    seed: int, duration_s: float, f1_goal: float, wss_goal: float
) -> list[tuple[str, int | None, int | None]]:
    """Per phase change: (new phase, µs until F1 >= goal, µs until WSS error <= goal)."""
    sim_clock = clock.SimClock()
    ops = sim.SimOperations.from_file(WORKLOAD, clock=sim_clock, rng=np.random.default_rng(seed))
    mon = monitor.Monitor(
        attrs.MonitoringAttrs(),
        ops,
        ops.target_ids,
        clock=sim_clock,
        rng=np.random.default_rng(seed + 1000),
    )
    taken: list[snapshots.Snapshot] = []
    mon.run(int(duration_s * 1e6), taken.append)
    changes = ops.phase_changes(0, int(duration_s * 1e6))
    results: list[tuple[str, int | None, int | None]] = []
    for i, change in enumerate(changes):
        until = changes[i + 1] if i + 1 < len(changes) else int(duration_s * 1e6)
        f1_at: int | None = None
        wss_at: int | None = None
        for snapshot in taken:
            if snapshot.time_us - snapshot.aggr_us < change or snapshot.time_us > until:
                continue
            score = sim.score_snapshot(ops, snapshot)
            if f1_at is None and score.f1 >= f1_goal:
                f1_at = snapshot.time_us - change
            if wss_at is None and score.wss_error <= wss_goal:
                wss_at = snapshot.time_us - change
            if f1_at is not None and wss_at is not None:
                break
        results.append((ops.phase_at(0, change).name, f1_at, wss_at))
    return results


def _ms(value: int | None) -> str:
    return "never" if value is None else f"{value / 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 20 s")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--f1", type=float, default=0.95)
    parser.add_argument("--wss", type=float, default=0.05)
    args = parser.parse_args()
    seeds = args.seeds or (2 if args.quick else 5)
    duration = 20.0 if args.quick else 60.0

    print(
        f"convergence after phase changes ({WORKLOAD.name}, default attrs, {duration:g} s, "
        f"{seeds} seed(s)): time until F1 >= {args.f1:g} and WSS error <= {args.wss:.0%}"
    )
    header = f"{'seed':>5}  {'change at':>10}  {'new phase':<12}{'F1 ms':>8}{'WSS ms':>8}"
    print(header)
    print("-" * len(header))
    f1_times: list[float] = []
    wss_times: list[float] = []
    misses = 0
    for seed in range(seeds):
        for index, (phase, f1_at, wss_at) in enumerate(
            convergence(seed, duration, args.f1, args.wss)
        ):
            print(f"{seed:>5}  {(index + 1) * 5:>9}s  {phase:<12}{_ms(f1_at):>8}{_ms(wss_at):>8}")
            if f1_at is None or wss_at is None:
                misses += 1
            if f1_at is not None:
                f1_times.append(f1_at / 1000)
            if wss_at is not None:
                wss_times.append(wss_at / 1000)
    print()
    for name, times in (("F1", f1_times), ("WSS", wss_times)):
        if times:
            print(
                f"{name:>4}: median {statistics.median(times):.0f} ms, "
                f"max {max(times):.0f} ms over {len(times)} phase changes"
            )
    print(f"phase changes that never converged: {misses}")


if __name__ == "__main__":
    main()
