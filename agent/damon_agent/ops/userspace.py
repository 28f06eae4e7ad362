"""The userspace operations: DAMON-style monitoring and DAMOS actions on real processes.

The production path where the kernel cannot do it itself: no DAMON vaddr operations, or
no migration by virtual address. ``UserspaceOperations`` implements
``core.interfaces.ActionOperations`` for the project's own monitor and DAMOS engine.

Target ids are process ids (as seen in ``proc_root``; the agent runs with the host's
pid namespace). Per target:

- ``target_ranges``: the VMAs of ``/proc/PID/maps`` (``userspace_procfs``), all of them
  as the kernel's vaddr operations take them; the monitor itself leaves out the two
  biggest gaps (``core.vaddr_layout``).
- ``prepare_access_checks`` / ``check_accesses``: one injected ``AccessCheck``
  primitive (``userspace_access``: idle page tracking, or soft-dirty which sees writes
  only), chosen by probing the kernel (``build``).
- ``apply_action``: the region is first cut to the VMAs it overlaps that can hold pages
  (not PROT_NONE, not [vdso]/[vvar]), so holes between mappings cost no failed calls and
  huge reserved areas no page arrays. ``pageout`` and ``cold`` go to the backend's
  process_madvise, ``migrate_hot`` and ``migrate_cold`` to its move_pages with a
  bandwidth limit (migration copies memory between nodes: unbounded, it would take the
  bandwidth the workload needs), ``stat`` does nothing. The bytes applied are returned.
  The kernel acts on whole folios: a region boundary inside a transparent huge page
  migrates all of its 2 MiB, and those pages later count as "already there" (skipped)
  for the neighbouring region, so bytes applied can fall short of the bytes that moved.

The action backend is injected (``ActionBackend``): the ``damon_agent.node.actions``
module satisfies it as it is. This layer cannot import ``node`` (the two are independent
siblings in the import contracts), so the runtime passes it in, and tests can pass a
recording fake (``userspace_fake``).

A process that exits is not an error anywhere: no ranges, no accesses, 0 bytes applied
(or what was done before it exited). Errors: ``userspace_errors`` (tree drawn there);
the backend's own errors pass through.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from damon_agent.core import clock as core_clock
from damon_agent.core import interfaces
from damon_agent.core.regions import Int64Array
from damon_agent.ops import userspace_access as access
from damon_agent.ops import userspace_errors as errors
from damon_agent.ops import userspace_procfs as procfs

SUPPORTED_ACTIONS: Final = ("pageout", "cold", "migrate_hot", "migrate_cold", "stat")
MIGRATION_ACTIONS: Final = frozenset({"migrate_hot", "migrate_cold"})
# Migration copies every page across the memory interconnect; 256 MiB/s keeps a
# tiering scheme's work to a few percent of a CXL link while still moving a GiB of
# hot memory in seconds.
DEFAULT_MIGRATE_BANDWIDTH: Final = 256 << 20
PAGE_SIZE: Final = mmap.PAGESIZE


class ActionOutcome(Protocol):
    """What the backend reports for one action (``node.actions.ActionResult`` fits)."""

    @property
    def applied_bytes(self) -> int: ...

    @property
    def failed_pages(self) -> Mapping[str, int]: ...

    @property
    def exited(self) -> bool: ...


class ActionBackend(Protocol):
    """The userspace actions: the ``damon_agent.node.actions`` module satisfies this."""

    def pageout(
        self,
        pid: int,
        ranges: Sequence[tuple[int, int]],
        *,
        bandwidth_bytes_per_s: int | None = ...,
        clock: interfaces.Clock | None = ...,
    ) -> ActionOutcome: ...

    def cold(
        self,
        pid: int,
        ranges: Sequence[tuple[int, int]],
        *,
        bandwidth_bytes_per_s: int | None = ...,
        clock: interfaces.Clock | None = ...,
    ) -> ActionOutcome: ...

    def migrate(
        self,
        pid: int,
        ranges: Sequence[tuple[int, int]],
        target_node: int,
        *,
        bandwidth_bytes_per_s: int | None = ...,
        clock: interfaces.Clock | None = ...,
        proc_root: str | Path = ...,
    ) -> ActionOutcome: ...


@dataclass
class UserspaceCounters:
    """What the operations did since they were built (for stats and status)."""

    access_prepares: int = 0
    access_checks: int = 0
    applied_bytes: dict[str, int] = field(default_factory=dict)  # by action
    failed_pages: dict[str, int] = field(default_factory=dict)  # by errno name
    exited_targets: int = 0  # actions that found their process gone


class UserspaceOperations:
    """``core.interfaces.ActionOperations`` over real processes (target id = pid)."""

    def __init__(
        self,
        access_check: access.AccessCheck,
        actions: ActionBackend,
        *,
        proc_root: Path = Path("/proc"),
        clock: interfaces.Clock | None = None,
        migrate_bandwidth_bytes_per_s: int | None = DEFAULT_MIGRATE_BANDWIDTH,
        advise_bandwidth_bytes_per_s: int | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        for name, value in (
            ("migrate_bandwidth_bytes_per_s", migrate_bandwidth_bytes_per_s),
            ("advise_bandwidth_bytes_per_s", advise_bandwidth_bytes_per_s),
        ):
            if value is not None and value <= 0:
                raise errors.InvalidRequestError(name, f"{value} must be positive (None: no limit)")
        self.access_check = access_check
        self.actions = actions
        self.proc_root = Path(proc_root)
        self.clock: interfaces.Clock = clock or core_clock.WallClock()
        self.migrate_bandwidth = migrate_bandwidth_bytes_per_s
        self.advise_bandwidth = advise_bandwidth_bytes_per_s
        self.page_size = page_size
        self.counters = UserspaceCounters()

    # -- Operations ---------------------------------------------------------------------

    def target_ranges(self, target_id: int) -> list[tuple[int, int]]:
        pid = _pid(target_id)
        return [(m.start, m.end) for m in procfs.read_maps(pid, self.proc_root)]

    def prepare_access_checks(self, target_id: int, addrs: Int64Array) -> None:
        self.access_check.prepare(_pid(target_id), addrs)
        self.counters.access_prepares += 1

    def check_accesses(self, target_id: int, addrs: Int64Array) -> NDArray[np.bool_]:
        accessed = self.access_check.check(_pid(target_id), addrs)
        self.counters.access_checks += int(accessed.size)
        return accessed

    # -- ActionOperations ---------------------------------------------------------------

    def apply_action(
        self, target_id: int, start: int, end: int, action: str, target_nid: int | None
    ) -> int:
        pid = _pid(target_id)
        if action not in SUPPORTED_ACTIONS:
            raise errors.InvalidRequestError(
                "action", f"{action!r} is not one of {', '.join(SUPPORTED_ACTIONS)}"
            )
        if start < 0 or end <= start:
            raise errors.InvalidRequestError(
                "start/end", f"[{start:#x}, {end:#x}) is empty or negative"
            )
        destination = _destination(action, target_nid)
        if action == "stat":
            return 0
        ranges = self.actionable_ranges(pid, start, end)
        if not ranges:
            return 0
        if destination is None:
            advise = self.actions.pageout if action == "pageout" else self.actions.cold
            outcome = advise(
                pid, ranges, bandwidth_bytes_per_s=self.advise_bandwidth, clock=self.clock
            )
        else:
            outcome = self.actions.migrate(
                pid,
                ranges,
                destination,
                bandwidth_bytes_per_s=self.migrate_bandwidth,
                clock=self.clock,
                proc_root=self.proc_root,
            )
        return self._account(action, outcome)

    # -- helpers ------------------------------------------------------------------------

    def actionable_ranges(self, pid: int, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) inside VMAs that can hold pages, page-aligned."""
        page = self.page_size
        pieces: list[tuple[int, int]] = []
        for mapping in procfs.read_maps(pid, self.proc_root):
            if mapping.end <= start or mapping.start >= end or not mapping.actionable:
                continue
            low = max(start, mapping.start) // page * page
            high = -(-min(end, mapping.end) // page) * page
            if pieces and pieces[-1][1] >= low:
                pieces[-1] = (pieces[-1][0], max(pieces[-1][1], high))
            elif high > low:
                pieces.append((low, high))
        return pieces

    def _account(self, action: str, outcome: ActionOutcome) -> int:
        applied = int(outcome.applied_bytes)
        counters = self.counters
        counters.applied_bytes[action] = counters.applied_bytes.get(action, 0) + applied
        for name, count in outcome.failed_pages.items():
            counters.failed_pages[name] = counters.failed_pages.get(name, 0) + count
        if outcome.exited:
            counters.exited_targets += 1
        return applied


def _destination(action: str, target_nid: int | None) -> int | None:
    """The NUMA node a migration goes to; None for the other actions."""
    if action not in MIGRATION_ACTIONS:
        return None
    if target_nid is None or target_nid < 0:
        raise errors.InvalidRequestError(
            "target_nid", f"{action} needs a NUMA node id >= 0, got {target_nid}"
        )
    return target_nid


def _pid(target_id: int) -> int:
    if target_id <= 0:
        raise errors.InvalidRequestError(
            "target_id", f"{target_id} is not a process id (target ids are pids, > 0)"
        )
    return target_id


def build(
    actions: ActionBackend,
    *,
    proc_root: Path = Path("/proc"),
    sys_root: Path = Path("/sys"),
    prefer: str | None = None,
    clock: interfaces.Clock | None = None,
    migrate_bandwidth_bytes_per_s: int | None = DEFAULT_MIGRATE_BANDWIDTH,
    advise_bandwidth_bytes_per_s: int | None = None,
) -> UserspaceOperations:
    """Probe the kernel's access-check primitives and build the operations on the best.

    Raises ``NoAccessCheckError`` (naming each primitive and why it is missing) when the
    kernel has none, or not the one ``prefer`` insists on.
    """
    support = access.probe(Path(proc_root), Path(sys_root))
    check = access.select(
        support, proc_root=Path(proc_root), sys_root=Path(sys_root), prefer=prefer
    )
    return UserspaceOperations(
        check,
        actions,
        proc_root=Path(proc_root),
        clock=clock,
        migrate_bandwidth_bytes_per_s=migrate_bandwidth_bytes_per_s,
        advise_bandwidth_bytes_per_s=advise_bandwidth_bytes_per_s,
    )
