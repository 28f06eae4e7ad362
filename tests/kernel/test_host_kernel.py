"""The kernel backend on the real DAMON of the kernel under test (paddr, sysfs).

Each test takes ``kernel_damon`` (serialised, ``nr_kdamonds`` back to 0 afterwards, also on
failure) and turns its own kdamonds off in ``finally`` blocks. Bounded: every wait has a
deadline of at most 20 s.
"""

from __future__ import annotations

import errno
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import damon_modules
import numpy as np
import pytest
from numpy.typing import NDArray

from damon_agent.api import schemes as api
from damon_agent.core import attrs, snapshots
from damon_agent.node import pagemap
from damon_agent.ops.kernel import capabilities, driver, errors, iomem, model, sysfs, writes
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.schemes import conversion

pytestmark = pytest.mark.kernel

DEADLINE_S = 20.0


def _engine(admin: Path, state_dir: Path) -> kernel_damon.KernelDamon:
    return kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(sysfs.HostSysfs(admin), state_dir),
        kernel_release=platform.release(),
    )


def _paddr_context(key: str = "host") -> kernel_damon.KdamondContext:
    """The largest RAM ranges, monitored with the kernel's default attributes.

    (A module-level helper: in the tests, ``kernel_damon`` is the fixture's path.)
    """
    return kernel_damon.KdamondContext(
        key=key, monitoring=attrs.MonitoringAttrs(), operations="paddr"
    )


def _rate_at(snap: snapshots.Snapshot, addresses: NDArray[np.int64]) -> float:
    """Mean access rate (0..1) of the regions holding ``addresses``."""
    target = snap.targets[0]
    index = np.searchsorted(target.start, addresses, side="right") - 1
    inside = (index >= 0) & (addresses < target.end[np.clip(index, 0, None)])
    assert inside.mean() > 0.99, "frames outside the monitored RAM ranges"
    return float((target.nr_accesses[index[inside]] / snap.max_nr_accesses).mean())


def _kdamond_files(admin: Path, index: int) -> dict[str, str]:
    root = admin / "kdamonds" / str(index)
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "tried_regions" not in path.parts and path.name != "pid":
            files[str(path.relative_to(root))] = path.read_text()
    return files


def test_hot_frames_rank_above_cold_frames(
    kernel_damon: Path, host_state_dir: Path, spawn_workload: Callable[..., object]
) -> None:
    # 64 MiB of hot pages: one pass of the workload's loop stays well within an
    # aggregation interval even in an emulated guest on a loaded host.
    work = spawn_workload(hot_mib=64, cold_mib=256, max_seconds=60)
    engine = _engine(kernel_damon, host_state_dir)
    context = _paddr_context()
    history: list[tuple[float, float]] = []
    try:
        engine.apply([context])
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            time.sleep(1)
            snap = engine.snapshots()["host"]
            # Re-mapped every time: the kernel may migrate or collapse pages meanwhile.
            hot = pagemap.physical_addresses(work.pid, *work.hot)  # type: ignore[attr-defined]
            cold = pagemap.physical_addresses(work.pid, *work.cold)  # type: ignore[attr-defined]
            history.append((_rate_at(snap, hot), _rate_at(snap, cold)))
            recent = history[-3:]
            if len(recent) == 3 and all(h >= 0.2 and h >= 5 * c for h, c in recent):
                break
    finally:
        engine.stop()
    recent = history[-3:]
    assert len(recent) == 3 and all(h >= 0.2 and h >= 5 * c for h, c in recent), (
        f"(hot, cold) access rates per second: {history}"
    )


def test_stats_tried_regions_and_online_commit(
    kernel_damon: Path, host_state_dir: Path, spawn_workload: Callable[..., object]
) -> None:
    # Something must be hot for "only idle regions" to be fewer bytes than all of RAM: an
    # idle guest may otherwise show no access at all in the half second after the commit.
    spawn_workload(hot_mib=64, cold_mib=16, max_seconds=60)
    drv = driver.KdamondDriver(sysfs.HostSysfs(kernel_damon), host_state_dir)
    ranges = iomem.largest_ram_ranges()
    regions = tuple(model.Region(s, e) for s, e in ranges)

    def config(action: str, max_nr: int) -> model.Kdamond:
        pattern = model.AccessPattern(nr_accesses=model.Range(0, max_nr))
        return model.Kdamond(
            contexts=(
                model.Context(
                    operations="paddr",
                    targets=(model.Target(regions=regions),),
                    schemes=(model.Scheme(action=action, access_pattern=pattern),),
                ),
            )
        )

    handle = drv.start(config("stat", model.ULONG_MAX))
    try:
        time.sleep(1.0)
        stats = drv.schemes_stats(handle)[0]
        assert stats.nr_tried > 0 and stats.sz_tried > 0
        tried = drv.tried_regions(handle)[0]
        starts = [r.start for r in tried.regions]
        assert tried.regions and starts == sorted(starts)
        covered = sum(r.end - r.start for r in tried.regions)
        assert covered == tried.total_bytes == sum(e - s for s, e in ranges)
        assert drv.tried_bytes(handle) == [tried.total_bytes]
        assert drv.effective_quotas(handle) == [0]  # no quota

        # Online: only idle regions now, and lru_deprio; same thread.
        pid = handle.pid
        drv.commit(handle, config("lru_deprio", 0))
        scheme = kernel_damon / "kdamonds" / str(handle.index) / "contexts/0/schemes/0"
        assert (scheme / "action").read_text().strip() == "lru_deprio"
        assert drv.is_running(handle)
        assert int((kernel_damon / f"kdamonds/{handle.index}/pid").read_text()) == pid
        time.sleep(0.5)
        after = drv.tried_regions(handle)[0]
        assert all(r.nr_accesses == 0 for r in after.regions)
        assert after.total_bytes < tried.total_bytes
    finally:
        drv.stop_all()
    assert (kernel_damon / "kdamonds/nr_kdamonds").read_text().strip() == "0"


def test_memcg_filter_limits_a_stat_scheme_to_one_cgroup(
    kernel_damon: Path,
    host_state_dir: Path,
    child_memcg: tuple[Path, str],
    spawn_workload: Callable[..., object],
) -> None:
    directory, memcg_path = child_memcg
    if not _report(kernel_damon).has("sz_ops_filter_passed"):
        # Before 6.14 the kernel counts no filter-passed bytes: see the filter act instead.
        _memcg_filter_limits_pageout(kernel_damon, host_state_dir, child_memcg, spawn_workload)
        return
    work = spawn_workload(hot_mib=64, cold_mib=64, max_seconds=60, cgroup_dir=directory)
    rss = _rss(work.pid)  # type: ignore[attr-defined]
    engine = _engine(kernel_damon, host_state_dir)
    context = _one_memcg_context(kernel_damon, memcg_path, {"action": "stat"})
    try:
        engine.apply([context])
        time.sleep(1.5)
        tried = engine.tried_regions("s")
        passed = sum(r.sz_filter_passed for r in tried.regions)
        stats = engine.stats()["s"]
        frames = np.concatenate(
            [
                pagemap.physical_addresses(work.pid, *work.hot),  # type: ignore[attr-defined]
                pagemap.physical_addresses(work.pid, *work.cold),  # type: ignore[attr-defined]
            ]
        )
        in_passing_block = _in_passing_block(frames, tried.regions)
    finally:
        engine.stop()
    usage = int(
        (
            directory
            / (
                "memory.current"
                if (directory / "memory.current").exists()
                else "memory.usage_in_bytes"
            )
        ).read_text()
    )
    total = sum(e - s for s, e in iomem.largest_ram_ranges())
    # Only the cgroup's pages pass: about its resident memory, well below all of RAM
    # (a guest of the kernel matrix has 2 GiB; the workload about 150 MiB).
    assert 0.8 * rss <= passed <= usage + (16 << 20), (passed, rss, usage)
    assert passed < total / 8
    assert stats.sz_ops_filter_passed >= passed // 2
    # And the workload's frames are where the passing bytes are.
    assert in_passing_block.mean() > 0.95


_PMD_BYTES = 2 << 20


def _in_passing_block(
    frames: NDArray[np.int64], regions: Sequence[model.TriedRegion]
) -> NDArray[np.bool_]:
    """Whether each frame's 2 MiB-aligned block meets a region with filter-passed bytes.

    A block, not the frame's own region: the kernel counts a large folio once, in the
    region where its walk met it first, and skips it in the next region it spans
    (``last_applied``, 6.14 on). The workload's arrays are THP-backed, and a region
    that lies inside such a folio passes nothing though all of it is the cgroup's.
    """
    passing = sorted((r for r in regions if r.sz_filter_passed > 0), key=lambda r: r.start)
    starts = np.array([r.start for r in passing], dtype=np.int64)
    ends = np.array([r.end for r in passing], dtype=np.int64)
    block_start = frames - frames % _PMD_BYTES
    # Regions are sorted and disjoint: the last one starting before the block's end
    # is the only one that can reach into the block.
    last = np.searchsorted(starts, block_start + _PMD_BYTES, side="left") - 1
    if not passing:
        return np.zeros(len(frames), dtype=np.bool_)
    reaches = ends[np.maximum(last, 0)] > block_start
    return (last >= 0) & reaches  # type: ignore[no-any-return]


def _memcg_filter_limits_pageout(
    admin: Path,
    state_dir: Path,
    child_memcg: tuple[Path, str],
    spawn_workload: Callable[..., object],
) -> None:
    """A pageout of idle memory, filtered to one memcg, pages out that cgroup's cold array
    (to the guest's zram swap) and leaves an identical process outside it resident."""
    directory, memcg_path = child_memcg
    inside = spawn_workload(hot_mib=16, cold_mib=96, max_seconds=60, cgroup_dir=directory)
    outside = spawn_workload(hot_mib=16, cold_mib=96, max_seconds=60)
    before = {"inside": _rss(inside.pid), "outside": _rss(outside.pid)}  # type: ignore[attr-defined]
    engine = _engine(admin, state_dir)
    idle = {"accessRate": {"max": "0%"}, "age": {"min": "1s"}}
    context = _one_memcg_context(admin, memcg_path, {"action": "pageout", "accessPattern": idle})
    after = dict(before)
    try:
        engine.apply([context])
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            time.sleep(1.0)
            after = {"inside": _rss(inside.pid), "outside": _rss(outside.pid)}  # type: ignore[attr-defined]
            if before["inside"] - after["inside"] >= 64 << 20:
                break
    finally:
        engine.stop()
    mib = {k: (before[k] >> 20, after[k] >> 20) for k in before}
    assert before["inside"] - after["inside"] >= 64 << 20, f"(before, after) RSS MiB: {mib}"
    assert before["outside"] - after["outside"] < 8 << 20, f"(before, after) RSS MiB: {mib}"


def _one_memcg_context(
    admin: Path, memcg_path: str, scheme: dict[str, object]
) -> kernel_damon.KdamondContext:
    """Physical memory, one scheme ``s`` filtered to one memcg."""
    spec = api.SchemeFile.model_validate(
        {
            "schemes": [
                {"name": "only-this-cgroup", **scheme, "filters": [_only_memcg(admin, memcg_path)]}
            ]
        }
    ).schemes[0]
    return kernel_damon.KdamondContext(
        key="host",
        monitoring=attrs.MonitoringAttrs(),
        operations="paddr",
        schemes=(kernel_damon.KdamondScheme("s", conversion.scheme(spec)),),
    )


def _report(admin: Path) -> capabilities.CapabilityReport:
    return capabilities.probe(sysfs.HostSysfs(admin), platform.release())


def _only_memcg(admin: Path, memcg_path: str) -> dict[str, object]:
    """A filter admitting one memcg only: allow it (6.14+), or reject what is not it."""
    if _report(admin).has("filter_allow"):
        return {"type": "memcg", "memcgPath": memcg_path, "allow": True}
    return {"type": "memcg", "memcgPath": memcg_path, "matching": False, "allow": False}


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_memcg_path_that_names_no_cgroup_is_explained(
    kernel_damon: Path, host_state_dir: Path
) -> None:
    drv = driver.KdamondDriver(sysfs.HostSysfs(kernel_damon), host_state_dir)
    ranges = iomem.largest_ram_ranges()
    report = _report(kernel_damon)
    allow = report.has("filter_allow")
    bad = model.Filter("memcg", matching=allow, allow=allow, memcg_path="/no-such-cgroup-here")
    scheme = (
        model.Scheme(ops_filters=(bad,))
        if report.has("core_ops_filters")
        else model.Scheme(filters=(bad,))
    )
    cfg = model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                targets=(model.Target(regions=tuple(model.Region(s, e) for s, e in ranges)),),
                schemes=(scheme,),
            ),
        )
    )
    try:
        with pytest.raises(errors.SysfsInvalidError, match="memcg_path names no memory cgroup"):
            drv.start(cfg)
    finally:
        drv.stop_all()


def test_foreign_kdamond_is_left_alone(kernel_damon: Path, host_state_dir: Path) -> None:
    kdamonds = kernel_damon / "kdamonds"
    low = iomem.largest_ram_ranges()[-1][0]
    # Another tool's kdamond, by raw writes: paddr over 64 MiB, running.
    with damon_modules.foreign_kdamond(kernel_damon, low, 64 << 20, sample_us=7777) as base:
        foreign_pid = (base / "pid").read_text()
        before = _kdamond_files(kernel_damon, 0)
        engine = _engine(kernel_damon, host_state_dir)
        context = _paddr_context()
        # Named before anything is written (``holders``), with its remedy.
        with pytest.raises(errors.DamonHeldError, match=r"kdamond 0 \(on, pid"):
            engine.apply([context])
        engine.stop()
        engine.driver.recover(adopt=False)
        # Probing falls back to the version table rather than resize the list.
        assert capabilities.probe(engine.driver.fs, platform.release()).method == ("kernel-version")
        assert (base / "pid").read_text() == foreign_pid
        assert _kdamond_files(kernel_damon, 0) == before
        assert (kdamonds / "nr_kdamonds").read_text().strip() == "1"
        # The kernel itself refuses to resize the list while the foreign one runs.
        with pytest.raises(OSError) as caught:
            (kdamonds / "nr_kdamonds").write_text("2")
        assert caught.value.errno == errno.EBUSY


def test_restart_adopts_or_cleans_the_kdamonds_it_left(
    kernel_damon: Path, host_state_dir: Path
) -> None:
    context = _paddr_context("h")
    first = _engine(kernel_damon, host_state_dir)
    first.apply([context])
    pid = first.kdamond_pids()["h"]
    del first  # "crash": nothing was stopped
    try:
        # A restarted agent adopts the running kdamond and commits into it online.
        again = _engine(kernel_damon, host_state_dir)
        assert [h.pid for h in again.recover().adopted] == [pid]
        again.apply([context])
        assert again.kdamond_pids()["h"] == pid
        assert (kernel_damon / "kdamonds/0/pid").read_text().strip() == str(pid)
        assert again.snapshots()["h"].targets[0].start.size > 0
        del again  # crash again
        # One that does not adopt cleans up instead.
        third = driver.KdamondDriver(sysfs.HostSysfs(kernel_damon), host_state_dir)
        assert third.recover(adopt=False).cleaned == [0]
        assert (kernel_damon / "kdamonds/nr_kdamonds").read_text().strip() == "0"
    finally:
        driver.KdamondDriver(sysfs.HostSysfs(kernel_damon), host_state_dir).stop_all()


def test_probe_finds_the_kernel_features(kernel_damon: Path) -> None:
    report = _report(kernel_damon)
    assert report.method == "probed"
    assert {"vaddr", "paddr"} <= set(report.operations)
    assert "online_commit" in {name for name, have, _ in report.table() if have}
    assert {"memcg", "young", "addr"} <= set(report.filter_types)
    assert (kernel_damon / "kdamonds/nr_kdamonds").read_text().strip() == "0"


def test_probe_agrees_with_the_version_table(kernel_damon: Path) -> None:
    """What the scratch kdamond found is what the table says this release brought."""
    report = _report(kernel_damon)
    table = capabilities.from_version_table(platform.release())
    probed = {name: have for name, have, _ in report.table()}
    expected = {name: have for name, have, _ in table.table()}
    disagree = {n: (probed[n], expected.get(n)) for n in probed if probed[n] != expected.get(n)}
    assert not disagree, f"(probed, table) per feature on {platform.release()}: {disagree}"


def test_writes_of_every_feature_are_accepted(kernel_damon: Path) -> None:
    """Every feature the probe reports, written at once, is accepted by the kernel."""
    report = _report(kernel_damon)
    ranges = iomem.largest_ram_ranges()
    young = model.Filter("young", matching=True, allow=False)
    ops_filters = (young,)
    if "hugepage_size" in report.filter_types:
        hugepage = model.Filter("hugepage_size", True, False, min=2 << 20, max=2 << 20)
        ops_filters += (hugepage,)
    addr = model.Filter("addr", True, False, addr_start=0, addr_end=1 << 30)
    goals = tuple(
        goal
        for goal in (
            model.QuotaGoal("node_mem_free_bp", 500, nid=0),
            model.QuotaGoal("user_input", 10_000, current_value=1200),
        )
        if goal.target_metric in report.goal_metrics
    )
    split = report.has("core_ops_filters")
    scheme = model.Scheme(
        action="migrate_cold" if "migrate_cold" in report.actions else "pageout",
        target_nid=0,
        apply_interval_us=1_000_000 if report.has("apply_interval") else None,
        access_pattern=model.AccessPattern(age=model.Range(50, model.ULONG_MAX)),
        quotas=model.Quotas(
            ms=10,
            bytes=128 << 20,
            reset_interval_ms=1000,
            weights=model.Weights(0, 1000, 1000),
            goals=goals,
        ),
        watermarks=model.Watermarks("free_mem_rate", 5_000_000, 1000, 1000, 0),
        filters=() if split else (addr, *ops_filters),
        core_filters=(addr,) if split else (),
        ops_filters=ops_filters if split else (),
        dests=(model.Dest(0, 1000),) if report.has("dests") else (),
    )
    goal = model.IntervalsGoal(400, 3, 5_000, 10_000_000)
    cfg = model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                addr_unit=1 if report.has("addr_unit") else None,
                monitoring_attrs=model.MonitoringAttrs(
                    intervals=model.Intervals(
                        intervals_goal=goal if report.has("intervals_goal") else None
                    )
                ),
                targets=(model.Target(regions=tuple(model.Region(s, e) for s, e in ranges)),),
                schemes=(scheme,),
            ),
        )
    )
    fs = sysfs.HostSysfs(kernel_damon)
    fs.write("kdamonds/nr_kdamonds", "1")
    try:
        log = writes.kdamond_writes(cfg)
        for one in log:
            fs.write(f"kdamonds/0/{one.path}", one.value)
        for one in log:
            if not one.path.endswith(("/matching", "/allow")):
                assert fs.read(f"kdamonds/0/{one.path}") == one.value, one.path
    finally:
        fs.write("kdamonds/nr_kdamonds", "0")
