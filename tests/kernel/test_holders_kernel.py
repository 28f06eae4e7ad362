"""Living beside other DAMON users, on the real DAMON of the kernel under test.

A DAMON module is turned on by the test itself (DAMON_STAT where the kernel has it,
else DAMON_RECLAIM: ``damon_modules.pick``) and always off again; a foreign kdamond is
started by raw sysfs writes. Each test takes ``kernel_damon`` (serialised, nr_kdamonds
back to 0). Bounded: every wait has a deadline.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import damon_modules
import pytest

from damon_agent.core import attrs
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver, errors, holders, iomem, model, ownership, sysfs
from damon_agent.ops.kernel import takeover as takeover_mod
from damon_agent.reports import node_stat
from damon_agent.runtime import planning

pytestmark = pytest.mark.kernel

DEADLINE_S = 30.0
AGENT = [sys.executable, "-m", "damon_agent.cli.agent"]


@pytest.fixture
def holder(kernel_damon: Path) -> Iterator[str]:
    """A DAMON module of this kernel, running for the test (off again after it)."""
    module = damon_modules.pick()
    with damon_modules.running(module):
        yield module


def _engine(admin: Path, state_dir: Path) -> kernel_damon.KernelDamon:
    # The host's module root, as the agent has it: DAMON's modules are global.
    return kernel_damon.KernelDamon.on_host(state_dir, admin=admin)


def _context(
    key: str = "host", monitoring: attrs.MonitoringAttrs | None = None
) -> kernel_damon.KdamondContext:
    return kernel_damon.KdamondContext(
        key=key, monitoring=monitoring or attrs.MonitoringAttrs(), operations="paddr"
    )


def _run_standalone(state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DAMON_AGENT_STATE_DIR=str(state_dir))
    return subprocess.run(
        [*AGENT, "run", "--backend", "kernel", "--duration", "5s"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _nr(admin: Path) -> str:
    return (admin / "kdamonds" / "nr_kdamonds").read_text().strip()


def test_holders_a_running_module_is_named_where_the_kernel_says_only_ebusy(
    kernel_damon: Path, holder: str, host_state_dir: Path
) -> None:
    name = damon_modules.NAMES[holder]
    found = holders.read_modules(Path("/sys/module"))
    assert [h.module.module for h in found] == [holder]
    # What the kernel itself says: a kdamond staged by the driver cannot start.
    raw = driver.KdamondDriver(sysfs.HostSysfs(kernel_damon), host_state_dir / "raw")
    ram = tuple(model.Region(s, e) for s, e in iomem.largest_ram_ranges())
    config = model.Kdamond(
        contexts=(model.Context(operations="paddr", targets=(model.Target(regions=ram),)),)
    )
    try:
        with pytest.raises(errors.SysfsBusyError) as bare:
            raw.start(config)
        assert bare.value.errno == errno.EBUSY and "state" in bare.value.path
    finally:
        raw.stop_all()
    assert _nr(kernel_damon) == "0"
    # What the engine says instead, before writing anything.
    engine = _engine(kernel_damon, host_state_dir)
    with pytest.raises(errors.DamonHeldError) as held:
        engine.apply([_context()])
    assert held.value.holders == (name,)
    assert f"echo N > /sys/module/{holder}/parameters/enabled" in str(held.value)
    assert _nr(kernel_damon) == "0"
    # A module started between the check and ``on`` is named too, the EBUSY chained.
    engine.check_free = lambda: None  # type: ignore[method-assign]
    with pytest.raises(errors.DamonHeldError) as late:
        engine.apply([_context()])
    assert isinstance(late.value.__cause__, errors.SysfsBusyError)
    engine.stop()
    assert _nr(kernel_damon) == "0"
    assert damon_modules.is_on(holder), "the agent must never touch a module"


def test_holders_standalone_run_prints_one_line_and_exits_1(
    kernel_damon: Path, holder: str, tmp_path: Path
) -> None:
    run = _run_standalone(tmp_path / "state")
    name = damon_modules.NAMES[holder]
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"damon-agent: DAMON is held by {name}: "), lines[0]
    assert f"echo N > /sys/module/{holder}/parameters/enabled" in lines[0]
    assert "Traceback" not in run.stderr and "SysfsBusyError" not in run.stderr
    assert _nr(kernel_damon) == "0"
    assert damon_modules.is_on(holder)


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "tried_regions" not in p.parts
    }


def test_holders_a_foreign_kdamond_started_by_raw_writes_is_named_and_left_alone(
    kernel_damon: Path, host_state_dir: Path, tmp_path: Path
) -> None:
    low = iomem.largest_ram_ranges()[-1][0]
    with damon_modules.foreign_kdamond(kernel_damon, low, 32 << 20) as base:
        pid = int((base / "pid").read_text())
        before = _files(base)
        engine = _engine(kernel_damon, host_state_dir)
        found = engine.find_holders()
        assert found.foreign == (holders.ForeignKdamond(0, "on", pid),)
        with pytest.raises(errors.DamonHeldError) as held:
            engine.apply([_context()])
        assert f"kdamond 0 (on, pid {pid})" in str(held.value)
        assert "echo off > /sys/kernel/mm/damon/admin/kdamonds/0/state" in str(held.value)
        engine.stop()
        run = _run_standalone(tmp_path / "state")
        assert run.returncode == 1, run.stderr
        (line,) = run.stderr.strip().splitlines()
        assert line.startswith("damon-agent: DAMON is held by kdamond 0: "), line
        assert int((base / "pid").read_text()) == pid
        assert (base / "state").read_text().strip() == "on"
        assert _files(base) == before
        assert _nr(kernel_damon) == "1"


def test_holders_takeover_gives_damon_stat_back_and_only_damon_stat(
    kernel_damon: Path,
    holder: str,
    host_state_dir: Path,
    spawn_workload: Callable[..., object],
) -> None:
    held = takeover_mod.DamonStatTakeover(
        Path("/sys/module"), host_state_dir, ownership.read_boot_id()
    )
    engine = _engine(kernel_damon, host_state_dir)
    if holder != "damon_stat":
        # This kernel has no DAMON_STAT (6.12): the opt-in must leave its module alone.
        assert not damon_modules.present("damon_stat")
        assert held.take() is takeover_mod.Taken.ABSENT
        assert damon_modules.is_on(holder)
        with pytest.raises(errors.DamonHeldError, match=damon_modules.NAMES[holder]):
            engine.apply([_context()])
        assert held.give_back() is False and damon_modules.is_on(holder)
        assert _nr(kernel_damon) == "0"
        return
    spawn_workload(hot_mib=64, cold_mib=64, max_seconds=90)
    # DAMON_STAT's own figures first, for their shape.
    deadline = time.monotonic() + DEADLINE_S
    theirs, _ = damon_modules.stat_figures()
    while time.monotonic() < deadline and theirs[-1] <= 0:
        time.sleep(1)
        theirs, _ = damon_modules.stat_figures()
    assert len(theirs) == 101 and theirs == sorted(theirs) and theirs[-1] > 0, theirs
    try:
        assert held.take() is takeover_mod.Taken.TURNED_OFF
        assert not damon_modules.is_on("damon_stat") and held.holding()
        stand_in = planning.node_stat_context(
            planning.Capabilities(
                operations=frozenset({"paddr"}),
                actions={},
                filter_types=frozenset(),
                goal_metrics=frozenset(),
            )
        )
        engine.apply([_context("node-stat", stand_in.monitoring)])
        ours = None
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            time.sleep(1)
            snap = engine.snapshot_of("node-stat")
            if snap is not None and len(snap.targets[0]):
                ours = node_stat.node_stat(snap)
                if ours.idle_ms_percentiles[-1] > 0 and ours.estimated_bandwidth > 0:
                    break
        assert ours is not None
        values = ours.idle_ms_percentiles
        assert len(values) == 101 and list(values) == sorted(values)
        assert values[-1] > 0 and ours.estimated_bandwidth > 0, ours
        # DAMON_STAT cannot start while a kdamond runs: giving back first fails, kept.
        with pytest.raises(errors.SysfsBusyError):
            held.give_back()
        assert held.holding() and not damon_modules.is_on("damon_stat")
        engine.stop()
        assert held.give_back() is True
        assert damon_modules.is_on("damon_stat") and not held.holding()
    finally:
        engine.stop()
        if held.holding():
            held.give_back()
    assert _nr(kernel_damon) == "0"
