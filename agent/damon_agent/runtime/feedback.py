"""Per-pod memory PSI fed into quota goals, for schemes that ask for it.

No kernel has a per-pod PSI goal metric, so the planner turns a ``pod_mem_psi_us`` goal
into a ``user_input`` goal with the same target, and this module supplies its current
value: the memory ``some`` stall of the scheme's pods, in microseconds per quota reset
interval (the unit the goal's target is written in), taking the worst pod, since the
scheme must back off as soon as any of its pods suffers. The value is the growth of each
cgroup's cumulative stall total since the previous reading, scaled to one reset interval.

``PsiFeedback.inputs`` is pure given its reader (injected: the daemon reads cgroup
``memory.pressure`` files; tests pass a dict). The reader raises ``node.errors.NodeError``
(or ``OSError``) for what it cannot read. A cgroup whose pressure cannot be read
(cgroup v1 has no per-cgroup PSI) contributes nothing and is reported, once per scheme,
as a ``planning.Problem`` warning for the status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from damon_agent.node import errors as node_errors
from damon_agent.runtime import planning

TotalReader = Callable[[str], int]


class PsiFeedback:
    def __init__(self, read_total_us: TotalReader) -> None:
        self._read = read_total_us
        # cgroup path -> (time_us, cumulative stall us) of the previous reading
        self._last: dict[str, tuple[int, int]] = {}

    def inputs(
        self, schemes: Iterable[planning.PlannedScheme], now_us: int
    ) -> tuple[dict[str, dict[int, int]], list[planning.Problem]]:
        """scheme key -> goal index -> current value; and what could not be measured."""
        values: dict[str, dict[int, int]] = {}
        problems: list[planning.Problem] = []
        readings: dict[str, int | None] = {}
        for scheme in schemes:
            if not scheme.psi_goal_indexes:
                continue
            quota = scheme.scheme.quota
            reset_us = quota.reset_interval_us if quota is not None else 1_000_000
            worst = 0
            failed: list[str] = []
            for cgroup in scheme.psi_cgroups:
                if cgroup not in readings:
                    readings[cgroup] = self._rate(cgroup, now_us, reset_us)
                rate = readings[cgroup]
                if rate is None:
                    failed.append(cgroup)
                else:
                    worst = max(worst, rate)
            if failed:
                problems.append(
                    planning.Problem(
                        scheme.source,
                        "warning",
                        "PodPressureUnavailable",
                        f"scheme {scheme.name}: no memory PSI for {', '.join(failed)} "
                        "(per-cgroup PSI needs cgroup v2); its pod PSI goal sees 0",
                    )
                )
            values[scheme.key] = dict.fromkeys(scheme.psi_goal_indexes, worst)
        return values, problems

    def _rate(self, cgroup: str, now_us: int, reset_us: int) -> int | None:
        try:
            total = self._read(cgroup)
        except (node_errors.NodeError, OSError):
            self._last.pop(cgroup, None)
            return None
        previous = self._last.get(cgroup)
        self._last[cgroup] = (now_us, total)
        if previous is None or now_us <= previous[0]:
            return 0
        grown = max(0, total - previous[1])
        return grown * reset_us // (now_us - previous[0])
