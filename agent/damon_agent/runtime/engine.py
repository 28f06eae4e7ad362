"""The one small interface the agent's loop drives, whatever backend runs underneath.

``Engine`` is what ``applying`` adapts each backend to (the kernel's DAMON through sysfs,
or the in-process sim/userspace engine): apply a whole ``planning.Plan`` online, feed
quota-goal inputs, read per-scheme counters and the latest snapshots, stop. Every method
is synchronous and may block on I/O, so the daemon calls them from a worker thread, one at
a time (each adapter also serialises its own methods with a lock, since ``/metrics``
scrapes read stats from another thread).

Schemes are named by ``planning.PlannedScheme.key`` everywhere, so counters and snapshots
can be joined with the plan and the DamonNode status without knowing kdamond or scheme
indexes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from damon_agent.runtime import planning, wire


@dataclass(frozen=True)
class SchemeCounters:
    """A scheme's cumulative DAMOS stats (the kernel's ``stats/`` files)."""

    nr_tried: int = 0
    sz_tried: int = 0
    nr_applied: int = 0
    sz_applied: int = 0
    qt_exceeds: int = 0


@dataclass(frozen=True)
class BackendInfo:
    """What the node's backend is and can do, for planning and for the DamonNode status."""

    backend: str  # "kernel" | "sim" | "userspace"
    capabilities: planning.Capabilities
    kernel_release: str = ""


class Engine(Protocol):
    @property
    def info(self) -> BackendInfo: ...

    def apply(self, plan: planning.Plan) -> None:
        """Make the running configuration the plan's, online where monitoring is unchanged.

        Raises ``errors.ApplyError`` (the previous configuration keeps running).
        """
        ...

    def feed_goals(self, inputs: Mapping[str, Mapping[int, int]]) -> None:
        """Set ``current`` of user_input goals: scheme key -> goal index -> value."""
        ...

    def stats(self) -> dict[str, SchemeCounters]:
        """Cumulative counters by planned scheme key (fresh on each call)."""
        ...

    def snapshots(self) -> list[wire.SnapshotEntry]:
        """The latest snapshot of each running scheme."""
        ...

    def stop(self) -> None:
        """Turn off everything this engine started; idempotent."""
        ...
