"""The kernel engine on the fake tree: apply/commit/restart, snapshots, stats, degradation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from damon_agent.core import attrs, clock
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver, errors, model
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.schemes import model as schemes
from damon_agent.schemes import stats as scheme_stats

RANGES = ((0x100000000, 0x140000000),)


def _spec(name: str, action: str = "stat", **fields: Any) -> schemes.Scheme:
    return replace(schemes.Scheme(name, action), **fields)


def _context(
    key: str = "host", *planned: schemes.Scheme, **fields: object
) -> kernel_damon.KdamondContext:
    return kernel_damon.KdamondContext(
        key=key,
        monitoring=attrs.MonitoringAttrs(),
        schemes=tuple(kernel_damon.KdamondScheme(f"src/{s.name}", s) for s in planned),
        operations=fields.pop("operations", "paddr"),  # type: ignore[arg-type]
        ranges=RANGES,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def engine(fake_driver: driver.KdamondDriver) -> kernel_damon.KernelDamon:
    return kernel_damon.KernelDamon(
        driver=fake_driver, kernel_release="6.18.0", clock=clock.SimClock(start_us=5_000_000)
    )


def test_same_contexts_commit_online_others_restart(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    engine.apply([_context("host", _spec("a"))])
    first_pid = engine.kdamond_pids()["host"]
    engine.apply([_context("host", _spec("a", "pageout"))])
    assert engine.kdamond_pids()["host"] == first_pid
    assert fake.read("kdamonds/0/contexts/0/schemes/0/action") == "pageout"
    engine.apply([_context("other", _spec("a"))])
    assert engine.kdamond_pids()["other"] != first_pid
    assert fake.read("kdamonds/nr_kdamonds") == "1"
    engine.stop()
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_snapshot_comes_from_the_hidden_stat_scheme(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    idle = _spec("b", pattern=schemes.AccessPattern(max_rate_bp=0))
    engine.apply([_context("host", _spec("a", "pageout"), idle)])
    # User schemes are 0 and 1; the snapshot scheme is appended as 2.
    assert fake.read("kdamonds/0/contexts/0/schemes/nr_schemes") == "3"
    fake.tried[(0, 2)] = [
        model.TriedRegion(0x100000000, 0x110000000, 20, 3),
        model.TriedRegion(0x110000000, 0x140000000, 0, 40),
    ]
    fake.stats[(0, 1)] = scheme_stats.SchemeCounters(nr_tried=5)
    snap = engine.snapshots()["host"]
    assert snap.time_us == 5_000_000
    assert (snap.sample_us, snap.aggr_us) == (5000, 100_000)
    target = snap.targets[0]
    assert target.start.tolist() == [0x100000000, 0x110000000]
    assert target.end.tolist() == [0x110000000, 0x140000000]
    assert target.nr_accesses.tolist() == [20, 0]
    assert target.age.dtype == np.int64
    assert engine.stats() == {
        "src/a": scheme_stats.SchemeCounters(),
        "src/b": scheme_stats.SchemeCounters(nr_tried=5),
    }
    # The ends tile the monitored range, so they were computed, not read.
    assert not any(path.endswith("/end") for path in _reads(fake))
    engine.stop()


def test_a_plain_user_stat_scheme_doubles_as_the_snapshot_scheme(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    engine.apply([_context("host", _spec("all"))])
    assert fake.read("kdamonds/0/contexts/0/schemes/nr_schemes") == "1"
    fake.tried[(0, 0)] = [model.TriedRegion(0x100000000, 0x140000000, 1, 2)]
    assert engine.snapshots()["host"].targets[0].age.tolist() == [2]
    engine.stop()


def test_ends_are_read_when_regions_do_not_tile_the_range(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    engine.apply([_context("host", _spec("a", "pageout"))])
    holes = [
        model.TriedRegion(0x100000000, 0x108000000, 1, 1),
        model.TriedRegion(0x110000000, 0x120000000, 2, 2),
    ]
    fake.tried[(0, 1)] = holes
    target = engine.snapshots()["host"].targets[0]
    assert target.end.tolist() == [0x108000000, 0x120000000]
    engine.stop()


def _reads(fake: fake_sysfs.FakeDamonSysfs) -> list[str]:
    return list(fake.reads)


def test_vaddr_on_a_kernel_without_it_is_a_feature_error(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    with pytest.raises(errors.FeatureMissingError, match="vaddr"):
        engine.apply([_context("p", _spec("a"), operations="vaddr", pids=(1,))])
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_a_failed_start_leaves_nothing_running(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    import errno

    fake.inject("kdamonds/1/state", errno.EINVAL)
    with pytest.raises(errors.SysfsInvalidError):
        engine.apply([_context("one", _spec("a")), _context("two", _spec("b"))])
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_feed_goals_writes_current_values(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    spec = _spec("a", "pageout", quota=schemes.Quota(goals=(schemes.QuotaGoal("user_input", 100),)))
    engine.apply([_context("host", spec)])
    engine.feed_goals({"src/a": {0: 42}})
    assert fake.read("kdamonds/0/contexts/0/schemes/0/quotas/goals/0/current_value") == "42"
    assert ("kdamonds/0/state", "commit_schemes_quota_goals") in fake.log
    engine.stop()


def test_missing_feature_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    old = fake_sysfs.FakeDamonSysfs(tmp_path / "admin", omit={"intervals_goal"})
    eng = kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(old, tmp_path / "s", boot_id="b", sleep=lambda _: None),
        kernel_release="6.14.0",
    )
    monitoring = attrs.MonitoringAttrs(intervals_goal=attrs.IntervalsGoal(access_bp=400))
    ctx = kernel_damon.KdamondContext(
        key="k", monitoring=monitoring, operations="paddr", ranges=RANGES
    )
    with pytest.raises(errors.FeatureMissingError, match=r"6\.15"):
        eng.apply([ctx])
    assert old.read("kdamonds/nr_kdamonds") == "0"


def test_a_restarted_engine_commits_into_the_kdamonds_it_adopted(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path
) -> None:
    engine.apply([_context("host", _spec("a"))])
    pid = engine.kdamond_pids()["host"]
    # The agent restarts: a new engine over the same state directory.
    again = kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(
            fake, tmp_path / "state", boot_id="boot-1", sleep=lambda _: None
        ),
        kernel_release="6.18.0",
    )
    assert [h.pid for h in again.recover().adopted] == [pid]
    again.apply([_context("host", _spec("a", "pageout"))])
    assert again.kdamond_pids()["host"] == pid
    assert fake.read("kdamonds/0/contexts/0/schemes/0/action") == "pageout"
    again.stop()
    assert fake.read("kdamonds/nr_kdamonds") == "0"


# ---- someone else's DAMON (holders) ------------------------------------------------------


def _held_engine(
    fake_driver: driver.KdamondDriver, tmp_path: Path, **enabled: str
) -> kernel_damon.KernelDamon:
    modules = tmp_path / "module"
    for name, value in enabled.items():
        (modules / name / "parameters").mkdir(parents=True)
        (modules / name / "parameters" / "enabled").write_text(value + "\n")
    return kernel_damon.KernelDamon(
        driver=fake_driver, kernel_release="6.18.0", module_root=modules
    )


def test_a_running_module_is_named_before_anything_is_written(
    fake_driver: driver.KdamondDriver, fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path
) -> None:
    engine = _held_engine(fake_driver, tmp_path, damon_stat="Y", damon_reclaim="N")
    _ = engine.capabilities  # the probe's scratch kdamond is fine beside a module
    before = list(fake.log)
    with pytest.raises(errors.DamonHeldError) as held:
        engine.apply([_context("host", _spec("a"))])
    assert held.value.holders == ("DAMON_STAT",)
    assert "echo N > /sys/module/damon_stat/parameters/enabled" in str(held.value)
    assert fake.log == before
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_ebusy_from_on_names_a_module_that_started_meanwhile(
    fake_driver: driver.KdamondDriver,
    fake: fake_sysfs.FakeDamonSysfs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    engine = _held_engine(fake_driver, tmp_path, damon_lru_sort="Y")
    monkeypatch.setattr(engine, "check_free", lambda: None)  # the module came after it
    fake.inject("kdamonds/0/state", errno.EBUSY)
    with pytest.raises(errors.DamonHeldError, match="DAMON_LRU_SORT") as held:
        engine.apply([_context("host", _spec("a"))])
    assert isinstance(held.value.__cause__, errors.SysfsBusyError)
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_ebusy_without_a_holder_stays_what_it_is(
    fake_driver: driver.KdamondDriver, fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path
) -> None:
    import errno

    engine = _held_engine(fake_driver, tmp_path, damon_stat="N")
    fake.inject("kdamonds/0/state", errno.EBUSY)
    with pytest.raises(errors.SysfsBusyError):
        engine.apply([_context("host", _spec("a"))])


def test_a_foreign_kdamond_is_named_and_left_as_it_was(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    fake.write("kdamonds/nr_kdamonds", "1")
    pid = fake.start_foreign(0)
    before = list(fake.log)
    with pytest.raises(errors.DamonHeldError, match=rf"kdamond 0 \(on, pid {pid}\)") as held:
        engine.apply([_context("host", _spec("a"))])
    assert held.value.holders == ("kdamond 0",)
    assert fake.log == before
    assert fake.read("kdamonds/0/pid") == str(pid)
    # Nothing to run needs nothing of DAMON: an empty plan applies beside it.
    engine.apply([])
    assert fake.read("kdamonds/nr_kdamonds") == "1"


def test_scheme_ages_follow_the_intervals_the_kernel_tuned(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    """A 30 s age is 300 aggregations of 100 ms: once the kernel tunes aggregations to 2 s,
    the bound is written again as 15 (the kernel itself leaves it at 300: 10 minutes)."""
    goal = attrs.IntervalsGoal(access_bp=400, aggrs=3)
    cold = _spec("cold", "pageout", pattern=schemes.AccessPattern(min_age_us=30_000_000))
    context = replace(_context("host", cold), monitoring=attrs.MonitoringAttrs(intervals_goal=goal))
    age_min = "kdamonds/0/contexts/0/schemes/0/access_pattern/age/min"
    intervals = "kdamonds/0/contexts/0/monitoring_attrs/intervals"
    engine.apply([context])
    pid = engine.kdamond_pids()["host"]
    assert fake.read(age_min) == "300"
    assert engine.follow_tuned_intervals() == []  # not tuned yet: nothing moved

    fake.tuned[0] = model.TunedIntervals(sample_us=100_000, aggr_us=2_000_000)
    assert engine.follow_tuned_intervals() == ["host"]
    assert fake.read(age_min) == "15"
    # Committed at the tuned intervals, so that tuning goes on from where it was.
    assert fake.read(f"{intervals}/aggr_us") == "2000000"
    assert engine.kdamond_pids()["host"] == pid
    commits = fake.log.count(("kdamonds/0/state", "commit"))
    assert engine.follow_tuned_intervals() == []  # a second look: nothing moved
    # Within a tenth: no commit for a bound that barely moved.
    fake.tuned[0] = model.TunedIntervals(sample_us=105_000, aggr_us=2_100_000)
    assert engine.follow_tuned_intervals() == []
    assert fake.log.count(("kdamonds/0/state", "commit")) == commits

    # A plan change commits at the tuned intervals too, not the initial 100 ms.
    engine.apply([replace(context, schemes=(kernel_damon.KdamondScheme("src/cold", cold),) * 2)])
    assert fake.read(f"{intervals}/aggr_us") == "2100000"
    assert fake.read(age_min) == "15"  # rounded up: at least 30 s
    engine.stop()


def test_scheme_ages_follow_a_kdamond_that_samples_slower_than_asked(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    """A 10 s age is 100 aggregations of 100 ms; a kdamond that takes 400 ms an
    aggregation (its snapshot scheme tried the whole range 50 times in 20 s) has the bound
    written again as 25, with the access counts and the intervals as they were."""
    cold = _spec("cold", "pageout", pattern=schemes.AccessPattern(min_age_us=10_000_000))
    context = _context("host", cold)
    age_min = "kdamonds/0/contexts/0/schemes/0/access_pattern/age/min"
    nr_max = "kdamonds/0/contexts/0/schemes/0/access_pattern/nr_accesses/max"
    intervals = "kdamonds/0/contexts/0/monitoring_attrs/intervals"
    engine.apply([context])
    assert fake.read(age_min) == "100"
    nr_accesses_max = fake.read(nr_max)
    size = sum(end - start for start, end in RANGES)
    snapshot_scheme = 1  # after the user's scheme

    def tried(aggregations: int, after_s: float) -> list[str]:
        fake.stats[(0, snapshot_scheme)] = scheme_stats.SchemeCounters(sz_tried=aggregations * size)
        assert isinstance(engine.clock, clock.SimClock)
        engine.clock.sleep_us(int(after_s * 1_000_000))
        return engine.follow_tuned_intervals()

    assert tried(0, 0) == []  # the window opens
    assert tried(10, 4) == []  # too few aggregations to judge: the window goes on
    assert tried(50, 16) == ["host"]
    assert fake.read(age_min) == "25"
    assert fake.read(nr_max) == nr_accesses_max
    assert fake.read(f"{intervals}/aggr_us") == "100000"
    # Back at the written pace (100 aggregations in 10 s): the bound is 100 again.
    assert tried(150, 10) == ["host"]
    assert fake.read(age_min) == "100"
    # A little slow (within PACE_TOLERANCE) is the sample's own work, or a burst of it
    # applying an action: nothing committed.
    commits = fake.log.count(("kdamonds/0/state", "commit"))
    assert tried(250, 14) == []
    assert fake.log.count(("kdamonds/0/state", "commit")) == commits
    engine.stop()


def test_a_plan_change_keeps_the_measured_pace(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    cold = _spec("cold", "pageout", pattern=schemes.AccessPattern(min_age_us=10_000_000))
    engine.apply([_context("host", cold)])
    size = sum(end - start for start, end in RANGES)
    assert isinstance(engine.clock, clock.SimClock)
    engine.follow_tuned_intervals()
    fake.stats[(0, 1)] = scheme_stats.SchemeCounters(sz_tried=60 * size)
    engine.clock.sleep_us(30_000_000)  # 500 ms an aggregation
    assert engine.follow_tuned_intervals() == ["host"]
    engine.apply([_context("host", cold, _spec("also-cold", "stat", pattern=cold.pattern))])
    age_min = "kdamonds/0/contexts/0/schemes/{}/access_pattern/age/min"
    assert [fake.read(age_min.format(i)) for i in (0, 1)] == ["20", "20"]
    engine.stop()


def test_without_an_intervals_goal_nothing_is_followed(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    engine.apply([_context("host", _spec("a"))])
    fake.tuned[0] = model.TunedIntervals(sample_us=100_000, aggr_us=2_000_000)
    assert engine.follow_tuned_intervals() == []
    assert ("kdamonds/0/state", "update_tuned_intervals") not in fake.log
    engine.stop()


def test_the_region_floor_follows_the_monitored_size(tmp_path: Path) -> None:
    """With regions of at most 32 MiB (``regions.maxSize``) a process whose mappings span
    1 GiB gets a region floor of 32, then 128 once it maps 4 GiB (followed online, the same
    kdamond), and never more than half the maximum; 1 GiB of paddr ranges gets 32 too."""
    pid = 4242
    maps = tmp_path / "proc" / str(pid) / "maps"
    maps.parent.mkdir(parents=True)

    def map_bytes(size: int) -> None:  # a heap and a stack, ``size`` in all
        heap = f"{0x10000000:x}-{0x10000000 + size - 0x21000:x} rw-p 00000000 00:00 0\n"
        stack = f"{0x7FFF00000000:x}-{0x7FFF00021000:x} rw-p 00000000 00:00 0 [stack]\n"
        maps.write_text(heap + stack)

    map_bytes(1 << 30)
    fake = fake_sysfs.FakeDamonSysfs(tmp_path / "admin", avail_operations=("vaddr", "paddr"))
    engine = kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(fake, tmp_path / "s", boot_id="b", sleep=lambda _: None),
        kernel_release="6.18.0",
        proc_root=tmp_path / "proc",
    )
    bounded = attrs.MonitoringAttrs(max_region_bytes=32 << 20, max_nr_regions=200)
    procs = replace(
        _context("procs", _spec("a"), operations="vaddr", pids=(pid,)),
        monitoring=bounded,
        ranges=(),
    )
    floor = "kdamonds/0/contexts/0/monitoring_attrs/nr_regions/min"
    engine.apply([procs])
    pid_before = engine.kdamond_pids()["procs"]
    assert fake.read(floor) == "32"
    assert engine.follow_tuned_intervals() == []  # the same size: nothing to commit

    map_bytes(4 << 30)
    assert engine.follow_tuned_intervals() == ["procs"]
    assert fake.read(floor) == "100"  # 128 wanted, capped at max / 2
    assert engine.kdamond_pids()["procs"] == pid_before

    maps.unlink()  # gone: the user's minimum
    assert engine.follow_tuned_intervals() == ["procs"]
    assert fake.read(floor) == "10"

    engine.apply([replace(_context("host", _spec("a")), monitoring=bounded)])
    assert fake.read(floor) == "32"  # RANGES: 1 GiB
    engine.stop()


def test_goal_tuned_quotas_warm_up_then_get_the_users_reset_interval(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    goal = schemes.Quota(size_bytes=256 << 20, goals=(schemes.QuotaGoal("user_input", 100),))
    reset = "kdamonds/0/contexts/0/schemes/0/quotas/reset_interval_ms"
    engine.apply([_context("host", _spec("a", "pageout", quota=goal), _spec("b"))])
    pid = engine.kdamond_pids()["host"]
    assert fake.read(reset) == "100"
    assert fake.read("kdamonds/0/contexts/0/schemes/0/quotas/bytes") == str((256 << 20) // 10 + 1)
    assert fake.read("kdamonds/0/contexts/0/schemes/1/quotas/reset_interval_ms") == "0"
    assert engine.end_warm_ups() == []
    # The kernel's tuner grew the quota to the warm-up's size quota: done.
    fake.effective_bytes[(0, 0)] = (256 << 20) // 10 + 1
    assert engine.end_warm_ups() == ["host"]
    assert fake.read(reset) == "1000"
    assert fake.read("kdamonds/0/contexts/0/schemes/0/quotas/bytes") == str(256 << 20)
    assert engine.kdamond_pids()["host"] == pid  # committed into the same kdamond
    assert engine.end_warm_ups() == []
    # A plan change committed into a running kdamond keeps the quota its tuner reached.
    engine.apply([_context("host", _spec("a", "pageout", quota=goal))])
    assert fake.read(reset) == "1000"
    engine.stop()


def test_a_warm_up_ends_in_time_when_the_quota_is_not_seen_to_grow(
    engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs
) -> None:
    goal = schemes.Quota(goals=(schemes.QuotaGoal("user_input", 100),))
    reset = "kdamonds/0/contexts/0/schemes/0/quotas/reset_interval_ms"
    engine.apply([_context("host", _spec("a", "pageout", quota=goal))])
    assert isinstance(engine.clock, clock.SimClock)
    engine.clock.sleep_us(5_100_000)  # twice 26 resets of 100 ms are 5.2 s
    assert engine.end_warm_ups() == []
    assert fake.read(reset) == "100"
    # A follow-up commit (the region floor, the ages) keeps the warm-up going.
    engine.follow_tuned_intervals()
    assert fake.read(reset) == "100"
    engine.clock.sleep_us(100_000)
    assert engine.end_warm_ups() == ["host"]
    assert fake.read(reset) == "1000"
    engine.stop()
