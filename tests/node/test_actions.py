"""Userspace actions: real process_madvise and move_pages on child processes, and fault
injection (partial results, errnos, throttling on a simulated clock) beside them."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from node_support import PAGE, Mapper, resident_bytes, spawn_mapper, stop
from numpy.typing import NDArray

from damon_agent.core import clock as core_clock
from damon_agent.node import actions, errors, syscalls


def whole(mapper: Mapper) -> list[tuple[int, int]]:
    return [(mapper.address, mapper.address + mapper.size)]


# --- real, on this host's kernel -------------------------------------------------------


def test_real_cold_advises_every_byte_and_keeps_pages_resident(mapper: Mapper) -> None:
    result = actions.cold(mapper.pid, whole(mapper))
    assert result.action is actions.Action.COLD
    assert (result.requested_bytes, result.applied_bytes) == (mapper.size, mapper.size)
    assert result.failed_pages == {} and not result.exited
    # COLD only deactivates: the pages stay mapped.
    assert (
        resident_bytes(mapper.pid, mapper.address, mapper.address + mapper.size)
        >= mapper.size * 0.9
    )


def test_real_pageout_drops_resident_file_pages(mapper: Mapper) -> None:
    start, end = mapper.address, mapper.address + mapper.size
    before = resident_bytes(mapper.pid, start, end)
    assert before >= mapper.size * 0.9, f"the child should have its mapping resident ({before})"
    result = actions.pageout(mapper.pid, whole(mapper))
    assert result.applied_bytes == mapper.size and result.failed_pages == {}
    after = resident_bytes(mapper.pid, start, end)
    # No swap on this host: clean file pages are dropped, so the mapping's Rss collapses.
    assert after <= mapper.size * 0.1, f"Rss went from {before} to {after} bytes only"


def test_real_hole_in_the_ranges_is_counted_and_the_rest_applied(mapper: Mapper) -> None:
    mapper.command("hole 8")
    start = mapper.address
    ranges = [
        (start, start + 8 * PAGE),
        (start + 8 * PAGE, start + 9 * PAGE),  # unmapped: ENOMEM
        (start + 9 * PAGE, start + mapper.size),
    ]
    result = actions.pageout(mapper.pid, ranges)
    assert result.failed_pages == {"ENOMEM": 1}
    assert result.requested_bytes == mapper.size
    assert result.applied_bytes == mapper.size - PAGE
    assert resident_bytes(mapper.pid, start + 9 * PAGE, start + mapper.size) <= mapper.size * 0.1


def test_real_process_exiting_mid_pageout_is_reported_as_exited(tmp_path: Path) -> None:
    child = spawn_mapper(tmp_path, 16 << 20)
    try:
        child.command("exit-after 0.3")
        # 16 MiB at 8 MiB/s takes two seconds: the child exits early in it, even on a busy
        # machine, and the action must notice instead of failing.
        result = actions.pageout(child.pid, whole(child), bandwidth_bytes_per_s=8 << 20)
    finally:
        stop(child)
    assert result.exited
    assert result.failed_pages == {}
    assert 0 < result.applied_bytes < result.requested_bytes == 16 << 20


def test_real_exited_or_zombie_process_is_not_an_error() -> None:
    reaped = subprocess.Popen([sys.executable, "-c", "pass"])
    reaped.wait()
    gone = actions.pageout(reaped.pid, [(0x400000, 0x401000)])
    assert gone.exited and gone.applied_bytes == 0 and gone.requested_bytes == PAGE

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1][0] != "Z":
            if time.monotonic() > deadline:
                pytest.fail("the child did not become a zombie within 10 s")
            time.sleep(0.01)
        assert actions.cold(zombie.pid, [(0x400000, 0x401000)]).exited
        migrated = actions.migrate(zombie.pid, [(0x400000, 0x401000)], 0)
        assert migrated.exited and migrated.applied_bytes == 0
    finally:
        zombie.wait()
    assert actions.migrate(zombie.pid, [(0x400000, 0x401000)], 0).exited


def test_real_pageout_bandwidth_limit_paces_the_work(mapper: Mapper) -> None:
    started = time.monotonic()
    result = actions.pageout(mapper.pid, whole(mapper), bandwidth_bytes_per_s=32 << 20)
    elapsed = time.monotonic() - started
    assert result.applied_bytes == mapper.size
    # 16 MiB at 32 MiB/s: half a second, give or take the batch granularity (0.1 s).
    assert 0.4 <= elapsed <= 2.0, f"took {elapsed:.2f} s"


def test_real_migrate_to_node_0_on_a_single_node_host(mapper: Mapper) -> None:
    anon = mapper.anon(4 << 20)
    result = actions.migrate(
        mapper.pid, [(anon, anon + (4 << 20))], 0, bandwidth_bytes_per_s=64 << 20
    )
    assert result.action is actions.Action.MIGRATE
    assert result.requested_bytes == 4 << 20
    # Every page already lives on node 0: nothing to move, nothing failed.
    assert (result.skipped_bytes, result.applied_bytes) == (4 << 20, 0)
    assert result.failed_pages == {} and not result.exited


def test_real_migrate_counts_unmapped_pages_by_errno(mapper: Mapper) -> None:
    anon = mapper.anon(1 << 20)
    addresses = [*range(anon, anon + (1 << 20), PAGE), 0x1000, 0x2000]
    result = actions.migrate_pages(mapper.pid, addresses, 0)
    assert result.failed_pages == {"EFAULT": 2}
    assert result.skipped_bytes == 1 << 20
    assert result.requested_bytes == (1 << 20) + 2 * PAGE


def test_real_migrate_to_a_node_that_does_not_exist_fails_typed(mapper: Mapper) -> None:
    anon = mapper.anon(1 << 20)
    with pytest.raises(errors.ActionFailedError, match="ENODEV"):
        actions.migrate(mapper.pid, [(anon, anon + (1 << 20))], 63)


# --- argument checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: actions.pageout(0, [(0, 4096)]), "pid"),
        (lambda: actions.pageout(1, [(8192, 4096)]), r"ranges\[0\]"),
        (lambda: actions.cold(1, [(0, 4096)], bandwidth_bytes_per_s=0), "bandwidth_bytes_per_s"),
        (lambda: actions.migrate(1, [(0, 4096)], -1), "target_node"),
    ],
)
def test_bad_arguments_name_the_field(call: Callable[[], object], name: str) -> None:
    with pytest.raises(errors.InvalidArgumentError, match=name):
        call()


def test_page_ranges_widen_to_whole_pages() -> None:
    assert actions.page_ranges([(4097, 8193)], 4096) == [(4096, 8192)]
    assert actions.page_ranges([(0, 1)], 4096) == [(0, 4096)]


# --- fault injection: how the kernel's partial answers are handled ---------------------


class FakeMadvise:
    """process_madvise as the kernel does it: in order, stopping at the first failing range."""

    def __init__(self, failures: dict[int, int], exit_after_calls: int | None = None) -> None:
        self.failures = failures  # range start -> errno
        self.exit_after_calls = exit_after_calls
        self.calls: list[list[tuple[int, int]]] = []

    def __call__(self, pidfd: int, ranges: Sequence[tuple[int, int]], advice: int) -> int:
        self.calls.append(list(ranges))
        if self.exit_after_calls is not None and len(self.calls) > self.exit_after_calls:
            raise OSError(errno.ESRCH, "No such process")
        done = 0
        for start, length in ranges:
            if start in self.failures:
                if done == 0:
                    raise OSError(self.failures[start], "injected")
                return done
            done += length
        return done


@pytest.fixture
def fake_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    # actions closes the pidfd it opened: hand it a real descriptor to close.
    monkeypatch.setattr(syscalls, "pidfd_open", lambda pid: os.open("/dev/null", os.O_RDONLY))


def test_partial_madvise_resumes_after_the_failing_range(
    monkeypatch: pytest.MonkeyPatch, fake_pidfd: None
) -> None:
    fake = FakeMadvise({3 * PAGE: errno.EINVAL, 7 * PAGE: errno.ENOMEM})
    monkeypatch.setattr(syscalls, "process_madvise", fake)
    ranges = [(n * PAGE, (n + 1) * PAGE) for n in range(10)]
    result = actions.pageout(4242, ranges)
    assert result.failed_pages == {"EINVAL": 1, "ENOMEM": 1}
    assert result.applied_bytes == 8 * PAGE and result.requested_bytes == 10 * PAGE
    assert not result.exited
    # one call for 0..3 (stops at 3), 3 alone fails, then 4..7, 7 alone fails, then 8..9
    assert [call[0][0] // PAGE for call in fake.calls] == [0, 3, 4, 7, 8]


def test_madvise_batches_at_iov_max(monkeypatch: pytest.MonkeyPatch, fake_pidfd: None) -> None:
    fake = FakeMadvise({})
    monkeypatch.setattr(syscalls, "process_madvise", fake)
    ranges = [(n * 2 * PAGE, (n * 2 + 1) * PAGE) for n in range(2500)]
    result = actions.cold(4242, ranges)
    assert [len(call) for call in fake.calls] == [1024, 1024, 452]
    assert result.applied_bytes == 2500 * PAGE


def test_exit_between_calls_keeps_what_was_done(
    monkeypatch: pytest.MonkeyPatch, fake_pidfd: None
) -> None:
    fake = FakeMadvise({}, exit_after_calls=1)
    monkeypatch.setattr(syscalls, "process_madvise", fake)
    ranges = [(n * 2 * PAGE, (n * 2 + 1) * PAGE) for n in range(2000)]
    result = actions.pageout(4242, ranges)
    assert result.exited and result.applied_bytes == 1024 * PAGE


def test_permission_denied_fails_the_whole_action(
    monkeypatch: pytest.MonkeyPatch, fake_pidfd: None
) -> None:
    monkeypatch.setattr(syscalls, "process_madvise", FakeMadvise({0: errno.EPERM}))
    with pytest.raises(errors.ActionFailedError, match="EPERM") as raised:
        actions.pageout(4242, [(0, PAGE)])
    assert raised.value.pid == 4242 and raised.value.action == "pageout"


def test_throttle_sleeps_to_the_bandwidth_on_a_simulated_clock(
    monkeypatch: pytest.MonkeyPatch, fake_pidfd: None
) -> None:
    fake = FakeMadvise({})
    monkeypatch.setattr(syscalls, "process_madvise", fake)
    clock = core_clock.SimClock()
    result = actions.pageout(4242, [(0, 4 << 20)], bandwidth_bytes_per_s=1 << 20, clock=clock)
    assert result.applied_bytes == 4 << 20
    # 4 MiB at 1 MiB/s: four seconds of virtual time, in batches of a tenth of a second.
    assert clock.now_us() == pytest.approx(4_000_000, abs=1)
    batch = (1 << 20) // 10 // PAGE * PAGE
    assert all(sum(length for _, length in call) <= batch for call in fake.calls)
    assert len(fake.calls) == -(-(4 << 20) // batch)


class FakeMovePages:
    """move_pages with a fixed node per page and per-page move failures."""

    def __init__(self, nodes: dict[int, int], move_errors: dict[int, int]) -> None:
        self.nodes = nodes
        self.move_errors = move_errors
        self.moves = 0

    def __call__(
        self,
        pid: int,
        addresses: NDArray[np.uint64],
        nodes: NDArray[np.int32] | None,
        flags: int = 0,
    ) -> syscalls.MovePagesResult:
        status = np.array(
            [self.nodes.get(int(a), -errno.EFAULT) for a in addresses], dtype=np.int32
        )
        if nodes is not None:
            self.moves += 1
            for index, address in enumerate(addresses.tolist()):
                if address in self.move_errors:
                    status[index] = -self.move_errors[address]
                else:
                    self.nodes[address] = int(nodes[index])
                    status[index] = int(nodes[index])
        return syscalls.MovePagesResult(not_migrated=0, status=status)


def test_migrate_counts_moved_skipped_and_failed_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = {n * PAGE: (1 if n % 2 else 0) for n in range(10)}  # odd pages on node 1
    pages[20 * PAGE] = 0
    fake = FakeMovePages(pages, {2 * PAGE: errno.EBUSY, 4 * PAGE: errno.ENOMEM})
    monkeypatch.setattr(syscalls, "move_pages", fake)
    addresses = [n * PAGE for n in range(10)] + [20 * PAGE, 30 * PAGE]  # 30: unmapped
    result = actions.migrate_pages(4242, addresses, 1)
    assert result.skipped_bytes == 5 * PAGE  # the odd pages were already there
    assert result.applied_bytes == 4 * PAGE  # 0, 6, 8, 20
    assert result.failed_pages == {"EBUSY": 1, "ENOMEM": 1, "EFAULT": 1}
    assert result.requested_bytes == 12 * PAGE


def test_migrate_partial_failure_is_requeried(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = {n * PAGE: 0 for n in range(6)}
    calls: list[bool] = []

    def kernel(
        pid: int, addresses: NDArray[np.uint64], targets: NDArray[np.int32] | None, flags: int = 0
    ) -> syscalls.MovePagesResult:
        calls.append(targets is not None)
        if targets is None:
            status = np.array([nodes[int(a)] for a in addresses], dtype=np.int32)
            return syscalls.MovePagesResult(not_migrated=0, status=status)
        # Like the kernel: the first two move, the third fails, the rest is never tried and
        # no status is written past the first two.
        for address in addresses[:2].tolist():
            nodes[address] = int(targets[0])
        status = np.full(addresses.size, -errno.EINVAL, dtype=np.int32)
        status[:2] = targets[0]
        return syscalls.MovePagesResult(not_migrated=4, status=status)

    monkeypatch.setattr(syscalls, "move_pages", kernel)
    result = actions.migrate_pages(4242, [n * PAGE for n in range(6)], 1)
    assert calls == [False, True, False]
    assert result.applied_bytes == 2 * PAGE
    assert result.failed_pages == {"not_migrated": 4}


def test_migrate_counts_a_huge_page_tail_reported_busy_where_it_landed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes = {n * PAGE: 0 for n in range(4)}

    def kernel(
        pid: int, addresses: NDArray[np.uint64], targets: NDArray[np.int32] | None, flags: int = 0
    ) -> syscalls.MovePagesResult:
        if targets is None:
            status = np.array([nodes[int(a)] for a in addresses], dtype=np.int32)
            return syscalls.MovePagesResult(not_migrated=0, status=status)
        # Like the kernel after a huge page: every page moved, yet page 1 (carried along by
        # the huge page) is reported EBUSY; page 3 really stayed behind busy.
        for address in addresses[:3].tolist():
            nodes[address] = int(targets[0])
        status = np.full(addresses.size, targets[0], dtype=np.int32)
        status[1] = -errno.EBUSY
        status[3] = -errno.EBUSY
        return syscalls.MovePagesResult(not_migrated=0, status=status)

    monkeypatch.setattr(syscalls, "move_pages", kernel)
    result = actions.migrate_pages(4242, [n * PAGE for n in range(4)], 1)
    assert result.applied_bytes == 3 * PAGE
    assert result.failed_pages == {"EBUSY": 1}


def test_migrate_bandwidth_counts_only_pages_it_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMovePages({n * PAGE: 0 for n in range(1024)}, {})
    monkeypatch.setattr(syscalls, "move_pages", fake)
    clock = core_clock.SimClock()
    result = actions.migrate_pages(
        4242, [n * PAGE for n in range(1024)], 1, bandwidth_bytes_per_s=2 << 20, clock=clock
    )
    assert result.applied_bytes == 4 << 20
    assert clock.now_us() == pytest.approx(2_000_000, abs=1)
    again = actions.migrate_pages(
        4242, [n * PAGE for n in range(1024)], 1, bandwidth_bytes_per_s=2 << 20, clock=clock
    )
    assert again.skipped_bytes == 4 << 20 and again.applied_bytes == 0
    assert clock.now_us() == pytest.approx(2_000_000, abs=1)  # nothing moved, no sleeping
