"""Applying a plan to a backend online, behind ``engine.Engine``: one adapter per backend.

``KernelAdapter`` hands the plan's contexts to ``ops.kernel.engine.KernelEngine`` as
``EngineContext``s (the planner already did pod isolation and chose the operations, so
they are passed explicitly: no second fallback happens below). A planned scheme that
runs as several kernel schemes (per-memcg copies on kernels without allow filters)
passes each of them under its one key; the engine sums their counters back.
``kernel_capabilities`` tells the planner whether the kernel has allow filters and, when
it has not, which filter types each operations set applies. When the contexts are the
same as what runs (same keys in the same order: equal monitoring), the kernel engine
commits every kdamond online: same kdamond threads, monitoring results kept; otherwise
it restarts its kdamonds, since the kernel resizes its kdamond list only when all are off.
An unchanged plan is not re-applied at all. When someone else holds the node's DAMON (a
DAMON module, or kdamonds another tool made: ``ops.kernel.holders``), ``apply`` fails
with an ``ApplyError`` of reason ``DamonHeld`` whose message names the holder and what
frees it; ``holders`` reads who holds it now, for the node's status, and
``context_snapshot`` serves one context's regions (DAMON_STAT's figures).

``SimAdapter`` runs the project's own monitor and DAMOS engine in-process over the
simulated workload, one ``core.monitor.Monitor`` per context, each on its own background
thread. Time: each monitor runs on a virtual ``SimClock`` that a pacing loop advances to
follow the wall clock (it steps the monitor until virtual time catches up with real
elapsed time, then sleeps ~50 ms), so intervals mean what they say to an observer, runs
stay cheap, and a slow step never makes the monitor skip sampling intervals (it only
lags). Changing a context's schemes swaps its ``SchemesEngine`` between two steps (the
monitor, its regions and their ages stay); counters of schemes that persist are carried
over so they stay cumulative. The simulated workload stands in for the node's physical
memory: a sim context has one target per workload target whatever pods it selects, and
filters evaluated per page (memcg, anon, young...) are left out, since simulated memory
has no page attributes (the simulated pods have no cgroups).

Both adapters serialise their methods with a lock: the loop and ``/metrics`` scrapes call
them from different threads.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from damon_agent.api import resources
from damon_agent.core import clock as clock_mod
from damon_agent.core import monitor as monitor_mod
from damon_agent.core import snapshots
from damon_agent.ops import sim, workloads
from damon_agent.ops.kernel import capabilities as kernel_caps
from damon_agent.ops.kernel import engine as kernel_engine
from damon_agent.ops.kernel import errors as kernel_errors
from damon_agent.ops.kernel import holders as kernel_holders
from damon_agent.runtime import engine, errors, planning, wire
from damon_agent.schemes import conversion
from damon_agent.schemes import engine as schemes_engine
from damon_agent.schemes import errors as schemes_errors

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# Kernel


def kernel_capabilities(
    report: kernel_caps.CapabilityReport, tiers: Mapping[str, tuple[int, ...]]
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
        allow_filters=allow_filters,
        filter_types_by_ops=by_ops,
    )


class KernelAdapter:
    """The host kernel's DAMON (``ops.kernel``) as an ``engine.Engine``."""

    def __init__(
        self,
        kernel: kernel_engine.KernelEngine,
        tiers: Mapping[str, tuple[int, ...]],
    ) -> None:
        self._kernel = kernel
        self._lock = threading.Lock()
        self._plan: planning.Plan | None = None
        try:
            # A previous agent that crashed may have left kdamonds: clean what is ours.
            kernel.driver.recover(adopt=False)
            report = kernel.capabilities
        except kernel_errors.KernelDamonError as err:
            raise errors.EngineError(f"kernel DAMON: {err}") from err
        self._info = engine.BackendInfo(
            backend="kernel",
            capabilities=kernel_capabilities(report, tiers),
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
    ) -> KernelAdapter:
        kernel = kernel_engine.KernelEngine.on_host(
            state_dir,
            admin=sys_root / "kernel" / "mm" / "damon" / "admin",
            proc_root=proc_root,
            module_root=sys_root / "module",
        )
        return cls(kernel, tiers)

    @property
    def info(self) -> engine.BackendInfo:
        return self._info

    def apply(self, plan: planning.Plan) -> None:
        with self._lock:
            if plan == self._plan:
                return
            contexts = [
                kernel_engine.EngineContext(
                    key=context.key,
                    monitoring=context.monitoring,
                    # A scheme split into per-memcg copies (reject-only kernels) passes
                    # every copy under its one key: the engine sums their counters.
                    schemes=tuple(
                        kernel_engine.EngineScheme(key=s.key, spec=spec)
                        for s in context.schemes
                        for spec in s.runs_as()
                    ),
                    operations=context.operations,
                    pids=tuple(t.pid for t in context.targets if t.pid is not None),
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

    def holders(self) -> kernel_holders.Holders:
        """Who else holds the node's DAMON now (only reads)."""
        with self._lock:
            try:
                return self._kernel.find_holders()
            except kernel_errors.KernelDamonError as err:
                raise errors.EngineError(f"reading who holds DAMON: {err}") from err

    def context_snapshot(self, key: str) -> snapshots.Snapshot | None:
        """The current regions of one running context, by ``planning.Context.key``."""
        with self._lock:
            try:
                return self._kernel.snapshot_of(key)
            except kernel_errors.KernelDamonError as err:
                raise errors.EngineError(f"reading snapshot of {key}: {err}") from err

    def feed_goals(self, inputs: Mapping[str, Mapping[int, int]]) -> None:
        with self._lock:
            try:
                self._kernel.feed_goals(inputs)
            except kernel_errors.KernelDamonError as err:
                raise errors.EngineError(f"feeding quota goals: {err}") from err

    def stats(self) -> dict[str, engine.SchemeCounters]:
        with self._lock:
            try:
                raw = self._kernel.stats()
            except kernel_errors.KernelDamonError as err:
                raise errors.EngineError(f"reading scheme stats: {err}") from err
        return {
            key: engine.SchemeCounters(
                nr_tried=s.nr_tried,
                sz_tried=s.sz_tried,
                nr_applied=s.nr_applied,
                sz_applied=s.sz_applied,
                qt_exceeds=s.qt_exceeds,
            )
            for key, s in raw.items()
        }

    def snapshots(self) -> list[wire.SnapshotEntry]:
        with self._lock:
            plan = self._plan
            if plan is None:
                return []
            try:
                by_context = self._kernel.snapshots()
            except kernel_errors.KernelDamonError as err:
                raise errors.EngineError(f"reading snapshots: {err}") from err
        return _entries(plan, by_context)

    def kdamond_pids(self) -> dict[str, int]:
        with self._lock:
            return self._kernel.kdamond_pids()

    def stop(self) -> None:
        with self._lock:
            self._plan = None
            try:
                self._kernel.stop()
            except kernel_errors.KernelDamonError as err:
                raise errors.EngineError(f"stopping kdamonds: {err}") from err


def _entries(
    plan: planning.Plan, by_context: Mapping[str, snapshots.Snapshot]
) -> list[wire.SnapshotEntry]:
    entries = []
    for context in plan.contexts:
        snap = by_context.get(context.key)
        if snap is None:
            continue
        target_pods = {index: t.pod for index, t in enumerate(context.targets) if t.pod is not None}
        for scheme in context.schemes:
            entries.append(
                wire.SnapshotEntry(
                    scheme=scheme.key,
                    operations=context.operations,
                    pods=scheme.pods,
                    snapshot=snap,
                    target_pods=target_pods,
                )
            )
    return entries


# ---------------------------------------------------------------------------------------
# Sim

SIM_ACTIONS = frozenset(sim.SUPPORTED_ACTIONS)
SIM_CAPABILITIES = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": SIM_ACTIONS},
    # Accepted so pod schemes plan as on a real node; per-page ones are left out when run.
    filter_types=frozenset({"anon", "memcg", "young", "addr", "target"}),
    goal_metrics=frozenset({"user_input"}),
    intervals_goal=True,
    tiers={"dram": (0,), "cxl": (1,)},
)


class _SimMetrics:
    """Node metrics for the simulated node: plenty of free memory, nothing else measured."""

    def read(self, metric: str, *, nid: int | None = None, path: str | None = None) -> int:
        del nid, path
        if metric == "free_mem_rate":
            return 500
        raise schemes_errors.MetricUnavailableError(f"{metric} is not simulated")


class _SimContext:
    """One monitor over the workload, paced to the wall clock on its own thread."""

    PACE_S = 0.05

    def __init__(self, context: planning.Context, workload: workloads.Workload, seed: int) -> None:
        self.key = context.key
        self.clock = clock_mod.SimClock()
        rng = np.random.default_rng(seed)
        self.ops = sim.SimOperations(workload, clock=self.clock, rng=rng)
        self.monitor = monitor_mod.Monitor(
            conversion.monitoring_attrs(context.monitoring),
            self.ops,
            self.ops.target_ids,
            clock=self.clock,
            rng=rng,
            leave_out_biggest_gaps=False,
        )
        self.lock = threading.Lock()
        self.schemes: list[planning.PlannedScheme] = []
        self.engine: schemes_engine.SchemesEngine | None = None
        self.carried: dict[str, engine.SchemeCounters] = {}
        self.latest: snapshots.Snapshot | None = None
        self.error = ""
        self._stop = threading.Event()
        self.set_schemes(context)
        self._thread = threading.Thread(target=self._run, name=f"sim-{seed}", daemon=True)
        self._thread.start()

    def set_schemes(self, context: planning.Context) -> None:
        models = []
        for planned in context.schemes:
            converted = conversion.scheme(planned.spec)
            kept = tuple(f for f in converted.filters if f.type in ("addr", "target"))
            models.append(dataclasses.replace(converted, name=planned.key, filters=kept))
        hook = schemes_engine.SchemesEngine(models, self.ops, _SimMetrics()) if models else None
        with self.lock:
            self.carried = self._counters_locked()
            self.schemes = list(context.schemes)
            self.engine = hook
            self.monitor.schemes = hook

    def _counters_locked(self) -> dict[str, engine.SchemeCounters]:
        result = dict(self.carried)
        if self.engine is None:
            return result
        for one in self.engine.stats():
            base = self.carried.get(one.name, engine.SchemeCounters())
            result[one.name] = engine.SchemeCounters(
                nr_tried=base.nr_tried + one.nr_tried,
                sz_tried=base.sz_tried + one.sz_tried,
                nr_applied=base.nr_applied + one.nr_applied,
                sz_applied=base.sz_applied + one.sz_applied,
                qt_exceeds=base.qt_exceeds + one.qt_exceeds,
            )
        return result

    def counters(self) -> dict[str, engine.SchemeCounters]:
        with self.lock:
            return self._counters_locked()

    def feed(self, key: str, index: int, value: int) -> None:
        with self.lock:
            if self.engine is not None:
                self.engine.set_user_input(key, value, index)

    def _run(self) -> None:
        started = time.monotonic()
        origin_us = self.clock.now_us()
        while not self._stop.is_set():
            due_us = origin_us + int((time.monotonic() - started) * 1e6)
            try:
                while self.clock.now_us() < due_us and not self._stop.is_set():
                    with self.lock:
                        snap = self.monitor.step()
                        if snap is not None:
                            self.latest = snap
            except (workloads.SimError, schemes_errors.SchemesError, ValueError) as err:
                self.error = f"{type(err).__name__}: {err}"
                log.error("sim context stopped: %s", self.error)
                return
            self._stop.wait(self.PACE_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class SimAdapter:
    """The in-process monitor and DAMOS engine over a simulated workload."""

    def __init__(self, workload_path: Path, *, seed: int = 0) -> None:
        try:
            self._workload = workloads.load_workload(workload_path)
        except workloads.SimError as err:
            raise errors.EngineError(f"--sim-workload {workload_path}: {err}") from err
        self._seed = seed
        self._lock = threading.Lock()
        self._contexts: dict[str, _SimContext] = {}
        self._plan: planning.Plan | None = None
        self._info = engine.BackendInfo(backend="sim", capabilities=SIM_CAPABILITIES)

    @property
    def info(self) -> engine.BackendInfo:
        return self._info

    def apply(self, plan: planning.Plan) -> None:
        with self._lock:
            if plan == self._plan:
                return
            wanted = {c.key: c for c in plan.contexts}
            for key in list(self._contexts):
                if key not in wanted:
                    self._contexts.pop(key).stop()
            try:
                for key, context in wanted.items():
                    running = self._contexts.get(key)
                    if running is None:
                        self._seed += 1
                        self._contexts[key] = _SimContext(context, self._workload, self._seed)
                    else:
                        running.set_schemes(context)
            except (schemes_errors.SchemesError, workloads.SimError, ValueError) as err:
                self._plan = None
                raise errors.ApplyError(f"{type(err).__name__}: {err}") from err
            self._plan = plan

    def feed_goals(self, inputs: Mapping[str, Mapping[int, int]]) -> None:
        with self._lock:
            for context in self._contexts.values():
                for planned in context.schemes:
                    for index, value in inputs.get(planned.key, {}).items():
                        context.feed(planned.key, index, value)

    def stats(self) -> dict[str, engine.SchemeCounters]:
        with self._lock:
            result: dict[str, engine.SchemeCounters] = {}
            for context in self._contexts.values():
                result.update(context.counters())
            return result

    def snapshots(self) -> list[wire.SnapshotEntry]:
        with self._lock:
            plan = self._plan
            latest = {k: c.latest for k, c in self._contexts.items() if c.latest is not None}
        if plan is None:
            return []
        return _entries(plan, latest)

    def failures(self) -> list[str]:
        with self._lock:
            return [c.error for c in self._contexts.values() if c.error]

    def stop(self) -> None:
        with self._lock:
            for context in self._contexts.values():
                context.stop()
            self._contexts.clear()
            self._plan = None
