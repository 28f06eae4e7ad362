"""In-package fakes of the userspace operations' two injected parts, for tests and dry runs.

- ``FakeAccessCheck``: answers access checks from a set of "accessed" page ranges per
  pid and records every prepare and check, so tests can assert that prepare happens once
  per target per sampling interval.
- ``FakeActions``: an ``ActionBackend`` that records each call and applies nothing;
  ``exited_pids`` makes chosen processes look gone (0 bytes, ``exited``).

Real processes on this machine are exercised by the real primitives; these fakes only
serve pure logic and fault injection beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from damon_agent.core import interfaces
from damon_agent.core.regions import Int64Array


class FakeAccessCheck:
    """Pages in ``accessed[pid]`` ([start, end) ranges) read as accessed, others not."""

    def __init__(
        self,
        accessed: Mapping[int, Sequence[tuple[int, int]]] | None = None,
        *,
        name: str = "fake",
        sees_reads: bool = True,
    ) -> None:
        self.accessed = {pid: list(spans) for pid, spans in (accessed or {}).items()}
        self.name = name
        self.sees_reads = sees_reads
        self.prepared: list[tuple[int, int]] = []  # (pid, number of addresses)
        self.checked: list[tuple[int, int]] = []

    def prepare(self, pid: int, addrs: Int64Array) -> None:
        self.prepared.append((pid, int(addrs.size)))

    def check(self, pid: int, addrs: Int64Array) -> NDArray[np.bool_]:
        self.checked.append((pid, int(addrs.size)))
        hit = np.zeros(addrs.size, dtype=bool)
        for start, end in self.accessed.get(pid, ()):
            hit |= (addrs >= start) & (addrs < end)
        return hit


@dataclass(frozen=True)
class FakeOutcome:
    applied_bytes: int
    failed_pages: Mapping[str, int] = field(default_factory=dict)
    exited: bool = False


@dataclass(frozen=True)
class ActionCall:
    action: str  # "pageout", "cold" or "migrate"
    pid: int
    ranges: tuple[tuple[int, int], ...]
    target_node: int | None
    bandwidth_bytes_per_s: int | None


class FakeActions:
    """Records calls; reports every requested byte applied unless the pid is 'gone'."""

    def __init__(self, exited_pids: Sequence[int] = ()) -> None:
        self.exited_pids = set(exited_pids)
        self.calls: list[ActionCall] = []

    def _outcome(
        self,
        action: str,
        pid: int,
        ranges: Sequence[tuple[int, int]],
        target_node: int | None,
        bandwidth: int | None,
    ) -> FakeOutcome:
        self.calls.append(ActionCall(action, pid, tuple(ranges), target_node, bandwidth))
        if pid in self.exited_pids:
            return FakeOutcome(applied_bytes=0, exited=True)
        return FakeOutcome(applied_bytes=sum(end - start for start, end in ranges))

    def pageout(
        self,
        pid: int,
        ranges: Sequence[tuple[int, int]],
        *,
        bandwidth_bytes_per_s: int | None = None,
        clock: interfaces.Clock | None = None,
    ) -> FakeOutcome:
        return self._outcome("pageout", pid, ranges, None, bandwidth_bytes_per_s)

    def cold(
        self,
        pid: int,
        ranges: Sequence[tuple[int, int]],
        *,
        bandwidth_bytes_per_s: int | None = None,
        clock: interfaces.Clock | None = None,
    ) -> FakeOutcome:
        return self._outcome("cold", pid, ranges, None, bandwidth_bytes_per_s)

    def migrate(
        self,
        pid: int,
        ranges: Sequence[tuple[int, int]],
        target_node: int,
        *,
        bandwidth_bytes_per_s: int | None = None,
        clock: interfaces.Clock | None = None,
        proc_root: str | Path = "/proc",
    ) -> FakeOutcome:
        return self._outcome("migrate", pid, ranges, target_node, bandwidth_bytes_per_s)
