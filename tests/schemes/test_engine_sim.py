"""The engine driven by the real monitor over the sim operations (known ground truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from schemes_support import Metrics, StepTimer

from damon_agent.api import schemes as api
from damon_agent.core import attrs, clock, monitor
from damon_agent.ops import sim
from damon_agent.schemes import conversion, engine, model

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ROOT / "examples" / "workloads"
MI = 1 << 20


def _run(
    workload: str, schemes: list[model.Scheme], seconds: float
) -> tuple[sim.SimOperations, engine.SchemesEngine, monitor.Monitor]:
    sim_clock = clock.SimClock()
    ops = sim.SimOperations.from_file(
        WORKLOADS / workload, clock=sim_clock, rng=np.random.default_rng(1)
    )
    eng = engine.SchemesEngine(schemes, ops, Metrics(), action_timer_ns=StepTimer(1000))
    mon = monitor.Monitor(
        attrs.MonitoringAttrs(sample_us=5_000, aggr_us=100_000, update_us=1_000_000),
        ops,
        ops.target_ids,
        clock=sim_clock,
        rng=np.random.default_rng(2),
        schemes=eng,
    )
    mon.run(int(seconds * 1e6))
    return ops, eng, mon


def test_pageout_reclaims_the_cold_set_and_spares_the_hot_one() -> None:
    scheme = model.Scheme(
        "reclaim",
        "pageout",
        pattern=model.AccessPattern(max_rate_bp=0, min_age_us=1_000_000),
    )
    ops, eng, _ = _run("hot-cold.yaml", [scheme], 4.0)
    counters = ops.counters()
    stats = eng.stats()[0]
    # 896 MiB never touched, 128 MiB touched all the time.
    assert counters.cold_nonresident_bytes >= 0.8 * 896 * MI
    assert counters.nonresident_bytes - counters.cold_nonresident_bytes <= 16 * MI
    assert stats.sz_applied == counters.pageout_bytes
    assert stats.nr_tried > 0 and stats.tried_regions


def test_size_quota_limits_reclaim_per_second() -> None:
    quota = model.Quota(size_bytes=64 * MI, reset_interval_us=1_000_000)
    scheme = model.Scheme(
        "reclaim", "pageout", pattern=model.AccessPattern(max_rate_bp=0), quota=quota
    )
    ops, eng, _ = _run("hot-cold.yaml", [scheme], 3.0)
    stats = eng.stats()[0]
    # Three windows (at 0.1 s, 1.1 s, 2.1 s) of at most 64 MiB each.
    assert stats.sz_tried <= 3 * 64 * MI
    assert stats.sz_tried >= 2 * 64 * MI
    assert ops.counters().pageout_bytes <= 3 * 64 * MI
    assert stats.qt_exceeds >= 1


def test_promotion_moves_the_hot_set_to_the_fast_tier() -> None:
    spec = api.load_scheme_file(ROOT / "examples" / "schemes" / "tiering.yaml")
    schemes = conversion.schemes(spec.schemes)
    ops, eng, _ = _run("tiering.yaml", schemes, 4.0)
    counters = ops.counters()
    assert counters.hot_fast_share >= 0.9
    promote, demote = eng.stats()
    assert promote.sz_applied > 0 and promote.qt_exceeds == 0
    assert demote.sz_applied == 0  # nothing has been idle for 10 s yet


def test_conversion_of_the_stat_example_to_monitoring_attrs() -> None:
    spec = api.load_scheme_file(ROOT / "examples" / "schemes" / "stat.yaml")
    assert conversion.monitoring_attrs(spec.monitoring) == attrs.MonitoringAttrs(
        sample_us=5_000, aggr_us=100_000, update_us=1_000_000, min_nr_regions=10,
        max_nr_regions=1000, max_region_bytes=32 << 20,
    )  # fmt: skip
    (stat,) = conversion.schemes(spec.schemes)
    assert stat == model.Scheme("stat-all", "stat")


def test_stat_counts_but_leaves_memory_resident() -> None:
    # What a dry run of a reclaim scheme runs as (the planner makes it ``stat``).
    scheme = model.Scheme("reclaim", "stat", pattern=model.AccessPattern(max_rate_bp=0))
    ops, eng, _ = _run("hot-cold.yaml", [scheme], 2.0)
    stats = eng.stats()[0]
    assert stats.sz_tried >= 800 * MI  # the cold set, tried at least once
    assert stats.sz_applied == 0
    assert ops.counters().nonresident_bytes == 0


def test_monitoring_sleeps_while_watermarks_keep_every_scheme_off() -> None:
    metrics = Metrics()
    metrics.set("free_mem_rate", 900)  # 90% free: above the high watermark
    wm = model.Watermarks(interval_us=500_000, high=500, mid=400, low=50)
    scheme = model.Scheme("reclaim", "pageout", watermarks=wm)
    sim_clock = clock.SimClock()
    ops = sim.SimOperations.from_file(
        WORKLOADS / "hot-cold.yaml", clock=sim_clock, rng=np.random.default_rng(1)
    )
    eng = engine.SchemesEngine([scheme], ops, metrics)
    mon = monitor.Monitor(
        attrs.MonitoringAttrs(), ops, ops.target_ids, clock=sim_clock,
        rng=np.random.default_rng(2), schemes=eng,
    )  # fmt: skip
    mon.run(1_000_000)
    assert mon.nr_access_checks == 0 and mon.passed_sample_intervals == 0
    metrics.set("free_mem_rate", 300)  # below mid: on at the next check
    mon.run(1_000_000)
    assert mon.nr_access_checks > 0
    assert eng.stats()[0].activated is True
