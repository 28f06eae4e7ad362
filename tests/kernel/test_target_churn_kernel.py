"""A pod's process goes under a running vaddr kdamond of the real kernel: do the others
keep their own regions? (Runs in the VM's kernel matrix; test_target_churn_fake.py has
the engine's side on the fake tree.)

Workloads A and B are monitored for a while, C joins later, then B goes. A target's
oldest region is as old as the target (its regions were made when it was added), so C's
oldest region is much younger than A's, unless C's process inherited B's target, and
with it regions as old as A's. With ``obsolete_target`` (6.19) the engine removes B
alone: C keeps its own regions. Before 6.19 the kernel matches targets by index, so C
runs on in B's target; that is recorded, as the figure of the kernel's limit.

And a pod's process that exits between being observed and the commit (its cgroup
vanishing mid-apply): the kernel refuses a start or commit naming a pid with no process,
so the engine applies without it rather than failing the pod's neighbours.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from damon_agent.core import attrs
from damon_agent.ops.kernel import damon as damon_ops

pytestmark = pytest.mark.kernel

WARM_S = 6.0  # A and B alone
JOINED_S = 1.5  # then C too, before B goes


def _context(pids: tuple[int, ...]) -> damon_ops.KdamondContext:
    return damon_ops.KdamondContext(
        key="pods",
        monitoring=attrs.MonitoringAttrs(sample_us=5_000, aggr_us=100_000, update_us=1_000_000),
        operations="vaddr",
        pids=pids,
    )


def test_a_gone_process_leaves_the_others_their_own_regions(
    kernel_damon: Path,
    host_state_dir: Path,
    spawn_workload: Callable[..., object],
    record_property: Callable[[str, object], None],
) -> None:
    a, b = (spawn_workload(hot_mib=4, cold_mib=16, max_seconds=60) for _ in range(2))
    engine = damon_ops.KernelDamon.on_host(host_state_dir, admin=kernel_damon)
    obsolete = engine.capabilities.has("obsolete_target")
    try:
        pid_a, pid_b = a.pid, b.pid  # type: ignore[attr-defined]
        engine.apply([_context((pid_a, pid_b))])
        kdamond = engine.kdamond_pids()["pods"]
        time.sleep(WARM_S)
        c = spawn_workload(hot_mib=4, cold_mib=16, max_seconds=60)
        pid_c: int = c.pid  # type: ignore[attr-defined]
        engine.apply([_context((pid_a, pid_b, pid_c))])
        time.sleep(JOINED_S)
        engine.apply([_context((pid_a, pid_c))])
        assert engine.kdamond_pids()["pods"] == kdamond, "the kdamond was restarted"
        snapshot = engine.snapshots()["pods"]
        oldest = {t.target_id: int(t.age.max()) if len(t.age) else 0 for t in snapshot.targets}
    finally:
        engine.stop()
    ratio = oldest[1] / oldest[0] if oldest[0] else float("nan")
    record_property(
        "figures",
        f"obsolete_target={obsolete}: oldest region (aggregations) A {oldest[0]}, "
        f"C {oldest[1]}, C/A {ratio:.2f}",
    )
    assert oldest[0] > 0, f"A's regions never aged: {oldest}"
    if obsolete:
        # C was added after 6 s of 7.5: its own regions are a fifth as old as A's.
        assert ratio < 0.6, f"C's regions are as old as A's: inherited from B? {oldest}"
    # Before 6.19 (the kernel's limit: C runs on in B's target) the ratio is the figure.


def test_a_process_gone_before_the_start_or_commit_is_left_out(
    kernel_damon: Path, host_state_dir: Path, spawn_workload: Callable[..., object]
) -> None:
    work = spawn_workload(hot_mib=4, cold_mib=4, max_seconds=60)
    pid: int = work.pid  # type: ignore[attr-defined]
    gone = _reaped_pid()
    engine = damon_ops.KernelDamon.on_host(host_state_dir, admin=kernel_damon)
    targets = kernel_damon / "kdamonds" / "0" / "contexts" / "0" / "targets"
    try:
        engine.apply([_context((pid, gone))])  # the kernel refuses a start naming `gone`
        assert (targets / "nr_targets").read_text().strip() == "1"
        assert (targets / "0" / "pid_target").read_text().strip() == str(pid)
        kdamond = engine.kdamond_pids()["pods"]
        engine.apply([_context((gone, pid))])  # and a commit
        assert engine.kdamond_pids()["pods"] == kdamond
        assert (targets / "nr_targets").read_text().strip() == "1"
        # Before 6.15 the kdamond handles a commit at its next aggregation, and a refused
        # one stops it without a word to the writer: it must still run after a few.
        time.sleep(0.5)
        state = (kernel_damon / "kdamonds" / "0" / "state").read_text().strip()
        assert state == "on", "the commit stopped the kdamond"
    finally:
        engine.stop()


def _reaped_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    assert not Path(f"/proc/{child.pid}").exists()
    return child.pid


CHURN_CYCLES = 60
CHURN_LIVE = 8  # processes alive at a time


def test_churning_processes_keep_one_kdamond_and_exactly_the_live_targets(
    kernel_damon: Path, host_state_dir: Path, record_property: Callable[[str, object], None]
) -> None:
    """A process starts and another ends at every step (a pod churn in miniature, with
    processes from `sleep`): each apply commits into the same kdamond, and afterwards
    the kernel runs exactly the live processes (the staged targets not marked obsolete).
    The apply latency (plan to kernel) is the figure."""
    rng = random.Random(7)
    live = [subprocess.Popen(["sleep", "300"]) for _ in range(CHURN_LIVE)]
    ended: list[subprocess.Popen[bytes]] = []
    engine = damon_ops.KernelDamon.on_host(host_state_dir, admin=kernel_damon)
    targets = kernel_damon / "kdamonds" / "0" / "contexts" / "0" / "targets"
    latencies_ms = []
    try:
        engine.apply([_context(tuple(sorted(p.pid for p in live)))])
        kdamond = engine.kdamond_pids()["pods"]
        for _ in range(CHURN_CYCLES):
            gone = live.pop(rng.randrange(len(live)))
            gone.kill()
            gone.wait()
            ended.append(gone)
            live.append(subprocess.Popen(["sleep", "300"]))
            started = time.monotonic()
            engine.apply([_context(tuple(sorted(p.pid for p in live)))])
            latencies_ms.append((time.monotonic() - started) * 1000)
            assert engine.kdamond_pids()["pods"] == kdamond, "the kdamond was restarted"
            running = _running_pids(targets)
            assert sorted(running) == sorted(p.pid for p in live), running
        # The kernel's own list, through the snapshot (a stat scheme per target index):
        # once the last one has its regions (the next regions update, each second), every
        # live process has regions, so the kernel runs as many targets as planned.
        time.sleep(1.5)
        sizes = [len(t.start) for t in engine.snapshots()["pods"].targets]
        assert len(sizes) == CHURN_LIVE and all(sizes), sizes
    finally:
        engine.stop()
        for process in live:
            process.kill()
            process.wait()
    latencies_ms.sort()
    record_property(
        "figures",
        f"{CHURN_CYCLES} commits of {CHURN_LIVE} targets, one gone and one new each: apply "
        f"p50 {latencies_ms[len(latencies_ms) // 2]:.0f} ms, "
        f"p99 {latencies_ms[int(len(latencies_ms) * 0.99)]:.0f} ms",
    )


def _running_pids(targets: Path) -> list[int]:
    """The staged targets the kernel runs: those not marked obsolete (6.19)."""
    running = []
    for t in range(int((targets / "nr_targets").read_text())):
        flag = targets / str(t) / "obsolete_target"
        if flag.exists() and flag.read_text().strip() == "Y":
            continue
        running.append(int((targets / str(t) / "pid_target").read_text()))
    return running
