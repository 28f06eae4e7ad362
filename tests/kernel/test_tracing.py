"""The tracefs snapshot source on the host's real DAMON and tracefs.

A paddr kdamond watches the host's RAM while a hot/cold workload runs. Its
``damon_aggregated`` events, read from a private trace instance, must cover the same
physical ranges as its sysfs tried regions (same total bytes, regions tiling the
monitored ranges) with ``nr_accesses`` and ``age`` in the kernel's bounds; the engine's
``tracefs`` source must serve snapshots without touching the tried regions; and nothing
of ours (trace instance, tracefs mount) may remain afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from damon_agent.api import schemes as api
from damon_agent.core import snapshots as snaps
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver, errors, iomem, reading, sysfs, tracing
from damon_agent.reports import recording
from damon_agent.schemes import conversion

pytestmark = pytest.mark.kernel

SAMPLE_US, AGGR_US = 5_000, 100_000


def _context() -> kernel_damon.KdamondContext:
    scheme_file = api.SchemeFile.model_validate(
        {
            "monitoring": {
                "intervals": {"sample": f"{SAMPLE_US}us", "aggregation": f"{AGGR_US}us"},
                "regions": {"min": 10, "max": 200},
            },
            "schemes": [{"name": "stat-all", "action": "stat"}],
        }
    )
    return kernel_damon.KdamondContext(
        key="host",
        monitoring=conversion.monitoring_attrs(scheme_file.monitoring),
        operations="paddr",
        schemes=tuple(
            kernel_damon.KdamondScheme(s.name, s) for s in conversion.schemes(scheme_file.schemes)
        ),
    )


def _engine(state: Path, source: kernel_damon.SnapshotSource) -> kernel_damon.KernelDamon:
    return kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(sysfs.HostSysfs(), state),
        kernel_release=platform.release(),
        snapshot_source=source,
        tracefs_mount_dir=state / "tracefs",
    )


def _our_tracefs_mounts(below: Path) -> list[str]:
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    return [m for m in mounts if m.split()[2] == "tracefs" and m.split()[1].startswith(str(below))]


@pytest.fixture
def inspector(tmp_path: Path) -> Iterator[tracing.Tracefs]:
    """A tracefs of the test's own, to look at instances (unmounted afterwards)."""
    try:
        tracefs = tracing.Tracefs.find(tmp_path / "inspect")
        tracefs.check_events()
    except errors.TracefsError as err:
        pytest.fail(f"this test needs tracefs with DAMON's trace events: {err}")
    try:
        yield tracefs
    finally:
        tracefs.close()


def _check_tiles(columns: reading.RegionColumns, ranges: list[tuple[int, int]]) -> None:
    """Regions in address order, without overlap, covering exactly ``ranges``."""
    assert columns.start, "no regions"
    merged: list[list[int]] = []
    for start, end in zip(columns.start, columns.end, strict=True):
        assert start < end
        if merged and merged[-1][1] == start:
            merged[-1][1] = end
        else:
            assert not merged or merged[-1][1] < start, "regions overlap or are out of order"
            merged.append([start, end])
    assert [tuple(m) for m in merged] == sorted(ranges)


def _check_bounds(columns: reading.RegionColumns, elapsed_s: float) -> None:
    max_accesses = AGGR_US // SAMPLE_US
    assert all(0 <= n <= max_accesses for n in columns.nr_accesses), columns.nr_accesses
    # Age counts aggregation intervals since the region last changed much.
    max_age = elapsed_s * 1e6 / AGGR_US + 2
    assert all(0 <= a <= max_age for a in columns.age), (columns.age, max_age)


def _columns(target: snaps.TargetSnapshot) -> reading.RegionColumns:
    return reading.RegionColumns(
        start=target.start.tolist(),
        end=target.end.tolist(),
        nr_accesses=target.nr_accesses.tolist(),
        age=target.age.tolist(),
    )


def test_trace_covers_what_sysfs_tried_regions_cover(
    kernel_damon: Path,
    host_state_dir: Path,
    inspector: tracing.Tracefs,
    spawn_workload: Callable[..., object],
) -> None:
    spawn_workload(hot_mib=64, cold_mib=64, max_seconds=30)
    engine = _engine(host_state_dir, "sysfs")
    ranges = iomem.largest_ram_ranges(Path("/proc"))
    trace = None
    try:
        engine.apply([_context()])
        started = time.monotonic()
        trace = tracing.KdamondTrace(inspector, engine.kdamond_pids()["host"], max_regions=200)
        assert trace.name in inspector.our_instances()
        time.sleep(1.5)
        sysfs_target = engine.snapshots()["host"].targets[0]
        assert trace.poll() > 0
        traced = trace.latest(0, max_age_s=1.0)
        assert traced is not None, f"no complete aggregation in {trace.assembler.records} events"
        elapsed = time.monotonic() - started
        assert trace.assembler.records >= len(traced.columns.start)
        _check_tiles(traced.columns, ranges)
        _check_tiles(_columns(sysfs_target), ranges)
        traced_bytes = sum(
            e - s for s, e in zip(traced.columns.start, traced.columns.end, strict=True)
        )
        assert traced_bytes == int((sysfs_target.end - sysfs_target.start).sum())
        _check_bounds(traced.columns, elapsed)
        _check_bounds(_columns(sysfs_target), elapsed)
    finally:
        if trace is not None:
            trace.close()
        engine.stop()
    assert inspector.our_instances() == []


def test_engine_serves_snapshots_from_tracefs_and_cleans_up(
    kernel_damon: Path, host_state_dir: Path, inspector: tracing.Tracefs
) -> None:
    engine = _engine(host_state_dir, "tracefs")
    ranges = iomem.largest_ram_ranges(Path("/proc"))
    tried = "kdamonds/0/contexts/0/schemes/0/tried_regions"
    try:
        engine.apply([_context()])
        started = time.monotonic()
        assert engine.active_snapshot_source == "tracefs"
        assert len(inspector.our_instances()) == 1
        time.sleep(1.0)
        snapshots = []
        for _ in range(3):
            snapshots.append(engine.snapshots()["host"].targets[0])
            time.sleep(0.3)
        # The sysfs tried regions were never asked for: no region directory exists.
        assert not [n for n in sysfs.HostSysfs(kernel_damon).listdir(tried) if n.isdigit()]
        for target in snapshots:
            _check_tiles(_columns(target), ranges)
            _check_bounds(_columns(target), time.monotonic() - started)
        assert np.all(np.diff(snapshots[-1].start) > 0)
    finally:
        engine.stop()
    assert inspector.our_instances() == []
    assert _our_tracefs_mounts(host_state_dir) == []


def test_stale_instances_go_and_restarts_keep_one_instance_per_kdamond(
    kernel_damon: Path, host_state_dir: Path, inspector: tracing.Tracefs
) -> None:
    # A crashed agent's instance: its pid is dead, so the engine removes it.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = inspector.root / "instances" / tracing.instance_name(int(dead.stdout), 1)
    stale.mkdir()
    engine = _engine(host_state_dir, "auto")
    try:
        engine.apply([_context()])
        assert not stale.exists()
        first = inspector.our_instances()
        assert engine.active_snapshot_source == "tracefs"
        assert len(first) == 1
        # A context with another key restarts the kdamond: a new pid, a new instance.
        engine.apply([dataclasses.replace(_context(), key="other")])
        second = inspector.our_instances()
        assert len(second) == 1
        assert second != first
        assert str(engine.kdamond_pids()["other"]) in second[0]
    finally:
        engine.stop()
        if stale.exists():  # leave no instance of ours even when the engine did not
            stale.rmdir()
    assert inspector.our_instances() == []
    assert _our_tracefs_mounts(host_state_dir) == []


def test_cli_run_with_tracefs_snapshots_leaves_nothing(
    kernel_damon: Path, tmp_path: Path, inspector: tracing.Tracefs
) -> None:
    out, state = tmp_path / "k.jsonl", tmp_path / "state"
    process = subprocess.run(
        [sys.executable, "-m", "damon_agent.cli.agent", "run", "--backend", "kernel",
         "--snapshot-source", "tracefs", "--duration", "3s", "--record", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, DAMON_AGENT_STATE_DIR=str(state)),
        check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    rec = recording.read_recording(out)
    assert len(rec.snapshots) >= 2
    ranges = iomem.largest_ram_ranges(Path("/proc"))
    assert rec.meta["ranges"] == [list(r) for r in ranges]
    for snap in rec.snapshots:
        _check_tiles(_columns(snap.targets[0]), ranges)
    assert inspector.our_instances() == []
    assert _our_tracefs_mounts(state) == []
    assert (kernel_damon / "kdamonds/nr_kdamonds").read_text().strip() == "0"
