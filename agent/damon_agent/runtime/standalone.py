"""``damon-agent run``: the daemon's path without Kubernetes.

A scheme file becomes one assigned scheme (``assigned``): over the whole node, or, with
``--pid`` or ``--cgroup``, over one stand-in pod holding that process or cgroup
(``target_facts``: its pids and memory cgroups, found as the daemon finds a pod's). It is
planned by ``planning.plan`` with the backend's capabilities, exactly as the daemon plans
a DamonNode's schemes (tiers resolved, pods isolated, operations chosen, dry runs turned
into ``stat``), and applied to the backend the daemon would use (``backends``). A scheme
file without schemes monitors only.

``run`` then samples the backend every ``period``: the latest snapshot, the schemes'
counters and, for a process or cgroup target, its footprints (rss and vsz summed over
its processes, and the system's used memory), appending them to the recording and
reporting ``Progress`` to the caller. The period is one aggregation interval on the sim
(whose virtual clock moves only while ``run`` sleeps on it, so every aggregation is
recorded) and at least one second on a real node. At each sample it also does what the
daemon's feedback loop does: the memory PSI of the target's cgroups fed into the schemes'
pod PSI goals (``feedback``, when given) and the goal-tuned quotas' warm-up ended when due
(``Backend.end_warm_ups``).

Nothing here prints or exits: the CLI decides how progress and results look, and stops
the backend on every way out. Errors: ``errors.RunError`` for inputs the node cannot
carry out (the message names the scheme or option), ``reports.errors.RecordingError``
for a recording that cannot be written, the backend's own errors otherwise.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import damon_agent
from damon_agent.api import resources, selectors
from damon_agent.api import schemes as api_schemes
from damon_agent.core import snapshots
from damon_agent.node import cgroups, meminfo, procfs
from damon_agent.node import errors as node_errors
from damon_agent.reports import recording, wss
from damon_agent.runtime import backend, errors, feedback, observing, planning
from damon_agent.runtime.backends import kernel
from damon_agent.schemes.stats import SchemeCounters

# The label the stand-in pod of --pid/--cgroup carries, and the run's scheme selects.
RUN_LABEL: Final = ("damon-k8s.io/run", "target")
MIN_REAL_PERIOD_US: Final = 1_000_000
# As the daemon does (``daemon.FOLLOW_INTERVALS_PERIOD_S``).
FOLLOW_INTERVALS_PERIOD_US: Final = 10_000_000


@dataclass(frozen=True)
class ProcessTarget:
    """``--pid`` or ``--cgroup``: what a run targets instead of the whole node."""

    pid: int | None = None
    cgroup: str | None = None

    @property
    def label(self) -> str:
        return f"pid {self.pid}" if self.pid is not None else f"cgroup {self.cgroup}"


@dataclass(frozen=True)
class SchemeTotals:
    """One planned scheme's cumulative counters, under the name the user gave it."""

    name: str
    action: str
    counters: SchemeCounters
    # False: the backend does not count filter-passed bytes (its 0 means nothing).
    counts_filter_passed: bool = True

    def row(self) -> dict[str, object]:
        """The recording's ``scheme_stats`` entry; without ``sz_ops_filter_passed`` where
        it was not counted, so that reports show it as not counted."""
        row: dict[str, object] = {"name": self.name, "action": self.action, **vars(self.counters)}
        if not self.counts_filter_passed:
            del row["sz_ops_filter_passed"]
        return row


@dataclass(frozen=True)
class Progress:
    """Where a run stands, reported at every recorded snapshot."""

    elapsed_us: int
    duration_us: int
    nr_regions: int
    nr_snapshots: int
    wss_bytes: int
    schemes: tuple[SchemeTotals, ...] = ()


@dataclass(frozen=True)
class RunResult:
    """What a finished run hands back to the CLI to print."""

    final: snapshots.Snapshot | None
    nr_snapshots: int
    start_us: int
    end_us: int
    target_names: dict[int, str]
    schemes: tuple[SchemeTotals, ...] = ()
    failures: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------
# Planning a run


def assigned(
    scheme_file: api_schemes.SchemeFile, name: str, target: ProcessTarget | None
) -> resources.AssignedScheme:
    """The scheme file as the one scheme assigned to this node."""
    selector = None
    if target is not None:
        selector = selectors.LabelSelector.model_validate({"matchLabels": dict([RUN_LABEL])})
    return resources.AssignedScheme(
        kind="ClusterDamonScheme",
        name=name,
        uid="damon-agent-run",
        generation=1,
        whole_node=target is None,
        pod_selector=selector,
        spec=scheme_file,
    )


def target_facts(target: ProcessTarget, roots: observing.NodeRoots) -> planning.PodFacts:
    """The stand-in pod of a process or cgroup: its pids and memory cgroups."""
    try:
        layout = cgroups.discover(roots.proc, roots.sys)
        if target.pid is not None:
            procfs.read_status(target.pid, roots.proc)  # names the pid when it is gone
            pids: tuple[int, ...] = (target.pid,)
            path = cgroups.process_cgroups(layout, target.pid, roots.proc).memory
        else:
            assert target.cgroup is not None
            path = cgroups.normalize(_cgroup_path(target.cgroup, layout))
            pids = cgroups.pids(layout, path)
    except node_errors.NodeError as err:
        raise errors.RunError(f"--{'pid' if target.pid else 'cgroup'}: {err}") from err
    memcgs: tuple[str, ...] = ()
    if path is not None and layout.memory is not None:
        with contextlib.suppress(node_errors.NodeError):
            memcgs = cgroups.memcg_paths_below(layout, path)
    return planning.PodFacts(
        namespace="",
        name=target.label.replace(" ", "-"),
        uid=target.label,
        labels=(RUN_LABEL,),
        cgroup_path=path,
        memcg_paths=memcgs,
        pids=pids,
    )


def _cgroup_path(text: str, layout: cgroups.CgroupLayout) -> str:
    """A cgroup given as a path under a mounted hierarchy, or as the cgroup's own path."""
    for hierarchy in (layout.unified, layout.memory):
        if hierarchy is None:
            continue
        with contextlib.suppress(ValueError):
            return "/" + str(Path(text).relative_to(hierarchy.mount_point))
    return text


def plan_run(
    scheme: resources.AssignedScheme,
    pods: Sequence[planning.PodFacts],
    capabilities: planning.Capabilities,
    node: planning.NodeFacts | None = None,
) -> planning.Plan:
    """The run's plan; ``RunError`` with every error the planner found."""
    plan = planning.plan([scheme], pods, capabilities, node)
    refused = [p for p in plan.problems if p.severity == "error"]
    if refused:
        raise errors.RunError("; ".join(f"{p.reason}: {p.message}" for p in refused))
    if not plan.contexts:
        raise errors.RunError(
            "nothing to monitor: "
            + ("; ".join(p.message for p in plan.problems) or "the target has no memory")
        )
    return plan


# ---------------------------------------------------------------------------------------
# Running


def run(
    node: backend.Backend,
    plan: planning.Plan,
    *,
    duration_us: int,
    record: Path | None = None,
    meta: dict[str, object] | None = None,
    footprint_pids: Callable[[], tuple[int, ...]] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    pressure: feedback.PsiFeedback | None = None,
    on_problem: Callable[[planning.Problem], None] | None = None,
) -> RunResult:
    """Apply ``plan`` to ``node`` and sample it for ``duration_us`` (module docstring).

    ``on_problem`` hears each distinct problem of the goals' feed once (a pod PSI goal
    whose cgroup's pressure cannot be read, and so sees 0). The caller stops the backend
    (on every way out, interrupts included).
    """
    node.apply(plan)
    clock = node.clock
    start_us = clock.now_us()
    context = plan.contexts[0]
    if node.info.backend == "sim":
        period_us = context.monitoring.aggr_us
    else:
        period_us = max(MIN_REAL_PERIOD_US, context.monitoring.aggr_us)
    header = {**_meta(node, plan, start_us, duration_us), **(meta or {})}
    final: snapshots.Snapshot | None = None
    names: dict[int, str] = {}
    totals: tuple[SchemeTotals, ...] = ()
    nr_snapshots = 0
    writer: recording.RecordingWriter | None = None
    asking = [s for s in plan.schemes() if s.psi_goal_indexes]
    reported: set[planning.Problem] = set()
    try:
        deadline = start_us + duration_us
        followed_us = start_us
        while clock.now_us() < deadline:
            clock.sleep_us(min(period_us, deadline - clock.now_us()))
            if pressure is not None and asking:
                inputs, problems = pressure.inputs(asking, clock.now_us())
                node.feed_goals(inputs)
                for problem in problems:
                    if on_problem is not None and problem not in reported:
                        on_problem(problem)
                    reported.add(problem)
            node.end_warm_ups()
            if clock.now_us() - followed_us >= FOLLOW_INTERVALS_PERIOD_US:
                followed_us = clock.now_us()
                node.follow_tuned_intervals()
            found = [e for e in node.snapshots() if e.scheme in _keys(context)]
            if not found or (final is not None and found[0].snapshot.time_us <= final.time_us):
                continue  # no new aggregation since the last sample
            final, names = found[0].snapshot, dict(found[0].target_names)
            nr_snapshots += 1
            totals = _totals(node, plan)
            if record is not None:
                if writer is None:
                    # Opened at the first snapshot: the targets' names are known then.
                    targets = [{"target_id": i, "name": n} for i, n in sorted(names.items())]
                    writer = recording.RecordingWriter(record, {**header, "targets": targets})
                writer.snapshot(final)
                if totals:
                    writer.scheme_stats(final.time_us, [t.row() for t in totals])
                if footprint_pids is not None:
                    writer.footprint(final.time_us, _footprint(footprint_pids()))
            if on_progress is not None:
                on_progress(
                    Progress(
                        elapsed_us=final.time_us - start_us,
                        duration_us=duration_us,
                        nr_regions=sum(len(t) for t in final.targets),
                        nr_snapshots=nr_snapshots,
                        wss_bytes=wss.working_set_size(final),
                        schemes=totals,
                    )
                )
    finally:
        if writer is None and record is not None:
            writer = recording.RecordingWriter(record, {**header, "targets": []})
        if writer is not None:
            writer.close()
    failures = tuple(node.failures())
    return RunResult(
        final=final,
        nr_snapshots=nr_snapshots,
        start_us=start_us,
        end_us=clock.now_us(),
        target_names=names,
        schemes=_totals(node, plan),
        failures=failures,
    )


def _keys(context: planning.Context) -> set[str]:
    return {s.key for s in context.schemes} or {context.key}


def _totals(node: backend.Backend, plan: planning.Plan) -> tuple[SchemeTotals, ...]:
    stats = node.stats()
    counted = node.info.capabilities.counts_filter_passed
    return tuple(
        SchemeTotals(s.name, s.action, stats.get(s.key, SchemeCounters()), counted)
        for s in plan.user_schemes()
    )


def _meta(
    node: backend.Backend, plan: planning.Plan, start_us: int, duration_us: int
) -> dict[str, object]:
    context = plan.contexts[0]
    attrs = context.monitoring
    meta: dict[str, object] = {
        "backend": node.info.backend,
        "operations": context.operations,
        "start_us": start_us,
        "duration_us": duration_us,
        "attrs": {
            "sample_us": attrs.sample_us,
            "aggr_us": attrs.aggr_us,
            "update_us": attrs.update_us,
            "min_nr_regions": attrs.min_nr_regions,
            "max_nr_regions": attrs.max_nr_regions,
        },
        "agent_version": damon_agent.__version__,
    }
    if node.info.backend != "sim":
        meta["kernel_release"] = node.info.kernel_release or platform.release()
    if isinstance(node, kernel.KernelBackend):
        meta["kdamond_pid"] = node.kdamond_pids().get(context.key, -1)
        ranges = node.paddr_ranges().get(context.key)
        if ranges is not None:
            meta["ranges"] = [list(r) for r in ranges]
    return meta


def _footprint(pids: tuple[int, ...]) -> dict[str, int]:
    summed = procfs.footprints_of(pids)
    info = meminfo.read_meminfo()
    used = info.get("MemTotal") - info.get("MemAvailable")
    return {"rss": summed.rss_bytes, "vsz": summed.vsz_bytes, "sys_used": max(0, used)}


def footprint_source(
    target: ProcessTarget, roots: observing.NodeRoots
) -> Callable[[], tuple[int, ...]]:
    """The processes whose footprints are recorded: the pid, or the cgroup's members now."""
    if target.pid is not None:
        pid = target.pid
        return lambda: (pid,)
    layout = cgroups.discover(roots.proc, roots.sys)
    assert target.cgroup is not None
    path = cgroups.normalize(_cgroup_path(target.cgroup, layout))

    def members() -> tuple[int, ...]:
        try:
            return cgroups.pids(layout, path)
        except node_errors.NodeError:
            return ()  # the cgroup went away: nothing left to measure

    return members
