"""``kill -9`` of a process driving real kdamonds, at random points, 100 times: every
successor recovers without calling any of them foreign, and nothing is left behind.

A forked child (the imports are paid once) loops as an agent would: recover (adopting
what it finds running), start two kdamonds or commit a changed configuration into the
adopted ones, then stop all; the parent SIGKILLs it at a random moment, measured against
how long one loop takes, so the kills land in every phase (resize, staging, turning on,
committing, turning off). After each kill a successor recovers, adopting or not at
random; it must refuse nothing as foreign, and its ``stop_all`` must leave
``nr_kdamonds`` at 0.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from damon_agent.ops.kernel import driver, iomem, model, sysfs

pytestmark = pytest.mark.kernel
CYCLES = 100


def _config(action: str) -> model.Kdamond:
    low, high = iomem.largest_ram_ranges()[0]
    return model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                targets=(model.Target(regions=(model.Region(low, high),)),),
                schemes=(model.Scheme(action=action),),
            ),
        )
    )


def _agent_loop(admin: Path, state_dir: Path) -> None:
    """The child's life: never returns (killed, or exits after many loops)."""
    for loop in range(10_000):
        drv = driver.KdamondDriver(sysfs.HostSysfs(admin), state_dir)
        recovery = drv.recover(adopt=True)
        if recovery.foreign:
            os._exit(3)
        if recovery.adopted:
            for handle in recovery.adopted:
                drv.commit(handle, _config("lru_deprio" if loop % 2 else "stat"))
        else:
            drv.start_many([_config("stat"), _config("lru_prio")])
        drv.stop_all()
    os._exit(0)


def _one_loop_s(admin: Path, state_dir: Path) -> float:
    started = time.monotonic()
    drv = driver.KdamondDriver(sysfs.HostSysfs(admin), state_dir)
    drv.recover(adopt=True)
    drv.start_many([_config("stat"), _config("lru_prio")])
    drv.stop_all()
    return time.monotonic() - started


def test_kill_9_at_random_points_leaves_no_orphan(
    kernel_damon: Path, tmp_path: Path, record_property: Any
) -> None:
    state_dir = tmp_path / "state"
    loop_s = _one_loop_s(kernel_damon, state_dir)
    rng = random.Random(9)
    foreign_refusals = 0
    orphans = 0
    adopted_total = cleaned_total = 0
    for cycle in range(CYCLES):
        child = os.fork()
        if child == 0:  # pragma: no cover - the child never returns to pytest
            try:
                _agent_loop(kernel_damon, state_dir)
            finally:
                os._exit(4)
        time.sleep(rng.uniform(0.0, 2.5 * loop_s))
        os.kill(child, signal.SIGKILL)
        _, status = os.waitpid(child, 0)
        assert not os.WIFEXITED(status), f"cycle {cycle}: child exited {os.WEXITSTATUS(status)}"
        successor = driver.KdamondDriver(sysfs.HostSysfs(kernel_damon), state_dir)
        recovery = successor.recover(adopt=rng.random() < 0.5)
        foreign_refusals += bool(recovery.foreign)
        adopted_total += len(recovery.adopted)
        cleaned_total += len(recovery.cleaned)
        successor.stop_all()
        orphans += int((kernel_damon / "kdamonds/nr_kdamonds").read_text())
    summary = (
        f"{CYCLES} kills (one loop {loop_s * 1000:.0f} ms): {foreign_refusals} foreign "
        f"refusals, {orphans} orphans; successors adopted {adopted_total}, "
        f"cleaned {cleaned_total}"
    )
    record_property("figures", summary)  # the kernel suite's summary shows it
    assert foreign_refusals == 0 and orphans == 0, summary
    # The kills landed while kdamonds existed, not only between loops.
    assert adopted_total + cleaned_total > CYCLES // 4, summary
