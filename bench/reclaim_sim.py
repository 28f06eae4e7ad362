"""Proactive reclaim on the sim operations: what a DAMOS pageout scheme saves and costs.

Part 1, quota sweep: on each example workload, a pageout scheme for regions not accessed
at all (access rate 0%) for at least an age threshold (2 s with --quick, 5 s otherwise),
under several quotas, with and without prioritization (weights 0/0: every region scores
the same, so the quota is spent in address order; weights 1000/1000: coldest and oldest
first). Reported: bytes saved (not resident) at the end and on average; the share of the
truly cold bytes (not accessed in the current phase) reclaimed and the bytes of accessed
ranges reclaimed, both averaged over the run (sampled every second); refaults per second;
and how much of what the quota was charged for was actually paged out (memory already
paged out that still matches the pattern is charged again, as in the kernel).

Part 2, goal run: a pageout scheme allowed to reach warm memory (access rate up to 5%,
coldest first) whose size quota is tuned by a ``some_mem_psi_us`` goal. The pressure
signal is simulated from the refault rate: every refault stalls for the workload's
``refault_ns``, and the cumulative stall is what the goal reads, as it would read
``/proc/pressure/memory``. Reported: per second, the effective quota, the stall and the
bytes saved; then whether the stall holds the target within the stated band once the
tuner has converged.

    .venv/bin/python bench/reclaim_sim.py --quick     # < 1 minute
    .venv/bin/python bench/reclaim_sim.py             # all workloads, longer runs
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from damon_agent.api import units
from damon_agent.core import attrs, clock, monitor
from damon_agent.core.regions import Int64Array
from damon_agent.ops import sim, workloads
from damon_agent.schemes import engine, errors, model

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT / "examples" / "workloads"
MI = 1 << 20
ATTRS = attrs.MonitoringAttrs(sample_us=5_000, aggr_us=100_000, update_us=1_000_000)
PRIORITIZED = model.Weights(size=0, access_rate=1000, age=1000)
UNPRIORITIZED = model.Weights(size=0, access_rate=0, age=0)

# A workload with a gradient of access rates, for the goal run: reclaiming deeper into
# it costs more and more refaults.
GRADIENT_WORKLOAD = """
name: gradient
description: hot, three warm levels and cold
interval: 5ms
costs: {fast_access_ns: 100, slow_access_ns: 300, refault_ns: 20000}
targets:
  - name: app
    ranges:
      - {name: hot, size: 64Mi}
      - {name: warm1, size: 128Mi}
      - {name: warm2, size: 128Mi}
      - {name: warm3, size: 128Mi}
      - {name: cold, size: 512Mi}
    phases:
      - name: steady
        duration: 600s
        access:
          hot: {probability: 0.5}
          warm1: {probability: 0.02}
          warm2: {probability: 0.002}
          warm3: {probability: 0.0002}
          cold: cold
"""


class RefaultPressure:
    """A MetricSource: cumulative stall (us) = refaults so far x the refault cost."""

    def __init__(self, ops: sim.SimOperations) -> None:
        self._ops = ops

    def read(self, metric: str, *, nid: int | None = None, path: str | None = None) -> int:
        if metric == "some_mem_psi_us":
            return int(self._ops.counters().refault_cost_ns // 1_000)
        raise errors.MetricUnavailableError(f"{metric} is not simulated")


class CountingTimer:
    """The engine's action timer in the benchmark: virtual nanoseconds of reclaim work,
    advanced by ``TimedOps`` (the sim acts instantly; the time quota needs a cost)."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


class TimedOps:
    """Wraps the sim operations to advance a CountingTimer by the bytes each action takes."""

    def __init__(self, ops: sim.SimOperations, timer: CountingTimer, ns_per_mib: int) -> None:
        self._ops = ops
        self._timer = timer
        self._ns_per_mib = ns_per_mib

    def target_ranges(self, target_id: int) -> list[tuple[int, int]]:
        return self._ops.target_ranges(target_id)

    def prepare_access_checks(self, target_id: int, addrs: Int64Array) -> None:
        self._ops.prepare_access_checks(target_id, addrs)

    def check_accesses(self, target_id: int, addrs: Int64Array) -> NDArray[np.bool_]:
        return self._ops.check_accesses(target_id, addrs)

    def apply_action(
        self, target_id: int, start: int, end: int, action: str, target_nid: int | None
    ) -> int:
        self._timer.now_ns += (end - start) * self._ns_per_mib // MI
        return self._ops.apply_action(target_id, start, end, action, target_nid)


@dataclass
class Outcome:
    saved_end: int
    saved_avg: float
    cold_share_avg: float
    hot_reclaimed_avg: float
    refaults_per_s: float
    tried: int
    applied: int
    qt_exceeds: int
    timeline: list[tuple[float, int | None, float, int]]


def run(
    workload: workloads.Workload, scheme: model.Scheme, seconds: float, *, seed: int
) -> Outcome:
    """Run ``seconds`` of simulated time, sampling the ground truth every second."""
    sim_clock = clock.SimClock()
    ops = sim.SimOperations(workload, clock=sim_clock, rng=np.random.default_rng(seed))
    timer = CountingTimer()
    timed = TimedOps(ops, timer, ns_per_mib=250_000)  # 4 GiB/s of reclaim work
    metrics = RefaultPressure(ops)
    eng = engine.SchemesEngine([scheme], timed, metrics, action_timer_ns=timer)
    mon = monitor.Monitor(
        ATTRS, timed, ops.target_ids, clock=sim_clock, rng=np.random.default_rng(seed + 1),
        schemes=eng,
    )  # fmt: skip
    saved: list[int] = []
    cold_shares: list[float] = []
    hot_reclaimed: list[int] = []
    timeline: list[tuple[float, int | None, float, int]] = []
    last_stall = metrics.read("some_mem_psi_us")
    for second in range(int(seconds)):
        mon.run(1_000_000)
        counters = ops.counters()
        saved.append(counters.nonresident_bytes)
        if counters.cold_total_bytes:
            cold_shares.append(counters.cold_nonresident_bytes / counters.cold_total_bytes)
        hot_reclaimed.append(counters.nonresident_bytes - counters.cold_nonresident_bytes)
        stall = metrics.read("some_mem_psi_us")
        timeline.append(
            (second + 1.0, eng.effective_quotas()[scheme.name], stall - last_stall,
             counters.nonresident_bytes)
        )  # fmt: skip
        last_stall = stall
    counters = ops.counters()
    stats = eng.stats()[0]
    return Outcome(
        saved_end=counters.nonresident_bytes,
        saved_avg=float(np.mean(saved)) if saved else 0.0,
        cold_share_avg=float(np.mean(cold_shares)) if cold_shares else 0.0,
        hot_reclaimed_avg=float(np.mean(hot_reclaimed)) if hot_reclaimed else 0.0,
        refaults_per_s=counters.refaults / seconds,
        tried=stats.sz_tried,
        applied=stats.sz_applied,
        qt_exceeds=stats.qt_exceeds,
        timeline=timeline,
    )


def _mib(value: float) -> str:
    return f"{value / MI:8.0f}"


def quota_sweep(names: list[str], seconds: float, age_us: int, seed: int) -> None:
    quotas: list[tuple[str, model.Quota | None]] = [
        ("none", None),
        ("256Mi/s", model.Quota(size_bytes=256 * MI)),
        ("64Mi/s", model.Quota(size_bytes=64 * MI)),
        ("16Mi/s", model.Quota(size_bytes=16 * MI)),
        ("2ms/s", model.Quota(time_us=2_000)),
    ]
    pattern = model.AccessPattern(max_rate_bp=0, min_age_us=age_us)
    print(
        f"Part 1: pageout (access rate 0%, age >= {units.format_duration_us(age_us)}), "
        f"{seconds:.0f} s simulated per run; reclaim work modelled at 4 GiB/s for time quotas"
    )
    header = (
        f"{'workload':<13} {'quota':<8} {'prio':<4} {'saved MiB':>9} {'avg MiB':>8} "
        f"{'cold %':>7} {'hot MiB':>8} {'refaults/s':>10} {'applied/tried':>13} {'qt_exc':>6}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        workload = workloads.load_workload(WORKLOADS / f"{name}.yaml")
        for label, limits in quotas:
            for prioritized in (False, True) if limits is not None else (True,):
                quota = None
                if limits is not None:
                    weights = PRIORITIZED if prioritized else UNPRIORITIZED
                    quota = model.Quota(
                        time_us=limits.time_us, size_bytes=limits.size_bytes, weights=weights
                    )
                scheme = model.Scheme("reclaim", "pageout", pattern=pattern, quota=quota)
                out = run(workload, scheme, seconds, seed=seed)
                prio = "-" if quota is None else ("yes" if prioritized else "no")
                efficiency = f"{out.applied / out.tried * 100:12.0f}%" if out.tried else "-"
                print(
                    f"{name:<13} {label:<8} {prio:<4} {_mib(out.saved_end):>9} "
                    f"{_mib(out.saved_avg):>8} {out.cold_share_avg * 100:6.1f}% "
                    f"{_mib(out.hot_reclaimed_avg):>8} {out.refaults_per_s:10.1f} "
                    f"{efficiency:>13} {out.qt_exceeds:>6}"
                )
    print(
        "saved: not resident at the end; avg: over the run (sampled every second); cold %: "
        "share of the bytes not accessed in the current phase that are reclaimed, averaged; "
        "hot MiB: reclaimed bytes of ranges accessed in the current phase, averaged; "
        "applied/tried: bytes paged out over bytes the quota was charged for"
    )
    print()


def goal_run(
    seconds: float, target_us: int, band: float, seed: int, ceiling: int = 1024 * MI
) -> bool:
    workload = workloads.parse_workload_text(GRADIENT_WORKLOAD, "gradient")
    goal = model.QuotaGoal("some_mem_psi_us", target_us)
    quota = model.Quota(
        size_bytes=ceiling, reset_interval_us=1_000_000, weights=PRIORITIZED, goals=(goal,)
    )
    scheme = model.Scheme(
        "reclaim-psi",
        "pageout",
        pattern=model.AccessPattern(max_rate_bp=500, min_age_us=1_000_000),
        quota=quota,
    )
    out = run(workload, scheme, seconds, seed=seed)
    target_ms = target_us / 1000
    print(
        f"Part 2: pageout (access rate <= 5%, age >= 1s) under a some_mem_psi_us goal of "
        f"{target_ms:g} ms stall per second (consist tuner, reset 1 s, ceiling "
        f"{units.format_bytes(ceiling)}/s); "
        "stall simulated as refaults x 20 us"
    )
    print(f"{'t (s)':>6} {'quota':>12} {'stall ms/s':>10} {'saved MiB':>9}")
    step = max(1, len(out.timeline) // 30)
    for t, esz, stall, saved in out.timeline[::step]:
        quota_text = "none" if esz is None else units.format_bytes(esz - esz % 4096)
        print(f"{t:6.0f} {quota_text:>12} {stall / 1000:10.2f} {_mib(saved):>9}")
    settle = len(out.timeline) // 2
    tail = [stall for _, _, stall, _ in out.timeline[settle:]]
    low, high = target_us * (1 - band), target_us * (1 + band)
    mean = float(np.mean(tail))
    inside = sum(1 for s in tail if low <= s <= high) / len(tail)
    smoothed = np.convolve(tail, np.ones(5) / 5, mode="valid")
    inside_smoothed = float(np.mean((smoothed >= low) & (smoothed <= high)))
    quotas_tail = [esz or 0 for _, esz, _, _ in out.timeline[settle:]]
    median_quota = units.format_bytes(int(np.median(quotas_tail)) // 4096 * 4096)
    print(
        f"after {settle} s: mean stall {mean / 1000:.2f} ms/s (target {target_ms:g}, band "
        f"{low / 1000:.1f}..{high / 1000:.1f}); {inside * 100:.0f}% of seconds in the band, "
        f"{inside_smoothed * 100:.0f}% of 5 s averages; effective quota median {median_quota}"
    )
    held = low <= mean <= high
    print(f"mean stall within the band: {'yes' if held else 'NO'}")
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (< 1 min)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    began = time.monotonic()
    if args.quick:
        quota_sweep(["hot-cold", "phase-change"], 12.0, 2_000_000, args.seed)
        goal_run(40.0, 10_000, 0.5, args.seed)
    else:
        quota_sweep(["hot-cold", "phase-change", "sparse-hot"], 30.0, 5_000_000, args.seed)
        goal_run(120.0, 10_000, 0.5, args.seed)
    print(f"(ran in {time.monotonic() - began:.1f} s)")


if __name__ == "__main__":
    main()
