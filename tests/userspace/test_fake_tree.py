"""The userspace operations against fake /proc and /sys trees: parsing, decoding, writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from userspace_support import (
    ARENA,
    ARENA2,
    DATA_FILE,
    EXCLUSIVE,
    FAKE_PID,
    FILE_OR_SHARED,
    GUARD,
    HEAP,
    MAPS,
    PAGE,
    PRESENT,
    SOFT_DIRTY,
    STACK,
    SWAPPED,
    VDSO,
    FakeProc,
    bitmap_words,
)

from damon_agent.core import attrs, clock, monitor, vaddr_layout
from damon_agent.ops import userspace, userspace_access, userspace_errors, userspace_fake
from damon_agent.ops import userspace_procfs as procfs

# -- maps -------------------------------------------------------------------------------------


def test_parse_maps_reads_every_field() -> None:
    mappings = procfs.parse_maps(MAPS, "maps")
    assert len(mappings) == MAPS.count("\n")
    text = mappings[0]
    assert (text.start, text.end, text.perms, text.offset) == (
        0x55D0C0A00000,
        0x55D0C0A2A000,
        "r--p",
        0,
    )
    assert (text.device, text.inode, text.path) == ("fe:01", 1311, "/usr/bin/python3.12")
    anon = next(m for m in mappings if (m.start, m.end) == ARENA)
    assert anon.path == "" and anon.inode == 0 and anon.actionable
    data = next(m for m in mappings if (m.start, m.end) == DATA_FILE)
    assert data.path == "/var/lib/app/data file.bin (deleted)"
    assert data.perms[3] == "s" and data.actionable
    guard = next(m for m in mappings if (m.start, m.end) == GUARD)
    assert not guard.accessible and not guard.actionable
    vdso = next(m for m in mappings if (m.start, m.end) == VDSO)
    assert vdso.special and not vdso.actionable


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("55d0c0a00000-55d0c0a2a000 r--p 00000000 fe:01", "expected"),
        ("55d0c0a00000 r--p 00000000 fe:01 1311", "not numbers"),
        ("55d0c0a00000-zz r--p 00000000 fe:01 1311 /bin/x", "not numbers"),
        ("2000-1000 r--p 00000000 fe:01 1311 /bin/x", "empty range"),
        ("1000-2000 r-- 00000000 fe:01 1311 /bin/x", "bad permissions"),
    ],
)
def test_malformed_maps_line_is_named(line: str, why: str) -> None:
    with pytest.raises(userspace_errors.MalformedProcFileError) as caught:
        procfs.parse_maps(MAPS + line + "\n", "/proc/1/maps")
    assert caught.value.path == "/proc/1/maps"
    assert f"line {MAPS.count(chr(10)) + 1}" in str(caught.value)
    assert why in str(caught.value)


def test_target_ranges_leave_out_vsyscall_and_feed_the_core_gap_rule(
    fake_proc: FakeProc,
) -> None:
    ops = userspace.UserspaceOperations(
        userspace_fake.FakeAccessCheck(), userspace_fake.FakeActions(), proc_root=fake_proc.root
    )
    ranges = ops.target_ranges(FAKE_PID)
    assert len(ranges) == MAPS.count("\n") - 1
    assert all(end <= 1 << 47 for _, end in ranges), "[vsyscall] is not a VMA"
    assert ranges == sorted(ranges)
    three = vaddr_layout.leave_out_two_biggest_gaps(ranges)
    # The two biggest gaps are heap..mmap area and mmap area..stack, as for the kernel.
    assert three == [
        (0x55D0C0A00000, HEAP[1]),
        (ARENA[0], VDSO[1]),
        STACK,
    ]


def test_target_ranges_of_a_gone_process_are_empty(fake_proc: FakeProc) -> None:
    ops = userspace.UserspaceOperations(
        userspace_fake.FakeAccessCheck(), userspace_fake.FakeActions(), proc_root=fake_proc.root
    )
    assert ops.target_ranges(FAKE_PID + 1) == []


def test_target_id_must_be_a_pid(fake_proc: FakeProc) -> None:
    ops = userspace.UserspaceOperations(
        userspace_fake.FakeAccessCheck(), userspace_fake.FakeActions(), proc_root=fake_proc.root
    )
    with pytest.raises(userspace_errors.InvalidRequestError, match="target_id"):
        ops.target_ranges(0)


def test_unreadable_maps_of_a_live_process_is_an_error(fake_proc: FakeProc) -> None:
    maps = fake_proc.dir / "maps"
    maps.unlink()
    maps.mkdir()  # reading a directory fails with EISDIR: not "gone", a real failure
    with pytest.raises(userspace_errors.ProcFileError, match="maps"):
        procfs.read_maps(FAKE_PID, fake_proc.root)


# -- pagemap ------------------------------------------------------------------------------------


def test_decode_pagemap_bits() -> None:
    entries = [
        PRESENT | EXCLUSIVE | SOFT_DIRTY | 0x1234,  # written anonymous page
        PRESENT | FILE_OR_SHARED | 0x42,  # clean file page
        SWAPPED | SOFT_DIRTY | (7 << 5) | 1,  # swapped: low bits are swap type/offset
        0,  # never touched
    ]
    raw = b"".join(e.to_bytes(8, "little") for e in entries)
    decoded = procfs.decode_pagemap(raw, "pagemap")
    assert decoded.present.tolist() == [True, True, False, False]
    assert decoded.swapped.tolist() == [False, False, True, False]
    assert decoded.soft_dirty.tolist() == [True, False, True, False]
    assert decoded.exclusive.tolist() == [True, False, False, False]
    assert decoded.file_or_shared.tolist() == [False, True, False, False]
    assert decoded.pfn.tolist() == [0x1234, 0x42, -1, -1]


def test_decode_pagemap_refuses_a_partial_entry() -> None:
    with pytest.raises(userspace_errors.MalformedProcFileError, match="12 bytes"):
        procfs.decode_pagemap(bytes(12), "/proc/1/pagemap")


def test_read_pagemap_at_sampled_addresses(fake_proc: FakeProc) -> None:
    hot = ARENA[0] + 5 * PAGE + 123  # any byte of the page
    cold = ARENA[0] + 9 * PAGE
    fake_proc.write_pagemap({hot: PRESENT | SOFT_DIRTY | 77, cold: PRESENT | 78})
    beyond = STACK[1] + (1 << 40)  # past the end of the (sparse) file: nothing known
    got = procfs.read_pagemap_at(
        FAKE_PID, np.array([hot, cold, beyond], dtype=np.int64), fake_proc.root, PAGE
    )
    assert got.soft_dirty.tolist() == [True, False, False]
    assert got.pfn.tolist() == [77, 78, -1]
    whole = procfs.read_pagemap_range(
        FAKE_PID, ARENA[0], ARENA[0] + 10 * PAGE, fake_proc.root, PAGE
    )
    assert np.flatnonzero(whole.present).tolist() == [5, 9]


def test_read_pagemap_of_a_gone_process_reads_nothing(fake_proc: FakeProc) -> None:
    got = procfs.read_pagemap_at(FAKE_PID + 1, np.array([HEAP[0]]), fake_proc.root, PAGE)
    assert got.raw.tolist() == [0]


# -- soft-dirty ---------------------------------------------------------------------------------


def test_soft_dirty_check_clears_once_and_reads_bit_55(fake_proc: FakeProc) -> None:
    check = userspace_access.SoftDirtyCheck(fake_proc.root)
    addrs = np.array([HEAP[0], ARENA[0], ARENA2[0], STACK[0]], dtype=np.int64)
    check.prepare(FAKE_PID, addrs)
    assert fake_proc.clear_refs_writes() == "4", "one write for the whole process"
    fake_proc.write_pagemap(
        {HEAP[0]: PRESENT | SOFT_DIRTY | 1, ARENA[0]: PRESENT | 2, STACK[0]: PRESENT | SOFT_DIRTY}
    )
    assert check.check(FAKE_PID, addrs).tolist() == [True, False, False, True]
    assert check.sees_reads is False


def test_monitor_prepares_once_per_sampling_interval_per_process(fake_proc: FakeProc) -> None:
    check = userspace_access.SoftDirtyCheck(fake_proc.root)
    ops = userspace.UserspaceOperations(
        check, userspace_fake.FakeActions(), proc_root=fake_proc.root
    )
    sim_clock = clock.SimClock()
    mon = monitor.Monitor(
        attrs.MonitoringAttrs(sample_us=5_000, aggr_us=50_000, min_nr_regions=20),
        ops,
        [FAKE_PID],
        clock=sim_clock,
        rng=np.random.default_rng(1),
    )
    assert mon.nr_regions >= 20
    steps = 25
    for _ in range(steps):
        mon.step()
    assert fake_proc.clear_refs_writes() == "4" * steps
    assert ops.counters.access_prepares == steps
    assert ops.counters.access_checks == mon.nr_access_checks


def test_clear_refs_of_a_gone_process_is_not_an_error(fake_proc: FakeProc) -> None:
    assert procfs.clear_soft_dirty(FAKE_PID + 1, fake_proc.root) is False
    check = userspace_access.SoftDirtyCheck(fake_proc.root)
    check.prepare(FAKE_PID + 1, np.array([HEAP[0]]))
    assert check.check(FAKE_PID + 1, np.array([HEAP[0]])).tolist() == [False]


def test_clear_refs_that_refuses_a_live_process_is_an_error(fake_proc: FakeProc) -> None:
    clear_refs = fake_proc.dir / "clear_refs"
    clear_refs.unlink()
    clear_refs.mkdir()  # EISDIR on open for writing
    with pytest.raises(userspace_errors.ProcFileError, match="clear_refs"):
        procfs.clear_soft_dirty(FAKE_PID, fake_proc.root)


# -- idle page tracking -------------------------------------------------------------------------


def test_idle_page_check_marks_sampled_frames_and_reads_them_back(
    fake_proc: FakeProc, fake_sys: Path
) -> None:
    a, b, c, absent = HEAP[0], HEAP[0] + PAGE, ARENA[0], ARENA[0] + PAGE
    # Frames 3 and 5 share word 0; frame 130 is bit 2 of word 2.
    fake_proc.write_pagemap({a: PRESENT | 3, b: PRESENT | 5, c: PRESENT | 130})
    check = userspace_access.IdlePageCheck(fake_proc.root, fake_sys)
    addrs = np.array([a, b, c, absent], dtype=np.int64)
    check.prepare(FAKE_PID, addrs)
    words = bitmap_words(fake_sys)
    assert int(words[0]) == (1 << 3) | (1 << 5)
    assert int(words[2]) == 1 << 2
    assert int(words.sum()) == int(words[0]) + int(words[2]), "only the sampled frames"
    assert check.check(FAKE_PID, addrs).tolist() == [False, False, False, False]
    # The kernel clears the idle bit of an accessed frame: frame 5 was touched.
    bitmap = fake_sys / "kernel/mm/page_idle/bitmap"
    with bitmap.open("r+b") as file:
        file.write((1 << 3).to_bytes(8, "little"))
    assert check.check(FAKE_PID, addrs).tolist() == [False, True, False, False]
    assert check.sees_reads is True


def test_idle_page_check_needs_frame_numbers(fake_proc: FakeProc, fake_sys: Path) -> None:
    fake_proc.write_pagemap({HEAP[0]: PRESENT})  # present, frame hidden (not root)
    check = userspace_access.IdlePageCheck(fake_proc.root, fake_sys)
    with pytest.raises(userspace_errors.ProcFileError, match="CAP_SYS_ADMIN"):
        check.prepare(FAKE_PID, np.array([HEAP[0]], dtype=np.int64))


# -- probing and selection ----------------------------------------------------------------------


def test_probe_on_trees_without_primitives(tmp_path: Path) -> None:
    support = userspace_access.probe(tmp_path / "proc", tmp_path / "sys")
    assert support.available == ()
    reasons = support.missing_reasons()
    assert "CONFIG_IDLE_PAGE_TRACKING" in reasons["idle_page"]
    assert "pagemap is missing" in reasons["soft_dirty"]
    with pytest.raises(userspace_errors.NoAccessCheckError) as caught:
        userspace_access.select(support)
    assert set(caught.value.reasons) == {"idle_page", "soft_dirty"}
    assert "idle_page" in str(caught.value) and "soft_dirty" in str(caught.value)


def test_probe_finds_idle_page_tracking_and_select_prefers_it(
    tmp_path: Path, fake_sys: Path
) -> None:
    support = userspace_access.probe(tmp_path / "proc", fake_sys)
    assert support.available == ("idle_page",)
    chosen = userspace_access.select(support, sys_root=fake_sys)
    assert isinstance(chosen, userspace_access.IdlePageCheck)
    with pytest.raises(userspace_errors.NoAccessCheckError) as caught:
        userspace_access.select(support, prefer="soft_dirty")
    assert list(caught.value.reasons) == ["soft_dirty"]
    with pytest.raises(userspace_errors.InvalidRequestError, match="prefer"):
        userspace_access.select(support, prefer="accessed_bit")


def test_select_falls_back_to_soft_dirty() -> None:
    support = userspace_access.AccessCheckSupport(
        idle_page=userspace_access.PrimitiveSupport("idle_page", False, "no bitmap"),
        soft_dirty=userspace_access.PrimitiveSupport("soft_dirty", True, "1, 0, 1"),
    )
    assert isinstance(userspace_access.select(support), userspace_access.SoftDirtyCheck)


# -- actions ------------------------------------------------------------------------------------


def _ops(
    fake_proc: FakeProc, actions: userspace_fake.FakeActions, **kwargs: int | None
) -> userspace.UserspaceOperations:
    return userspace.UserspaceOperations(
        userspace_fake.FakeAccessCheck(), actions, proc_root=fake_proc.root, **kwargs
    )


def test_actions_are_cut_to_mappings_that_can_hold_pages(fake_proc: FakeProc) -> None:
    actions = userspace_fake.FakeActions()
    ops = _ops(fake_proc, actions)
    # A region across the arena, its PROT_NONE guard, the second arena, the hole after it,
    # the data file and the vvar/vdso pages: the guard, the hole and vvar/vdso drop out.
    applied = ops.apply_action(FAKE_PID, ARENA[0] + 100, VDSO[1], "pageout", None)
    (call,) = actions.calls
    assert call.action == "pageout" and call.pid == FAKE_PID
    assert call.ranges == ((ARENA[0], GUARD[0]), ARENA2, DATA_FILE)
    assert applied == sum(end - start for start, end in call.ranges)
    assert ops.counters.applied_bytes == {"pageout": applied}


def test_cold_and_migrations_reach_the_backend_with_their_parameters(
    fake_proc: FakeProc,
) -> None:
    actions = userspace_fake.FakeActions()
    ops = _ops(fake_proc, actions, migrate_bandwidth_bytes_per_s=64 << 20)
    ops.apply_action(FAKE_PID, *HEAP, "cold", None)
    ops.apply_action(FAKE_PID, *ARENA, "migrate_hot", 0)
    ops.apply_action(FAKE_PID, *ARENA2, "migrate_cold", 1)
    assert [(c.action, c.ranges, c.target_node) for c in actions.calls] == [
        ("cold", (HEAP,), None),
        ("migrate", (ARENA,), 0),
        ("migrate", (ARENA2,), 1),
    ]
    assert actions.calls[0].bandwidth_bytes_per_s is None
    assert {c.bandwidth_bytes_per_s for c in actions.calls[1:]} == {64 << 20}


def test_stat_and_regions_outside_mappings_cost_no_call(fake_proc: FakeProc) -> None:
    actions = userspace_fake.FakeActions()
    ops = _ops(fake_proc, actions)
    assert ops.apply_action(FAKE_PID, *ARENA, "stat", None) == 0
    assert ops.apply_action(FAKE_PID, HEAP[1], ARENA[0], "pageout", None) == 0  # the big gap
    assert ops.apply_action(FAKE_PID, *GUARD, "migrate_hot", 0) == 0
    assert actions.calls == []


def test_action_on_a_gone_process_applies_nothing(fake_proc: FakeProc) -> None:
    actions = userspace_fake.FakeActions(exited_pids=[FAKE_PID])
    ops = _ops(fake_proc, actions)
    assert ops.apply_action(FAKE_PID + 1, *HEAP, "pageout", None) == 0  # no /proc entry
    assert actions.calls == []
    assert ops.apply_action(FAKE_PID, *HEAP, "pageout", None) == 0  # exits during the call
    assert ops.counters.exited_targets == 1


@pytest.mark.parametrize(
    ("start", "end", "action", "nid", "field"),
    [
        (HEAP[0], HEAP[1], "hugepage", None, "action"),
        (HEAP[0], HEAP[1], "migrate_hot", None, "target_nid"),
        (HEAP[0], HEAP[1], "migrate_cold", -1, "target_nid"),
        (HEAP[1], HEAP[0], "pageout", None, "start/end"),
    ],
)
def test_bad_action_requests_name_the_field(
    fake_proc: FakeProc, start: int, end: int, action: str, nid: int | None, field: str
) -> None:
    ops = _ops(fake_proc, userspace_fake.FakeActions())
    with pytest.raises(userspace_errors.InvalidRequestError) as caught:
        ops.apply_action(FAKE_PID, start, end, action, nid)
    assert caught.value.name == field
    assert isinstance(caught.value, ValueError)


def test_bandwidth_must_be_positive(fake_proc: FakeProc) -> None:
    with pytest.raises(userspace_errors.InvalidRequestError, match="migrate_bandwidth"):
        _ops(fake_proc, userspace_fake.FakeActions(), migrate_bandwidth_bytes_per_s=0)


def test_idle_page_check_of_a_gone_process_marks_nothing(
    fake_proc: FakeProc, fake_sys: Path
) -> None:
    check = userspace_access.IdlePageCheck(fake_proc.root, fake_sys)
    addrs = np.array([HEAP[0], ARENA[0]], dtype=np.int64)
    check.prepare(FAKE_PID + 1, addrs)
    assert not bitmap_words(fake_sys).any()
    assert check.check(FAKE_PID + 1, addrs).tolist() == [False, False]


def test_idle_bitmap_words_are_written_whole_and_only_once(fake_sys: Path) -> None:
    bitmap = fake_sys / "kernel/mm/page_idle/bitmap"
    frames = np.array([64, 127, 65, 1000], dtype=np.int64)  # word 1 twice, word 15 once
    procfs.mark_idle(bitmap, frames)
    words = bitmap_words(fake_sys)
    assert int(words[1]) == (1 << 0) | (1 << 63) | (1 << 1)
    assert int(words[15]) == 1 << (1000 % 64)
    assert np.count_nonzero(words) == 2
    assert procfs.read_idle(bitmap, frames).tolist() == [True, True, True, True]
    assert procfs.read_idle(bitmap, np.array([66], dtype=np.int64)).tolist() == [False]
