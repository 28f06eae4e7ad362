"""The engine on hand-built regions: apply timing, quota charging across windows,
prioritization, filters, actions, ages, stats and tried regions."""

from __future__ import annotations

from typing import Any

import pytest
from schemes_support import FilteringOps, Metrics, RecordingOps, StepTimer, StubMonitor, target

from damon_agent.schemes import engine, errors, model

KI = 1024
COLD = model.AccessPattern(max_rate_bp=0)


def _engine(schemes: list[model.Scheme], **kw: Any) -> Any:
    ops = kw.pop("ops", None) or RecordingOps()
    metrics = kw.pop("metrics", None) or Metrics()
    return engine.SchemesEngine(schemes, ops, metrics, **kw), ops, metrics


def _four_cold_regions() -> Any:
    # Four 16 KiB regions, never accessed, 10 s old.
    bounds = [(0x10000 + i * 16 * KI, 0x10000 + (i + 1) * 16 * KI) for i in range(4)]
    return StubMonitor([target(7, bounds, [0] * 4, [100] * 4)])


def test_applies_every_aggregation_interval_by_default() -> None:
    mon = _four_cold_regions()
    eng, ops, _ = _engine([model.Scheme("all", "pageout")])
    # Sampling intervals before the first aggregation boundary do nothing.
    for sis in range(1, 20):
        mon.passed_sample_intervals = sis
        eng.apply(mon, sis * 5_000)
    assert ops.calls == []
    mon.passed_sample_intervals = 20
    eng.apply(mon, 100_000)
    assert len(ops.calls) == 4
    mon.passed_sample_intervals = 21
    eng.apply(mon, 105_000)
    assert len(ops.calls) == 4  # next due at 40


def test_own_apply_interval() -> None:
    mon = _four_cold_regions()
    eng, ops, _ = _engine([model.Scheme("s", "stat", apply_interval_us=1_000_000)])
    for _ in range(9):
        eng.apply(mon, mon.next_aggregation())
    assert eng.stats()[0].nr_applies == 0
    eng.apply(mon, mon.next_aggregation())  # sis 200 = 1 s
    assert eng.stats()[0].nr_applies == 1
    assert eng.stats()[0].nr_tried == 4
    assert ops.calls == []  # stat does not call the operations


def test_size_quota_charges_across_windows_and_resumes() -> None:
    mon = _four_cold_regions()
    quota = model.Quota(size_bytes=20 * KI, reset_interval_us=1_000_000)
    eng, _, _ = _engine([model.Scheme("s", "stat", quota=quota)])
    base = 0x10000
    eng.apply(mon, mon.next_aggregation())  # t = 0.1 s: window 1 opens
    tried = [(r.start - base, r.end - base) for r in eng.stats()[0].tried_regions]
    # 16 Ki fits, then 4 Ki of the second region (split off).
    assert tried == [(0, 16 * KI), (16 * KI, 20 * KI)]
    assert len(mon.targets[0]) == 5
    for _ in range(9):  # t = 0.2 .. 1.0 s: same window, quota used up
        eng.apply(mon, mon.next_aggregation())
    assert eng.stats()[0].sz_tried == 20 * KI
    assert eng.stats()[0].tried_regions == []
    eng.apply(mon, mon.next_aggregation())  # t = 1.1 s: window 2 resumes at 20 Ki
    stats = eng.stats()[0]
    tried = [(r.start - base, r.end - base) for r in stats.tried_regions]
    assert tried == [(20 * KI, 32 * KI), (32 * KI, 40 * KI)]
    assert stats.qt_exceeds == 1
    assert (stats.nr_tried, stats.sz_tried) == (4, 40 * KI)
    for _ in range(10):
        eng.apply(mon, mon.next_aggregation())
    tried = [(r.start - base, r.end - base) for r in eng.stats()[0].tried_regions]
    # t = 2.1 s: window 3 goes on from 40 Ki: 8 Ki, then 12 Ki of the last region.
    assert tried == [(40 * KI, 48 * KI), (48 * KI, 60 * KI)]
    eng.apply(mon, mon.next_aggregation())
    assert eng.stats()[0].tried_regions == []
    assert eng.stats()[0].qt_exceeds == 2
    for _ in range(9):
        eng.apply(mon, mon.next_aggregation())
    # t = 3.1 s: window 4 resumes at 60 Ki; the walk ends with the target ...
    tried = [(r.start - base, r.end - base) for r in eng.stats()[0].tried_regions]
    assert tried == [(60 * KI, 64 * KI)]
    # ... and the next apply starts over from the lowest address for the 16 Ki left.
    eng.apply(mon, mon.next_aggregation())
    tried = [(r.start - base, r.end - base) for r in eng.stats()[0].tried_regions]
    assert tried == [(0, 16 * KI)]
    assert eng.stats()[0].sz_tried == 80 * KI


def test_prioritization_acts_on_the_coldest_first() -> None:
    bounds = [(0x0, 0x4000), (0x4000, 0x8000), (0x8000, 0xC000)]
    # Ages 1 s, 60 s, 10 s, all unaccessed: cold scores 65, 80, 77 (see test_quotas).
    mon = StubMonitor([target(0, bounds, [0, 0, 0], [10, 600, 100])])
    quota = model.Quota(size_bytes=0x4000, reset_interval_us=1_000_000)
    eng, ops, _ = _engine([model.Scheme("s", "pageout", pattern=COLD, quota=quota)])
    eng.apply(mon, mon.next_aggregation())
    assert [(c[1], c[2]) for c in ops.calls] == [(0x4000, 0x8000)]
    assert eng.stats()[0].qt_exceeds == 0


def test_pageout_resets_age_and_stat_keeps_it() -> None:
    for scheme, ages, applied in [
        (model.Scheme("s", "pageout"), [1, 1, 1, 1], 64 * KI),
        (model.Scheme("s", "stat"), [101, 101, 101, 101], 0),
    ]:
        mon = _four_cold_regions()
        eng, ops, _ = _engine([scheme])
        eng.apply(mon, mon.next_aggregation())
        mon.targets[0].age += 1  # what the next aggregation would do
        assert mon.targets[0].age.tolist() == ages
        stats = eng.stats()[0]
        assert (stats.sz_tried, stats.sz_applied) == (64 * KI, applied)
        assert stats.nr_applied == (4 if applied else 0)
        assert len(ops.calls) == (4 if applied else 0)


def test_access_pattern_uses_the_moving_sum_and_age() -> None:
    bounds = [(0, 0x1000), (0x1000, 0x2000), (0x2000, 0x3000)]
    mon = StubMonitor([target(0, bounds, [0, 1, 0], [600, 600, 5])])
    pattern = model.AccessPattern(max_rate_bp=0, min_age_us=30_000_000)
    eng, ops, _ = _engine([model.Scheme("s", "pageout", pattern=pattern)])
    eng.apply(mon, mon.next_aggregation())
    assert [(c[1], c[2]) for c in ops.calls] == [(0, 0x1000)]


def test_core_filters_split_and_reject() -> None:
    mon = _four_cold_regions()
    # Regions: [0x10000, 0x14000), [0x14000, 0x18000), [0x18000, 0x1C000), [0x1C000, 0x20000)
    reject_middle = model.Filter("addr", allow=False, addr_start=0x16000, addr_end=0x1A000)
    eng, ops, _ = _engine([model.Scheme("s", "pageout", filters=(reject_middle,))])
    eng.apply(mon, mon.next_aggregation())
    acted = [(c[1], c[2]) for c in ops.calls]
    assert acted == [(0x10000, 0x14000), (0x14000, 0x16000), (0x1A000, 0x1C000),
                     (0x1C000, 0x20000)]  # fmt: skip
    assert eng.stats()[0].sz_tried == 0x4000 + 0x2000 + 0x2000 + 0x4000
    assert mon.targets[0].start.tolist() == [0x10000, 0x14000, 0x16000, 0x18000, 0x1A000,
                                             0x1C000]  # fmt: skip


def test_migrations_go_to_the_node_of_their_tier() -> None:
    mon = _four_cold_regions()
    schemes = [
        model.Scheme("down", "migrate_cold", tier="cxl", pattern=COLD),
        model.Scheme("up", "migrate_hot", target_nid=0, pattern=model.AccessPattern(min_rate_bp=1)),
    ]
    eng, ops, _ = _engine(schemes, tier_nids={"dram": 0, "cxl": 3})
    eng.apply(mon, mon.next_aggregation())
    assert {(c[3], c[4]) for c in ops.calls} == {("migrate_cold", 3)}
    with pytest.raises(errors.SchemeConfigError, match="needs targetNid or a tier"):
        _engine([model.Scheme("x", "migrate_hot", tier="hbm")])


def test_ops_filters_need_filtering_operations() -> None:
    young = model.Filter("young", allow=False)
    scheme = model.Scheme("s", "pageout", filters=(young,))
    with pytest.raises(errors.SchemeConfigError, match="'young' is evaluated by the operations"):
        _engine([scheme])
    mon = _four_cold_regions()
    eng, ops, _ = _engine([scheme], ops=FilteringOps())
    eng.apply(mon, mon.next_aggregation())
    stats = eng.stats()[0]
    assert ops.filter_calls == [("young",)] * 4
    assert (stats.sz_tried, stats.sz_applied, stats.sz_ops_filter_passed) == (
        64 * KI,
        32 * KI,
        32 * KI,
    )
    # A core allow filter that selects a region skips the ops filters for it.
    allow_first = model.Filter("target", allow=True, target_index=0)
    eng2, ops2, _ = _engine(
        [model.Scheme("s", "pageout", filters=(allow_first, young))], ops=FilteringOps()
    )
    eng2.apply(_four_cold_regions(), 2_000_000)
    eng2.apply(mon, mon.next_aggregation())
    assert ops2.filter_calls == []
    assert len(ops2.calls) == 4


def test_watermarks_turn_schemes_off_and_monitoring_sleeps() -> None:
    metrics = Metrics()
    wm = model.Watermarks(interval_us=1_000_000, high=500, mid=400, low=50)
    eng, ops, _ = _engine([model.Scheme("s", "pageout", watermarks=wm)], metrics=metrics)
    metrics.set("free_mem_rate", 800)
    assert eng.wants_monitoring(0) is False
    mon = _four_cold_regions()
    eng.apply(mon, mon.next_aggregation())
    assert ops.calls == [] and eng.stats()[0].activated is False
    metrics.set("free_mem_rate", 300)
    assert eng.wants_monitoring(1_000_000) is True
    eng.apply(mon, mon.next_aggregation())
    assert len(ops.calls) == 4
    # Without schemes, monitoring always runs.
    assert engine.SchemesEngine([], ops, metrics).wants_monitoring(0) is True


def test_time_quota_learns_the_throughput() -> None:
    mon = _four_cold_regions()
    quota = model.Quota(time_us=1_000, reset_interval_us=1_000_000)  # 1 ms per second
    # Every action measures 4 ms of (fake) time: 16 Ki per 4 ms = 4 Ki per ms.
    timer = StepTimer(4_000_000)
    eng, ops, _ = _engine([model.Scheme("s", "pageout", quota=quota)], action_timer_ns=timer)
    eng.apply(mon, mon.next_aggregation())
    # First window: the initial 4 MiB/ms estimate lets all 64 Ki through.
    assert eng.effective_quotas() == {"s": 4 << 20}
    assert len(ops.calls) == 4
    for _ in range(10):
        eng.apply(mon, mon.next_aggregation())
    # Measured: 64 Ki in 16 ms -> 4 Ki per ms -> 4 Ki per 1 ms window.
    assert eng.effective_quotas() == {"s": 4 * KI}


def test_consist_goal_drives_the_effective_quota() -> None:
    mon = _four_cold_regions()
    goal = model.QuotaGoal("user_input", 1_000, initial_current=0)
    quota = model.Quota(goals=(goal,), reset_interval_us=100_000)
    eng, _, _ = _engine([model.Scheme("s", "stat", quota=quota)])
    sizes = []
    for _ in range(4):
        eng.apply(mon, mon.next_aggregation())
        sizes.append(eng.effective_quotas()["s"])
    assert sizes == [2, 4, 8, 16]
    eng.set_user_input("s", 1_500)  # 50% over target: halve
    eng.apply(mon, mon.next_aggregation())
    assert eng.effective_quotas()["s"] == 8
    with pytest.raises(errors.SchemeConfigError, match="no scheme named"):
        eng.set_user_input("nope", 1)


def test_temporal_goal_stops_when_reached() -> None:
    mon = _four_cold_regions()
    metrics = Metrics()
    metrics.set("node_mem_free_bp", 100, nid=0)
    goal = model.QuotaGoal("node_mem_free_bp", 500, nid=0)
    quota = model.Quota(goals=(goal,), size_bytes=32 * KI, reset_interval_us=100_000,
                        tuner="temporal")  # fmt: skip
    eng, ops, _ = _engine([model.Scheme("s", "pageout", quota=quota)], metrics=metrics)
    eng.apply(mon, mon.next_aggregation())
    assert eng.effective_quotas()["s"] == 32 * KI and len(ops.calls) == 2
    metrics.set("node_mem_free_bp", 600, nid=0)
    eng.apply(mon, mon.next_aggregation())
    assert eng.effective_quotas()["s"] == 0 and len(ops.calls) == 2


def test_stats_are_copies_with_json_ready_dicts() -> None:
    mon = _four_cold_regions()
    eng, _, _ = _engine([model.Scheme("s", "stat")])
    eng.apply(mon, mon.next_aggregation())
    first = eng.stats()[0]
    data = first.to_dict()
    assert data["name"] == "s" and data["nr_tried"] == 4
    assert data["tried_regions"][0] == {
        "target_id": 7, "start": 0x10000, "end": 0x14000, "nr_accesses": 0, "age": 100,
    }  # fmt: skip
    eng.apply(mon, mon.next_aggregation())
    assert first.nr_tried == 4 and eng.stats()[0].nr_tried == 8


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(errors.SchemeConfigError, match="unique"):
        _engine([model.Scheme("a", "stat"), model.Scheme("a", "pageout")])
