"""The custom resources of group ``damon.io``, version ``v1alpha1``, as pydantic models.

Three kinds::

  DamonScheme         namespaced   spec: a scheme file (monitoring + schemes) and which pods
                                   of its own namespace (podSelector) on which nodes
                                   (nodeSelector). A tenant's scheme can never reach another
                                   namespace: the namespace is not a field, it is the object's.
  ClusterDamonScheme  cluster      spec: a scheme file and namespaceSelector + podSelector, or
                                   wholeNode (the node's physical memory); for cluster admins.
  DamonNode           cluster      one per node, named after it. spec: written by the
                                   operator, the schemes assigned to the node, resolved (the
                                   namespaces a selector matched, the scheme's UID and
                                   generation). status: written by that node's agent only.

Both scheme kinds narrow the pods they select (not ``wholeNode``, which selects none):
``qosClasses`` (only pods of those QoS classes), ``containers`` (only those containers of
the pods: their cgroups and processes) and ``protection`` (a reclaim floor per pod: its
pageout schemes leave alone a pod whose memory use is at or below the floor). A pod opts
out itself with annotations (``ANNOTATION_EXCLUDE``, ``ANNOTATION_EXCLUDE_CONTAINERS``),
which the agent reads: see the pod scope section below and docs/pod-selection.md.

Why DamonNode: N agents writing into one scheme's status would conflict and grow one
object without bound. Each agent writes only its own DamonNode; the operator aggregates
those into the schemes' conditions.

The scheme part embeds ``api_schemes.SchemeFile`` (field names and human units identical to
the standalone scheme files), so a scheme file pasted under ``spec`` is a valid CR spec.
Spec models forbid unknown fields (a typo is an error); status models ignore them (a
newer agent may report more than an older operator knows). Summaries meant for printer
columns (``nodesReady``, ``applied``, ``tiers``...) are plain fields or computed fields so
that ``kubectl get`` can show them through a simple JSONPath.

Errors: model validation raises ``pydantic.ValidationError``; ``describe`` (re-exported
from ``schemes``) turns one into ``field.path: reason; ...``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic

from damon_agent.api import base, names, selectors, units
from damon_agent.api import conditions as api_conditions
from damon_agent.api import schemes as api_schemes

# Mutable field defaults are safe: pydantic copies them for every instance. Ruff knows
# that of pydantic.BaseModel subclasses but cannot follow base.ApiModel to it.
# ruff: noqa: RUF012

# The API's names live in ``names`` (no models to import there); here for the many users
# that also need the models.
GROUP = names.GROUP
VERSION = names.VERSION
API_VERSION = names.API_VERSION
Kind = names.Kind
SCHEME_KINDS = names.SCHEME_KINDS
PLURALS = names.PLURALS
scheme_key = names.scheme_key


MAX_INT64 = units.UNBOUNDED
MAX_NAMESPACES = 10_000
MAX_ASSIGNED = 256
MAX_FAILING_NODES = 20
# Pods a DamonNode status lists (those the node's schemes select, most pressed and most
# saved first); the rest are counted in ``podsOmitted``. Keeps the object bounded.
MAX_POD_STATUSES = 64
MAX_CONTEXTS = 64
Count = Annotated[int, pydantic.Field(ge=0, le=MAX_INT64)]
Bytes = Annotated[int, pydantic.Field(ge=0, le=MAX_INT64)]
Name = Annotated[str, pydantic.Field(min_length=1, max_length=253)]
NamespaceName = Annotated[
    str, pydantic.Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
Uid = Annotated[str, pydantic.Field(max_length=64)]
Tier = Literal["dram", "cxl"]
Backend = Literal["kernel", "userspace", "sim"]

describe = api_schemes.describe_validation_error


def to_api(model: pydantic.BaseModel) -> dict[str, Any]:
    """The JSON an API object carries for ``model``: camelCase, no nulls, no empty strings.

    Empty strings are left out because the test bed's kube-apiserver (1.20 built with
    Go 1.19, see TESTBED.md) decodes "" in custom resources as null and then refuses it;
    every string field here defaults to "" when absent, so nothing is lost.
    """
    dumped: dict[str, Any] = _without_empty_strings(
        model.model_dump(mode="json", exclude_none=True)
    )
    return dumped


def _without_empty_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_empty_strings(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_without_empty_strings(v) for v in value]
    return value


def _at_least_one_scheme(spec: api_schemes.SchemeFile) -> None:
    if not spec.schemes:
        raise ValueError("schemes: at least one scheme is needed")


# ---------------------------------------------------------------------------------------
# Which pods, and which of their memory: the pod scope of both scheme kinds

# A pod annotated ``damon.io/exclude: "true"`` is never selected by a pod-targeting scheme;
# ``damon.io/exclude-containers: "a,b"`` leaves those containers of it out. The agent
# reads them (``runtime.observing``); a value it cannot read excludes the whole pod.
ANNOTATION_EXCLUDE = f"{GROUP}/exclude"
ANNOTATION_EXCLUDE_CONTAINERS = f"{GROUP}/exclude-containers"

QoSClass = Literal["Guaranteed", "Burstable", "BestEffort"]
# A container's name in a pod spec: a DNS-1123 label.
ContainerName = Annotated[
    str, pydantic.Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
MAX_CONTAINERS = 64
QoSClasses = Annotated[list[QoSClass], pydantic.Field(min_length=1, max_length=3)]
Containers = Annotated[list[ContainerName], pydantic.Field(min_length=1, max_length=MAX_CONTAINERS)]
# The floor's base: the pod cgroup's memory.low or memory.min (cgroup v2), the sum of its
# containers' memory requests, or none (``minimum`` alone).
Floor = Literal["memoryLow", "memoryMin", "requests", "none"]
# The actions a protection holds back: those that take memory away from the pod.
PROTECTED_ACTIONS = frozenset({"pageout"})


class Protection(base.ApiModel):
    """A reclaim floor per pod: max(floor, minimum) bytes.

    floor: the pod cgroup's memory.low or memory.min (cgroup v2), the sum of its
    containers' memory requests, or none (minimum alone). A pod whose memory use
    (memory.current) is at or below its floor is left out of the pageout schemes until
    its use is above the floor by 5% of it again. A floor that cannot be read protects.
    """

    floor: Floor = "none"
    minimum: api_schemes.Size = "0"

    @property
    def minimum_bytes(self) -> int:
        return units.parse_size_bytes(self.minimum)

    @pydantic.model_validator(mode="after")
    def _protects_something(self) -> Protection:
        if self.minimum_bytes >= units.UNBOUNDED:
            raise ValueError(
                "minimum: 'max' would never let a pod be reclaimed (leave the pageout "
                "scheme out instead)"
            )
        if self.floor == "none" and self.minimum_bytes == 0:
            raise ValueError("floor none and minimum 0 protect nothing: give one of them")
        return self


# Protection ends when a pod's memory use is above its floor by this share of the floor
# (basis points: 5 %), so that a pod hovering at its floor does not flap in and out.
HYSTERESIS_BP = 500


def _listed_once(values: list[str] | None) -> list[str] | None:
    for index, value in enumerate(values or []):
        if value in values[:index]:  # type: ignore[index]
            raise ValueError(f"{value!r} is listed twice")
    return values


def _protection_needs_reclaim(
    protection: Protection | None, info: pydantic.ValidationInfo
) -> Protection | None:
    schemes = info.data.get("schemes")
    if (
        protection is not None
        and schemes is not None
        and not any(s.action in PROTECTED_ACTIONS for s in schemes)
    ):
        raise ValueError(
            f"a floor holds back {', '.join(sorted(PROTECTED_ACTIONS))} schemes, and "
            "this spec has none"
        )
    return protection


def _needs_pods(value: Any, info: pydantic.ValidationInfo) -> Any:
    if value is not None and info.data.get("whole_node"):
        raise ValueError("wholeNode targets physical memory and selects no pods")
    return value


# ---------------------------------------------------------------------------------------
# Scheme kinds


class DamonSchemeSpec(api_schemes.SchemeFile):
    """Schemes for the pods of this object's namespace that ``podSelector`` matches."""

    pod_selector: selectors.LabelSelector
    qos_classes: QoSClasses | None = None
    containers: Containers | None = None
    protection: Protection | None = None
    node_selector: selectors.LabelSelector | None = None

    _listed_once = pydantic.field_validator("qos_classes", "containers")(_listed_once)
    _needs_reclaim = pydantic.field_validator("protection")(_protection_needs_reclaim)

    @pydantic.model_validator(mode="after")
    def _has_schemes(self) -> DamonSchemeSpec:
        _at_least_one_scheme(self)
        return self


class ClusterDamonSchemeSpec(api_schemes.SchemeFile):
    """Schemes for pods of the namespaces that match, or for whole nodes' physical memory."""

    whole_node: bool = False
    namespace_selector: selectors.LabelSelector | None = None
    pod_selector: selectors.LabelSelector | None = None
    qos_classes: QoSClasses | None = None
    containers: Containers | None = None
    protection: Protection | None = None
    node_selector: selectors.LabelSelector | None = None

    _listed_once = pydantic.field_validator("qos_classes", "containers")(_listed_once)
    _needs_pods = pydantic.field_validator("qos_classes", "containers", "protection")(_needs_pods)
    _needs_reclaim = pydantic.field_validator("protection")(_protection_needs_reclaim)

    @pydantic.model_validator(mode="after")
    def _one_kind_of_target(self) -> ClusterDamonSchemeSpec:
        _at_least_one_scheme(self)
        if self.whole_node and (self.pod_selector or self.namespace_selector):
            raise ValueError("wholeNode targets physical memory: it takes no pod selectors")
        if not self.whole_node and self.pod_selector is None:
            raise ValueError("podSelector is needed unless wholeNode is true")
        return self


class NodeFailure(base.StatusModel):
    """A node where a scheme is not working, and why (from that node's DamonNode)."""

    node: Name
    reason: Annotated[str, pydantic.Field(max_length=1024)]
    message: Annotated[str, pydantic.Field(max_length=1024)] = ""


class NodeCounts(base.StatusModel):
    targeted: Count = 0
    ready: Count = 0
    degraded: Count = 0


class SchemeStatus(base.StatusModel):
    """Written by the operator: acceptance, readiness over the targeted nodes, totals."""

    observed_generation: Count = 0
    conditions: Annotated[
        list[api_conditions.Condition], pydantic.Field(max_length=api_conditions.MAX_CONDITIONS)
    ] = []
    actions: Annotated[str, pydantic.Field(max_length=1024)] = ""
    nodes_ready: Annotated[str, pydantic.Field(max_length=32)] = ""
    nodes: NodeCounts = NodeCounts()
    failing_nodes: Annotated[list[NodeFailure], pydantic.Field(max_length=MAX_FAILING_NODES)] = []
    tried_bytes: Bytes = 0
    applied_bytes: Bytes = 0
    applied: Annotated[str, pydantic.Field(max_length=32)] = ""
    # Memory the scheme's pods are charged less than when the agents first saw them,
    # summed over the nodes (``NodeSchemeStatus.savedBytes``); ``saved`` for people.
    saved_bytes: Bytes = 0
    saved: Annotated[str, pydantic.Field(max_length=32)] = ""


# ---------------------------------------------------------------------------------------
# DamonNode


class AssignedScheme(base.ApiModel):
    """A scheme as the operator hands it to one node's agent: resolved, self-contained.

    ``namespaces`` is the resolved namespace set: for a DamonScheme always exactly its own
    namespace (enforced here, so no writer can widen it); for a ClusterDamonScheme the
    namespaces its namespaceSelector matched, or absent for all. ``wholeNode`` schemes
    target physical memory and select no pods.
    """

    kind: Kind
    namespace: NamespaceName | None = None
    name: Name
    uid: Uid
    generation: Count
    whole_node: bool = False
    namespaces: Annotated[list[NamespaceName], pydantic.Field(max_length=MAX_NAMESPACES)] | None = (
        None
    )
    pod_selector: selectors.LabelSelector | None = None
    qos_classes: QoSClasses | None = None
    containers: Containers | None = None
    protection: Protection | None = None
    spec: api_schemes.SchemeFile

    _needs_pods = pydantic.field_validator("qos_classes", "containers", "protection")(_needs_pods)

    @pydantic.model_validator(mode="after")
    def _confined(self) -> AssignedScheme:
        if self.kind == "DamonScheme":
            if self.namespace is None:
                raise ValueError("a DamonScheme assignment needs its namespace")
            if self.namespaces != [self.namespace]:
                raise ValueError(
                    f"a DamonScheme of namespace {self.namespace} can only target that "
                    f"namespace, not {self.namespaces}"
                )
            if self.whole_node:
                raise ValueError("a DamonScheme cannot target a whole node")
        elif self.namespace is not None:
            raise ValueError("a ClusterDamonScheme has no namespace")
        if self.whole_node == (self.pod_selector is not None):
            raise ValueError("exactly one of wholeNode or podSelector")
        return self

    @property
    def key(self) -> str:
        return scheme_key(self.kind, self.namespace, self.name)

    def selects_pod(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        """Whether this scheme targets a pod of ``namespace`` with ``labels``."""
        if self.whole_node or self.pod_selector is None:
            return False
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        return self.pod_selector.matches(labels)


class DamonNodeSpec(base.ApiModel):
    """Written by the operator: what this node's agent should run."""

    schemes: Annotated[list[AssignedScheme], pydantic.Field(max_length=MAX_ASSIGNED)] = []


class Capabilities(base.StatusModel):
    """What the node's engine can do, as probed by its agent."""

    operations: Annotated[
        list[Literal["vaddr", "paddr", "fvaddr"]], pydantic.Field(max_length=8)
    ] = []
    actions: Annotated[list[api_schemes.Action], pydantic.Field(max_length=16)] = []
    goal_metrics: Annotated[list[api_schemes.Metric], pydantic.Field(max_length=16)] = []
    filter_types: Annotated[list[api_schemes.FilterType], pydantic.Field(max_length=16)] = []
    intervals_goal: bool = False
    kernel_release: Annotated[str, pydantic.Field(max_length=256)] = ""


class NumaNode(base.StatusModel):
    nid: Annotated[int, pydantic.Field(ge=0, le=api_schemes.MAX_NID)]
    tier: Tier | None = None
    has_cpus: bool = True
    total_bytes: Bytes = 0
    free_bytes: Bytes = 0


NumaBalancingMode = Literal["normal", "tiering"]
# kernel.numa_balancing's bits (include/linux/sched/sysctl.h), by the names the status uses.
NUMA_BALANCING_MODES: dict[NumaBalancingMode, int] = {"normal": 0x1, "tiering": 0x2}
MAX_NUMA_BALANCING = 2**31 - 1  # the sysctl is a C int
MAX_KERNEL_TIERING_ERROR = 1024


class KernelTiering(base.StatusModel):
    """The kernel's own memory tiering on the node, which the agent reads and never changes.

    ``numaBalancing`` is ``kernel.numa_balancing`` (/proc/sys/kernel/numa_balancing), a bit
    mask, named in ``numaBalancingModes``: ``normal`` (1) places tasks and their pages
    across the nodes with CPUs; ``tiering`` (2) promotes hot pages from the slower,
    CPU-less nodes (CXL) to the faster ones, as a ``migrate_hot`` scheme does. Absent: the
    kernel has no NUMA balancing. Either mode moves pages out of a CPU-less node: ``normal``
    migrates a page toward the node of the CPU that touches it, which for a page on a
    CPU-less node is always another node (``promotes``). ``demotionEnabled`` is
    /sys/kernel/mm/numa/demotion_enabled: reclaim demotes pages to a lower tier instead of
    dropping them. Absent: no demotion (kernels before 5.15). ``error``: why a file that
    is there could not be read (its setting is then absent, and taken as off).
    """

    numa_balancing: Annotated[int, pydantic.Field(ge=0, le=MAX_NUMA_BALANCING)] | None = None
    demotion_enabled: bool | None = None
    error: Annotated[str, pydantic.Field(max_length=MAX_KERNEL_TIERING_ERROR)] = ""

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def numa_balancing_modes(self) -> list[NumaBalancingMode]:
        """The known bits of ``numaBalancing`` that are set, by name."""
        value = self.numa_balancing or 0
        return [name for name, bit in NUMA_BALANCING_MODES.items() if value & bit]

    @property
    def promotes(self) -> bool:
        """Whether the kernel moves pages from the slower, CPU-less tiers itself: by their
        hotness (``tiering``), or toward the CPUs that touch them (``normal``; seen on the
        test node: a pod's hot array, all on CPU-less node 1, was all on node 0 three
        minutes later with no tiering scheme applied)."""
        return bool(self.numa_balancing_modes)


class Psi(base.StatusModel):
    """Memory pressure stall information (``/proc/pressure/memory``)."""

    some_avg10: Annotated[float, pydantic.Field(ge=0, le=100)] = 0.0
    full_avg10: Annotated[float, pydantic.Field(ge=0, le=100)] = 0.0
    some_total_us: Count = 0
    full_total_us: Count = 0


class GoalStatus(base.StatusModel):
    """A quota goal now: its metric, target and current value (the metric's unit: us of
    stall per reset interval, basis points, or a plain number)."""

    metric: api_schemes.Metric
    target: Count = 0
    # Absent where the engine does not show it: the kernel computes its own metrics
    # (some_mem_psi_us, node_*_bp, ...) and shows only what the agent feeds.
    current: Count | None = None


class SchemeStats(base.StatusModel):
    """One DAMOS scheme's cumulative stats on this node (the kernel's stats/ files), and
    where its quota stands in the current charge window."""

    name: Name
    nr_tried: Count = 0
    tried_bytes: Bytes = 0
    nr_applied: Count = 0
    applied_bytes: Bytes = 0
    # Bytes that passed its operations-layer filters (the kernel's sz_ops_filter_passed,
    # Linux 6.14+); absent where the backend does not count them, so 0 means none passed.
    filter_passed_bytes: Bytes | None = None
    qt_exceeds: Count = 0
    # Bytes it may act on in this window, as the goals tuned it; absent: no size limit.
    effective_quota_bytes: Bytes | None = None
    goals: Annotated[list[GoalStatus], pydantic.Field(max_length=api_schemes.MAX_GOALS)] = []


class NodeSchemeStatus(base.StatusModel):
    """How one assigned scheme fares on this node."""

    kind: Kind
    namespace: NamespaceName | None = None
    name: Name
    uid: Uid = ""
    observed_generation: Count = 0
    conditions: Annotated[
        list[api_conditions.Condition], pydantic.Field(max_length=api_conditions.MAX_CONDITIONS)
    ] = []
    targets: Count = 0
    stats: Annotated[list[SchemeStats], pydantic.Field(max_length=api_schemes.MAX_SCHEMES)] = []
    # Over its pods on this node (``PodStatus``), also those left out of the pod list.
    saved_bytes: Bytes = 0
    refaults: Count = 0

    @property
    def key(self) -> str:
        return scheme_key(self.kind, self.namespace, self.name)

    @property
    def ready(self) -> bool:
        return api_conditions.is_true(self.conditions, "Ready")

    @property
    def tried_bytes(self) -> int:
        return sum(s.tried_bytes for s in self.stats)

    @property
    def applied_bytes(self) -> int:
        return sum(s.applied_bytes for s in self.stats)


class PodPsi(base.StatusModel):
    """A pod cgroup's memory pressure (cgroup v2 ``memory.pressure``, the ``some`` line)."""

    some_avg10: Annotated[float, pydantic.Field(ge=0, le=100)] = 0.0
    some_total_us: Count = 0


class PodStatus(base.StatusModel):
    """What the schemes did to one pod's memory, from its cgroup.

    ``memoryBytes`` and ``swapBytes`` are ``memory.current`` and ``memory.swap.current``
    now; ``first*`` the same when this agent first saw the pod (``since``). ``savedBytes``
    is how much less memory the pod is charged now than then (never below 0: a pod that
    grew shows 0, whatever was reclaimed meanwhile); ``refaults`` the pages brought back
    in since then (memory.stat ``workingset_refault_anon`` + ``_file``): reclaim that
    cost the pod.

    ``protected`` and ``floorBytes`` are there when a scheme that selects the pod has a
    ``protection``: whether some scheme's pageout leaves the pod alone now (its memory at
    or below its floor, or the floor not readable), and its floor (the highest, over
    such schemes; absent when not readable).
    """

    namespace: NamespaceName
    name: Name
    schemes: Annotated[
        list[Annotated[str, pydantic.Field(max_length=600)]], pydantic.Field(max_length=16)
    ] = []
    psi: PodPsi | None = None
    memory_bytes: Bytes = 0
    swap_bytes: Bytes = 0
    first_memory_bytes: Bytes = 0
    first_swap_bytes: Bytes = 0
    saved_bytes: Bytes = 0
    refaults: Count = 0
    since: datetime.datetime | None = None
    protected: bool | None = None
    floor_bytes: Bytes | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class ContextStatus(base.StatusModel):
    """One monitoring context (a kdamond on the kernel backend): its cost and freshness."""

    operations: Literal["vaddr", "paddr"]
    schemes: Annotated[
        list[Annotated[str, pydantic.Field(max_length=600)]],
        pydantic.Field(max_length=api_schemes.MAX_SCHEMES),
    ] = []
    kdamond_pid: Annotated[int, pydantic.Field(ge=0)] | None = None
    # CPU time the kdamond used since it started, and its share of one CPU since the
    # previous status (kernel backend only).
    cpu_seconds: Annotated[float, pydantic.Field(ge=0)] | None = None
    cpu_percent: Annotated[float, pydantic.Field(ge=0)] | None = None
    # Seconds since the latest snapshot of its regions (the kernel backend takes one only
    # when asked: /v1/snapshot); absent: none yet.
    snapshot_age_seconds: Annotated[float, pydantic.Field(ge=0)] | None = None


# A DamonNode condition (kernel backend): whether the node's DAMON is free for the agent.
# False with reason ``DamonHeld`` when a DAMON module (DAMON_STAT, DAMON_RECLAIM,
# DAMON_LRU_SORT) runs, which holds DAMON exclusively, or kdamonds another tool made
# exist; the message names the holder and what frees it. Schemes that cannot run there
# get the same reason, on the node and in the operator's aggregation.
CONDITION_DAMON_AVAILABLE = "DamonAvailable"
REASON_DAMON_HELD = "DamonHeld"


class DamonNodeStatus(base.StatusModel):
    """Written by the node's agent only."""

    observed_generation: Count = 0
    heartbeat: datetime.datetime | None = None
    backend: Backend | None = None
    capabilities: Capabilities = Capabilities()
    numa: Annotated[list[NumaNode], pydantic.Field(max_length=64)] = []
    # Absent: not read (the sim's node), or unreadable (the agent's log says why).
    kernel_tiering: KernelTiering | None = None
    psi: Psi = Psi()
    conditions: Annotated[
        list[api_conditions.Condition], pydantic.Field(max_length=api_conditions.MAX_CONDITIONS)
    ] = []
    schemes: Annotated[list[NodeSchemeStatus], pydantic.Field(max_length=MAX_ASSIGNED)] = []
    contexts: Annotated[list[ContextStatus], pydantic.Field(max_length=MAX_CONTEXTS)] = []
    pods: Annotated[list[PodStatus], pydantic.Field(max_length=MAX_POD_STATUSES)] = []
    # Pods the schemes select that ``pods`` leaves out (it lists MAX_POD_STATUSES).
    pods_omitted: Count = 0
    # Over every pod the schemes select (each once, listed or not).
    saved_bytes: Bytes = 0

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def tiers(self) -> str:
        """Printer column: ``dram:0 cxl:1`` (tier:nid, in nid order)."""
        return " ".join(f"{n.tier or '-'}:{n.nid}" for n in sorted(self.numa, key=lambda n: n.nid))

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def schemes_ready(self) -> str:
        """Printer column: ``ready/assigned`` schemes on this node."""
        return f"{sum(s.ready for s in self.schemes)}/{len(self.schemes)}"

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def applied(self) -> str:
        """Printer column: bytes the node's schemes acted on, human units."""
        return units.format_bytes(sum(s.applied_bytes for s in self.schemes))

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def saved(self) -> str:
        """Printer column: memory the selected pods are charged less than at first sight."""
        return units.format_bytes(self.saved_bytes)

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def kdamond_cpu(self) -> str:
        """Printer column: the kdamonds' share of one CPU (kernel backend), e.g. ``3.2%``."""
        shares = [c.cpu_percent for c in self.contexts if c.cpu_percent is not None]
        return f"{sum(shares):.1f}%" if shares else ""

    def scheme(self, key: str) -> NodeSchemeStatus | None:
        return next((s for s in self.schemes if s.key == key), None)


class DamonNode(base.ApiModel):
    api_version: Literal["damon.io/v1alpha1"] = "damon.io/v1alpha1"
    kind: Literal["DamonNode"] = "DamonNode"
    spec: DamonNodeSpec = DamonNodeSpec()
    status: DamonNodeStatus | None = None
