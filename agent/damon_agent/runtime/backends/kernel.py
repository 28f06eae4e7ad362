"""The kernel's DAMON as a backend: a plan's contexts onto kdamonds, through sysfs.

``KernelBackend`` hands the plan's contexts to ``ops.kernel.damon.KernelDamon`` as
``KdamondContext``s, in the plan's canonical integers (``core.attrs.MonitoringAttrs``,
``schemes.model.Scheme``). The planner already chose each context's operations set and
wrote the filters that keep a scheme to its pods, for this kernel (allow filters or not):
the layer below carries the plan out as it is and decides nothing. A planned scheme that runs
as several kernel schemes (per-memcg copies on kernels without allow filters) passes each
copy under its one key; the kernel side sums their counters back.

``kernel_capabilities`` tells the planner what the kernel offers: whether it has allow
filters and, when it has not, which filter types each operations set applies; whether
it migrates to several nodes at once (``dests``); and the node's NUMA layout (tiers,
physical spans, node distances) that tier migrations are placed by.

When the contexts are those that run (same keys in the same order: equal monitoring),
every kdamond is committed online (same threads, monitoring results kept); otherwise the
kdamonds restart, since the kernel resizes its kdamond list only when all are off. An
unchanged plan is not re-applied. ``keep_record`` writes the record of the kdamonds the
agent made (``ops.kernel.ownership``) again when its state directory was deleted under
it. When someone else holds the node's DAMON (a DAMON module, or kdamonds another tool
made: ``ops.kernel.holders``), ``apply`` fails with an ``ApplyError`` of reason
``DamonHeld`` naming the holder and what frees it; ``holders`` reads who holds it now,
for the node's status, and ``context_snapshot`` serves one context's regions
(DAMON_STAT's figures).

``tuning`` reads the quotas the kernel tuned (``KernelDamon.tuning``); a goal's current
value is known only where the agent feeds it (``user_input``, which pod PSI goals run
as), since the kernel shows none of its own. Snapshots are taken only when someone asks
(``/v1/snapshot``, DAMON_STAT's figures), so ``snapshot_ages`` is the time since the
last one was taken of each context; with the tracefs source the kdamond traces its
regions only while someone keeps asking (``KernelDamon.trace_idle_s``), so an agent
nobody reads snapshots from costs its kdamond no trace events either.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from damon_agent.api import resources
from damon_agent.core import clock as clock_mod
from damon_agent.core import snapshots
from damon_agent.core.interfaces import Clock
from damon_agent.node import errors as node_errors
from damon_agent.node import numa
from damon_agent.ops.kernel import capabilities as kernel_caps
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import errors as kernel_errors
from damon_agent.ops.kernel import holders as kernel_holders
from damon_agent.ops.kernel import iomem
from damon_agent.runtime import backend, errors, observing, planning, wire
from damon_agent.schemes.stats import SchemeCounters

log = logging.getLogger(__name__)


def kernel_capabilities(
    report: kernel_caps.CapabilityReport,
    tiers: Mapping[str, tuple[int, ...]],
    node_spans: Mapping[int, tuple[int, int]] | None = None,
    node_distances: Mapping[int, Mapping[int, int]] | None = None,
) -> planning.Capabilities:
    operations = frozenset(o for o in report.operations if o in ("vaddr", "paddr"))
    allow_filters = report.has("filter_allow")
    carried_out = kernel_caps.OPS_ACTIONS if allow_filters else kernel_caps.REJECT_ONLY_OPS_ACTIONS
    actions = {
        ops: frozenset(report.actions) & carried_out.get(ops, frozenset())
        for ops in report.operations
        if ops in ("vaddr", "paddr")
    }
    filter_types = frozenset(report.filter_types)
    by_ops: dict[str, frozenset[str]] = {}
    if not allow_filters:
        # Reject-only kernels (before 6.14): list per operations set only the filter types
        # it really applies (6.12's vaddr applies only the core's addr and target).
        by_ops = {
            ops: filter_types & kernel_caps.REJECT_ONLY_OPS_FILTER_TYPES.get(ops, frozenset())
            for ops in operations
        }
        filter_types = frozenset().union(*by_ops.values())
    return planning.Capabilities(
        operations=operations,
        actions=actions,
        filter_types=filter_types,
        goal_metrics=frozenset(report.goal_metrics),
        intervals_goal=report.has("intervals_goal"),
        tiers=dict(tiers),
        node_spans=dict(node_spans or {}),
        node_distances=dict(node_distances or {}),
        migrate_dests=report.has("dests"),
        allow_filters=allow_filters,
        filter_types_by_ops=by_ops,
        counts_filter_passed=report.has("sz_ops_filter_passed"),
    )


class KernelBackend:
    """The node kernel's DAMON (``ops.kernel``) as a ``backend.Backend``."""

    def __init__(
        self,
        kernel: kernel_damon.KernelDamon,
        tiers: Mapping[str, tuple[int, ...]],
        node_spans: Mapping[int, tuple[int, int]] | None = None,
        *,
        node_distances: Mapping[int, Mapping[int, int]] | None = None,
        adopt: bool = False,
    ) -> None:
        self._kernel = kernel
        self._clock = clock_mod.WallClock()
        self._lock = threading.Lock()
        self._plan: planning.Plan | None = None
        # Context key -> clock time (us) of its latest snapshot.
        self._snapshot_at: dict[str, int] = {}
        try:
            if adopt:
                # A predecessor handed its kdamonds over, or died: the running ones go on
                # (same threads, monitoring results kept) and the first plan commits into
                # them where it asks for as many kdamonds (``KernelDamon.recover``).
                found = kernel.recover()
                if found.adopted:
                    log.info(
                        "adopted %d running kdamond(s) of a previous agent: pid %s",
                        len(found.adopted),
                        ", ".join(str(h.pid) for h in found.adopted),
                    )
            else:
                # A previous agent that crashed may have left kdamonds: clean what is ours.
                kernel.driver.recover(adopt=False)
            report = kernel.capabilities
        except kernel_errors.KernelDamonError as err:
            raise errors.BackendError(f"kernel DAMON: {err}") from err
        self._info = backend.BackendInfo(
            backend="kernel",
            capabilities=kernel_capabilities(report, tiers, node_spans, node_distances),
            kernel_release=report.kernel_release,
        )

    @classmethod
    def on_host(
        cls,
        state_dir: Path,
        *,
        sys_root: Path,
        proc_root: Path,
        tiers: Mapping[str, tuple[int, ...]],
        node_distances: Mapping[int, Mapping[int, int]] | None = None,
        snapshot_source: kernel_damon.SnapshotSource = "sysfs",
        adopt: bool = False,
    ) -> KernelBackend:
        kernel = kernel_damon.KernelDamon.on_host(
            state_dir,
            admin=sys_root / "kernel" / "mm" / "damon" / "admin",
            proc_root=proc_root,
            module_root=sys_root / "module",
            snapshot_source=snapshot_source,
            memcg_exists=observing.MemcgChecker(observing.NodeRoots(proc_root, sys_root)),
        )
        try:
            node_spans = numa.read_node_spans(proc_root)
        except node_errors.NodeError as err:
            # Only a refinement (migrations skip memory already where they go): go on.
            log.warning("NUMA nodes' physical spans unknown: %s", err)
            node_spans = {}
        return cls(kernel, tiers, node_spans, node_distances=node_distances, adopt=adopt)

    @property
    def info(self) -> backend.BackendInfo:
        return self._info

    @property
    def clock(self) -> Clock:
        return self._clock

    def apply(self, plan: planning.Plan) -> None:
        with self._lock:
            if plan == self._plan:
                return
            contexts = [
                kernel_damon.KdamondContext(
                    key=context.key,
                    monitoring=context.monitoring,
                    # A scheme split into per-memcg copies (reject-only kernels) passes
                    # every copy under its one key: KernelDamon sums their counters.
                    schemes=tuple(
                        kernel_damon.KdamondScheme(key=s.key, scheme=one)
                        for s in context.schemes
                        for one in s.runs_as()
                    ),
                    operations=context.operations,
                    pids=tuple(t.pid for t in context.targets if t.pid is not None),
                    ranges=self._ram_in(context.ranges),
                )
                for context in plan.contexts
            ]
            try:
                self._kernel.apply(contexts)
            except kernel_errors.DamonHeldError as err:
                self._plan = None
                raise errors.ApplyError(str(err), reason=resources.REASON_DAMON_HELD) from err
            except kernel_errors.KernelDamonError as err:
                self._plan = None
                raise errors.ApplyError(f"{type(err).__name__}: {err}") from err
            self._plan = plan

    def _ram_in(self, ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        """The System RAM within a context's ranges (a node's span includes holes: reserved
        and device memory). Empty ranges stay empty: all of the RAM."""
        if not ranges:
            return ()
        try:
            ram = iomem.ram_ranges(self._kernel.proc_root)
        except kernel_errors.KernelDamonError as err:
            raise errors.ApplyError(f"reading System RAM ranges: {err}") from err
        within = iomem.within_ram(ranges, ram)
        if not within:
            raise errors.ApplyError(f"no System RAM in the ranges {ranges} a context monitors")
        return within

    def holders(self) -> kernel_holders.Holders:
        """Who else holds the node's DAMON now (only reads)."""
        with self._lock:
            try:
                return self._kernel.find_holders()
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(f"reading who holds DAMON: {err}") from err

    def keep_record(self) -> bool:
        """Write the record of the kdamonds this agent made again if it vanished (its
        state directory deleted under it); True when it did. ``BackendError`` naming the
        file and why when it cannot (``ownership``: the agent still knows them)."""
        with self._lock:
            try:
                return self._kernel.driver.ownership.restore()
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(str(err)) from err

    @property
    def record_path(self) -> Path:
        """The file recording which kdamonds this agent made."""
        return self._kernel.driver.ownership.path

    def context_snapshot(self, key: str) -> snapshots.Snapshot | None:
        """The current regions of one running context, by ``planning.Context.key``."""
        with self._lock:
            try:
                snap = self._kernel.snapshot_of(key)
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(f"reading snapshot of {key}: {err}") from err
            if snap is not None:
                self._snapshot_at[key] = snap.time_us
            return snap

    def feed_goals(self, inputs: Mapping[str, Mapping[int, int]]) -> None:
        with self._lock:
            try:
                self._kernel.feed_goals(inputs)
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(f"feeding quota goals: {err}") from err

    def follow_tuned_intervals(self) -> list[str]:
        with self._lock:
            if self._plan is None:
                return []
            try:
                return self._kernel.follow_tuned_intervals()
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(f"following the tuned intervals: {err}") from err

    def end_warm_ups(self) -> list[str]:
        with self._lock:
            if self._plan is None:
                return []
            try:
                return self._kernel.end_warm_ups()
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(f"ending the quotas' warm-up: {err}") from err

    def stats(self) -> dict[str, SchemeCounters]:
        with self._lock:
            try:
                raw = self._kernel.stats()
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(f"reading scheme stats: {err}") from err
        return raw

    def snapshots(self) -> list[wire.SnapshotEntry]:
        with self._lock:
            plan = self._plan
            if plan is None:
                return []
            try:
                by_context = self._kernel.snapshots()
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(f"reading snapshots: {err}") from err
            for key, snap in by_context.items():
                self._snapshot_at[key] = snap.time_us
        return backend.entries(plan, by_context)

    def tuning(self) -> dict[str, backend.SchemeTuning]:
        with self._lock:
            plan = self._plan
            if plan is None:
                return {}
            try:
                raw = self._kernel.tuning()
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(f"reading quotas: {err}") from err
        result = {}
        for scheme in plan.schemes():
            found = raw.get(scheme.key)
            quota = scheme.scheme.quota
            if found is None or quota is None:
                continue
            goals = tuple(
                backend.GoalTuning(
                    metric=backend.goal_metric(scheme, index),
                    target=target,
                    # The kernel shows only what the agent fed (user_input goals).
                    current=current if goal.metric == "user_input" else None,
                )
                for index, (goal, (target, current)) in enumerate(
                    zip(quota.goals, found.goals, strict=False)
                )
            )
            result[scheme.key] = backend.SchemeTuning(found.effective_bytes, goals)
        return result

    def snapshot_ages(self) -> dict[str, float]:
        with self._lock:
            plan = self._plan
            now = self._kernel.clock.now_us()  # the clock snapshots are stamped with
            if plan is None:
                return {}
            return {
                c.key: max(0, now - self._snapshot_at[c.key]) / 1e6
                for c in plan.contexts
                if c.key in self._snapshot_at
            }

    def failures(self) -> list[str]:
        # A kdamond that stops on its own is seen by the next apply (it restarts them).
        return []

    def kdamond_pids(self) -> dict[str, int]:
        with self._lock:
            return self._kernel.kdamond_pids()

    def paddr_ranges(self) -> dict[str, list[tuple[int, int]]]:
        """The physical ranges each running paddr context monitors, by context key."""
        with self._lock:
            return self._kernel.paddr_ranges()

    def stop(self) -> None:
        with self._lock:
            self._plan = None
            self._snapshot_at.clear()
            try:
                self._kernel.stop()
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(f"stopping kdamonds: {err}") from err

    def release(self) -> bool:
        with self._lock:
            self._plan = None
            self._snapshot_at.clear()
            try:
                return self._kernel.release()
            except kernel_errors.KernelDamonError as err:
                raise errors.BackendError(f"releasing kdamonds: {err}") from err
