"""The userspace operations on the machine's real kernel, with real child processes.

The probe must find soft-dirty and idle page tracking exactly where the kernel's own
config has them (checked against /proc/config.gz, not assumed; this project's hosts have
neither, the VM's kernels soft-dirty). Everything else is real: maps
and pagemap of a child, clear_refs writes, pageout/cold through process_madvise and
move_pages through ``node.actions``, processes that exit.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from userspace_support import PAGE, Child, spawn_child

from damon_agent.core import vaddr_layout
from damon_agent.node import actions as node_actions
from damon_agent.node import errors as node_errors
from damon_agent.node import numa
from damon_agent.ops import userspace, userspace_access, userspace_errors, userspace_fake
from damon_agent.ops import userspace_procfs as procfs

PROC = Path("/proc")
SYS = Path("/sys")


def _kernel_config() -> dict[str, str]:
    config = PROC / "config.gz"
    if not config.is_file():
        pytest.fail(f"{config} is missing: cannot cross-check the probe against the kernel")
    options: dict[str, str] = {}
    for line in gzip.decompress(config.read_bytes()).decode().splitlines():
        if line.startswith("CONFIG_"):
            name, _, value = line.partition("=")
            options[name] = value
    return options


def _ops(**kwargs: int | None) -> userspace.UserspaceOperations:
    # The host has no access-check primitive; actions do not need one.
    return userspace.UserspaceOperations(
        userspace_fake.FakeAccessCheck(), node_actions, proc_root=PROC, **kwargs
    )


def test_probe_matches_the_host_kernel() -> None:
    config = _kernel_config()
    support = userspace_access.probe(PROC, SYS)
    has_soft_dirty = config.get("CONFIG_MEM_SOFT_DIRTY") == "y"
    has_idle = (SYS / "kernel/mm/page_idle/bitmap").exists()
    assert support.soft_dirty.available is has_soft_dirty, support.soft_dirty
    assert support.idle_page.available is has_idle, support.idle_page
    # What is missing, the probe names by its kernel option; with neither, no userspace
    # backend can be built, and the error says why for each.
    if not has_soft_dirty:
        assert "CONFIG_MEM_SOFT_DIRTY" in support.soft_dirty.detail
    if not has_idle:
        assert "CONFIG_IDLE_PAGE_TRACKING" in support.idle_page.detail
    if has_soft_dirty or has_idle:
        assert userspace.build(node_actions, proc_root=PROC, sys_root=SYS) is not None
        return
    with pytest.raises(userspace_errors.NoAccessCheckError) as caught:
        userspace.build(node_actions, proc_root=PROC, sys_root=SYS)
    assert set(caught.value.reasons) == {"idle_page", "soft_dirty"}


def test_maps_of_a_real_child(child: Child) -> None:
    ranges = _ops().target_ranges(child.pid)
    assert ranges == sorted(ranges)
    assert all(end <= 1 << 47 for _, end in ranges), "[vsyscall] must be left out"
    assert "[vsyscall]" in (PROC / str(child.pid) / "maps").read_text()
    for name, (start, end) in (("anon", child.anon), ("file", child.file)):
        assert any(low <= start and end <= high for low, high in ranges), name
    # The core's gap rule keeps both mappings inside its three ranges.
    three = vaddr_layout.leave_out_two_biggest_gaps(ranges)
    assert len(three) == 3
    for start, end in (child.anon, child.file):
        assert any(low <= start and end <= high for low, high in three)
    mapped_file = [m for m in procfs.read_maps(child.pid, PROC) if m.path.endswith("mapped.bin")]
    assert [(m.start, m.end) for m in mapped_file] == [child.file]


def test_pagemap_of_a_real_child(child: Child) -> None:
    start, end = child.anon
    pages = (end - start) // PAGE
    entries = procfs.read_pagemap_range(child.pid, start, end, PROC, PAGE)
    present = entries.present
    # The child wrote the first half only.
    assert present[: pages // 2].all()
    assert not present[pages // 2 :].any()
    assert entries.exclusive[: pages // 2].all()
    assert (entries.pfn[: pages // 2] > 0).all(), "root sees frame numbers"
    sampled = np.array([start, start + (pages // 2 - 1) * PAGE, end - PAGE], dtype=np.int64)
    at = procfs.read_pagemap_at(child.pid, sampled, PROC, PAGE)
    assert at.present.tolist() == [True, True, False]
    assert at.pfn.tolist()[:2] == entries.pfn[[0, pages // 2 - 1]].tolist()
    file_entries = procfs.read_pagemap_range(child.pid, *child.file, PROC, PAGE)
    assert file_entries.present.all() and file_entries.file_or_shared.all()
    # Without soft-dirty in the kernel, no page ever shows bit 55.
    assert not entries.soft_dirty.any()


def test_clear_refs_writes_on_a_real_child(tmp_path: Path) -> None:
    spawned = spawn_child(tmp_path)
    try:
        assert procfs.clear_soft_dirty(spawned.pid, PROC) is True
        check = userspace_access.SoftDirtyCheck(PROC)
        addrs = np.array([spawned.anon[0]], dtype=np.int64)
        check.prepare(spawned.pid, addrs)
        assert check.check(spawned.pid, addrs).tolist() == [False]
    finally:
        spawned.stop()
    # Reaped: its /proc entry is gone, which is not an error.
    assert procfs.clear_soft_dirty(spawned.pid, PROC) is False
    assert procfs.read_maps(spawned.pid, PROC) == []


def _resident_pages(pid: int, span: tuple[int, int]) -> int:
    return int(procfs.read_pagemap_range(pid, *span, PROC, PAGE).present.sum())


def test_pageout_of_a_child_file_mapping_through_apply_action(child: Child) -> None:
    ops = _ops()
    pages = (child.file[1] - child.file[0]) // PAGE
    assert _resident_pages(child.pid, child.file) == pages
    # A region wider than the mapping: the parts outside any VMA are cut off first.
    applied = ops.apply_action(child.pid, child.file[0] - 64 * PAGE, child.file[1], "pageout", None)
    assert applied >= child.file[1] - child.file[0]
    left = _resident_pages(child.pid, child.file)
    assert left <= pages // 10, f"{left} of {pages} pages still resident after pageout"
    assert ops.counters.applied_bytes["pageout"] == applied
    assert ops.counters.failed_pages == {}


def test_cold_and_migrate_on_a_real_child(child: Child) -> None:
    ops = _ops(migrate_bandwidth_bytes_per_s=512 << 20)
    half = (child.anon[0], child.anon[0] + (child.anon[1] - child.anon[0]) // 2)
    assert ops.apply_action(child.pid, *half, "cold", None) == half[1] - half[0]
    topology = numa.read_topology()
    home = topology.nodes[0].node_id
    # Every page already sits on the only node: nothing moves, nothing fails.
    assert ops.apply_action(child.pid, *half, "migrate_hot", home) == 0
    assert ops.counters.failed_pages == {}
    missing_node = max(n.node_id for n in topology.nodes) + 1
    with pytest.raises(node_errors.ActionFailedError) as caught:
        ops.apply_action(child.pid, *half, "migrate_cold", missing_node)
    assert caught.value.pid == child.pid


def test_actions_and_checks_on_an_exited_child(tmp_path: Path) -> None:
    spawned = spawn_child(tmp_path)
    spawned.stop()
    ops = _ops()
    assert ops.target_ranges(spawned.pid) == []
    assert ops.apply_action(spawned.pid, *spawned.file, "pageout", None) == 0
    assert ops.apply_action(spawned.pid, *spawned.anon, "migrate_hot", 0) == 0
    check = userspace_access.SoftDirtyCheck(PROC)
    addrs = np.array([spawned.anon[0]], dtype=np.int64)
    check.prepare(spawned.pid, addrs)
    assert check.check(spawned.pid, addrs).tolist() == [False]
