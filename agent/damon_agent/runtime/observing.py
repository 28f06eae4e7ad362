"""Observing the node: memory PSI, NUMA placement and tiers, and the pods' cgroups and pids.

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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from damon_agent.api import resources
from damon_agent.node import cgroups, meminfo, numa, psi
from damon_agent.node import errors as node_errors
from damon_agent.runtime import planning

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


def read_node_facts(roots: NodeRoots) -> planning.NodeFacts | None:
    """The node facts the planner weighs (swap); None when /proc/meminfo cannot be read."""
    try:
        info = meminfo.read_meminfo(roots.proc)
    except node_errors.NodeError as err:
        log.debug("no meminfo: %s", err)
        return None
    return planning.NodeFacts(swap_bytes=info.get("SwapTotal"))


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


class PodResolver:
    """Pod objects -> ``PodFacts``, through the node's cgroup layout (rediscovered on miss)."""

    def __init__(self, roots: NodeRoots) -> None:
        self._roots = roots
        self._layout: cgroups.CgroupLayout | None = None

    def _discover(self) -> cgroups.CgroupLayout | None:
        try:
            return cgroups.discover(self._roots.proc, self._roots.sys)
        except node_errors.NodeError as err:
            log.warning("cannot read the node's cgroups: %s", err)
            return None

    def resolve(
        self, pod: Mapping[str, Any], namespace_labels: Mapping[str, str] | None = None
    ) -> planning.PodFacts:
        del namespace_labels  # namespaces are resolved by the operator
        meta = pod.get("metadata", {})
        status = pod.get("status", {}) or {}
        labels = meta.get("labels") or {}
        facts = planning.PodFacts(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            phase=status.get("phase") or "Pending",
        )
        if facts.phase in ("Succeeded", "Failed"):
            return facts
        for attempt in range(2):
            if self._layout is None or attempt == 1:
                self._layout = self._discover()
            if self._layout is None or self._layout.driver is None:
                continue
            try:
                return self._resolve_in(self._layout, facts, status)
            except node_errors.NodeError as err:
                log.debug("pod %s: %s", facts.key, err)
        return facts

    def _resolve_in(
        self, layout: cgroups.CgroupLayout, facts: planning.PodFacts, status: Mapping[str, Any]
    ) -> planning.PodFacts:
        qos_text = status.get("qosClass")
        qos = cgroups.QoSClass.from_kubernetes(qos_text) if qos_text else None
        pod_cgroup = cgroups.find_pod(layout, facts.uid, qos)
        container_ids = [
            c.get("containerID")
            for c in (status.get("containerStatuses") or [])
            if c.get("containerID")
        ]
        pids: set[int] = set()
        if container_ids:
            for container_id in container_ids:
                try:
                    container = pod_cgroup.container(container_id)
                    pids.update(cgroups.pids(layout, container.path))
                except node_errors.NodeError as err:
                    log.debug("pod %s: %s", facts.key, err)
        else:
            pids.update(cgroups.pids(layout, pod_cgroup.path))
        memcgs: list[str] = []
        for path in (pod_cgroup.path, *(c.path for c in pod_cgroup.containers)):
            try:
                memcgs.append(cgroups.memcg_path(layout, path))
            except node_errors.NodeError as err:
                log.debug("pod %s: no memcg %s: %s", facts.key, path, err)
        return planning.PodFacts(
            namespace=facts.namespace,
            name=facts.name,
            uid=facts.uid,
            labels=facts.labels,
            phase=facts.phase,
            cgroup_path=pod_cgroup.path,
            memcg_paths=tuple(memcgs),
            pids=tuple(sorted(pids)),
        )

    def pod_memory(self, cgroup_path: str) -> PodMemory | None:
        """The memory facts of a pod's cgroup; None when its memory use cannot be read."""
        if self._layout is None:
            self._layout = self._discover()
        layout = self._layout
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

    def cgroup_pressure_total_us(self, cgroup_path: str) -> int:
        """Cumulative memory ``some`` stall of a cgroup; raises ``node.errors.NodeError``."""
        if self._layout is None:
            self._layout = self._discover()
        if self._layout is None:
            raise node_errors.FactUnavailableError(self._roots.sys, "no cgroup hierarchy")
        return psi.read_cgroup(self._layout, cgroup_path, psi.Resource.MEMORY).some.total_us
