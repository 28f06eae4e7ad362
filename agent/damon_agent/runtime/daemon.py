"""The agent daemon, one per node: ``serve`` runs it (``damon-agent daemon``, ``cli.daemon``).

One asyncio loop, woken by watch events and by a tick (every ``--tick``, 2 s)::

    desired state   its DamonNode's spec (the schemes assigned to this node) and the
                    pods on this node (watched with fieldSelector spec.nodeName)
      -> facts      pods -> cgroups, memcg paths and pids (node facts, /proc, /sys);
                    the pods of schemes with a reclaim floor: their memory use against
                    it (protection.ProtectionTracker: which are held at their floor)
      -> plan       planning.plan, pure: called again only when its inputs changed
      -> apply      Backend.apply when the plan changed (kernel: stage + commit online)
      -> status     status.build when WriteThrottle says a write is due (then also the
                    backend's counters and quotas, the selected pods' memory
                    (outcome.PodTracker) and the kdamonds' CPU (outcome.CpuSampler)),
                    handed to the status writer
    beside it, on their own tasks:
      feedback      every second: per-pod memory PSI -> user_input goals (only the
                    pressure files of schemes with a pod PSI goal; none, no work)
      status writer the latest status handed over, PATCHed to the apiserver; retried
                    with backoff, a newer status replacing one not yet written
    events          Warning Events on its DamonNode for what failed on the node (below),
                    posted by ``events.Recorder``: rate-limited per reason, repeats
                    counted into the next posting, held (bounded) while the apiserver
                    is away
    (metrics and snapshots are read on request by the HTTP endpoints)

The node-local loop never waits on the apiserver: the informers keep the last known
DamonNode and pods through an outage (they relist when it is back), so planning,
applying, PSI feedback, metrics and ``/healthz`` (which reports the local loop's last
tick) go on while the apiserver hangs, stops or restarts; the status catches up with one
write, of the newest status, once it answers again, and so do the Events.

Events (core v1, on the agent's DamonNode, in namespace ``default``; the status says the
same in conditions, the Events say when and how often)::

    Warning  ApplyFailed | DamonHeld   the backend refused a plan (each attempt; the same
                                       plan is retried every APPLY_RETRY_S)
    Normal   Applied                   a plan applied after a refused one
    Warning  BackendFailed             the backend could not start (each attempt)
    Warning  InvalidSpec               the DamonNode's spec cannot be read (when it changes)
    Warning  <the planner's reason>    the planner refused a scheme on this node (when the
                                       refusal first appears), ``related`` to the scheme

Blocking work (sysfs, cgroup walks) runs in worker threads, one call at a time, so the
loop stays responsive to watches, HTTP and SIGTERM.

An idle node's tick does as little as it can, since it runs every 2 s for the node's life:
the DamonNode's spec is parsed again only when it changed, the planner runs only when the
spec, the pods' facts, the capabilities or swap changed (it is pure, so the plan would be
the same), the tick's blocking reads take one worker-thread hop, and no status is built
(NUMA, PSI and DAMON's holders read, the status serialized) unless the throttle says one
may be due (``status.WriteThrottle.worth_building``). On SIGTERM or SIGINT the daemon stops
the loop, turns off every kdamond it owns (``Engine.stop``), writes a last status saying
so, and exits 0. With ``--owner-daemonset``, while that DaemonSet will start a successor
on this node (``handover``: a pod deleted or rolled, not ``helm uninstall``), it leaves
the kdamonds running instead; every daemon adopts the running kdamonds a previous agent of
this boot left (handed over, or left by a crash), so monitoring goes on without a gap.

Its DamonNode deleted (by hand, or with its Node): nothing is assigned, so what ran is
torn down, while the loop goes on (``/readyz``: waiting for the DamonNode) and a status
write that finds no DamonNode is dropped, not retried. The operator makes the DamonNode
again while the Node exists; the agent plans it afresh and writes its status at once.

The state directory (``--state-dir``; kernel backend) holds the record of the kdamonds
the agent made (``ops.kernel.ownership``) and of DAMON_STAT taken over, for its
successor; the agent itself keeps both in memory while it runs, so nothing done to the
directory loses it a kdamond or DAMON_STAT (SIGTERM stops the kdamonds and gives DAMON_STAT
back either way). Deleted under it, the records are written again at the next status
build, logged naming the file. A directory that cannot take it (full, read-only) fails
the apply that changed the kdamonds (``ApplyFailed``, naming the file and the reason;
retried like any refused plan) and the ``DamonAvailable`` condition's message says so
until the record is written.

Backends (``backends.open_backend``, the same choice ``damon-agent run`` makes):
``kernel`` (the node's DAMON sysfs), ``userspace`` (the agent's own monitor over the
pods' processes), ``sim`` (the same over ``--sim-workload``), or ``auto``: the kernel
where its DAMON is present and free, else userspace where the kernel has soft-dirty or
idle page tracking (the status says why the kernel was passed over). A backend that
fails to start is reported in the DamonNode status (``BackendAvailable=False``) and
retried, never a crash loop.

Other DAMON users (kernel backend). Each status build (so at least once per status
interval) asks who else holds the node's DAMON (``ops.kernel.holders``: a DAMON module,
which runs exclusively, or kdamonds another tool made) and reports it as the
``DamonAvailable`` condition; a plan that cannot start for that reason fails with reason
``DamonHeld`` on every scheme it carries. The agent never writes to a foreign kdamond
or to a module, with one opt-in exception: with ``--take-over-damon-stat`` it turns
DAMON_STAT off when its backend starts (``ops.kernel.takeover``: recorded in the state
directory first, so a restarted agent knows), keeps DAMON_STAT's figures coming from one
more kdamond of its own (``planning.with_node_stat``; exported by ``metrics``), and turns
DAMON_STAT back on after its kdamonds are off at SIGTERM (so also when the chart is
uninstalled). A start without the flag that finds such a record (an opted-in run that
died) turns DAMON_STAT back on; otherwise the flag-less agent never touches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from damon_agent.api import conditions, events, resources
from damon_agent.core import snapshots
from damon_agent.node import procfs
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import errors as kernel_errors
from damon_agent.ops.kernel import ownership, takeover
from damon_agent.reports import node_stat
from damon_agent.runtime import backend as backend_mod
from damon_agent.runtime import (
    backends,
    errors,
    feedback,
    guard,
    handover,
    history,
    http,
    kube,
    metrics,
    observing,
    planning,
    protection,
    status,
    wire,
)
from damon_agent.runtime import outcome as loop_outcome
from damon_agent.runtime.backend import Backend
from damon_agent.runtime.backends import inprocess
from damon_agent.runtime.backends import kernel as kernel_backend
from damon_agent.schemes.stats import SchemeCounters

log = logging.getLogger("damon_agent.daemon")

LIVENESS_LIMIT_S = 60.0
FEEDBACK_PERIOD_S = 1.0
# How often the schemes' ages are checked against the kernel's tuned intervals: reading
# them waits for a kdamond's sampling interval, and tuning moves them slowly.
FOLLOW_INTERVALS_PERIOD_S = 10.0
# How often the status build reads the kernel's snapshots into the history ring.
HISTORY_FEED_PERIOD_S = 10.0
# A status PATCH that takes longer is abandoned and retried (the apiserver hangs).
STATUS_WRITE_TIMEOUT_S = 10.0
STATUS_RETRY_FIRST_S = 1.0
STATUS_RETRY_MAX_S = 5.0
BACKEND_RETRY_S = 30.0
APPLY_RETRY_S = 10.0
EVENT_COMPONENT = "damon-agent"
# Events held until the agent's DamonNode is listed (its UID goes into them).
MAX_HELD_EVENTS = 16
# At stop, pending Events get this long to go out.
EVENT_FLUSH_AT_STOP_S = 3.0


# The sim operations' two tiers: node 0 fast (DRAM), node 1 slow and CPU-less (CXL).
SIM_NUMA = [
    resources.NumaNode(nid=0, tier="dram", has_cpus=True),
    resources.NumaNode(nid=1, tier="cxl", has_cpus=False),
]


@dataclass(frozen=True)
class Config:
    node_name: str
    kubeconfig: str | None
    backend: backends.Choice
    sim_workload: Path | None
    listen_host: str
    listen_port: int
    state_dir: Path
    roots: observing.NodeRoots
    tick_s: float = 2.0
    status_interval_s: float = 10.0
    snapshot_source: kernel_damon.SnapshotSource = "auto"
    take_over_damon_stat: bool = False
    metrics_auth: bool = False  # /metrics, like /v1/snapshot, only for allowed tokens
    event_interval_s: float = 60.0  # one Event per reason at most this often
    # The DaemonSet of the agent's pod: while it will start a successor here, a stop
    # leaves the kdamonds running for it to adopt (``handover``). None: every stop turns
    # them off.
    owner_daemonset: handover.Owner | None = None
    # The ring of recent snapshots /v1/snapshots serves (``history``): how far back it
    # reaches and the most memory it holds.
    snapshot_history_s: float = history.DEFAULT_WINDOW_S
    snapshot_history_bytes: int = history.DEFAULT_MAX_BYTES


def open_backend(config: Config) -> Backend:
    """The backend this node runs, as ``--backend`` asks (``BackendError`` if it cannot)."""
    return backends.open_backend(
        backends.BackendRequest(
            choice=config.backend,
            state_dir=config.state_dir,
            roots=config.roots,
            sim_workload=config.sim_workload,
            sim_pacing=inprocess.Pacing.WALL_PACED,
            snapshot_source=config.snapshot_source,
            take_over_damon_stat=config.take_over_damon_stat,
            adopt=True,
        )
    )


@dataclass
class _State:
    dnode: dict[str, Any] | None = None
    assigned: list[resources.AssignedScheme] = field(default_factory=list)
    spec_error: str = ""
    plan: planning.Plan = field(default_factory=planning.Plan)
    outcome: status.ApplyOutcome = field(default_factory=status.ApplyOutcome)
    stats: dict[str, SchemeCounters] = field(default_factory=dict)
    # Read with the stats, when a status write is due.
    tuning: dict[str, backend_mod.SchemeTuning] = field(default_factory=dict)
    pod_outcomes: list[loop_outcome.PodOutcome] = field(default_factory=list)
    cpu: dict[str, loop_outcome.CpuUse] = field(default_factory=dict)
    snapshot_ages: dict[str, float] = field(default_factory=dict)
    last_status: resources.DamonNodeStatus | None = None
    # Problems the last feedback round found (a pod's PSI unreadable), shown with the plan's.
    feedback_problems: tuple[planning.Problem, ...] = ()
    last_tick: float = field(default_factory=time.monotonic)
    backend_error: str = ""
    failed_plan: planning.Plan | None = None
    pods: list[planning.PodFacts] = field(default_factory=list)
    # The pods held at their reclaim floor (and the floors), as of the last tick.
    floors: protection.ProtectionState = field(default_factory=protection.ProtectionState)
    failed_at: float = 0.0
    # DAMON_STAT's place (--take-over-damon-stat): whether this agent holds it, the key of
    # the context standing in for it, and what went wrong taking it or giving it back.
    holding_damon_stat: bool = False
    node_stat_key: str = ""
    damon_stat_problem: str = ""
    # Why the record of the agent's kdamonds cannot be written again (kernel backend).
    record_problem: str = ""
    # The DamonNode spec last parsed, and what the planner was last called with: the same
    # again is not parsed or planned again.
    parsed_spec: dict[str, Any] | None = None
    planned_from: tuple[object, ...] | None = None
    # The UID of the DamonNode last seen: another one is a new object (its status due).
    dnode_uid: str = ""


@dataclass(frozen=True)
class _StatusFacts:
    """What a status build reads from the node, read once for the builds of one write."""

    numa: list[resources.NumaNode]
    psi: resources.Psi
    damon: status.DamonAccess | None
    kernel_tiering: resources.KernelTiering | None


class Agent:
    """The control loop's state and steps; also the HTTP and metrics views of it."""

    def __init__(self, config: Config, client: kube.Client) -> None:
        self.config = config
        self.client = client
        self.node_backend: Backend | None = None
        self.state = _State()
        self.counters = metrics.LoopCounters()
        self.throttle = status.WriteThrottle(steady_interval_s=config.status_interval_s)
        self.wake = asyncio.Event()
        # The status writer's mailbox: the newest status not yet written (latest wins).
        self._unwritten: resources.DamonNodeStatus | None = None
        self._status_ready = asyncio.Event()
        self._status_target_gone = False  # the last status write found no DamonNode
        self._resolver = observing.PodResolver(config.roots)
        self._feedback = feedback.PsiFeedback(self._resolver.cgroup_pressure_total_us)
        self._pod_tracker = loop_outcome.PodTracker(self._resolver.pod_memory)
        self._protection = protection.ProtectionTracker(self._resolver.floor_reading)
        proc_root = config.roots.proc
        self._kdamond_cpu = loop_outcome.CpuSampler(lambda pid: procfs.cpu_seconds(pid, proc_root))
        self._backend_tried_at = -BACKEND_RETRY_S
        self._io_lock = asyncio.Lock()
        self.snapshot_history = history.SnapshotHistory(
            window_s=config.snapshot_history_s, max_bytes=config.snapshot_history_bytes
        )
        self._history_fed_at = -HISTORY_FEED_PERIOD_S
        self.takeover: takeover.DamonStatTakeover | None = None
        self.events = events.Recorder(
            events.Correlator(interval_s=config.event_interval_s),
            self._post_event,
            failures=(errors.KubeError,),
        )
        self._unlisted: list[events.Occurrence] = []  # before the DamonNode's UID is known
        self.dnodes = kube.Informer(
            client,
            f"/apis/{resources.GROUP}/{resources.VERSION}/{resources.PLURALS['DamonNode']}",
            params={"fieldSelector": f"metadata.name={config.node_name}"},
            on_change=self.wake.set,
            key=lambda o: str(o["metadata"]["name"]),
        )
        self.pods = kube.Informer(
            client,
            "/api/v1/pods",
            params={"fieldSelector": f"spec.nodeName={config.node_name}"},
            on_change=self.wake.set,
        )

    # ---- views (http.AgentView, metrics.MetricsSource) ---------------------------------

    @property
    def node_name(self) -> str:
        return self.config.node_name

    @property
    def backend(self) -> str:
        return self.node_backend.info.backend if self.node_backend else "none"

    def liveness(self) -> tuple[bool, str]:
        age = time.monotonic() - self.state.last_tick
        if age > LIVENESS_LIMIT_S:
            return False, f"control loop stuck: last tick {age:.0f}s ago"
        return True, f"ok: last tick {age:.1f}s ago"

    def readiness(self) -> tuple[bool, str]:
        st = self.state
        if st.dnode is None:
            return False, f"waiting for DamonNode {self.config.node_name}"
        if self.node_backend is None:
            return False, f"no backend: {st.backend_error or 'not started'}"
        if st.spec_error:
            return False, f"DamonNode spec invalid: {st.spec_error}"
        if st.outcome.error:
            return False, f"apply failed: {st.outcome.error}"
        if not st.outcome.applied:
            return False, "plan not applied yet"
        return True, "ok"

    def snapshot_entries(self) -> list[wire.SnapshotEntry]:
        current = self.node_backend
        if current is None:
            return []
        try:
            return current.snapshots()
        except errors.BackendError as err:
            log.warning("snapshots: %s", err)
            return []

    def current_plan(self) -> planning.Plan:
        return self.state.outcome.plan or planning.Plan()

    def counts_filter_passed(self) -> bool:
        return status.counts_filter_passed(self.node_backend.info if self.node_backend else None)

    def current_stats(self) -> dict[str, SchemeCounters]:
        current = self.node_backend
        if current is None:
            return {}
        try:
            return current.stats()
        except errors.BackendError as err:
            log.warning("stats: %s", err)
            return dict(self.state.stats)

    def current_psi(self) -> resources.Psi:
        return observing.read_psi(self.config.roots)

    def current_kernel_tiering(self) -> resources.KernelTiering | None:
        """The kernel's own tiering settings; None on the sim, whose node is not this one."""
        return None if self._simulated() else observing.read_kernel_tiering(self.config.roots)

    def current_dying_cgroups(self) -> int | None:
        """Removed cgroups the kernel keeps; None on the sim, whose node is not this one."""
        return None if self._simulated() else self._resolver.dying_cgroups()

    def current_tuning(self) -> dict[str, backend_mod.SchemeTuning]:
        current = self.node_backend
        if current is None:
            return {}
        try:
            return current.tuning()
        except errors.BackendError as err:
            log.warning("quotas: %s", err)
            return dict(self.state.tuning)

    def current_pods(self) -> list[loop_outcome.PodOutcome]:
        """The selected pods' memory now, against their first sight."""
        running = self.state.outcome.plan
        if running is None or self.node_backend is None:
            return []
        return self._pod_tracker.observe(
            running, list(self.state.pods), conditions.now(), self.state.floors.by_pod()
        )

    def current_kdamond_cpu(self, *, record: bool = False) -> dict[str, loop_outcome.CpuUse]:
        """CPU use of the kdamonds of the running contexts (kernel backend); ``record``:
        the status's sample, which ``percent`` is measured from."""
        current = self.node_backend
        if not isinstance(current, kernel_backend.KernelBackend):
            return {}
        return self._kdamond_cpu.sample(current.kdamond_pids(), time.monotonic(), record=record)

    def current_snapshot_ages(self) -> dict[str, float]:
        current = self.node_backend
        if current is None:
            return {}
        try:
            return current.snapshot_ages()
        except errors.BackendError as err:
            log.warning("snapshot ages: %s", err)
            return {}

    def loop_counters(self) -> metrics.LoopCounters:
        return self.counters

    def node_stat(self) -> node_stat.NodeStat | None:
        """DAMON_STAT's figures from the context standing in for it, while holding it."""
        current, st = self.node_backend, self.state
        if not st.holding_damon_stat or not isinstance(current, kernel_backend.KernelBackend):
            return None
        running = st.outcome.plan
        if running is None or all(c.key != st.node_stat_key for c in running.contexts):
            return None
        try:
            snap: snapshots.Snapshot | None = current.context_snapshot(st.node_stat_key)
        except errors.BackendError as err:
            log.warning("DAMON_STAT figures: %s", err)
            return None
        return None if snap is None else node_stat.node_stat(snap)

    def pod_placement(self) -> dict[str, dict[int, int]]:
        running = self.state.outcome.plan
        if running is None:
            return {}
        migrating = {
            pod
            for scheme in running.schemes()
            if scheme.action in ("migrate_hot", "migrate_cold")
            for pod in scheme.pods
        }
        pods = [p for p in self.state.pods if p.key in migrating]
        return observing.placement(pods, self.config.roots) if pods else {}

    # ---- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self.dnodes.run(), name="watch-damonnode"),
            asyncio.create_task(self.pods.run(), name="watch-pods"),
            asyncio.create_task(self._feedback_loop(), name="feedback"),
            asyncio.create_task(self._status_writer(), name="status-writer"),
            asyncio.create_task(self.events.run(), name="events"),
        ]
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    await self.tick()
                except errors.AgentError as err:
                    log.error("tick: %s", err)
                self.state.last_tick = time.monotonic()
                waiters = [asyncio.create_task(self.wake.wait()), asyncio.create_task(stop.wait())]
                await asyncio.wait(
                    waiters, timeout=self.config.tick_s, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in waiters:
                    waiter.cancel()
                # Coalesce a burst of watch events into one pass.
                if not stop.is_set():
                    await asyncio.sleep(0.2)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def tick(self) -> None:
        st = self.state
        await self._ensure_backend()
        st.dnode = next(iter(self.dnodes.items.values()), None)
        if self._unlisted and self.dnodes.synced.is_set():
            self._say_held()
        if st.dnode is None:
            # No DamonNode (never made, deleted by hand, or deleted with its Node): once
            # the watch has listed, nothing is assigned, so nothing runs but DAMON_STAT's
            # stand-in when the agent holds DAMON_STAT. A DamonNode made again is parsed
            # and planned afresh, whatever it says.
            st.parsed_spec = st.planned_from = None
            running = st.outcome.plan
            if self.dnodes.synced.is_set() and self.node_backend is not None:
                wanted = self._with_node_stat(planning.Plan(), self.node_backend)
                if wanted.contexts or (running and running.contexts):
                    st.assigned, st.plan = [], wanted
                    await self._apply(self.node_backend, st.plan)
            return
        raw_spec = st.dnode.get("spec") or {}
        uid = str(st.dnode.get("metadata", {}).get("uid") or "")
        if uid != st.dnode_uid:
            # A DamonNode made (again, after a deletion by hand): it has no status, so
            # one is due at once, whether or not what it reports changed.
            st.dnode_uid = uid
            self.throttle.forget()
        if raw_spec != st.parsed_spec:
            self._parse_spec(raw_spec)
        current = self.node_backend
        # Until the pods are listed once, a plan would select none and tear down what runs.
        if current is not None and not st.spec_error and self.pods.synced.is_set():
            pods, facts, floors = await asyncio.to_thread(
                self._tick_facts, current, list(self.pods.items.values()), st.assigned
            )
            st.pods, st.floors = pods, floors
            protected = floors.protected()
            inputs = (
                st.assigned,
                pods,
                current.info.capabilities,
                facts,
                st.holding_damon_stat,
                protected,
            )
            if inputs != st.planned_from:
                planned = self._with_node_stat(
                    planning.plan(st.assigned, pods, current.info.capabilities, facts, protected),
                    current,
                )
                self._announce_refusals(st.plan, planned)
                st.plan, st.planned_from = planned, inputs
            await self._apply(current, st.plan)
        await self._offer_status()

    def _parse_spec(self, raw_spec: dict[str, Any]) -> None:
        st = self.state
        st.parsed_spec = raw_spec
        try:
            spec = resources.DamonNodeSpec.model_validate(raw_spec)
            st.assigned, st.spec_error = list(spec.schemes), ""
        except pydantic.ValidationError as err:
            # ``field.path: reason; ...``, as the operator's verdicts say it.
            spec_error = resources.describe(err)[:1000]
            if spec_error != st.spec_error:
                self._warn("InvalidSpec", f"the DamonNode's spec cannot be read: {spec_error}")
            st.spec_error = spec_error
            log.error("DamonNode %s spec: %s", self.config.node_name, st.spec_error)

    def _tick_facts(
        self,
        current: Backend,
        pods: list[dict[str, Any]],
        assigned: list[resources.AssignedScheme],
    ) -> tuple[list[planning.PodFacts], planning.NodeFacts | None, protection.ProtectionState]:
        """The pods' facts, the node's and the pods held at their reclaim floor, for the
        planner: one worker-thread hop."""
        found = self._pod_facts(pods) if pods else []
        floors = self._protection.update(assigned, found)
        if current.info.backend == "sim":  # simulated memory pages out without swap
            return found, None, floors
        return found, observing.read_node_facts(self.config.roots), floors

    # ---- events -------------------------------------------------------------------------

    def _node_ref(self) -> events.ObjectRef:
        listed = next(iter(self.dnodes.items.values()), None) or {}
        uid = str((listed.get("metadata") or {}).get("uid") or "")
        return events.ObjectRef(
            resources.API_VERSION, "DamonNode", self.config.node_name, None, uid
        )

    def _warn(self, reason: str, message: str, related: events.ObjectRef | None = None) -> None:
        self._say("Warning", reason, message, related)

    def _say(
        self,
        type_: events.EventType,
        reason: str,
        message: str,
        related: events.ObjectRef | None = None,
    ) -> None:
        occurrence = events.Occurrence(self._node_ref(), type_, reason, message, related)
        if not occurrence.about.uid and not self.dnodes.synced.is_set():
            # Held until the DamonNode is listed: ``kubectl describe`` finds Events by the
            # object's UID, so an Event without it would stay out of sight.
            if len(self._unlisted) < MAX_HELD_EVENTS:
                self._unlisted.append(occurrence)
            return
        self.events.record(occurrence)

    def _say_held(self) -> None:
        held, self._unlisted = self._unlisted, []
        about = self._node_ref()
        for occurrence in held:
            self.events.record(dataclasses.replace(occurrence, about=about))

    def _announce_refusals(self, before: planning.Plan, after: planning.Plan) -> None:
        """A Warning for each scheme the planner newly refuses on this node."""
        known = {(p.source, p.reason) for p in before.problems if p.severity == "error"}
        assigned = {a.key: a for a in self.state.assigned}
        for problem in after.problems:
            if problem.severity != "error" or (problem.source, problem.reason) in known:
                continue
            scheme = assigned.get(problem.source)
            related = None
            if scheme is not None:
                related = events.ObjectRef(
                    resources.API_VERSION, scheme.kind, scheme.name, scheme.namespace, scheme.uid
                )
            self._warn(problem.reason, f"{problem.source}: {problem.message}", related)

    async def _post_event(self, posting: events.Posting) -> None:
        await kube.post_event(
            self.client, posting, component=EVENT_COMPONENT, instance=self.config.node_name
        )

    def _with_node_stat(self, plan: planning.Plan, current: Backend) -> planning.Plan:
        if not self.state.holding_damon_stat:
            return plan
        plan, self.state.node_stat_key = planning.with_node_stat(plan, current.info.capabilities)
        return plan

    def _pod_facts(self, pods: list[dict[str, Any]]) -> list[planning.PodFacts]:
        if self.node_backend is not None and self.node_backend.info.backend == "sim":
            # Simulated pods have no cgroups: the workload stands in for their memory.
            return [_sim_pod(p) for p in pods]
        return [self._resolver.resolve(p) for p in pods]

    async def _ensure_backend(self) -> None:
        if self.node_backend is not None:
            return
        now = time.monotonic()
        if now - self._backend_tried_at < BACKEND_RETRY_S:
            return
        self._backend_tried_at = now
        try:
            self.node_backend = await asyncio.to_thread(open_backend, self.config)
            self.state.backend_error = ""
            log.info("backend %s started", self.node_backend.info.backend)
        except errors.AgentError as err:
            self.state.backend_error = str(err)
            log.error("backend: %s", err)
            self._warn("BackendFailed", f"the {self.config.backend} backend: {err}")
            return
        if isinstance(self.node_backend, kernel_backend.KernelBackend):
            await asyncio.to_thread(self._settle_damon_stat)

    def _settle_damon_stat(self) -> None:
        """At the kernel backend's start: take DAMON_STAT over (opt-in), or give back what
        an opted-in run that died left turned off (module docstring)."""
        st, config = self.state, self.config
        held = takeover.DamonStatTakeover(
            config.roots.sys / "module",
            config.state_dir,
            ownership.read_boot_id(config.roots.proc),
        )
        self.takeover = held
        st.damon_stat_problem = ""
        try:
            if config.take_over_damon_stat:
                taken = held.take()
                log.info("--take-over-damon-stat: DAMON_STAT %s", taken.value)
            elif held.give_back():
                log.info(
                    "turned DAMON_STAT back on: an earlier run of this agent had taken it "
                    "over (--take-over-damon-stat) and did not stop cleanly"
                )
        except kernel_errors.KernelDamonError as err:
            what = "turn DAMON_STAT off" if config.take_over_damon_stat else "give DAMON_STAT back"
            st.damon_stat_problem = f"could not {what}: {err}"
            log.error("%s", st.damon_stat_problem)
        try:
            st.holding_damon_stat = held.holding()
        except kernel_errors.KernelDamonError as err:
            st.holding_damon_stat = False
            log.error("DAMON_STAT takeover record: %s", err)

    def _give_back_damon_stat(self) -> None:
        """At stop, once the agent's kdamonds are off: DAMON_STAT back on if it was ours."""
        held, st = self.takeover, self.state
        if held is None or not st.holding_damon_stat:
            return
        try:
            if held.give_back():
                log.info("turned DAMON_STAT back on")
            st.holding_damon_stat = False
        except kernel_errors.KernelDamonError as err:
            st.damon_stat_problem = f"could not give DAMON_STAT back: {err}"
            log.error(
                "could not turn DAMON_STAT back on: %s (%s stays: the agent's next start "
                "turns it back on)",
                err,
                held.record_path,
            )

    def _damon_access(self) -> status.DamonAccess | None:
        current, st = self.node_backend, self.state
        if not isinstance(current, kernel_backend.KernelBackend):
            return None
        self._keep_record(current)
        try:
            found = current.holders()
        except errors.BackendError as err:
            log.warning("who holds DAMON: %s", err)
            return status.DamonAccess(
                taken_over=st.holding_damon_stat, problem=_joined(str(err), st.record_problem)
            )
        return status.DamonAccess(
            holders=found,
            taken_over=st.holding_damon_stat,
            problem=_joined(st.damon_stat_problem, st.record_problem),
        )

    def _keep_record(self, current: kernel_backend.KernelBackend) -> None:
        """The records in the state directory (the kdamonds this agent made; DAMON_STAT
        taken over) written again if it was deleted; what stops that, said once in the log
        and in the status until it is gone (the agent still knows both: ``ownership``,
        ``takeover``)."""
        st, held = self.state, self.takeover
        problems = []
        try:
            if current.keep_record():
                log.warning(
                    "%s, the record of this agent's kdamonds, was gone (its state directory "
                    "deleted?): written again",
                    current.record_path,
                )
        except errors.BackendError as err:
            problems.append(str(err))
        try:
            if held is not None and held.restore():
                log.warning(
                    "%s, the record of DAMON_STAT taken over, was gone: written again",
                    held.record_path,
                )
        except kernel_errors.KernelDamonError as err:
            problems.append(str(err))
        problem = _joined(*problems)
        if problem and problem != st.record_problem:
            log.error("state directory: %s", problem)
        elif st.record_problem and not problem:
            log.info("state directory: %s written again", current.record_path)
        st.record_problem = problem

    async def _apply(self, current: Backend, plan: planning.Plan) -> None:
        st = self.state
        if st.outcome.plan == plan and not st.outcome.error:
            return
        if plan == st.failed_plan and time.monotonic() - st.failed_at < APPLY_RETRY_S:
            return  # the same plan failed a moment ago: do not hammer the backend
        try:
            try:
                await asyncio.to_thread(current.apply, plan)
            except errors.ApplyError:
                raise
            except Exception as bug:
                # A bug of the agent's own: the node's other schemes and its status must
                # not die with it (a crash would loop, since the same plan comes back).
                log.exception("apply: internal error")
                raise errors.ApplyError(
                    f"internal error: {type(bug).__name__}: {bug}", reason="InternalError"
                ) from bug
        except errors.ApplyError as err:
            st.failed_plan, st.failed_at = plan, time.monotonic()
            self.counters.apply_errors += 1
            st.outcome = status.ApplyOutcome(
                applied=st.outcome.applied, error=str(err), plan=st.outcome.plan, reason=err.reason
            )
            log.error("apply: %s", err)
            self._warn(err.reason, f"applying the plan failed: {err}")
            return
        if st.outcome.error:
            self._say("Normal", "Applied", "the plan applied after a failure")
        self.counters.applies += 1
        st.outcome = status.ApplyOutcome(applied=True, plan=plan)
        log.info(
            "applied: %d context(s), %d scheme(s)",
            len(plan.contexts),
            sum(1 for _ in plan.schemes()),
        )

    async def _feedback_loop(self) -> None:
        """PSI feedback at its own period, whatever the tick and the apiserver do; the
        ages of schemes kept in time at a slower one (``Backend.follow_tuned_intervals``);
        the quotas' warm-up ended when due (``Backend.end_warm_ups``)."""
        followed_at = time.monotonic()
        while True:
            started = time.monotonic()
            current = self.node_backend
            if current is not None:
                try:
                    await self._feed(current)
                except errors.AgentError as err:
                    log.warning("feedback: %s", err)
                self.counters.feedback_rounds += 1
                await self._end_warm_ups(current)
                if started - followed_at >= FOLLOW_INTERVALS_PERIOD_S:
                    followed_at = started
                    await self._follow_intervals(current)
            await asyncio.sleep(max(0.0, FEEDBACK_PERIOD_S - (time.monotonic() - started)))

    async def _follow_intervals(self, current: Backend) -> None:
        try:
            followed = await asyncio.to_thread(current.follow_tuned_intervals)
        except errors.AgentError as err:
            log.warning("following the tuned intervals: %s", err)
            return
        for key in followed:
            log.info("%s: scheme ages committed again at the aggregation's length now", key)

    async def _end_warm_ups(self, current: Backend) -> None:
        try:
            # In a thread: the backend's lock may be held by an apply.
            ended = await asyncio.to_thread(current.end_warm_ups)
        except errors.AgentError as err:
            log.warning("ending the quotas' warm-up: %s", err)
            return
        for key in ended:
            log.info("%s: goal-tuned quotas warmed up; the schemes' reset intervals committed", key)

    async def _feed(self, current: Backend) -> None:
        running = self.state.outcome.plan
        if running is None:
            return
        # Most plans ask for no pod PSI: then there is nothing to read, so no thread hop.
        asking = [s for s in running.schemes() if s.psi_goal_indexes]
        if not asking:
            self.state.feedback_problems = ()
            return
        inputs, problems = await asyncio.to_thread(
            self._feedback.inputs, asking, time.monotonic_ns() // 1000
        )
        self.state.feedback_problems = tuple(problems)
        if inputs:
            try:
                await asyncio.to_thread(current.feed_goals, inputs)
            except errors.BackendError as err:
                log.warning("feedback: %s", err)

    def _read_status_facts(self) -> _StatusFacts:
        return _StatusFacts(
            numa=SIM_NUMA if self._simulated() else observing.read_numa(self.config.roots),
            psi=observing.read_psi(self.config.roots),
            damon=self._damon_access(),
            kernel_tiering=self.current_kernel_tiering(),
        )

    def _simulated(self) -> bool:
        return self.node_backend is not None and self.node_backend.info.backend == "sim"

    def _generation(self) -> int:
        return int((self.state.dnode or {}).get("metadata", {}).get("generation", 0))

    def _material_inputs(self) -> tuple[object, ...]:
        """What the status's material part is built from, but for what is read from the
        node (``status.WriteThrottle.worth_building``)."""
        st = self.state
        return (
            self._generation(),
            st.assigned,
            st.plan,
            st.feedback_problems,
            st.floors.problems(),
            st.outcome,
            self.node_backend.info if self.node_backend else None,
            st.backend_error,
            st.holding_damon_stat,
            st.damon_stat_problem,
            st.record_problem,
        )

    def _build_status(self, facts: _StatusFacts) -> resources.DamonNodeStatus:
        st = self.state
        plan = st.plan
        # Problems found outside the planner: a pod's PSI or reclaim floor unreadable.
        found = st.feedback_problems + st.floors.problems()
        if found:
            plan = dataclasses.replace(plan, problems=plan.problems + found)
        return status.build(
            assigned=st.assigned,
            plan=plan,
            outcome=st.outcome,
            info=self.node_backend.info if self.node_backend else None,
            stats=st.stats,
            numa=facts.numa,
            psi=facts.psi,
            node_generation=self._generation(),
            previous=st.last_status,
            now=conditions.now(),
            backend_error=st.backend_error,
            damon=facts.damon,
            tuning=st.tuning,
            pods=st.pod_outcomes,
            cpu=st.cpu,
            snapshot_ages=st.snapshot_ages,
            kernel_tiering=facts.kernel_tiering,
        )

    async def _offer_status(self) -> None:
        """Build the status when a write is due and hand it to the status writer."""
        built = await self._due_status(force=False)
        if built is not None:
            self._unwritten = built
            self._status_ready.set()

    async def flush_status(self) -> bool:
        """Write the status handed over and not yet written, now (tests, shutdown)."""
        built, self._unwritten = self._unwritten, None
        self._status_ready.clear()
        return True if built is None else await self.write_status(built)

    async def _status_writer(self) -> None:
        """Write the newest status handed over; on failure retry it (or a newer one),
        unless its DamonNode is gone (a new one gets a fresh status once listed)."""
        backoff = STATUS_RETRY_FIRST_S
        while True:
            await self._status_ready.wait()
            self._status_ready.clear()
            built, self._unwritten = self._unwritten, None
            if built is None:
                continue
            if await self.write_status(built):
                backoff = STATUS_RETRY_FIRST_S
                continue
            if self._status_target_gone:
                continue
            if self._unwritten is None:
                self._unwritten = built  # nothing newer came meanwhile: this one again
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, STATUS_RETRY_MAX_S)
            self._status_ready.set()

    async def _due_status(self, *, force: bool) -> resources.DamonNodeStatus | None:
        inputs = self._material_inputs()
        if not force and not self.throttle.worth_building(time.monotonic(), inputs):
            return None
        facts = await asyncio.to_thread(self._read_status_facts)
        built = self._build_status(facts)
        now_s = time.monotonic()
        if not force and not self.throttle.due(now_s, built):
            return None
        # Counters are not material (the throttle ignores them), so they are read from the
        # backend only when a write is due: an idle node does no stats round trips. The
        # loop's outcome (quotas, pods' memory, kdamond CPU) likewise.
        current = self.node_backend
        if current is not None:
            try:
                await asyncio.to_thread(self._observe_outcome, current)
            except Exception:
                # A bug of the agent's own (one was a cgroup file that a pod's removal
                # made unreadable): the status goes out with the outcome it had, and the
                # loop lives on.
                log.exception("status: reading the loop's outcome failed")
            built = self._build_status(facts)
        # Counted as written now: a failed write makes the throttle forget it, so the
        # next tick offers a fresh status again.
        self.throttle.written(now_s, built, inputs)
        return built

    def _observe_outcome(self, current: Backend) -> None:
        st = self.state
        try:
            st.stats = current.stats()
        except errors.BackendError as err:
            log.warning("stats: %s", err)
        st.tuning = self.current_tuning()
        st.pod_outcomes = self.current_pods()
        st.cpu = self.current_kdamond_cpu(record=True)
        st.snapshot_ages = self.current_snapshot_ages()
        # The ring's past, for ``damonctl record --from-past``: in-process backends hand
        # over what they hold, at every build; the kernel's is a read, so at most every
        # HISTORY_FEED_PERIOD_S (milliseconds a context: ops/kernel/damon.py, "Cost").
        now = time.monotonic()
        due = now - self._history_fed_at >= HISTORY_FEED_PERIOD_S
        if due or current.info.backend != "kernel":
            self._history_fed_at = now
            self.snapshot_history.add(self.snapshot_entries())

    async def write_status(self, built: resources.DamonNodeStatus) -> bool:
        """PATCH the status; False (counted, logged) when the apiserver does not take it."""
        path = (
            f"/apis/{resources.GROUP}/{resources.VERSION}/"
            f"{resources.PLURALS['DamonNode']}/{self.config.node_name}/status"
        )
        # A JSON patch replacing the whole status: this agent is its only writer, and
        # what it no longer reports (a scheme unassigned) must go.
        body = [{"op": "add", "path": "/status", "value": resources.to_api(built)}]
        try:
            await self.client.request(
                "PATCH",
                path,
                body=body,
                content_type="application/json-patch+json",
                timeout_s=STATUS_WRITE_TIMEOUT_S,
            )
        except errors.KubeError as err:
            self.counters.status_write_errors += 1
            self.throttle.forget()
            # 404: the DamonNode is gone (deleted by hand, or with its Node): nothing to
            # write to, and no point retrying, until it is listed again.
            self._status_target_gone = err.code == 404
            if self._status_target_gone:
                log.warning("status: DamonNode %s is gone; not written", self.config.node_name)
            else:
                log.warning("status: %s", err)
            return False
        self._status_target_gone = False
        self.counters.status_writes += 1
        self.state.last_status = built
        return True

    async def shutdown(self, *, hand_over: bool = False) -> None:
        """Turn off every kdamond this agent owns, or with ``hand_over`` leave them running
        for the successor to adopt; then say which in the status."""
        current, self.node_backend = self.node_backend, None
        left_running = False
        if current is not None:
            try:
                if hand_over:
                    left_running = await asyncio.to_thread(current.release)
                else:
                    await asyncio.to_thread(current.stop)
            except errors.BackendError as err:
                log.error("stopping the backend: %s", err)
        if left_running:
            log.info("kdamonds left running for the successor agent to adopt")
        else:
            # After the kdamonds are off: DAMON_STAT cannot start while any kdamond runs.
            await asyncio.to_thread(self._give_back_damon_stat)
        st = self.state
        st.outcome = status.ApplyOutcome()
        st.stats, st.tuning, st.pod_outcomes, st.cpu, st.snapshot_ages = {}, {}, [], {}, {}
        st.backend_error = (
            "agent stopped; its kdamonds are left running for the successor agent"
            if left_running
            else "agent stopped"
        )
        if st.dnode is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._write_last_status(), timeout=5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.events.flush(), timeout=EVENT_FLUSH_AT_STOP_S)

    async def _write_last_status(self) -> None:
        built = await self._due_status(force=True)
        if built is not None:
            await self.write_status(built)


def _joined(*problems: str) -> str:
    return "; ".join(p for p in problems if p)


def _sim_pod(pod: dict[str, Any]) -> planning.PodFacts:
    """A simulated pod: what the Pod object says (opt-outs, QoS class...), and the sim's
    stand-in memcg; it has no containers' cgroups (a scheme with ``containers`` finds no
    memory of it)."""
    facts = observing.pod_basics(pod)
    if facts.excluded:
        return facts
    return dataclasses.replace(facts, memcg_paths=(f"/sim/pod{facts.uid}",))


async def serve(config: Config) -> None:
    """Run the agent until SIGTERM or SIGINT; raises ``errors.AgentError`` when it cannot."""
    client = kube.Client.from_kubeconfig(config.kubeconfig)
    agent = Agent(config, client)
    registry = metrics.registry_for(agent)
    access_guard = guard.Guard(guard.KubeReviewer(client))
    app = http.make_app(
        agent,
        registry,
        access_guard,
        metrics_auth=config.metrics_auth,
        snapshot_history=agent.snapshot_history,
    )
    try:
        runner = await http.serve(app, config.listen_host, config.listen_port)
    except OSError as err:
        await client.close()
        raise errors.ArgumentsError(
            f"--listen {config.listen_host}:{config.listen_port}: {err.strerror or err}"
        ) from err
    log.info(
        "agent for node %s serving on %s:%d",
        config.node_name,
        config.listen_host,
        config.listen_port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await agent.run(stop)
    finally:
        decision = handover.Decision(False, "no --owner-daemonset")
        if config.owner_daemonset is not None:
            decision = await handover.ask(client, config.owner_daemonset, config.node_name)
        if decision.hand_over:
            log.info("stopping: handing the kdamonds over (%s)", decision.reason)
        else:
            log.info("stopping: turning off the backend (%s)", decision.reason)
        await agent.shutdown(hand_over=decision.hand_over)
        await runner.cleanup()
        await client.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped at %s", datetime.datetime.now(datetime.UTC).isoformat())
