"""The DamonNode status this node's agent writes, and when to write it.

``build`` is pure: the node's facts, the plan, what the backend did and its counters ->
a ``resources.DamonNodeStatus``. Conditions keep their ``lastTransitionTime`` across
builds (``conditions.set_condition``), so rebuilding from scratch each tick is idempotent.

Per assigned scheme::

    Ready     True   Applied          runs on this node (message: pods, the node(s) each
                                      tier resolved to, warnings)
              True   NoPodsOnNode     selects no pod here: nothing to do, nothing wrong
              True   PodsProtected    every pod it selects here is at or below its
                                      reclaim floor (``protection``): nothing to page out
              False  <problem reason> cannot run here (the planner's reason and message)
              False  ApplyFailed      the backend refused the plan
              False  DamonHeld        someone else holds the node's DAMON (message: who,
                                      and what frees it)
              False  Pending          not yet applied
    Degraded  True   <reason>         an error or a warning (pods not found, fallbacks)

The node's facts: its NUMA nodes and their tiers, memory PSI, and the kernel's own
tiering settings (``kernelTiering``: NUMA balancing and demotion, which migration schemes
may meet; ``planning``, "The kernel's own tiering").

Node conditions: ``Ready`` (a plan is applied and the loop is alive),
``BackendAvailable``, and on the kernel backend ``DamonAvailable``::

    BackendAvailable  True   Probed     the backend asked for (or auto's first choice)
                      True   FellBack   auto passed the kernel's DAMON over (missing, or
                                        held): the userspace backend runs; says why
                      False  NoBackend  none could start: what each one misses

    DamonAvailable  True   Free         no DAMON module runs, no kdamond of another tool
                    True   TakenOver    this agent turned DAMON_STAT off (opt-in) and
                                        turns it back on when it stops
                    False  DamonHeld    a DAMON module runs (they hold DAMON exclusively)
                                        or foreign kdamonds exist: the holders and their
                                        remedies (``ops.kernel.holders``)

The loop's outcome. Each DAMOS scheme's stats carry where its quota stands
(``backend.SchemeTuning``: effective size quota, goals' current vs target); the pods the
schemes select are listed with their memory PSI and what they saved
(``outcome.PodOutcome``; with ``protected`` and ``floorBytes`` where a scheme that
selects the pod has a reclaim floor), at most ``resources.MAX_POD_STATUSES`` of them, the most
pressed first, then those that saved the most (``podsOmitted`` counts the rest); each
scheme object and the node sum the savings of all their pods, listed or not (a
whole-node scheme selects no pod: it saves nothing here). Each running context says its
kdamond's CPU use and how old its latest snapshot is.

Each DAMOS scheme's stats carry the bytes that passed its operations-layer filters
(``filterPassedBytes``) only where the backend counts them (``counts_filter_passed``),
so a 0 there means "counted, none passed", never "not counted".

Scheme stats are read by planned scheme key. A scheme the kernel runs as several kernel
schemes (per-memcg copies on kernels without allow filters, see ``planning``) has one
key: its counters are the copies' sums (``ops.kernel.damon`` adds them).

Writes are throttled and coalesced by ``WriteThrottle``: a material change (conditions,
generations, the set of schemes, backend, capabilities, NUMA layout) is written at once,
though at most once a second so a burst of pod events makes one write; anything else
(counters, PSI, free memory, the heartbeat) at most every ``steady_interval_s`` (10 s).
So in steady state a node costs the API server one write per 10 s, whatever its load.

Building a status reads the node (NUMA, PSI, who holds DAMON) and serializes it for the
fingerprint, which would cost the idle agent more than anything else it does if done at
every tick only to learn that no write is due. So the throttle also answers, before a
build, whether one could be due (``worth_building``): the caller passes the inputs of
``build`` that make a status material and are known without reading the node (the
assigned schemes, the plan, the apply outcome, the backend...), and while they equal
those of the last write and the steady slot has not come, nothing is built. The facts
read from the node (NUMA layout, DAMON's holders) are therefore seen at the steady
cadence, or sooner with any other material change: a hot-plugged node or a foreign
kdamond reaches the status within one steady interval.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from damon_agent.api import conditions, resources
from damon_agent.ops.kernel import holders as holders_mod
from damon_agent.runtime import backend, planning
from damon_agent.runtime import outcome as loop_outcome
from damon_agent.schemes.stats import SchemeCounters

# Ready reason of a scheme object whose pageout schemes have no pod above its floor here.
REASON_PODS_PROTECTED = "PodsProtected"


@dataclass(frozen=True)
class ApplyOutcome:
    """What the last attempt to apply a plan did."""

    applied: bool = False  # a plan is running (possibly an older one if error is set)
    error: str = ""  # the last apply's failure, "" when it succeeded
    plan: planning.Plan | None = None  # the plan that runs
    reason: str = ""  # the failure's condition reason (errors.ApplyError.reason)

    @property
    def failure_reason(self) -> str:
        return self.reason or "ApplyFailed"


@dataclass(frozen=True)
class DamonAccess:
    """Whether the node's DAMON is free for the agent (kernel backend only)."""

    holders: holders_mod.Holders = field(default_factory=holders_mod.Holders)
    taken_over: bool = False  # this agent turned DAMON_STAT off (--take-over-damon-stat)
    problem: str = ""  # what went wrong taking DAMON_STAT over or giving it back


def build(
    *,
    assigned: Sequence[resources.AssignedScheme],
    plan: planning.Plan,
    outcome: ApplyOutcome,
    info: backend.BackendInfo | None,
    stats: Mapping[str, SchemeCounters],
    numa: Sequence[resources.NumaNode],
    psi: resources.Psi,
    node_generation: int,
    previous: resources.DamonNodeStatus | None,
    now: datetime.datetime,
    backend_error: str = "",
    damon: DamonAccess | None = None,
    tuning: Mapping[str, backend.SchemeTuning] | None = None,
    pods: Sequence[loop_outcome.PodOutcome] = (),
    cpu: Mapping[str, loop_outcome.CpuUse] | None = None,
    snapshot_ages: Mapping[str, float] | None = None,
    kernel_tiering: resources.KernelTiering | None = None,
) -> resources.DamonNodeStatus:
    before = previous or resources.DamonNodeStatus()
    running = outcome.plan or planning.Plan()
    running_keys = {s.key for s in running.schemes()}
    schemes_status = [
        _scheme_status(
            a,
            plan=plan,
            outcome=outcome,
            running_keys=running_keys,
            stats=stats,
            filter_passed_counted=counts_filter_passed(info),
            tuning=tuning or {},
            pod_outcomes=[p for p in pods if a.key in p.schemes],
            before=before,
            now=now,
        )
        for a in assigned
    ]

    node_conditions = list(before.conditions)
    if info is None:
        node_conditions = conditions.set_condition(
            node_conditions,
            type="BackendAvailable",
            status="False",
            reason="NoBackend",
            message=backend_error or "no monitoring backend could be started",
            generation=node_generation,
            at=now,
        )
    else:
        node_conditions = conditions.set_condition(
            node_conditions,
            type="BackendAvailable",
            status="True",
            reason="FellBack" if info.fallback_reason else "Probed",
            message=f"{info.backend} backend"
            + (f", because {info.fallback_reason}" if info.fallback_reason else ""),
            generation=node_generation,
            at=now,
        )
    if damon is not None:
        node_conditions = _damon_available(node_conditions, damon, node_generation, now)
    ready = info is not None and outcome.applied and not outcome.error
    node_conditions = conditions.set_condition(
        node_conditions,
        type="Ready",
        status="True" if ready else "False",
        reason="Applied" if ready else (outcome.failure_reason if outcome.error else "Pending"),
        message=outcome.error
        or f"{len(running.contexts)} monitoring context(s), "
        f"{sum(1 for _ in running.schemes())} scheme(s)",
        generation=node_generation,
        at=now,
    )
    listed = loop_outcome.most_interesting(pods, resources.MAX_POD_STATUSES)
    return resources.DamonNodeStatus(
        observed_generation=node_generation,
        heartbeat=now,
        backend=_backend(info),
        capabilities=_capabilities(info),
        numa=list(numa),
        kernel_tiering=kernel_tiering,
        psi=psi,
        conditions=node_conditions,
        schemes=schemes_status,
        contexts=_contexts(running, cpu or {}, snapshot_ages or {}),
        pods=[_pod_status(p) for p in listed],
        pods_omitted=len(pods) - len(listed),
        saved_bytes=min(sum(p.saved_bytes for p in pods), resources.MAX_INT64),
    )


def _pod_status(pod: loop_outcome.PodOutcome) -> resources.PodStatus:
    return resources.PodStatus(
        namespace=pod.namespace,
        name=pod.name,
        schemes=list(pod.schemes[:16]),
        psi=pod.now.psi,
        memory_bytes=pod.now.memory_bytes,
        swap_bytes=pod.now.swap_bytes,
        first_memory_bytes=pod.first.memory_bytes,
        first_swap_bytes=pod.first.swap_bytes,
        saved_bytes=pod.saved_bytes,
        refaults=pod.refaults,
        since=pod.since,
        protected=pod.floor.protected if pod.floor else None,
        floor_bytes=(
            min(pod.floor.floor_bytes, resources.MAX_INT64)
            if pod.floor is not None and pod.floor.floor_bytes is not None
            else None
        ),
    )


def _contexts(
    running: planning.Plan,
    cpu: Mapping[str, loop_outcome.CpuUse],
    ages: Mapping[str, float],
) -> list[resources.ContextStatus]:
    result = []
    for context in running.contexts[: resources.MAX_CONTEXTS]:
        use = cpu.get(context.key)
        age = ages.get(context.key)
        result.append(
            resources.ContextStatus(
                operations=context.operations,
                schemes=[s.key for s in context.schemes],
                kdamond_pid=use.pid if use else None,
                cpu_seconds=round(use.seconds, 2) if use else None,
                cpu_percent=(
                    round(use.percent, 2) if use is not None and use.percent is not None else None
                ),
                snapshot_age_seconds=round(age, 1) if age is not None else None,
            )
        )
    return result


def _damon_available(
    before: list[conditions.Condition],
    damon: DamonAccess,
    generation: int,
    now: datetime.datetime,
) -> list[conditions.Condition]:
    if damon.holders.held:
        status, reason, message = "False", resources.REASON_DAMON_HELD, damon.holders.summary()
    elif damon.taken_over:
        status, reason = "True", "TakenOver"
        message = (
            "this agent turned DAMON_STAT off (--take-over-damon-stat), exports its "
            "figures from its own kdamond, and turns it back on when it stops"
        )
    else:
        status, reason, message = "True", "Free", damon.holders.summary()
    if damon.problem:
        message += f" ({damon.problem})"
    return conditions.set_condition(
        before,
        type=resources.CONDITION_DAMON_AVAILABLE,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        message=message[: conditions.MAX_MESSAGE],
        generation=generation,
        at=now,
    )


def _backend(info: backend.BackendInfo | None) -> resources.Backend | None:
    return None if info is None else info.backend


def _capabilities(info: backend.BackendInfo | None) -> resources.Capabilities:
    if info is None:
        return resources.Capabilities()
    caps = info.capabilities
    actions = sorted(set().union(*caps.actions.values())) if caps.actions else []
    return resources.Capabilities.model_validate(
        {
            "operations": sorted(o for o in caps.operations if o in ("vaddr", "paddr", "fvaddr")),
            "actions": actions,
            "goalMetrics": sorted(caps.goal_metrics),
            "filterTypes": sorted(caps.filter_types),
            "intervalsGoal": caps.intervals_goal,
            "kernelRelease": info.kernel_release,
        }
    )


def counts_filter_passed(info: backend.BackendInfo | None) -> bool:
    """Whether the backend's counters hold the bytes that passed the schemes' ops filters
    (``planning.Capabilities.counts_filter_passed``: the kernel's, since Linux 6.14).
    Elsewhere the counter reads 0 for "not counted", which must not show as a count."""
    return info is not None and info.capabilities.counts_filter_passed


def _scheme_status(
    assigned: resources.AssignedScheme,
    *,
    plan: planning.Plan,
    outcome: ApplyOutcome,
    running_keys: set[str],
    stats: Mapping[str, SchemeCounters],
    filter_passed_counted: bool,
    tuning: Mapping[str, backend.SchemeTuning],
    pod_outcomes: Sequence[loop_outcome.PodOutcome],
    before: resources.DamonNodeStatus,
    now: datetime.datetime,
) -> resources.NodeSchemeStatus:
    key = assigned.key
    summary = next((s for s in plan.sources if s.key == key), None)
    problems = plan.problems_of(key)
    errors_ = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    planned = summary.planned if summary else ()
    pods = summary.pods if summary else ()
    protected = summary.protected if summary else ()

    if errors_:
        ready, reason = "False", errors_[0].reason
        message = "; ".join(p.message for p in errors_)
    elif outcome.error and not all(k in running_keys for k in planned):
        ready, reason, message = "False", outcome.failure_reason, outcome.error
    elif not all(k in running_keys for k in planned) or summary is None:
        ready, reason, message = "False", "Pending", "not applied yet"
    elif not planned and protected:
        ready, reason = "True", REASON_PODS_PROTECTED
        message = (
            f"its {len(protected)} pod(s) ready here are all at or below their reclaim "
            "floor: nothing to page out now"
        )
    elif not planned:
        ready, reason = "True", "NoPodsOnNode"
        message = "no pod on this node is selected" if not pods else "no pod is ready here yet"
    else:
        ready, reason = "True", "Applied"
        message = f"{len(planned)} scheme(s) over {len(pods) or 'the node'}" + (
            " pod(s)" if pods else "'s physical memory"
        )
        if protected:
            message += (
                f"; {len(protected)} pod(s) at or below their reclaim floor are left out of pageout"
            )
        if summary.tiers:
            message += "; " + "; ".join(summary.tiers)
    if warnings:
        message += " (" + "; ".join(p.message for p in warnings) + ")"

    previous = before.scheme(key)
    kept = list(previous.conditions) if previous else []
    kept = conditions.set_condition(
        kept,
        type="Ready",
        status=ready,  # type: ignore[arg-type]
        reason=reason,
        message=message,
        generation=assigned.generation,
        at=now,
    )
    trouble = errors_ or warnings
    failed = bool(outcome.error) and reason == outcome.failure_reason
    kept = conditions.set_condition(
        kept,
        type="Degraded",
        status="True" if trouble or failed else "False",
        reason=trouble[0].reason if trouble else (reason if failed else "AsPlanned"),
        message="; ".join(p.message for p in trouble) if trouble else (message if failed else ""),
        generation=assigned.generation,
        at=now,
    )
    scheme_stats = []
    for spec in assigned.spec.schemes:
        counters = stats.get(f"{key}/{spec.name}", SchemeCounters())
        quota = tuning.get(f"{key}/{spec.name}")
        scheme_stats.append(
            resources.SchemeStats(
                name=spec.name,
                nr_tried=counters.nr_tried,
                tried_bytes=counters.sz_tried,
                nr_applied=counters.nr_applied,
                applied_bytes=counters.sz_applied,
                filter_passed_bytes=(
                    counters.sz_ops_filter_passed if filter_passed_counted else None
                ),
                qt_exceeds=counters.qt_exceeds,
                effective_quota_bytes=(
                    None
                    if quota is None or quota.effective_quota_bytes is None
                    else min(quota.effective_quota_bytes, resources.MAX_INT64)
                ),
                goals=[_goal_status(g) for g in quota.goals] if quota else [],
            )
        )
    return resources.NodeSchemeStatus(
        kind=assigned.kind,
        namespace=assigned.namespace,
        name=assigned.name,
        uid=assigned.uid,
        observed_generation=assigned.generation,
        conditions=kept,
        targets=len(pods),
        stats=scheme_stats,
        saved_bytes=min(sum(p.saved_bytes for p in pod_outcomes), resources.MAX_INT64),
        refaults=min(sum(p.refaults for p in pod_outcomes), resources.MAX_INT64),
    )


def _goal_status(goal: backend.GoalTuning) -> resources.GoalStatus:
    return resources.GoalStatus.model_validate(
        {
            "metric": goal.metric,
            "target": min(goal.target, resources.MAX_INT64),
            "current": None if goal.current is None else min(goal.current, resources.MAX_INT64),
        }
    )


def material_fingerprint(status: resources.DamonNodeStatus) -> str:
    """Everything whose change must reach the API server promptly, as one string.

    Leaves out what moves all the time: heartbeat, counters, PSI, free memory.
    """
    return status.model_dump_json(
        include={
            "observed_generation": True,
            "backend": True,
            "capabilities": True,
            "conditions": True,
            "numa": {"__all__": {"nid", "tier", "has_cpus", "total_bytes"}},
            "kernel_tiering": True,
            "schemes": {
                "__all__": {
                    "kind",
                    "namespace",
                    "name",
                    "observed_generation",
                    "conditions",
                    "targets",
                }
            },
        }
    )


class WriteThrottle:
    """Decides when a status is worth a write (see the module docstring)."""

    def __init__(self, *, steady_interval_s: float = 10.0, burst_interval_s: float = 1.0) -> None:
        self.steady_interval_s = steady_interval_s
        self.burst_interval_s = burst_interval_s
        self._last_at: float | None = None
        self._last_fingerprint: str | None = None
        self._last_inputs: object = None

    def worth_building(self, now_s: float, inputs: object) -> bool:
        """Whether a status built now may be due (module docstring); ``inputs``: what the
        status's material part is built from, compared by equality with the last write's."""
        if self._last_at is None or inputs != self._last_inputs:
            return True
        return now_s - self._last_at >= self.steady_interval_s

    def due(self, now_s: float, status: resources.DamonNodeStatus) -> bool:
        if self._last_at is None:
            return True
        elapsed = now_s - self._last_at
        if material_fingerprint(status) != self._last_fingerprint:
            return elapsed >= self.burst_interval_s
        return elapsed >= self.steady_interval_s

    def written(
        self, now_s: float, status: resources.DamonNodeStatus, inputs: object = None
    ) -> None:
        self._last_at = now_s
        self._last_fingerprint = material_fingerprint(status)
        self._last_inputs = inputs

    def forget(self) -> None:
        """After a failed write: the next status is due at once."""
        self._last_at = None
        self._last_fingerprint = None
        self._last_inputs = None
