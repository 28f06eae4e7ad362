"""The one interface between a plan and whatever carries it out on a node.

``Backend`` is what both ``damon-agent run`` (``standalone``) and ``damon-agent daemon``
drive, whatever runs underneath (``backends``): the kernel's DAMON through sysfs, the
project's own monitor and DAMOS engine over real processes (userspace), or over a
simulated workload (sim). It applies a whole ``planning.Plan`` online, feeds quota-goal
inputs, reads per-scheme counters and the latest snapshots, and stops. Every method is
synchronous and may block on I/O, so the daemon calls them from a worker thread, one at
a time (each backend also serialises its own methods with a lock, since ``/metrics``
scrapes read stats from another thread).

``clock`` is the time the backend's monitoring runs on: the wall clock, except for the
sim in ``run``, whose virtual clock moves only when the caller sleeps on it (sleeping
steps the monitors), so a run of 20 s takes a second of CPU and a seed reproduces it.

Schemes are named by ``planning.PlannedScheme.key`` everywhere, so counters and snapshots
join with the plan and the DamonNode status without kdamond or scheme indexes.

``tuning`` says where each quota stands now: the effective size quota of the current
charge window (what the goals tuned it to) and each goal's current value against its
target. Goals are named by the metric the user wrote: a ``pod_mem_psi_us`` goal, which
runs as ``user_input`` (``planning``), is reported as ``pod_mem_psi_us`` with the value the
agent fed. ``snapshot_ages`` says how old the latest snapshot of each context is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from damon_agent.core import snapshots
from damon_agent.core.interfaces import Clock
from damon_agent.runtime import planning, wire
from damon_agent.schemes.stats import SchemeCounters

BackendName = Literal["kernel", "userspace", "sim"]


@dataclass(frozen=True)
class GoalTuning:
    """One quota goal now: its metric (as the user wrote it), target and current value."""

    metric: str
    target: int
    # None where the backend cannot see it: the kernel computes its own metrics
    # (some_mem_psi_us, node_mem_used_bp, ...) and does not show them in sysfs.
    current: int | None


@dataclass(frozen=True)
class SchemeTuning:
    """Where a planned scheme's quota stands in the current charge window."""

    # Bytes the scheme may act on in the window; None: no size limit (no quota, tuned
    # to the top, or unknown to a kernel before 6.9).
    effective_quota_bytes: int | None
    goals: tuple[GoalTuning, ...] = ()


def goal_metric(scheme: planning.PlannedScheme, index: int) -> str:
    """The metric of goal ``index`` as the user wrote it (pod PSI goals run as user_input)."""
    if index in scheme.psi_goal_indexes:
        return planning.POD_PSI_METRIC
    quota = scheme.scheme.quota
    return quota.goals[index].metric if quota is not None else ""


@dataclass(frozen=True)
class BackendInfo:
    """What the node's backend is and can do, for planning and for the DamonNode status."""

    backend: BackendName
    capabilities: planning.Capabilities
    kernel_release: str = ""
    # Why this backend and not the kernel's DAMON (``auto`` fell back), for the status.
    fallback_reason: str = ""


class Backend(Protocol):
    @property
    def info(self) -> BackendInfo: ...

    @property
    def clock(self) -> Clock: ...

    def apply(self, plan: planning.Plan) -> None:
        """Make the running configuration the plan's, online where monitoring is unchanged.

        Raises ``errors.ApplyError`` (the previous configuration keeps running).
        """
        ...

    def feed_goals(self, inputs: Mapping[str, Mapping[int, int]]) -> None:
        """Set ``current`` of user_input goals: scheme key -> goal index -> value."""
        ...

    def follow_tuned_intervals(self) -> list[str]:
        """Keep scheme ages meaning time while monitoring intervals are auto-tuned.

        Called every few seconds; returns the keys of the contexts it changed. Only the
        kernel's DAMON needs it: it counts ages in aggregation intervals, which tuning
        stretches (the in-process engine compares ages in time already).
        """
        ...

    def end_warm_ups(self) -> list[str]:
        """End the goal-tuned quotas' warm-up of the contexts whose warm-up is over.

        Called about once a second; returns the keys of the contexts it changed. Only the
        kernel's DAMON needs it: its tuner grows a quota from one byte, a doubling per
        quota reset, so a kdamond starts with shorter resets (``ops.kernel.warm_up``).
        """
        ...

    def stats(self) -> dict[str, SchemeCounters]:
        """Cumulative counters by planned scheme key (fresh on each call)."""
        ...

    def snapshots(self) -> list[wire.SnapshotEntry]:
        """The latest snapshot of each running scheme."""
        ...

    def tuning(self) -> dict[str, SchemeTuning]:
        """Quota state by planned scheme key, for the schemes that have a quota."""
        ...

    def snapshot_ages(self) -> dict[str, float]:
        """Seconds since each context's latest snapshot, by context key (absent: none yet)."""
        ...

    def failures(self) -> list[str]:
        """Contexts that stopped on an error since they were applied, each named."""
        ...

    def stop(self) -> None:
        """Turn off everything this backend started; idempotent."""
        ...

    def release(self) -> bool:
        """Let go without turning anything off, for a successor agent to adopt.

        True when something was left running (the kernel's kdamonds outlive the agent);
        False when this backend's work lives in the agent's process, which then stopped it.
        """
        ...


def entries(
    plan: planning.Plan,
    by_context: Mapping[str, snapshots.Snapshot],
    target_names: Mapping[str, Mapping[int, str]] | None = None,
) -> list[wire.SnapshotEntry]:
    """One snapshot entry per planned scheme, from the snapshots of its context."""
    result = []
    for context in plan.contexts:
        snap = by_context.get(context.key)
        if snap is None:
            continue
        target_pods = {index: t.pod for index, t in enumerate(context.targets) if t.pod is not None}
        names = {
            index: f"pid {t.pid}" + (f" ({t.pod})" if t.pod else "")
            for index, t in enumerate(context.targets)
            if t.pid is not None
        }
        names.update((target_names or {}).get(context.key, {}))
        # A context with no scheme (monitoring only: DAMON_STAT's stand-in, `run` without
        # schemes) still has a snapshot; it is served under the context's own key.
        keys = [s.key for s in context.schemes] or [context.key]
        pods = {s.key: s.pods for s in context.schemes}
        for key in keys:
            result.append(
                wire.SnapshotEntry(
                    scheme=key,
                    operations=context.operations,
                    pods=pods.get(key, ()),
                    snapshot=snap,
                    target_pods=target_pods,
                    target_names=names,
                )
            )
    return result
