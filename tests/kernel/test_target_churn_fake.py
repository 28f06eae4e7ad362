"""Pods come and go under a running vaddr kdamond: each process keeps its own regions.

A commit matches the staged targets to the running ones by index, and a running target
keeps its regions (access counts, ages) whatever pid it is given. The fake tree models
that (``FakeDamonSysfs.running_targets``, and ``inherited``: each time a running target
was given another process). The engine keeps the running pids in their order, puts new
ones after them, and removes a gone one alone with ``obsolete_target`` (6.19); without
it, a gone pid before the last shifts those after it, as the kernel does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from damon_agent.core import attrs, clock
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver, errors, model
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.schemes import model as schemes


def _context(pids: tuple[int, ...], *planned: schemes.Scheme) -> kernel_damon.KdamondContext:
    return kernel_damon.KdamondContext(
        key="pods",
        monitoring=attrs.MonitoringAttrs(),
        schemes=tuple(kernel_damon.KdamondScheme(f"src/{s.name}", s) for s in planned),
        operations="vaddr",
        pids=pids,
    )


def _engine(
    tmp_path: Path, *, obsolete_target: bool
) -> tuple[kernel_damon.KernelDamon, fake_sysfs.FakeDamonSysfs]:
    fake = fake_sysfs.FakeDamonSysfs(
        tmp_path / "admin", avail_operations=("vaddr", "paddr"), obsolete_target=obsolete_target
    )
    kdriver = driver.KdamondDriver(fake, tmp_path / "state", boot_id="boot-1", sleep=lambda s: None)
    engine = kernel_damon.KernelDamon(
        driver=kdriver,
        kernel_release="6.19.0" if obsolete_target else "6.18.0",
        clock=clock.SimClock(start_us=5_000_000),
        proc_root=_proc(tmp_path, range(1, 100)),
    )
    return engine, fake


def _proc(tmp_path: Path, pids: Iterable[int]) -> Path:
    """A /proc with an entry for each of ``pids`` (the engine leaves out gone ones)."""
    proc = tmp_path / "proc"
    for pid in pids:
        (proc / str(pid)).mkdir(parents=True)
    return proc


def _exit(engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs, pid: int) -> None:
    """``pid`` exits and is reaped: gone from /proc, and the kernel refuses its pid."""
    (engine.proc_root / str(pid)).rmdir()
    fake.exited.add(pid)


WATCH = schemes.Scheme("watch", "stat")


def test_a_gone_pid_is_removed_alone_where_the_kernel_has_obsolete_target(
    tmp_path: Path,
) -> None:
    engine, fake = _engine(tmp_path, obsolete_target=True)
    engine.apply([_context((11, 12, 13), WATCH)])
    kdamond = engine.kdamond_pids()["pods"]
    # 12 exited and was reaped: the kernel resolves every staged pid, an obsolete one's
    # too, so 12's own pid may not be written where it ran.
    _exit(engine, fake, 12)
    engine.apply([_context((11, 13), WATCH)])
    assert fake.running_targets[0] == [11, 13]
    assert fake.inherited == [], "a running target was given another process"
    assert engine.kdamond_pids()["pods"] == kdamond, "the kdamond was restarted"
    staged = "kdamonds/0/contexts/0/targets"
    assert fake.read(f"{staged}/nr_targets") == "3"
    assert [fake.read(f"{staged}/{t}/obsolete_target") for t in range(3)] == ["N", "Y", "N"]
    assert fake.read(f"{staged}/1/pid_target") == str(os.getpid()), "a live placeholder"
    # The next commit stages what runs now, nothing obsolete.
    engine.apply([_context((11, 13), WATCH, schemes.Scheme("cold", "pageout"))])
    assert fake.read(f"{staged}/nr_targets") == "2"
    assert fake.running_targets[0] == [11, 13] and fake.inherited == []


@pytest.mark.parametrize("obsolete_target", [True, False], ids=["6.19", "6.18"])
def test_new_pids_go_after_the_running_ones(tmp_path: Path, obsolete_target: bool) -> None:
    engine, fake = _engine(tmp_path, obsolete_target=obsolete_target)
    engine.apply([_context((20, 30), WATCH)])
    engine.apply([_context((10, 20, 30), WATCH)])  # the planner's order: sorted
    assert fake.running_targets[0] == [20, 30, 10]
    assert fake.inherited == []


def test_without_obsolete_target_a_gone_pid_shifts_those_after_it(tmp_path: Path) -> None:
    engine, fake = _engine(tmp_path, obsolete_target=False)
    engine.apply([_context((11, 12, 13), WATCH)])
    _exit(engine, fake, 12)
    engine.apply([_context((11, 13), WATCH)])
    assert fake.running_targets[0] == [11, 13]
    # The kernel's limit before 6.19: 13 runs on in the target that was 12's.
    assert fake.inherited == [(12, 13)]
    # A gone last pid shifts nothing.
    engine.apply([_context((11,), WATCH)])
    assert fake.inherited == [(12, 13)]


def test_target_filters_and_snapshots_speak_the_planners_order(tmp_path: Path) -> None:
    engine, fake = _engine(tmp_path, obsolete_target=True)
    engine.apply([_context((20, 30), WATCH)])
    # The planner's target 0 is pid 10, which the kernel runs third (index 2).
    only_10 = replace(
        schemes.Scheme("only-10", "pageout"),
        filters=(schemes.Filter(type="target", allow=True, target_index=0),),
    )
    engine.apply([_context((10, 20, 30), WATCH, only_10)])
    scheme = "kdamonds/0/contexts/0/schemes/1"
    filters = [
        f for f in ("filters", "ops_filters", "core_filters") if fake.exists(f"{scheme}/{f}/0")
    ]
    assert [fake.read(f"{scheme}/{f}/0/damon_target_idx") for f in filters] == ["2"]
    # Snapshot schemes follow the user's two, one per kernel target: pid 10's is the 5th.
    fake.tried[(0, 2 + 2)] = [model.TriedRegion(0x1000, 0x3000, nr_accesses=3, age=7)]
    snapshot = engine.snapshots()["pods"]
    by_id = {t.target_id: t for t in snapshot.targets}
    assert sorted(by_id) == [0, 1, 2]
    assert by_id[0].start.tolist() == [0x1000] and by_id[0].age.tolist() == [7]
    assert by_id[1].start.tolist() == [] and by_id[2].start.tolist() == []


def test_a_successor_agent_keeps_the_order_the_kernel_runs(tmp_path: Path) -> None:
    engine, fake = _engine(tmp_path, obsolete_target=True)
    engine.apply([_context((20, 30, 40), WATCH)])
    engine.apply([_context((10, 20, 40), WATCH)])  # 30 gone, 10 new: the kernel runs 20 40 10
    assert fake.running_targets[0] == [20, 40, 10]
    # A new agent (a DaemonSet update) adopts the kdamond and commits the same plan.
    kdriver = driver.KdamondDriver(fake, tmp_path / "state", boot_id="boot-1", sleep=lambda s: None)
    successor = kernel_damon.KernelDamon(
        driver=kdriver, kernel_release="6.19.0", clock=clock.SimClock(start_us=9_000_000)
    )
    (adopted,) = successor.recover().adopted
    assert adopted.adopted_pids == (20, 40, 10)
    successor.apply([_context((10, 20, 40), WATCH)])
    assert fake.running_targets[0] == [20, 40, 10]
    assert fake.inherited == []


def test_a_process_that_exits_before_the_commit_is_left_out_not_failed(tmp_path: Path) -> None:
    engine, fake = _engine(tmp_path, obsolete_target=False)
    engine.apply([_context((11, 12), WATCH)])
    # 13 was observed, then exited (its cgroup gone) before the commit: the kernel refuses
    # a commit naming it (before 6.15 out of the writer's sight, stopping the kdamond), so
    # the engine leaves it out.
    _exit(engine, fake, 13)
    engine.apply([_context((11, 12, 13), WATCH)])
    assert fake.running_targets[0] == [11, 12]
    # Likewise at a start (another context's key: a new kdamond).
    _exit(engine, fake, 12)
    engine.apply([replace(_context((11, 12), WATCH), key="other")])
    assert fake.running_targets[0] == [11]
    # With every pid gone there is nothing to monitor: the kernel's refusal stands.
    _exit(engine, fake, 11)
    with pytest.raises(errors.SysfsInvalidError):
        engine.apply([_context((11,), WATCH)])
    engine.stop()


def test_a_process_that_exits_between_the_check_and_the_commit_is_retried_without(
    tmp_path: Path,
) -> None:
    engine, fake = _engine(tmp_path, obsolete_target=False)
    engine.apply([_context((11, 12), WATCH)])
    fake.exited.add(12)  # the kernel no longer finds it, /proc still listed it
    real_apply = engine._apply

    def exit_then_apply(contexts: Sequence[kernel_damon.KdamondContext]) -> None:
        if (engine.proc_root / "12").exists():
            (engine.proc_root / "12").rmdir()
        real_apply(contexts)

    engine._apply = exit_then_apply  # type: ignore[method-assign]
    engine.apply([_context((11, 12), WATCH, schemes.Scheme("cold", "pageout"))])
    assert fake.running_targets[0] == [11]
    engine.stop()


@pytest.mark.parametrize("obsolete_target", [True, False], ids=["6.19", "6.18"])
def test_target_filters_of_a_gone_pid_are_left_out_and_indexes_keep_the_plans_order(
    tmp_path: Path, obsolete_target: bool
) -> None:
    """Pod isolation on vaddr: each scheme allows its own pods' targets, by the planner's
    index. A gone pid is not written, yet the planner's indexes still count it."""

    def allow(*indexes: int) -> tuple[schemes.Filter, ...]:
        return tuple(schemes.Filter(type="target", allow=True, target_index=i) for i in indexes)

    both = schemes.Scheme("both", "pageout", filters=allow(0, 1, 2))
    only_b = schemes.Scheme("only-b", "pageout", filters=allow(1))
    engine, fake = _engine(tmp_path, obsolete_target=obsolete_target)
    engine.apply([_context((11, 12, 13), both, only_b)])
    _exit(engine, fake, 12)
    # The plan still names 12 (made before it exited): the engine must not fail on it.
    engine.apply([_context((11, 12, 13), both, only_b, WATCH)])
    assert fake.running_targets[0] == [11, 13]
    schemes_dir = "kdamonds/0/contexts/0/schemes"

    def written(index: int) -> tuple[str, list[tuple[str, str]]]:
        layer = next(
            f"{schemes_dir}/{index}/{d}"
            for d in ("core_filters", "filters")
            if fake.exists(f"{schemes_dir}/{index}/{d}")
        )
        count = int(fake.read(f"{layer}/nr_filters"))
        found = [
            (fake.read(f"{layer}/{i}/type"), fake.read(f"{layer}/{i}/damon_target_idx"))
            for i in range(count)
            if fake.read(f"{layer}/{i}/type") == "target"
        ]
        return fake.read(f"{schemes_dir}/{index}/action"), found

    # "both" allows 11 and 13 at the indexes they run at after the commit (an obsolete
    # target is removed by it); "only-b" acts on nothing.
    action, filters = written(0)
    assert action == "pageout" and filters == [("target", "0"), ("target", "1")]
    action, filters = written(1)
    assert action == "stat" and filters == []
