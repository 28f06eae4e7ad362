"""Planning: assigned schemes + the pods on this node + what the backend can do -> a plan.

A pure function (``plan``) with no I/O, so every rule below is a unit test:

- Input: the DamonNode spec's ``resources.AssignedScheme`` list (namespaces already
  resolved by the operator), and ``PodFacts`` for the pods on the node.
- Pod selection. A namespaced ``DamonScheme`` selects only pods of its own namespace (the
  planner checks this itself, whatever the assignment says), by its pod selector; a
  ``ClusterDamonScheme`` selects by the resolved namespaces and pod selector, or, with
  ``wholeNode``, the node's whole physical memory. Pods that have finished, or whose
  cgroup was not found on the node, are left out.
- Pod scope (``select_pods``). A pod that opted out (annotation ``damon.io/exclude``) is
  never selected; one whose opt-out annotations cannot be read is not either, and each
  scheme whose selector takes it warns (``PodAnnotationInvalid``). ``qosClasses`` keeps
  the pods of those classes; ``containers`` narrows each pod to those containers (their
  memory cgroups and processes: the pod-level memcg is left out) and drops a pod with
  none of them. Containers a pod opted out (``damon.io/exclude-containers``) are not in
  its facts at all.
- Protection. A scheme object with ``protection`` gets, per tick, the pods at or below
  their floor (``protected``, decided by ``runtime.protection``); its pageout schemes
  are planned without them (vaddr: without their processes' targets; paddr: without
  their memcg filters). A pageout left with no pod is not planned (never run with no
  pod filter, which on paddr would be the whole node); the summary names the pods
  (``SourceSummary.protected``).
- Operations. ``auto`` is vaddr (one target per process of the selected pods) where the
  backend has vaddr and vaddr applies every action of the scheme (6.12's vaddr cannot
  migrate), else paddr; an explicit ``vaddr`` on a backend without it degrades to paddr
  with memcg filters (the documented alternative) and says so. ``auto`` also takes paddr
  with memcg filters when the selected pods run more than ``VADDR_MAX_TARGETS``
  processes, and says so (``ManyProcesses``). Whole-node schemes are always paddr.
- Contexts. Schemes whose monitoring is equal (same operations and attributes) share one
  context, so one kdamond watches once for all of them. A source without schemes
  (``damon-agent run`` with monitoring only) still gets its context. A vaddr context's targets are
  the union of its schemes' processes; each scheme gets ``target`` core filters allowing
  only its own processes' targets.
- Isolation. On paddr a pod-targeted scheme gets ``allow memcg`` ops filters for each of
  its pods' memory cgroups (the pod's and its containers': the kernel matches a page's
  memcg exactly), placed last, and every filter the user wrote is turned into a reject
  filter (an allow filter F becomes "reject what does not match F"). Hence the only
  filters that can admit memory are the pod filters, and past the last filter (an allow)
  everything else is rejected: a scheme can never act beyond its pods, whatever the user
  wrote. (The rewrite narrows: a user's allow filters intersect with the pod set instead
  of widening it.) The same holds for vaddr contexts with the ``target`` core filters. A
  pod-targeted scheme with no pod left to filter is not planned at all, never run
  node-wide.
- Isolation on kernels without allow filters (``Capabilities.allow_filters`` false:
  6.12-class kernels, before 6.14). Every filter rejects, a region or page passes only if
  no filter hits, so what passes is the intersection of the filters' complements. The
  plan then holds reject filters only, each meaning exactly what the plan above means:

  - a user filter F is written as above (allow F becomes reject-not-F);
  - on paddr the ops layer evaluates every filter once more per page and sees an addr or
    target filter as "not matching", so a ``matching: false`` addr filter would reject
    all memory there: "reject outside [a, b)" is written as the two matching rejects
    [0, a) and [b, max), leaving out an empty one;
  - vaddr pod isolation rejects each other target of the context (``target``, matching)
    instead of allowing the scheme's own;
  - paddr pod isolation: a page belongs to exactly one memcg and the pods are a union of
    memcgs, which reject filters cannot express in one scheme once there are two. The
    union counts the memcgs that hold the processes' memory (containers'; a pod-level
    memcg above them holds only what exited containers left). One memcg: one scheme with
    "reject what is not in this memcg". Several: the scheme runs as one kernel scheme
    per memcg path (``PlannedScheme.kernel_schemes``), but only when its minimum age is 0,
    since the kernel resets a region's age whenever a scheme acts on it, so the copies
    after the first would never see a region old enough (seen in the 6.12 VM: the
    second copy tried nothing); with a minimum age it is a ``FilterNeedsAllow``
    problem. Each copy starts with "reject what is not in this memcg" (``memcg``,
    matching false). It goes first: the ops layer stops at the first filter that hits,
    and a ``young`` filter clears the accessed bit it checks, so a copy never looks at
    (or clears the bit of) another memcg's pages: each page is checked once, by its own
    copy. The copies' counters are summed back under the one scheme key
    (``ops.kernel.damon``) and goals are fed to each copy. Quotas: each copy gets the
    scheme's ``size`` and ``time`` divided by the number of copies, rounded up (0, no
    limit, stays 0), so together they spend at most the user's budget (plus rounding),
    in CPU time and in charged bytes. Since the kernel charges a copy the whole size of
    each region it tries, not only its memcg's pages, the split scheme may act on fewer
    pages per interval than one scheme with the full quota would; never on more. Quota
    goals are copied: each copy tunes its own share toward the same target. Tried
    counters (``nrTried``, ``triedBytes``) count a region once per copy that tried it;
    applied counters are exact (the copies' pages are disjoint);
  - whole-node schemes keep the user's list, which is expressible only when at most one
    filter allows and it is the last (first match decides, so it then means "pass what
    no reject hits and the allow matches"); otherwise it is a ``FilterNeedsAllow``
    problem naming the filter;
  - a filter type the operations set does not apply on the node (6.12's vaddr applies
    only the core's addr and target filters) is a ``FilterUnsupported`` problem naming
    the filter, never dropped.
- Swap. A ``pageout`` that may meet anonymous memory, on a node without swap
  (``NodeFacts.swap_bytes`` 0), is planned but warned about (``NoSwap``): only file-backed
  pages can go. A filter saying file-only (``{type: anon, allow: false}``, or an allow
  of what is not anon) clears it.
- The kernel's own tiering. Where NUMA balancing moves pages out of the CPU-less tiers
  itself (``kernel.numa_balancing`` with either bit, ``KernelTiering.promotes``: the
  memory tiering mode, 2, promotes hot pages; the normal mode, 1, moves each page toward
  the CPUs touching it), the kernel and a ``migrate_hot``/``migrate_cold`` scheme may move
  the same pages, each undoing the other. The scheme's ``kernelTiering`` decides:
  ``Coexist`` (the default) plans it and warns (``KernelTiering``); ``Refuse`` leaves it
  out of the plan on this node, an error of that reason, while the node's other schemes
  run. A dry run is judged as the scheme it stands for. Demotion by reclaim
  (``demotion_enabled``) changes nothing: it moves what reclaim picks, cold pages at the
  inactive tail of the LRU, downwards as ``migrate_cold`` does; pages kept hot (what
  ``migrate_hot`` promotes) stay off that tail.
- Migrations on paddr. A ``migrate_hot``/``migrate_cold`` scheme to a tier gets a context
  of its own that monitors only the memory outside that tier (the other nodes' physical
  spans, ``Capabilities.node_spans``), as the DAMON maintainer's self-tuned tiering runs
  one kdamond per node range. Over all of the memory, the memory already in the
  destination would rank first for the scheme's quota (the kernel picks the quota's
  score threshold from every region the access pattern matches, before filters: a CXL
  node's idle pages are the coldest and oldest there are) and take it all, so a
  demotion would move nothing. Where the spans are unknown or interleave, the context
  watches everything and reject ``addr`` filters leave the destination out.
- Every node of a tier. On paddr, where more than one node is outside the destination
  tier (the sources) or the tier has more than one node, the scheme runs once per source
  node, each copy in a context of its own over that node's span (one kdamond per node,
  as upstream's tiering), migrating to the tier's node nearest to its source by the
  kernel's node distances (``Capabilities.node_distances``; ties: the lowest id). Where a
  source's distances are unknown, the sources take the tier's nodes in turn
  (round-robin), with a ``NodeDistancesUnknown`` warning. The copies share the user's
  quota as per-memcg copies do (size and time divided among them, rounded up), and
  count under the one scheme key. One source and a one-node tier plan as above. Where
  the spans are unknown or interleave, the nodes cannot be watched apart: the first node
  of the tier takes every page (``TierNodesUnused`` warning when it has others). On
  vaddr (a process's pages lie anywhere) a multi-node tier becomes the kernel's
  weighted ``dests`` (``Capabilities.migrate_dests``, 6.17), equal weights: the plan is
  pure and stable, while free memory changes all the time, and a node that fills is
  what the ``fill`` goals and the kernel's own fallbacks are for; without ``dests`` the
  first node, with a ``TierNodesUnused`` warning. ``SourceSummary.tiers`` says where
  each tier went on the node (the scheme's Ready condition shows it).
- Goal-driven tiering (the spec's ``fill``, ``schemes.model.Fill``). A promotion gets a
  ``node_mem_used_bp`` goal on each DRAM node it moves to (its copy's destination, or
  every ``dests`` node); a demotion a ``node_mem_free_bp`` goal on the DRAM node it moves
  from (its copy's source; unsplit, every DRAM node), after the user's own goals (a
  scheme without a quota gets one). A kernel without the metric (before 6.16) refuses
  the scheme (``GoalMetricUnsupported``). ``fill.podShare`` adds the same goals on the
  pod's memory cgroup (``node_memcg_*_bp``, 6.19; the kernel counts the cgroup's
  descendants, so the pod-level cgroup covers its containers), where they can mean what
  they say: a scheme of one pod, on a kernel with those metrics. Otherwise only the
  node-wide fill steers, with a ``TieringGoalNodeWide`` warning: the kernel tunes a
  scheme's one quota by whichever of its goals is nearest met, so several pods' shares
  in one scheme would hold each other back (a demotion would stop for the emptiest pod).
- Per scheme, ``dryRun`` turns the action into ``stat`` (the only place the agent reads
  it; a dry run has no destination and no fill); a ``tier`` becomes the target NUMA
  node(s) of that tier on this node (above);
  ``pod_mem_psi_us`` goals (which no kernel has) become ``user_input`` goals that
  ``feedback`` feeds with the memory PSI of the scheme's pods (of the cgroups the goals
  name, for a whole-node scheme).
- Units. Each user scheme is converted once, to the canonical integers of
  ``schemes.model.Scheme`` (bytes, microseconds, basis points: ``schemes.conversion``),
  and its monitoring to ``core.attrs.MonitoringAttrs``; every rewrite above is made on
  those with ``dataclasses.replace``, so a backend gets integers and parses nothing.

What cannot be planned for a scheme is returned as a ``Problem`` (reason and message),
which becomes a status condition, never an exception.

DAMON_STAT's place (``with_node_stat``): an agent that took DAMON_STAT over
(``ops.kernel.takeover``) keeps the node's idle-time and bandwidth figures coming from
one more context: paddr over the whole node with DAMON_STAT's own monitoring (intervals
auto-tuned toward 4 % of access events, sampling between 5 ms and 10 s, 10-1000
regions) and no scheme, appended to every plan. Its kdamond restarts with the others
when the set of contexts changes (the kernel adds kdamonds only while all are off), so
its ages then start over, as DAMON_STAT's do when it is turned on. A user context with
that monitoring already watches the same memory and serves instead, also when it bounds
its regions' size (``regions.maxSize``), which only makes the figures finer.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Final, Literal

from damon_agent.api import resources
from damon_agent.api import schemes as api_schemes
from damon_agent.core import attrs as core_attrs
from damon_agent.schemes import conversion, model

Operations = Literal["vaddr", "paddr"]
Severity = Literal["error", "warning"]


# ---------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class ContainerFacts:
    """One container of a pod (by its name in the pod spec), with its cgroup's facts."""

    name: str
    memcg_path: str | None = None  # None: not found on the node (not started yet)
    pids: tuple[int, ...] = ()


# Pod phases after which nothing runs in the pod any more.
_DONE_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class PodFacts:
    """A pod on this node, with what the node facts found for it."""

    namespace: str
    name: str
    uid: str
    labels: tuple[tuple[str, str], ...] = ()
    phase: str = "Running"
    # The pod's cgroup (PSI is hierarchical: the pod-level file covers its containers).
    cgroup_path: str | None = None
    # Memory cgroups holding the pod's pages, as DAMON's memcg filter takes them: the pod's
    # own and each container's, since the filter matches a page's memcg exactly, not its
    # ancestors. Empty: not found on the node.
    memcg_paths: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    # ``status.qosClass``: Guaranteed, Burstable or BestEffort; None when not known yet.
    qos_class: str | None = None
    # Opted out of every pod-targeting scheme (``resources.ANNOTATION_EXCLUDE``, or an
    # opt-out annotation that could not be read: the safe side); ``annotation_problem``
    # says what was wrong with it ("" when nothing), for a warning.
    excluded: bool = False
    annotation_problem: str = ""
    # Its containers (pod spec order) but those opted out
    # (``resources.ANNOTATION_EXCLUDE_CONTAINERS``): what a scheme's ``containers`` picks
    # from. ``memcg_paths`` and ``pids`` above hold none of an opted-out container's.
    containers: tuple[ContainerFacts, ...] = ()
    # The sum of its containers' memory requests (a ``requests`` floor); None when one
    # could not be read.
    memory_request_bytes: int | None = 0
    # Being deleted (``metadata.deletionTimestamp``): kubelet is stopping it, and its
    # processes and memory cgroups go within the grace period.
    deleting: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def done(self) -> bool:
        """Finished, or on its way out: no scheme acts on it any more. A pod being deleted
        leaves the plan at once, not when its cgroups vanish under a commit (which the
        kernel refuses whole, and before 6.15 answers by stopping the kdamond)."""
        return self.phase in _DONE_PHASES or self.deleting

    def only(self, names: Iterable[str]) -> PodFacts | None:
        """The pod narrowed to its containers of ``names`` (their memory cgroups and
        processes only); None when it has none of them."""
        wanted = set(names)
        chosen = [c for c in self.containers if c.name in wanted]
        if not chosen:
            return None
        return replace(
            self,
            memcg_paths=tuple(c.memcg_path for c in chosen if c.memcg_path),
            pids=tuple(sorted({pid for c in chosen for pid in c.pids})),
            containers=tuple(chosen),
        )


@dataclass(frozen=True)
class Capabilities:
    """What the backend on this node can do, as the planner needs it."""

    operations: frozenset[str]
    actions: Mapping[str, frozenset[str]]  # operations -> actions it supports
    filter_types: frozenset[str]
    goal_metrics: frozenset[str]
    intervals_goal: bool = True
    # Memory tier name ("dram", "cxl") -> NUMA nodes of that tier on this node.
    tiers: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # NUMA node -> the physical address range [start, end) its memory spans (paddr
    # migrations leave out the memory already in their destination tier). Empty: unknown.
    node_spans: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    # NUMA node -> its distance to each node (the kernel's, /sys/devices/system/node/
    # nodeN/distance): a paddr migration from a node goes to its tier's nearest node.
    # Empty: unknown.
    node_distances: Mapping[int, Mapping[int, int]] = field(default_factory=dict)
    # Migrations to several nodes at once, weighted (DAMOS ``dests``, Linux 6.17; vaddr).
    migrate_dests: bool = False
    # DAMOS allow filters (Linux 6.14). Without them every filter rejects and the planner
    # writes reject filters only (module docstring, "Isolation on kernels without...").
    allow_filters: bool = True
    # Operations -> the filter types that operations set applies, where it applies fewer
    # than ``filter_types`` (6.12's vaddr applies only addr and target). Absent: all.
    filter_types_by_ops: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # The scheme counters hold the bytes that passed ops filters (the kernel's
    # ``sz_ops_filter_passed``, 6.14). The in-process engines evaluate no per-page filter.
    counts_filter_passed: bool = False

    def filters_on(self, ops: str) -> frozenset[str]:
        """The filter types that ``ops`` applies on this backend."""
        return self.filter_types_by_ops.get(ops, self.filter_types)


# ---------------------------------------------------------------------------------------
# Output


@dataclass(frozen=True)
class Target:
    """A monitoring target: a process (vaddr) or the node's physical memory (pid None)."""

    pid: int | None = None
    pod: str | None = None


@dataclass(frozen=True)
class PlannedScheme:
    """One DAMOS scheme as it will run: the user's scheme rewritten for this node.

    ``scheme`` keeps the user's name; its action is what runs (``stat`` in a dry run).
    """

    source: str  # resources.AssignedScheme.key
    generation: int
    scheme: model.Scheme
    pods: tuple[str, ...]
    # Pods whose memory PSI feeds the scheme's user_input goals (index in
    # scheme.quota.goals).
    psi_goal_indexes: tuple[int, ...] = ()
    psi_cgroups: tuple[str, ...] = ()
    # Kernels without allow filters: the kernel schemes that together run this scheme,
    # one per memory cgroup of its pods (module docstring); ``scheme`` is the first of
    # them. Empty: ``scheme`` runs as one kernel scheme.
    kernel_schemes: tuple[model.Scheme, ...] = ()
    # paddr migrations to a tier: the physical memory outside that tier, which the
    # scheme's context monitors instead of all of it (module docstring, "Migrations on
    # paddr"). Empty: all of the node's memory.
    ranges: tuple[tuple[int, int], ...] = ()
    # paddr migrations to a tier, one copy per source node: the node whose memory this copy
    # monitors (``ranges`` is its span). None: not split by node.
    source_nid: int | None = None

    @property
    def name(self) -> str:
        """The name the user gave the scheme."""
        return self.scheme.name

    @property
    def action(self) -> str:
        """The action that runs (``stat`` for a dry run)."""
        return self.scheme.action

    @property
    def key(self) -> str:
        return f"{self.source}/{self.scheme.name}"

    def runs_as(self) -> tuple[model.Scheme, ...]:
        """The kernel schemes that run this scheme, in order (all under ``key``)."""
        return self.kernel_schemes or (self.scheme,)


@dataclass(frozen=True)
class Context:
    """One monitoring context (one kdamond on the kernel backend)."""

    operations: Operations
    monitoring: core_attrs.MonitoringAttrs
    targets: tuple[Target, ...]
    schemes: tuple[PlannedScheme, ...]
    # paddr: the physical ranges monitored (a migration's source tiers); empty: all RAM.
    ranges: tuple[tuple[int, int], ...] = ()

    @property
    def key(self) -> str:
        """Stable identity: equal monitoring (and memory) means the same context across
        plans."""
        return _context_key(self.operations, self.monitoring, self.ranges)


def _context_key(
    ops: str, monitoring: core_attrs.MonitoringAttrs, ranges: tuple[tuple[int, int], ...] = ()
) -> str:
    key = f"{ops}:{json.dumps(asdict(monitoring), separators=(',', ':'))}"
    if ranges:
        key += ":" + ",".join(f"{start:#x}-{end:#x}" for start, end in ranges)
    return key


@dataclass(frozen=True)
class Problem:
    source: str  # resources.AssignedScheme.key
    severity: Severity
    reason: str
    message: str


@dataclass(frozen=True)
class SourceSummary:
    """What the plan does for one assigned scheme object, for its status on this node."""

    key: str
    generation: int
    pods: tuple[str, ...]
    planned: tuple[str, ...]  # PlannedScheme keys that run
    # Where its tier migrations go on this node, for people: "promote to dram: node 0
    # from node 2, node 1 from node 3".
    tiers: tuple[str, ...] = ()
    # Pods at or below their reclaim floor now: left out of its pageout schemes.
    protected: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    contexts: tuple[Context, ...] = ()
    problems: tuple[Problem, ...] = ()
    sources: tuple[SourceSummary, ...] = ()

    def schemes(self) -> Iterable[PlannedScheme]:
        for context in self.contexts:
            yield from context.schemes

    def user_schemes(self) -> Iterable[PlannedScheme]:
        """Each user scheme once (the first of the copies a migration to a tier runs as on
        several nodes' memory, which count under its one key)."""
        seen: set[str] = set()
        for scheme in self.schemes():
            if scheme.key not in seen:
                seen.add(scheme.key)
                yield scheme

    def problems_of(self, source: str) -> list[Problem]:
        return [p for p in self.problems if p.source == source]


# ---------------------------------------------------------------------------------------
# Planning

POD_PSI_METRIC = "pod_mem_psi_us"

# Problem reasons (status condition reasons).
REASON_FILTER_UNSUPPORTED = "FilterUnsupported"
# A filter list that reject-only filters (kernels before 6.14) cannot express exactly.
REASON_FILTER_NEEDS_ALLOW = "FilterNeedsAllow"
# A pageout of anonymous memory on a node without swap.
REASON_NO_SWAP = "NoSwap"
# A migration on a node whose kernel promotes pages between tiers itself.
REASON_KERNEL_TIERING = "KernelTiering"


REASON_POD_ANNOTATION_INVALID = "PodAnnotationInvalid"


def _matches(assigned: resources.AssignedScheme, pod: PodFacts) -> bool:
    """Whether the scheme's namespaces and pod selector take ``pod`` (its labels only)."""
    # The tenant boundary, checked here again whatever the operator resolved: a
    # DamonScheme never reaches outside its own namespace.
    if assigned.kind == "DamonScheme" and pod.namespace != assigned.namespace:
        return False
    return assigned.selects_pod(pod.namespace, dict(pod.labels))


# Nodes of a destination tier that a migration cannot use on this node.
REASON_TIER_NODES_UNUSED = "TierNodesUnused"
# Source nodes whose distances to the destination tier are unknown (round-robin instead).
REASON_NODE_DISTANCES_UNKNOWN = "NodeDistancesUnknown"
# A fill's per-pod share that cannot be measured here: only the node-wide fill steers.
REASON_TIERING_GOAL_NODE_WIDE = "TieringGoalNodeWide"
# mode auto chose paddr with memcg filters over vaddr: the pods run too many processes.
REASON_MANY_PROCESSES = "ManyProcesses"
# Beyond this many processes, mode auto monitors pods' physical memory (memcg filters):
# each vaddr target needs regions of its own, so with DAMON's default 1,000 regions per
# kdamond a hundred targets already get ten each, and every commit writes every target.
VADDR_MAX_TARGETS = 100


def select_pods(assigned: resources.AssignedScheme, pods: Sequence[PodFacts]) -> list[PodFacts]:
    """The pods this scheme object selects, whatever their state on the node.

    Labels and namespaces first; then a pod that opted out is left out, and one of
    another QoS class than ``qosClasses`` asks for (or of none known yet). With
    ``containers``, each pod is narrowed to those of its containers (``PodFacts.only``),
    and a pod that has none of them is left out.
    """
    chosen = []
    for pod in pods:
        if pod.excluded or not _matches(assigned, pod):
            continue
        if assigned.qos_classes is not None and pod.qos_class not in assigned.qos_classes:
            continue
        scoped = pod if assigned.containers is None else pod.only(assigned.containers)
        if scoped is not None:
            chosen.append(scoped)
    return sorted(chosen, key=lambda p: p.key)


def _unreadable_opt_outs(
    source: resources.AssignedScheme, pods: Sequence[PodFacts]
) -> list[Problem]:
    """A warning for each pod the scheme's selector takes that is left out because its
    opt-out annotations could not be read."""
    return [
        Problem(
            source.key,
            "warning",
            REASON_POD_ANNOTATION_INVALID,
            f"pod {pod.key} is left out: {pod.annotation_problem}",
        )
        for pod in sorted(pods, key=lambda p: p.key)
        if pod.annotation_problem and not source.whole_node and _matches(source, pod)
    ]


@dataclass(frozen=True)
class NodeFacts:
    """What the node is now, where it changes what a scheme can do (None: not known)."""

    swap_bytes: int | None  # SwapTotal: without swap, anonymous pages cannot be paged out
    # The kernel's own NUMA balancing and demotion: migrations may meet them.
    kernel_tiering: resources.KernelTiering | None = None


def plan(
    assigned: Sequence[resources.AssignedScheme],
    pods: Sequence[PodFacts],
    caps: Capabilities,
    node: NodeFacts | None = None,
    protected: Mapping[str, frozenset[str]] | None = None,
) -> Plan:
    """The plan for this node (see the module docstring for the rules).

    ``node``: the node's facts; None where they do not apply (the sim). ``protected``:
    scheme object key -> the keys of its pods at or below their reclaim floor now
    (``runtime.protection``), left out of its pageout schemes.
    """
    problems: list[Problem] = []
    summaries: list[SourceSummary] = []
    # context key -> (operations, monitoring, ranges, [(scheme, pods of that scheme)])
    groups: dict[
        str,
        tuple[
            Operations,
            core_attrs.MonitoringAttrs,
            tuple[tuple[int, int], ...],
            list[tuple[PlannedScheme | None, list[PodFacts]]],
        ],
    ] = {}

    for source in sorted(assigned, key=lambda a: a.key):
        problems.extend(_unreadable_opt_outs(source, pods))
        selected = select_pods(source, pods)
        live = [p for p in selected if not p.done]
        ops = _operations(source, caps, problems)
        if ops is None:
            summaries.append(SourceSummary(source.key, source.generation, _keys(live), ()))
            continue
        usable = _usable_pods(source, live, ops, problems)
        if _too_many_processes(source, usable, ops, caps):
            problems.append(_many_processes(source, usable))
            ops = "paddr"
            usable = _usable_pods(source, live, ops, problems)
        monitoring = conversion.monitoring_attrs(source.spec.monitoring)
        if monitoring.intervals_goal is not None and not caps.intervals_goal:
            problems.append(
                Problem(
                    source.key,
                    "warning",
                    "IntervalsGoalUnsupported",
                    "the backend cannot auto-tune intervals; fixed intervals are used",
                )
            )
            monitoring = replace(monitoring, intervals_goal=None)
        planned: list[str] = []
        resolved: list[str] = []
        key = _context_key(ops, monitoring)
        floored = (protected or {}).get(source.key, frozenset()) if source.protection else set()
        kept = [p for p in usable if p.key not in floored]
        if source.whole_node or usable:
            if not source.spec.schemes:
                # Monitoring only (``damon-agent run`` without schemes): a context with
                # the source's targets and no scheme.
                groups.setdefault(key, (ops, monitoring, (), []))[3].append((None, usable))
            for spec in source.spec.schemes:
                beside_kernel = _beside_kernel_tiering(source, spec, node)
                if beside_kernel is not None and beside_kernel.severity == "error":
                    problems.append(beside_kernel)
                    continue
                # A pageout leaves out the pods at their floor; with none left it is not
                # planned at all: no pods must never mean all of the node's memory.
                own = kept if spec.action in resources.PROTECTED_ACTIONS else usable
                if not own and not source.whole_node:
                    continue
                copies = _plan_scheme(source, spec, ops=ops, pods=own, caps=caps, problems=problems)
                for scheme in copies:
                    where = _context_key(ops, monitoring, scheme.ranges)
                    group = groups.setdefault(where, (ops, monitoring, scheme.ranges, []))
                    group[3].append((scheme, own))
                if copies:
                    planned.append(copies[0].key)
                    if spec.tier is not None and not spec.dry_run:
                        resolved.append(_resolution(spec.name, spec.tier, copies))
                    if node is not None and node.swap_bytes == 0:
                        problems.extend(_without_swap(source, spec, copies[0]))
                    if beside_kernel is not None:
                        problems.append(beside_kernel)
        summaries.append(
            SourceSummary(
                source.key,
                source.generation,
                _keys(live),
                tuple(planned),
                tuple(resolved),
                protected=tuple(p.key for p in usable if p.key in floored),
            )
        )

    contexts = [
        _build_context(ops, monitoring, ranges, members, allow_filters=caps.allow_filters)
        for _, (ops, monitoring, ranges, members) in sorted(groups.items())
    ]
    return Plan(contexts=tuple(contexts), problems=tuple(problems), sources=tuple(summaries))


def _keys(pods: Iterable[PodFacts]) -> tuple[str, ...]:
    return tuple(p.key for p in pods)


def _vaddr_has_actions(source: resources.AssignedScheme, caps: Capabilities) -> bool:
    """Whether vaddr applies every action of ``source`` (dry runs act as ``stat``)."""
    actions = caps.actions.get("vaddr", frozenset())
    return all(one.action in actions or one.dry_run for one in source.spec.schemes)


def _operations(
    source: resources.AssignedScheme, caps: Capabilities, problems: list[Problem]
) -> Operations | None:
    mode = source.spec.monitoring.mode
    if source.whole_node:
        if mode == "vaddr":
            problems.append(
                Problem(
                    source.key,
                    "error",
                    "ModeNeedsPods",
                    "mode vaddr needs a podSelector; whole-node schemes monitor physical "
                    "memory (paddr)",
                )
            )
            return None
        wanted: Operations = "paddr"
    elif mode == "paddr":
        wanted = "paddr"
    elif "vaddr" in caps.operations and (mode == "vaddr" or _vaddr_has_actions(source, caps)):
        wanted = "vaddr"
    elif mode == "auto" and "vaddr" in caps.operations:
        # auto, and some action exists only on paddr here (migrate_hot/migrate_cold before
        # 6.17): monitor physical memory with the pods' memcg filters instead.
        wanted = "paddr"
    else:
        wanted = "paddr"
        if mode == "vaddr":
            problems.append(
                Problem(
                    source.key,
                    "warning",
                    "VaddrUnavailable",
                    "the node's DAMON has no vaddr operations; monitoring physical memory "
                    "with a memcg filter per pod instead",
                )
            )
    if wanted not in caps.operations:
        problems.append(
            Problem(
                source.key,
                "error",
                "OperationsUnsupported",
                f"the node's backend has no {wanted} operations "
                f"(it has: {', '.join(sorted(caps.operations)) or 'none'})",
            )
        )
        return None
    if wanted == "paddr" and not source.whole_node and "memcg" not in caps.filters_on("paddr"):
        problems.append(
            Problem(
                source.key,
                "error",
                "MemcgFilterUnsupported",
                "selecting pods on paddr needs DAMOS memcg filters, which the node's DAMON lacks",
            )
        )
        return None
    return wanted


def _too_many_processes(
    source: resources.AssignedScheme, pods: list[PodFacts], ops: Operations, caps: Capabilities
) -> bool:
    """Whether ``auto`` should monitor these pods' physical memory rather than each of
    their processes: more processes than ``VADDR_MAX_TARGETS``, and paddr can do it all."""
    if ops != "vaddr" or source.spec.monitoring.mode != "auto":
        return False
    if sum(len(p.pids) for p in pods) <= VADDR_MAX_TARGETS:
        return False
    paddr_actions = caps.actions.get("paddr", frozenset())
    return (
        "paddr" in caps.operations
        and "memcg" in caps.filters_on("paddr")
        and all(one.action in paddr_actions or one.dry_run for one in source.spec.schemes)
        and all(p.memcg_paths for p in pods)
    )


def _many_processes(source: resources.AssignedScheme, pods: list[PodFacts]) -> Problem:
    count = sum(len(p.pids) for p in pods)
    return Problem(
        source.key,
        "warning",
        REASON_MANY_PROCESSES,
        f"the selected pods run {count} processes, more than the {VADDR_MAX_TARGETS} a "
        "kdamond monitors well one by one (each needs regions of its own): monitoring "
        "their physical memory with a memcg filter per pod instead (mode: auto)",
    )


def _usable_pods(
    source: resources.AssignedScheme, live: list[PodFacts], ops: Operations, problems: list[Problem]
) -> list[PodFacts]:
    usable = []
    missing = []
    for pod in live:
        if (ops == "paddr" and pod.memcg_paths) or (ops == "vaddr" and pod.pids):
            usable.append(pod)
        else:
            missing.append(pod.key)
    if missing:
        what = "memory cgroup" if ops == "paddr" else "processes"
        problems.append(
            Problem(
                source.key,
                "warning",
                "PodsNotFound",
                f"no {what} found on the node yet for: {', '.join(missing)}",
            )
        )
    return usable


def _without_swap(
    source: resources.AssignedScheme, spec: api_schemes.SchemeSpec, planned: PlannedScheme
) -> list[Problem]:
    """A pageout that may meet anonymous memory on a node without swap (module docstring)."""
    if planned.action != "pageout":
        return []
    # "Not anonymous": a reject of anon pages, or an allow of what is not anon.
    if any(f.type == "anon" and f.allow != f.matching for f in spec.filters):
        return []
    return [
        Problem(
            source.key,
            "warning",
            REASON_NO_SWAP,
            f"scheme {spec.name}: this node has no swap, so pageout can reclaim only "
            "file-backed pages here; anonymous ones stay. Enable swap, or say file-only "
            "with a filter {type: anon, allow: false}",
        )
    ]


def _beside_kernel_tiering(
    source: resources.AssignedScheme, spec: api_schemes.SchemeSpec, node: NodeFacts | None
) -> Problem | None:
    """A migration on a node whose kernel promotes pages itself (module docstring): a
    warning (``Coexist``), or the error that leaves it out (``Refuse``); None elsewhere."""
    kernel = node.kernel_tiering if node is not None else None
    if spec.action not in api_schemes.MIGRATIONS or kernel is None or not kernel.promotes:
        return None
    modes = ", ".join(kernel.numa_balancing_modes)
    setting = f"kernel.numa_balancing={kernel.numa_balancing} ({modes})"
    if spec.kernel_tiering == "Refuse":
        return Problem(
            source.key,
            "error",
            REASON_KERNEL_TIERING,
            f"scheme {spec.name}: not applied on this node, as its kernelTiering: Refuse "
            f"asks: {setting} promotes pages from the CXL tier itself",
        )
    return Problem(
        source.key,
        "warning",
        REASON_KERNEL_TIERING,
        f"scheme {spec.name}: {setting} also promotes pages from the CXL tier; the kernel "
        "and this scheme may move the same pages (set kernelTiering: Refuse to stand aside)",
    )


def _plan_scheme(
    source: resources.AssignedScheme,
    spec: api_schemes.SchemeSpec,
    *,
    ops: Operations,
    pods: list[PodFacts],
    caps: Capabilities,
    problems: list[Problem],
) -> list[PlannedScheme]:
    """The scheme as it runs here: one planned scheme, or one per source node (paddr
    migrations to a tier), all under one key; empty when it cannot be planned."""

    def refuse(reason: str, message: str) -> None:
        problems.append(Problem(source.key, "error", reason, f"scheme {spec.name}: {message}"))

    scheme = conversion.scheme(spec)
    if spec.dry_run:
        # Counted as the scheme would act, acting on nothing: no destination either.
        scheme = replace(scheme, action="stat", target_nid=None, tier=None, fill=None)
    placements: tuple[_Placement, ...] = (_Placement(),)
    available = caps.actions.get(ops, frozenset())
    if scheme.action not in available:
        refuse(
            "ActionUnsupported",
            f"action {scheme.action} is not available on {ops} on this node "
            f"(available: {', '.join(sorted(available)) or 'none'})",
        )
        return []
    if scheme.tier is not None:
        nids = caps.tiers.get(scheme.tier, ())
        if not nids:
            refuse("TierNotOnNode", f"this node has no {scheme.tier} memory tier")
            return []
        if scheme.fill is not None:
            metric = "node_mem_used_bp" if scheme.action == "migrate_hot" else "node_mem_free_bp"
            if metric not in caps.goal_metrics:
                refuse(
                    "GoalMetricUnsupported",
                    f"fill needs the {metric} quota goal (Linux 6.16), which this node's "
                    "DAMON lacks; write the scheme without fill",
                )
                return []
            if not caps.tiers.get("dram"):
                refuse("TierNotOnNode", "fill steers the dram tier, which this node has not")
                return []
        placements = _tier_placements(
            source, spec, scheme.tier, nids, ops=ops, caps=caps, problems=problems
        )
        scheme = replace(scheme, target_nid=placements[0].target_nid, tier=None)
        if ops == "paddr" and not placements[0].ranges:
            scheme = replace(scheme, filters=(*_outside_tier(nids, caps), *scheme.filters))

    applied_types = caps.filters_on(ops)
    for index, f in enumerate(scheme.filters):
        if f.type == "target":
            refuse("TargetFilterReserved", "target filters are set by the agent, per pod")
            return []
        if f.type not in caps.filter_types:
            refuse(REASON_FILTER_UNSUPPORTED, f"{f.type} filters are not available on this node")
            return []
        if f.type not in applied_types:
            refuse(
                REASON_FILTER_UNSUPPORTED,
                f"filters[{index}]: {ops} does not apply {f.type} filters on this node "
                f"(it applies {', '.join(sorted(applied_types)) or 'none'})"
                + ("; monitoring mode paddr does" if f.type in caps.filters_on("paddr") else ""),
            )
            return []

    psi_indexes: list[int] = []
    psi_paths: list[str] = []
    if scheme.quota is not None:
        goals = []
        for index, goal in enumerate(scheme.quota.goals):
            if goal.metric == POD_PSI_METRIC:
                psi_indexes.append(index)
                if goal.path:
                    psi_paths.append(goal.path)
                goals.append(model.QuotaGoal(metric="user_input", target=goal.target))
                continue
            if goal.metric not in caps.goal_metrics:
                refuse("GoalMetricUnsupported", f"goal metric {goal.metric} is not available")
                return []
            goals.append(goal)
        if psi_indexes and "user_input" not in caps.goal_metrics:
            refuse("GoalMetricUnsupported", "pod PSI goals need the user_input goal metric")
            return []
        scheme = replace(scheme, quota=replace(scheme.quota, goals=tuple(goals)))

    copies: tuple[model.Scheme, ...] = ()
    if caps.allow_filters:
        if not source.whole_node:
            scheme = replace(scheme, filters=_isolating_filters(scheme.filters, ops, pods))
    else:
        if source.whole_node:
            inexpressible = next((i for i, f in enumerate(scheme.filters[:-1]) if f.allow), None)
            if inexpressible is not None:
                refuse(
                    REASON_FILTER_NEEDS_ALLOW,
                    f"filters[{inexpressible}]: an allow filter that is not the last one "
                    "cannot be written on this node, whose DAMOS has reject filters only "
                    "(allow filters came with Linux 6.14); reorder or split the scheme",
                )
                return []
        scheme = replace(
            scheme, filters=tuple(r for f in scheme.filters for r in _reject_form(f, ops))
        )
        if ops == "paddr" and not source.whole_node:
            paths = _memcg_paths(pods)
            if len(paths) > 1 and scheme.pattern.min_age_us > 0:
                refuse(
                    REASON_FILTER_NEEDS_ALLOW,
                    f"its pods' memory is in {len(paths)} memory cgroups, which this node's "
                    "DAMOS (reject filters only; allow filters came with Linux 6.14) can "
                    "follow only as one kernel scheme per cgroup, and those copies work "
                    "only with a minimum age of 0: acting on a region resets its age, so "
                    f"the copies after the first would never see {spec.access_pattern.age.min} "
                    "of age. Use a minimum age of 0, mode vaddr, or a 6.14+ kernel",
                )
                return []
            copies = _per_memcg(scheme, paths)
            scheme = copies[0]
            if len(copies) == 1:
                copies = ()
    psi_cgroups: tuple[str, ...] = ()
    if psi_indexes:
        # A pod-targeted scheme's goal follows its own pods; a whole-node one the cgroups
        # its goals name.
        if source.whole_node:
            psi_cgroups = tuple(psi_paths)
        else:
            psi_cgroups = tuple(p.cgroup_path for p in pods if p.cgroup_path)
    planned = PlannedScheme(
        source=source.key,
        generation=source.generation,
        scheme=scheme,
        pods=_keys(pods),
        psi_goal_indexes=tuple(psi_indexes),
        psi_cgroups=psi_cgroups,
        kernel_schemes=copies,
    )
    memcg = None
    if scheme.fill is not None:
        memcg = _pod_share_memcg(
            source, spec, scheme.fill, action=scheme.action, pods=pods, caps=caps, problems=problems
        )
    return [_placed(planned, placement, len(placements), caps, memcg) for placement in placements]


def _as_reject(f: model.Filter) -> model.Filter:
    """A reject filter meaning what ``f`` does not pass: allow F becomes reject-not-F."""
    return replace(f, allow=False, matching=not f.matching) if f.allow else f


def _outside_tier_ranges(nids: Sequence[int], caps: Capabilities) -> tuple[tuple[int, int], ...]:
    """The physical spans of every node outside the destination tier ``nids``, merged;
    empty when a node's span is unknown or interleaves with the destination's (then the
    destination is left out by filters only: ``_outside_tier``)."""
    if not caps.node_spans or any(nid not in caps.node_spans for nid in nids):
        return ()
    inside = [caps.node_spans[nid] for nid in nids]
    outside = sorted(span for nid, span in caps.node_spans.items() if nid not in nids)
    if not outside or any(a < d and c < b for a, b in outside for c, d in inside):
        return ()
    merged: list[tuple[int, int]] = []
    for start, end in outside:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def _outside_tier(nids: Sequence[int], caps: Capabilities) -> tuple[model.Filter, ...]:
    """Reject filters for the physical memory of the destination tier's nodes, where the
    context cannot leave it out (``_outside_tier_ranges``).

    What the filters reject is neither tried nor charged to the quota, but the quota's
    prioritization still ranks it: the kernel picks the score threshold from every region
    the access pattern matches, before any filter. A CXL node's idle memory, the coldest
    and oldest of all, then fills a demotion's quota and the pages that should move stay
    below the threshold. Monitoring only the source tiers avoids that."""
    spans = [caps.node_spans[nid] for nid in sorted(nids) if nid in caps.node_spans]
    return tuple(model.Filter(type="addr", addr_start=a, addr_end=b) for a, b in spans)


# ---------------------------------------------------------------------------------------
# Every node of a tier, and goal-driven tiering (module docstring)


@dataclass(frozen=True)
class _Placement:
    """Where one copy of a migration to a tier runs: its destination node(s), and on
    paddr the memory its context monitors (``ranges``; empty: all of it)."""

    target_nid: int | None = None
    source_nid: int | None = None
    ranges: tuple[tuple[int, int], ...] = ()
    dests: tuple[model.Dest, ...] = ()


def _tier_placements(
    source: resources.AssignedScheme,
    spec: api_schemes.SchemeSpec,
    tier: str,
    nids: Sequence[int],
    *,
    ops: Operations,
    caps: Capabilities,
    problems: list[Problem],
) -> tuple[_Placement, ...]:
    """The copies a migration to ``tier`` (its nodes ``nids``) runs as on this node."""

    def warn(reason: str, message: str) -> None:
        problems.append(Problem(source.key, "warning", reason, f"scheme {spec.name}: {message}"))

    unused = ", ".join(str(nid) for nid in nids[1:])
    if ops == "vaddr":
        if len(nids) > 1 and caps.migrate_dests:
            return (
                _Placement(target_nid=nids[0], dests=tuple(model.Dest(nid, 1) for nid in nids)),
            )
        if len(nids) > 1:
            warn(
                REASON_TIER_NODES_UNUSED,
                "this node's DAMON migrates to one node per scheme (several destinations "
                f"came with Linux 6.17): every page goes to node {nids[0]} of tier {tier}, "
                f"and its node(s) {unused} are not used",
            )
        return (_Placement(target_nid=nids[0]),)
    ranges = _outside_tier_ranges(nids, caps)
    sources = sorted(nid for nid in caps.node_spans if nid not in nids)
    spans = sorted(caps.node_spans[nid] for nid in sources)
    apart = bool(ranges) and all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
    if not apart:
        if len(nids) > 1:
            warn(
                REASON_TIER_NODES_UNUSED,
                "the NUMA nodes' physical spans are unknown or interleave, so the memory of "
                f"each node cannot be watched apart: every page goes to node {nids[0]} of "
                f"tier {tier}, and its node(s) {unused} are not used",
            )
        return (_Placement(target_nid=nids[0], ranges=ranges),)
    if len(nids) == 1 and len(sources) == 1:
        return (_Placement(target_nid=nids[0], source_nid=sources[0], ranges=ranges),)
    nearest, unknown = _nearest_nodes(sources, nids, caps.node_distances)
    if unknown:
        warn(
            REASON_NODE_DISTANCES_UNKNOWN,
            f"the distances from node(s) {', '.join(map(str, unknown))} to tier {tier} are "
            f"unknown, so they migrate to its nodes in turn: "
            + ", ".join(f"node {nid} to node {nearest[nid]}" for nid in unknown),
        )
    return tuple(
        _Placement(target_nid=nearest[nid], source_nid=nid, ranges=(caps.node_spans[nid],))
        for nid in sources
    )


def _nearest_nodes(
    sources: Sequence[int], nids: Sequence[int], distances: Mapping[int, Mapping[int, int]]
) -> tuple[dict[int, int], list[int]]:
    """Source node -> the destination among ``nids`` nearest to it by the kernel's node
    distances (ties: the lowest id); sources without known distances take ``nids`` in
    turn. Also returns those sources."""
    ordered = sorted(nids)
    chosen: dict[int, int] = {}
    unknown: list[int] = []
    for nid in sources:
        row = distances.get(nid, {})
        if len(ordered) == 1:
            chosen[nid] = ordered[0]
        elif all(dest in row for dest in ordered):
            chosen[nid] = min(ordered, key=row.__getitem__)  # the first minimum: lowest id
        else:
            chosen[nid] = ordered[len(unknown) % len(ordered)]
            unknown.append(nid)
    return chosen, unknown


def _pod_share_memcg(
    source: resources.AssignedScheme,
    spec: api_schemes.SchemeSpec,
    fill: model.Fill,
    *,
    action: str,
    pods: Sequence[PodFacts],
    caps: Capabilities,
    problems: list[Problem],
) -> str | None:
    """The memory cgroup whose share of each DRAM node ``fill.pod_share_bp`` steers; None
    where only the node-wide fill steers (with a warning why, when a share was asked)."""
    if fill.pod_share_bp is None:
        return None

    def node_wide(why: str) -> None:
        problems.append(
            Problem(
                source.key,
                "warning",
                REASON_TIERING_GOAL_NODE_WIDE,
                f"scheme {spec.name}: fill.podShare {why}; only the node-wide fill "
                "(fill.dram) steers it here",
            )
        )

    metric = "node_memcg_used_bp" if action == "migrate_hot" else "node_memcg_free_bp"
    if source.whole_node:
        node_wide("is a pod's share, and a wholeNode scheme selects no pod")
        return None
    if metric not in caps.goal_metrics:
        node_wide(f"needs the {metric} quota goal (Linux 6.19), which this node's DAMON lacks")
        return None
    if len(pods) != 1:
        node_wide(
            f"is one goal per pod, and the kernel eases a scheme's one quota off as soon as "
            f"one of its goals is met, so the shares of its {len(pods)} pods on this node "
            "would hold each other back (select one pod per scheme for per-pod shares)"
        )
        return None
    paths = pods[0].memcg_paths
    # The pod-level cgroup: the kernel counts its descendants' (the containers') pages.
    tops = [p for p in paths if not any(p.startswith(o.rstrip("/") + "/") for o in paths)]
    if len(tops) != 1:
        node_wide(f"needs one memory cgroup holding pod {pods[0].key}, and found {len(tops)}")
        return None
    return tops[0]


def _placed(
    planned: PlannedScheme,
    placement: _Placement,
    copies: int,
    caps: Capabilities,
    memcg: str | None,
) -> PlannedScheme:
    """``planned`` as the copy at ``placement``, one of ``copies`` sharing its quota."""
    return replace(
        planned,
        scheme=_place(planned.scheme, placement, copies, caps, memcg),
        kernel_schemes=tuple(
            _place(one, placement, copies, caps, memcg) for one in planned.kernel_schemes
        ),
        ranges=placement.ranges,
        source_nid=placement.source_nid,
    )


def _place(
    scheme: model.Scheme,
    placement: _Placement,
    copies: int,
    caps: Capabilities,
    memcg: str | None,
) -> model.Scheme:
    if placement.target_nid is not None:
        scheme = replace(scheme, target_nid=placement.target_nid, dests=placement.dests)
    if copies > 1 and scheme.quota is not None:
        scheme = replace(scheme, quota=_quota_share(scheme.quota, copies))
    if scheme.fill is None:
        return scheme
    # The DRAM side: where a promotion goes, where a demotion comes from.
    if scheme.action == "migrate_hot":
        dram = tuple(d.nid for d in placement.dests) or (scheme.target_nid,)
    elif placement.source_nid is not None:
        dram = (placement.source_nid,)
    else:
        dram = caps.tiers.get("dram", ())
    return model.with_fill_goals(scheme, [nid for nid in dram if nid is not None], memcg)


def _resolution(name: str, tier: str, copies: Sequence[PlannedScheme]) -> str:
    """Where a migration to ``tier`` goes on this node, for people (``SourceSummary``)."""
    first = copies[0].scheme
    if first.dests:
        nodes = ", ".join(str(d.nid) for d in first.dests)
        weights = ":".join(str(d.weight) for d in first.dests)
        return f"{name} to {tier}: nodes {nodes} (weights {weights})"
    if len(copies) == 1:
        return f"{name} to {tier}: node {first.target_nid}"
    return f"{name} to {tier}: " + ", ".join(
        f"node {c.scheme.target_nid} from node {c.source_nid}" for c in copies
    )


def _isolating_filters(
    user: Sequence[model.Filter], ops: Operations, pods: list[PodFacts]
) -> tuple[model.Filter, ...]:
    """User filters as rejects, then (paddr) allow filters for the scheme's pods only.

    On vaddr the pod filters are ``target`` filters, appended by ``_build_context`` once
    the context's target indexes are known.
    """
    rejects = tuple(_as_reject(f) for f in user)
    if ops == "vaddr":
        return rejects
    return rejects + tuple(
        model.Filter(type="memcg", allow=True, memcg_path=path)
        for p in pods
        for path in p.memcg_paths
    )


def _reject_form(f: model.Filter, ops: Operations) -> tuple[model.Filter, ...]:
    """``f`` as reject filters only, for kernels without allow filters (module docstring)."""
    reject = _as_reject(f)
    if ops != "paddr" or reject.type != "addr" or reject.matching:
        return (reject,)
    # "Reject outside [start, end)": paddr's ops layer would reject every page with it, so
    # reject the two ranges around it instead.
    start, end = reject.addr_start, reject.addr_end
    assert start is not None and end is not None
    around = ((0, start), (end, model.UNBOUNDED))
    return tuple(model.Filter(type="addr", addr_start=a, addr_end=b) for a, b in around if a < b)


def _memcg_paths(pods: Sequence[PodFacts]) -> list[str]:
    """The pods' memory cgroups that hold their processes' memory, each once, in pod order.

    A memcg with another of the set below it (a pod's own cgroup above its containers')
    is left out: kubelet runs processes only in container cgroups (cgroup v2 forbids
    processes beside child cgroups), so all a pod-level memcg holds is what exited
    containers left behind. On allow-capable kernels the pod-level filter stays (one
    filter more costs nothing there); here it would cost a kernel scheme.
    """
    paths = list(dict.fromkeys(path for pod in pods for path in pod.memcg_paths))
    return [p for p in paths if not any(o.startswith(p.rstrip("/") + "/") for o in paths)]


def _per_memcg(scheme: model.Scheme, paths: Sequence[str]) -> tuple[model.Scheme, ...]:
    """One kernel scheme per memcg path, each rejecting every other memcg's pages first,
    sharing the quota (module docstring)."""
    quota = scheme.quota
    if quota is not None and len(paths) > 1:
        quota = _quota_share(quota, len(paths))
    return tuple(
        replace(
            scheme,
            filters=(model.Filter(type="memcg", matching=False, memcg_path=path), *scheme.filters),
            quota=quota,
        )
        for path in paths
    )


def _quota_share(quota: model.Quota, copies: int) -> model.Quota:
    """One of ``copies`` equal shares of ``quota``'s size and time, rounded up (0, no
    limit, stays 0); goals are kept: each copy tunes its share toward them."""
    # The kernel counts the time quota in whole milliseconds: share those.
    ms = -(-(quota.time_us // 1000) // copies)
    return replace(quota, size_bytes=-(-quota.size_bytes // copies), time_us=ms * 1000)


def _build_context(
    ops: Operations,
    monitoring: core_attrs.MonitoringAttrs,
    ranges: tuple[tuple[int, int], ...],
    members: list[tuple[PlannedScheme | None, list[PodFacts]]],
    *,
    allow_filters: bool,
) -> Context:
    if ops == "paddr":
        targets: tuple[Target, ...] = (Target(),)
        schemes = tuple(scheme for scheme, _ in members if scheme is not None)
    else:
        owner: dict[int, str] = {}
        for _, pods in members:
            for pod in pods:
                for pid in pod.pids:
                    owner.setdefault(pid, pod.key)
        pids = sorted(owner)
        index_of = {pid: i for i, pid in enumerate(pids)}
        targets = tuple(Target(pid=pid, pod=owner[pid]) for pid in pids)
        schemes = tuple(
            replace(
                planned,
                scheme=replace(
                    planned.scheme,
                    filters=_target_isolation(
                        planned.scheme.filters,
                        own={index_of[pid] for pod in pods for pid in pod.pids},
                        nr_targets=len(pids),
                        allow_filters=allow_filters,
                    ),
                ),
            )
            for planned, pods in members
            if planned is not None
        )
    return Context(
        operations=ops,
        monitoring=monitoring,
        targets=targets,
        schemes=tuple(sorted(schemes, key=lambda s: s.key)),
        ranges=ranges,
    )


def _target_isolation(
    filters: Sequence[model.Filter], *, own: set[int], nr_targets: int, allow_filters: bool
) -> tuple[model.Filter, ...]:
    """A vaddr scheme's filters keeping it to its own targets (context target indexes)."""
    if allow_filters:
        return (
            *filters,
            *(model.Filter(type="target", allow=True, target_index=i) for i in sorted(own)),
        )
    others = (
        model.Filter(type="target", allow=False, matching=True, target_index=i)
        for i in range(nr_targets)
        if i not in own
    )
    return (*others, *filters)


# ---------------------------------------------------------------------------------------
# DAMON_STAT's place

# DAMON_STAT's monitoring (mm/damon/stat.c, Documentation/admin-guide/mm/damon/stat.rst).
NODE_STAT_MONITORING: Final = core_attrs.MonitoringAttrs(
    sample_us=5_000,
    aggr_us=100_000,
    update_us=60_000_000,
    min_nr_regions=10,
    max_nr_regions=1000,
    intervals_goal=core_attrs.IntervalsGoal(
        access_bp=400, aggrs=3, min_sample_us=5_000, max_sample_us=10_000_000
    ),
)


def node_stat_context(caps: Capabilities) -> Context:
    """The context whose snapshots give DAMON_STAT's figures on this node."""
    monitoring = NODE_STAT_MONITORING
    if not caps.intervals_goal:
        monitoring = replace(monitoring, intervals_goal=None)
    return Context(operations="paddr", monitoring=monitoring, targets=(Target(),), schemes=())


def with_node_stat(plan: Plan, caps: Capabilities) -> tuple[Plan, str]:
    """``plan`` with DAMON_STAT's context (module docstring), and that context's key."""
    context = node_stat_context(caps)
    for running in plan.contexts:
        # A bound on the regions' size (``regions.maxSize``) only makes the figures finer.
        unbounded = replace(running.monitoring, max_region_bytes=None)
        if _context_key(running.operations, unbounded, running.ranges) == context.key:
            return plan, running.key
    return replace(plan, contexts=(*plan.contexts, context)), context.key
