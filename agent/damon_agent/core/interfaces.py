"""The small interfaces the core depends on, injected by the layers above.

- ``Clock``: time in microseconds, and sleeping (virtual time for ``sim``).
- ``Operations``: what an operations set (sim, userspace vaddr, ...) gives the core:
  the current address layout of each target and access checks of sampled addresses.
- ``ActionOperations``: operations that can also apply DAMOS actions to an address range.
- ``SchemesHook``: what the monitor calls into for DAMOS, every sampling interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from damon_agent.core.regions import Int64Array

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from damon_agent.core.monitor import Monitor


class Clock(Protocol):
    def now_us(self) -> int: ...

    def sleep_us(self, duration_us: int) -> None: ...


class Operations(Protocol):
    def target_ranges(self, target_id: int) -> list[tuple[int, int]]:
        """Current mapped address ranges of the target, sorted, [start, end)."""
        ...

    def prepare_access_checks(self, target_id: int, addrs: Int64Array) -> None:
        """Clear the accessed state of the pages holding ``addrs`` (one per region)."""
        ...

    def check_accesses(self, target_id: int, addrs: Int64Array) -> NDArray[np.bool_]:
        """Whether each page holding ``addrs`` was accessed since it was prepared."""
        ...


class ActionOperations(Operations, Protocol):
    def apply_action(
        self, target_id: int, start: int, end: int, action: str, target_nid: int | None
    ) -> int:
        """Apply a DAMOS action to [start, end) of the target; return the bytes applied."""
        ...


class SchemesHook(Protocol):
    def wants_monitoring(self, now_us: int) -> bool:
        """False when watermarks turned every scheme off: the monitor then sleeps."""
        ...

    def apply(self, monitor: Monitor, now_us: int) -> None:
        """Called every sampling interval, after the aggregation's merge step, before reset."""
        ...
