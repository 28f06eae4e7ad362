"""Userspace DAMOS actions on another process: pageout and cold, and NUMA migration.

``pageout`` / ``cold`` call ``process_madvise`` (MADV_PAGEOUT / MADV_COLD) on a pidfd, with
up to IOV_MAX ranges per call. The kernel stops a call at the first range that fails and
returns the bytes of the ranges before it; the failing range is then tried alone to learn its
errno (counted in ``failed_pages``) and the call resumes after it. ENOMEM (a hole in the
range) still advises the mapped part, but the kernel does not say how much, so the whole
range counts as failed.

``migrate`` / ``migrate_pages`` call ``move_pages``: per batch, first a query (nodes=NULL)
to skip pages already on the target node and to count absent ones, then the move of the
rest; each page's status (its node, or -EFAULT, -ENOENT, -EBUSY, -EACCES, -ENOMEM, ...) is
counted. Migration and pageout cost memory bandwidth and I/O: an optional bandwidth limit
(bytes per second) sizes batches to about a tenth of a second of work and sleeps between
them on the injected clock.

A process that exits during an action is normal on a node: the result says ``exited`` with
what was done before, never an exception. The kernel reports it as ESRCH, or as EINVAL
from ``move_pages`` on a zombie (its address space is gone), told apart through ``/proc``.
Failures of the action as a whole (no permission, unknown node, no such system call) raise
``ActionFailedError``.
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from damon_agent.core import clock as core_clock
from damon_agent.core import interfaces
from damon_agent.node import errors, procfs, syscalls

# The kernel's work per batch when a bandwidth limit is set: 1/10 s of the allowed bytes.
_BATCH_SECONDS = 0.1
# Without a limit, batches only bound the size of the arrays handed to the kernel.
_MAX_BATCH_PAGES = 16_384
# Errors that concern the whole action: no point trying the remaining ranges.
_FATAL_ERRNOS = frozenset({errno.EPERM, errno.EBADF, errno.ENOSYS, errno.EFAULT})
_TRANSIENT_ERRNOS = frozenset({errno.EINTR, errno.EAGAIN})
_MAX_RETRIES = 3


class Action(enum.StrEnum):
    PAGEOUT = "pageout"
    COLD = "cold"
    MIGRATE = "migrate"


_ADVICE = {Action.PAGEOUT: syscalls.MADV_PAGEOUT, Action.COLD: syscalls.MADV_COLD}


@dataclass(frozen=True)
class ActionResult:
    """What an action did. Bytes are page-granular; ``failed_pages`` is keyed by errno name."""

    action: Action
    pid: int
    requested_bytes: int
    applied_bytes: int  # advised (pageout, cold) or moved to the target node (migrate)
    skipped_bytes: int = 0  # migrate: already on the target node
    failed_pages: Mapping[str, int] = field(default_factory=dict)
    exited: bool = False  # the process exited before the action finished

    @property
    def failed_total(self) -> int:
        return sum(self.failed_pages.values())


class _Throttle:
    """Sleeps so that the bytes done since start never run ahead of the bandwidth."""

    def __init__(self, bandwidth_bytes_per_s: int | None, clock: interfaces.Clock) -> None:
        self._bandwidth = bandwidth_bytes_per_s
        self._clock = clock
        self._start_us = clock.now_us()
        self._done = 0

    def batch_bytes(self, page: int, unlimited: int) -> int:
        if self._bandwidth is None:
            return unlimited
        return max(page, int(self._bandwidth * _BATCH_SECONDS) // page * page)

    def account(self, done_bytes: int) -> None:
        self._done += done_bytes
        if self._bandwidth is None or done_bytes <= 0:
            return
        due_us = self._start_us + self._done * 1_000_000 // self._bandwidth
        now_us = self._clock.now_us()
        if due_us > now_us:
            self._clock.sleep_us(due_us - now_us)


def page_ranges(ranges: Sequence[tuple[int, int]], page: int) -> list[tuple[int, int]]:
    """Validate [start, end) ranges and widen them to whole pages, as (start, length)."""
    aligned: list[tuple[int, int]] = []
    for index, (start, end) in enumerate(ranges):
        if start < 0 or end <= start:
            raise errors.InvalidArgumentError(
                f"ranges[{index}]", f"[{start:#x}, {end:#x}) is empty or negative"
            )
        first = start - start % page
        last = -(-end // page) * page
        aligned.append((first, last - first))
    return aligned


def pageout(
    pid: int,
    ranges: Sequence[tuple[int, int]],
    *,
    bandwidth_bytes_per_s: int | None = None,
    clock: interfaces.Clock | None = None,
) -> ActionResult:
    """Reclaim the pages of [start, end) ranges of ``pid`` (MADV_PAGEOUT)."""
    return advise(
        pid,
        ranges,
        Action.PAGEOUT,
        bandwidth_bytes_per_s=bandwidth_bytes_per_s,
        clock=clock,
    )


def cold(
    pid: int,
    ranges: Sequence[tuple[int, int]],
    *,
    bandwidth_bytes_per_s: int | None = None,
    clock: interfaces.Clock | None = None,
) -> ActionResult:
    """Deactivate the pages of [start, end) ranges of ``pid`` (MADV_COLD)."""
    return advise(
        pid,
        ranges,
        Action.COLD,
        bandwidth_bytes_per_s=bandwidth_bytes_per_s,
        clock=clock,
    )


def advise(
    pid: int,
    ranges: Sequence[tuple[int, int]],
    action: Action,
    *,
    bandwidth_bytes_per_s: int | None = None,
    clock: interfaces.Clock | None = None,
) -> ActionResult:
    """process_madvise ``action`` (pageout or cold) on [start, end) ranges of ``pid``."""
    if action not in _ADVICE:
        raise errors.InvalidArgumentError("action", f"{action} is not pageout or cold")
    _check_pid(pid)
    _check_bandwidth(bandwidth_bytes_per_s)
    page = syscalls.page_size()
    throttle = _Throttle(bandwidth_bytes_per_s, clock or core_clock.WallClock())
    vectors = _split(page_ranges(ranges, page), throttle.batch_bytes(page, 1 << 62))
    requested = sum(length for _, length in vectors)
    failed: dict[str, int] = {}
    applied = 0

    def result(exited: bool) -> ActionResult:
        return ActionResult(action, pid, requested, applied, 0, failed, exited)

    try:
        pidfd = syscalls.pidfd_open(pid)
    except OSError as error:
        if error.errno == errno.ESRCH:
            return result(exited=True)
        raise _failed(action, pid, error) from None
    try:
        for batch in _batches(vectors, throttle.batch_bytes(page, 1 << 62)):
            index = 0
            batch_done = 0
            retries = 0
            while index < len(batch):
                chunk = batch[index : index + syscalls.IOV_MAX]
                try:
                    advised = syscalls.process_madvise(pidfd, chunk, _ADVICE[action])
                except OSError as error:
                    if _madvise_exited(error):
                        return result(exited=True)
                    if error.errno in _FATAL_ERRNOS:
                        raise _failed(action, pid, error) from None
                    if error.errno in _TRANSIENT_ERRNOS and retries < _MAX_RETRIES:
                        retries += 1  # the kernel asks to try the same range again
                        continue
                    name = errno.errorcode.get(error.errno or 0, str(error.errno))
                    failed[name] = failed.get(name, 0) + chunk[0][1] // page
                    index += 1
                    retries = 0
                    continue
                retries = 0
                if advised <= 0:
                    # Never seen: a call that neither fails nor advises. Do not spin on it.
                    failed["no_progress"] = failed.get("no_progress", 0) + chunk[0][1] // page
                    index += 1
                    continue
                applied += advised
                batch_done += advised
                # Skip the ranges the kernel advised in full; stop at the one it did not.
                while advised > 0 and index < len(batch):
                    advised -= batch[index][1]
                    index += 1
            throttle.account(batch_done)
    finally:
        os.close(pidfd)
    return result(exited=False)


def migrate(
    pid: int,
    ranges: Sequence[tuple[int, int]],
    target_node: int,
    *,
    bandwidth_bytes_per_s: int | None = None,
    move_all: bool = False,
    clock: interfaces.Clock | None = None,
    proc_root: str | Path = "/proc",
) -> ActionResult:
    """Move the pages of [start, end) ranges of ``pid`` to ``target_node``."""
    page = syscalls.page_size()
    starts = [
        np.arange(start, start + length, page, dtype=np.uint64)
        for start, length in page_ranges(ranges, page)
    ]
    addresses = np.concatenate(starts) if starts else np.zeros(0, dtype=np.uint64)
    return migrate_pages(
        pid,
        addresses,
        target_node,
        bandwidth_bytes_per_s=bandwidth_bytes_per_s,
        move_all=move_all,
        clock=clock,
        proc_root=proc_root,
    )


def migrate_pages(
    pid: int,
    addresses: Sequence[int] | NDArray[np.uint64],
    target_node: int,
    *,
    bandwidth_bytes_per_s: int | None = None,
    move_all: bool = False,
    clock: interfaces.Clock | None = None,
    proc_root: str | Path = "/proc",
) -> ActionResult:
    """Move the pages holding ``addresses`` of ``pid`` to ``target_node``.

    ``move_all`` also moves pages shared with other processes (MPOL_MF_MOVE_ALL, needs
    CAP_SYS_NICE); without it such pages fail with EACCES.
    """
    _check_pid(pid)
    _check_bandwidth(bandwidth_bytes_per_s)
    if target_node < 0:
        raise errors.InvalidArgumentError("target_node", f"{target_node} is not a NUMA node id")
    page = syscalls.page_size()
    mask = np.uint64(~(page - 1) & (2**64 - 1))
    pages = np.unique(np.asarray(addresses, dtype=np.uint64) & mask)
    throttle = _Throttle(bandwidth_bytes_per_s, clock or core_clock.WallClock())
    batch_pages = max(1, throttle.batch_bytes(page, _MAX_BATCH_PAGES * page) // page)
    flags = syscalls.MPOL_MF_MOVE_ALL if move_all else syscalls.MPOL_MF_MOVE
    failed: dict[str, int] = {}
    moved = 0
    skipped = 0

    def result(exited: bool) -> ActionResult:
        return ActionResult(
            Action.MIGRATE,
            pid,
            int(pages.size) * page,
            moved * page,
            skipped * page,
            failed,
            exited,
        )

    for first in range(0, int(pages.size), batch_pages):
        batch = pages[first : first + batch_pages]
        try:
            before = syscalls.move_pages(pid, batch, None, 0).status
            _count_errors(before, failed)
            skipped += int(np.count_nonzero(before == target_node))
            wanted = batch[(before >= 0) & (before != target_node)]
            if wanted.size == 0:
                continue
            nodes = np.full(wanted.size, target_node, dtype=np.int32)
            moving = syscalls.move_pages(pid, wanted, nodes, flags)
            after = moving.status
            if moving.not_migrated > 0:
                # The kernel stops at the first run of pages it fails to migrate and leaves
                # the statuses of that run and of the rest unwritten: ask where they are.
                after = syscalls.move_pages(pid, wanted, None, 0).status
            busy = after == -errno.EBUSY
            if busy.any():
                # After moving a huge page the kernel reports the next base page of it EBUSY
                # although the huge page carried it along: count it where it really is.
                where = syscalls.move_pages(pid, wanted[busy], None, 0).status
                after = after.copy()
                after[busy] = np.where(where == target_node, where, -errno.EBUSY)
        except OSError as error:
            if _exited(error, pid, proc_root):
                return result(exited=True)
            raise _failed(Action.MIGRATE, pid, error) from None
        moved += int(np.count_nonzero(after == target_node))
        _count_errors(after, failed)
        # A page left on another node without an error status was not migrated.
        elsewhere = int(np.count_nonzero((after >= 0) & (after != target_node)))
        if elsewhere:
            failed["not_migrated"] = failed.get("not_migrated", 0) + elsewhere
        throttle.account(int(wanted.size) * page)
    return result(exited=False)


def _count_errors(status: NDArray[np.int32], failed: dict[str, int]) -> None:
    codes, counts = np.unique(status[status < 0], return_counts=True)
    for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
        name = errno.errorcode.get(-int(code), f"E{-int(code)}")
        failed[name] = failed.get(name, 0) + int(count)


def _split(vectors: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Cut ranges longer than ``limit`` bytes, so a throttled batch stays near its size."""
    pieces: list[tuple[int, int]] = []
    for start, length in vectors:
        offset = 0
        while offset < length:
            size = min(limit, length - offset)
            pieces.append((start + offset, size))
            offset += size
    return pieces


def _batches(vectors: list[tuple[int, int]], limit: int) -> list[list[tuple[int, int]]]:
    """Group ranges into batches of at most ``limit`` bytes (at least one range each)."""
    batches: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    size = 0
    for vector in vectors:
        if current and size + vector[1] > limit:
            batches.append(current)
            current, size = [], 0
        current.append(vector)
        size += vector[1]
    if current:
        batches.append(current)
    return batches


def _exited(error: OSError, pid: int, proc_root: str | Path) -> bool:
    """ESRCH; or, from move_pages only, EINVAL for a zombie whose address space is gone."""
    if error.errno == errno.ESRCH:
        return True
    return error.errno == errno.EINVAL and not procfs.is_alive(pid, proc_root)


def _madvise_exited(error: OSError) -> bool:
    # process_madvise reports a zombie as ESRCH itself; its EINVAL is about a range.
    return error.errno == errno.ESRCH


def _failed(action: Action, pid: int, error: OSError) -> errors.ActionFailedError:
    code = error.errno or 0
    return errors.ActionFailedError(
        action.value, pid, errno.errorcode.get(code, str(code)), os.strerror(code)
    )


def _check_pid(pid: int) -> None:
    if pid <= 0:
        raise errors.InvalidArgumentError("pid", f"{pid} is not a process id (must be > 0)")


def _check_bandwidth(bandwidth_bytes_per_s: int | None) -> None:
    if bandwidth_bytes_per_s is not None and bandwidth_bytes_per_s <= 0:
        raise errors.InvalidArgumentError(
            "bandwidth_bytes_per_s", f"{bandwidth_bytes_per_s} must be positive (None: no limit)"
        )
