"""Observing the node: memory PSI, NUMA placement and tiers, the kernel's own tiering
settings, and the pods' cgroups and pids.

Everything is read fresh from the injected ``/proc`` and ``/sys`` roots through
``damon_agent.node``; nothing is cached between calls, because pods, processes and free
memory change between two ticks of the loop. A fact the node cannot give (no PSI, no NUMA
sysfs, a pod whose cgroup is not there yet) is reported as absent, never as an exception
that would stop the loop: the planner and the status say what is missing.

``PodResolver.resolve`` turns a Pod object of the API (as the kubelet filled its status:
UID, QoS class, container IDs) into ``planning.PodFacts``: its cgroup, the memory cgroups
holding its pages (the pod's and each container's, in the form DAMON's memcg filter
takes) and the pids of its containers (the sandbox "pause" process is left out where
container IDs are known, since its memory is not the app's). ``PodResolver.pod_memory``
reads what a pod's cgroup says of its memory now (``PodMemory``: charged bytes, swap,
refaults, memory PSI), for the status and /metrics.

What the Pod object itself says (``pod_basics``, also the sim's pods): its QoS class, its
containers (spec order) and their memory requests, and its opt-outs. ``damon.io/exclude:
"true"`` excludes the pod from every pod-targeting scheme; ``damon.io/exclude-containers:
"a,b"`` leaves those containers out of its facts (their cgroups and processes, and the
pod-level memcg, which holds what exited containers left). A value that cannot be read
(``exclude: "maybe"``, a name that is no container name) excludes the whole pod, the safe
side, with a warning naming the pod and the annotation (logged once per pod and value;
the planner warns in the schemes' status). A pod that opted containers out before the
kubelet reported its container IDs has no processes or memcgs yet: without the IDs, which
cgroup is whose is not known.

``PodResolver.floor_reading`` reads what a ``protection`` floor needs of a pod's cgroup
(``memory.current``, and ``memory.low`` or ``memory.min``) for ``runtime.protection``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from damon_agent.api import resources, units
from damon_agent.node import cgroups, kernel_tiering, meminfo, numa, psi
from damon_agent.node import errors as node_errors
from damon_agent.runtime import planning, protection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeRoots:
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")


def read_psi(roots: NodeRoots) -> resources.Psi:
    """System-wide memory pressure; zeros when the kernel has no PSI."""
    try:
        pressure = psi.read_system(psi.Resource.MEMORY, roots.proc)
    except node_errors.NodeError as err:
        log.debug("no system memory PSI: %s", err)
        return resources.Psi()
    full = pressure.full
    return resources.Psi(
        some_avg10=pressure.some.avg10,
        full_avg10=full.avg10 if full else 0.0,
        some_total_us=pressure.some.total_us,
        full_total_us=full.total_us if full else 0,
    )


def read_node_facts(roots: NodeRoots) -> planning.NodeFacts:
    """The node facts the planner weighs: swap (None when /proc/meminfo cannot be read)
    and the kernel's own tiering."""
    swap: int | None = None
    try:
        swap = meminfo.read_meminfo(roots.proc).get("SwapTotal")
    except node_errors.NodeError as err:
        log.debug("no meminfo: %s", err)
    return planning.NodeFacts(swap_bytes=swap, kernel_tiering=read_kernel_tiering(roots))


def read_kernel_tiering(roots: NodeRoots) -> resources.KernelTiering:
    """The kernel's NUMA balancing and demotion settings; a file that cannot be read
    leaves its setting absent and says why in ``error``, the other one still read."""
    balancing: int | None = None
    demotion: bool | None = None
    problems: list[str] = []
    try:
        balancing = kernel_tiering.read_numa_balancing(roots.proc)
    except node_errors.NodeError as err:
        problems.append(str(err))
    try:
        demotion = kernel_tiering.read_demotion_enabled(roots.sys)
    except node_errors.NodeError as err:
        problems.append(str(err))
    return resources.KernelTiering(
        numa_balancing=balancing,
        demotion_enabled=demotion,
        error="; ".join(problems)[: resources.MAX_KERNEL_TIERING_ERROR],
    )


def read_numa(roots: NodeRoots) -> list[resources.NumaNode]:
    """NUMA nodes with their tier (dram/cxl) and memory; empty when sysfs has none."""
    try:
        topology = numa.read_topology(roots.sys)
    except node_errors.NodeError as err:
        log.debug("no NUMA topology: %s", err)
        return []
    nodes = []
    for node in topology.nodes:
        tier: resources.Tier | None = None
        if node.kind is numa.MemoryKind.DRAM:
            tier = "dram"
        elif node.kind is numa.MemoryKind.CXL:
            tier = "cxl"
        nodes.append(
            resources.NumaNode(
                nid=node.node_id,
                tier=tier,
                has_cpus=node.has_cpus,
                total_bytes=node.mem_total_bytes,
                free_bytes=node.mem_free_bytes,
            )
        )
    return nodes


def node_distances(roots: NodeRoots) -> dict[int, dict[int, int]]:
    """NUMA node -> its distance to each node (the kernel's), by node id; empty when sysfs
    has none (tier migrations then take a tier's nodes in turn)."""
    try:
        topology = numa.read_topology(roots.sys)
    except node_errors.NodeError as err:
        log.debug("no NUMA distances: %s", err)
        return {}
    return {node.node_id: dict(node.distances) for node in topology.nodes}


class MemcgChecker:
    """Whether a memcg path (as DAMOS filters take it) names a memory cgroup on the node now.

    For the kernel engine, which leaves out what vanished between plan and write
    (``ops.kernel.gone``). The cgroup layout is discovered at the first call; where it
    cannot be, every path counts as present and the kernel has the last word.
    """

    def __init__(self, roots: NodeRoots) -> None:
        self._roots = roots
        self._layout: cgroups.CgroupLayout | None = None

    def __call__(self, memcg_path: str) -> bool:
        if self._layout is None:
            try:
                self._layout = cgroups.discover(self._roots.proc, self._roots.sys)
            except node_errors.NodeError as err:
                log.debug("memcg %s taken as present: %s", memcg_path, err)
                return True
        try:
            cgroups.memcg_path(self._layout, memcg_path)
        except node_errors.CgroupNotFoundError:
            return False
        except node_errors.NodeError as err:
            log.debug("memcg %s taken as present: %s", memcg_path, err)
        return True


def tiers_of(nodes: list[resources.NumaNode]) -> dict[str, tuple[int, ...]]:
    """Tier name -> NUMA node ids, for resolving a scheme's ``tier`` on this node."""
    found: dict[str, list[int]] = {}
    for node in nodes:
        if node.tier is not None:
            found.setdefault(node.tier, []).append(node.nid)
    return {tier: tuple(sorted(nids)) for tier, nids in found.items()}


def placement(pods: list[planning.PodFacts], roots: NodeRoots) -> dict[str, dict[int, int]]:
    """Resident bytes per NUMA node of each pod's processes (``/proc/PID/numa_maps``).

    What tiering schemes are judged by: are the pods' hot pages on DRAM nodes? Reading
    numa_maps walks page tables, so callers ask only for the pods of migration schemes.
    A process that exits meanwhile is skipped.
    """
    result: dict[str, dict[int, int]] = {}
    for pod in pods:
        totals: dict[int, int] = {}
        for pid in pod.pids:
            try:
                per_node = numa.bytes_per_node(numa.read_numa_maps(pid, roots.proc))
            except node_errors.NodeError:
                continue
            for nid, amount in per_node.items():
                totals[nid] = totals.get(nid, 0) + amount
        if totals:
            result[pod.key] = totals
    return result


@dataclass(frozen=True)
class PodMemory:
    """A pod cgroup's memory now: ``memory.current``, ``memory.swap.current`` (0 where swap
    is not accounted), refaults (memory.stat; None where not counted) and memory PSI
    (None on cgroup v1, which has none per cgroup)."""

    memory_bytes: int
    swap_bytes: int = 0
    refaults: int | None = None
    psi: resources.PodPsi | None = None


# Pods whose unreadable opt-out annotations were logged, remembered so each is logged once.
MAX_WARNED_OPT_OUTS = 1024
_CONTAINER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class OptOut:
    """A pod's opt-out annotations, read: the whole pod, or some of its containers."""

    pod: bool = False
    containers: frozenset[str] = frozenset()
    problem: str = ""  # what could not be read ("" when all could); then ``pod`` is True


def read_opt_out(annotations: Mapping[str, Any]) -> OptOut:
    """The opt-outs of a pod's annotations; a value that cannot be read opts the pod out."""
    problems = []
    excluded = False
    raw = annotations.get(resources.ANNOTATION_EXCLUDE)
    if raw is not None:
        value = str(raw).strip().lower()
        if value == "true":
            excluded = True
        elif value != "false":
            problems.append(
                f'annotation {resources.ANNOTATION_EXCLUDE}: {raw!r} is not "true" or "false"'
            )
    names: set[str] = set()
    raw = annotations.get(resources.ANNOTATION_EXCLUDE_CONTAINERS)
    if raw is not None:
        for part in str(raw).split(","):
            name = part.strip()
            if not name:
                continue
            if not _CONTAINER_NAME.fullmatch(name) or len(name) > 63:
                problems.append(
                    f"annotation {resources.ANNOTATION_EXCLUDE_CONTAINERS}: {name!r} is not "
                    "a container name (lowercase letters, digits and '-'; names are "
                    "separated by commas)"
                )
            names.add(name)
    problem = "; ".join(problems)
    return OptOut(pod=excluded or bool(problem), containers=frozenset(names), problem=problem)


def _opt_out_and_basics(pod: Mapping[str, Any]) -> tuple[OptOut, planning.PodFacts]:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    opt_out = read_opt_out(meta.get("annotations") or {})
    containers = [c for c in spec.get("containers") or [] if c.get("name")]
    try:
        requested: int | None = sum(
            units.parse_quantity_bytes(memory)
            for c in containers
            if (memory := ((c.get("resources") or {}).get("requests") or {}).get("memory"))
            is not None
        )
    except units.UnitError as err:
        log.debug("pod %s/%s: memory request: %s", meta.get("namespace"), meta.get("name"), err)
        requested = None
    return opt_out, planning.PodFacts(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        phase=status.get("phase") or "Pending",
        qos_class=status.get("qosClass") or None,
        excluded=opt_out.pod,
        annotation_problem=opt_out.problem,
        containers=tuple(
            planning.ContainerFacts(name=str(c["name"]))
            for c in containers
            if c["name"] not in opt_out.containers
        ),
        memory_request_bytes=requested,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def pod_basics(pod: Mapping[str, Any]) -> planning.PodFacts:
    """What a Pod object says of itself, without the node: identity, labels, phase, QoS
    class, opt-outs, containers (without their cgroups) and memory requests."""
    return _opt_out_and_basics(pod)[1]


class PodResolver:
    """Pod objects -> ``PodFacts``, through the node's cgroup layout (rediscovered on miss)."""

    def __init__(self, roots: NodeRoots) -> None:
        self._roots = roots
        self._layout: cgroups.CgroupLayout | None = None
        # Opt-out annotations already warned about: (pod UID, what was wrong).
        self._warned: set[tuple[str, str]] = set()

    def _discover(self) -> cgroups.CgroupLayout | None:
        try:
            return cgroups.discover(self._roots.proc, self._roots.sys)
        except node_errors.NodeError as err:
            log.warning("cannot read the node's cgroups: %s", err)
            return None

    def _known_layout(self) -> cgroups.CgroupLayout | None:
        """The layout found before, else discovered now; None when it cannot be read."""
        if self._layout is None:
            self._layout = self._discover()
        return self._layout

    def resolve(
        self, pod: Mapping[str, Any], namespace_labels: Mapping[str, str] | None = None
    ) -> planning.PodFacts:
        del namespace_labels  # namespaces are resolved by the operator
        status = pod.get("status", {}) or {}
        opt_out, facts = _opt_out_and_basics(pod)
        if opt_out.problem and (facts.uid, opt_out.problem) not in self._warned:
            if len(self._warned) >= MAX_WARNED_OPT_OUTS:
                self._warned.clear()  # bounded over the agent's life: some warn again
            self._warned.add((facts.uid, opt_out.problem))
            log.warning(
                "pod %s: %s: left out of every scheme (the safe side)",
                facts.key,
                opt_out.problem,
            )
        if facts.done or facts.excluded:
            return facts
        for attempt in range(2):
            if self._layout is None or attempt == 1:
                self._layout = self._discover()
            if self._layout is None or self._layout.driver is None:
                continue
            try:
                return self._resolve_in(self._layout, facts, status, opt_out.containers)
            except node_errors.NodeError as err:
                log.debug("pod %s: %s", facts.key, err)
        return facts

    def _resolve_in(
        self,
        layout: cgroups.CgroupLayout,
        facts: planning.PodFacts,
        status: Mapping[str, Any],
        opted_out: frozenset[str],
    ) -> planning.PodFacts:
        qos_text = status.get("qosClass")
        qos = cgroups.QoSClass.from_kubernetes(qos_text) if qos_text else None
        pod_cgroup = cgroups.find_pod(layout, facts.uid, qos)
        # (name, ID) of each container the kubelet reported an ID for.
        reported = [
            (str(c.get("name") or ""), str(c["containerID"]))
            for c in (status.get("containerStatuses") or [])
            if c.get("containerID")
        ]
        by_name: dict[str, planning.ContainerFacts] = {}
        pids: set[int] = set()
        for name, container_id in reported:
            if name in opted_out:
                continue
            found = self._container(layout, pod_cgroup, container_id, facts.key)
            if found is None:
                continue
            pids.update(found.pids)
            if name:
                by_name[name] = replace(found, name=name)
        if not reported and not opted_out:
            pids.update(cgroups.pids(layout, pod_cgroup.path))
        if opted_out:
            # Only the containers known to be kept: not the pod-level memcg either, which
            # holds what exited containers (opted-out ones too) left behind.
            memcgs = [c.memcg_path for c in by_name.values() if c.memcg_path]
        else:
            memcgs = []
            for path in (pod_cgroup.path, *(c.path for c in pod_cgroup.containers)):
                try:
                    memcgs.append(cgroups.memcg_path(layout, path))
                except node_errors.NodeError as err:
                    log.debug("pod %s: no memcg %s: %s", facts.key, path, err)
        named = [by_name.get(c.name, c) for c in facts.containers]
        # Containers the status names that the spec did not list (a pod object without a
        # spec, as some callers pass).
        known = {c.name for c in facts.containers}
        named += [c for name, c in sorted(by_name.items()) if name not in known]
        return replace(
            facts,
            cgroup_path=pod_cgroup.path,
            memcg_paths=tuple(memcgs),
            pids=tuple(sorted(pids)),
            containers=tuple(named),
        )

    def _container(
        self, layout: cgroups.CgroupLayout, pod: cgroups.PodCgroup, container_id: str, key: str
    ) -> planning.ContainerFacts | None:
        """One container's memcg and processes; None when its cgroup is not there."""
        try:
            container = pod.container(container_id)
        except node_errors.NodeError as err:
            log.debug("pod %s: %s", key, err)
            return None
        try:
            memcg: str | None = cgroups.memcg_path(layout, container.path)
        except node_errors.NodeError as err:
            log.debug("pod %s: no memcg %s: %s", key, container.path, err)
            memcg = None
        try:
            pids = cgroups.pids(layout, container.path)
        except node_errors.NodeError as err:
            log.debug("pod %s: %s", key, err)
            pids = ()
        return planning.ContainerFacts(name="", memcg_path=memcg, pids=pids)

    def floor_reading(self, cgroup_path: str, floor: resources.Floor) -> protection.FloorReading:
        """What a ``protection`` floor needs of a pod's cgroup: its memory use, and its
        ``memory.low`` or ``memory.min`` where the floor is one of them."""
        layout = self._known_layout()
        if layout is None:
            return protection.FloorReading(None, problem="the node's cgroups cannot be read")
        try:
            used: int | None = cgroups.memory_usage_bytes(layout, cgroup_path)
        except node_errors.NodeError as err:
            return protection.FloorReading(None, problem=f"no memory use: {err}")
        file: cgroups.ProtectionFile | None = {
            "memoryLow": "memory.low",
            "memoryMin": "memory.min",
        }.get(floor)  # type: ignore[assignment]
        if file is None:
            return protection.FloorReading(used)
        try:
            return protection.FloorReading(
                used, cgroups.memory_protection_bytes(layout, cgroup_path, file)
            )
        except node_errors.NodeError as err:
            return protection.FloorReading(used, problem=f"no {file}: {err}")

    def pod_memory(self, cgroup_path: str) -> PodMemory | None:
        """The memory facts of a pod's cgroup; None when its memory use cannot be read."""
        layout = self._known_layout()
        if layout is None:
            return None
        try:
            memory = cgroups.memory_usage_bytes(layout, cgroup_path)
        except node_errors.NodeError as err:
            log.debug("cgroup %s: no memory use: %s", cgroup_path, err)
            return None
        try:
            swap = cgroups.memory_swap_bytes(layout, cgroup_path) or 0
        except node_errors.NodeError:
            swap = 0
        try:
            refaults = cgroups.refaults(cgroups.memory_stat(layout, cgroup_path))
        except node_errors.NodeError:
            refaults = None
        try:
            some = psi.read_cgroup(layout, cgroup_path, psi.Resource.MEMORY).some
            pressure = resources.PodPsi(some_avg10=some.avg10, some_total_us=some.total_us)
        except node_errors.NodeError:
            pressure = None
        return PodMemory(memory_bytes=memory, swap_bytes=swap, refaults=refaults, psi=pressure)

    def dying_cgroups(self) -> int | None:
        """Removed cgroups the kernel still keeps (``cgroups.dying_descendants``); None
        where not readable (no cgroup v2)."""
        layout = self._known_layout()
        if layout is None:
            return None
        try:
            return cgroups.dying_descendants(layout)
        except node_errors.NodeError as err:
            log.debug("no dying cgroups count: %s", err)
            return None

    def cgroup_pressure_total_us(self, cgroup_path: str) -> int:
        """Cumulative memory ``some`` stall of a cgroup; raises ``node.errors.NodeError``."""
        layout = self._known_layout()
        if layout is None:
            raise node_errors.FactUnavailableError(self._roots.sys, "no cgroup hierarchy")
        return psi.read_cgroup(layout, cgroup_path, psi.Resource.MEMORY).some.total_us
