"""NUMA topology, memory tiers, the DRAM/CXL classification, and per-process placement.

Topology comes from ``/sys/devices/system/node``: ``online`` and ``has_cpu`` (CPU lists),
and per node ``cpulist``, ``distance`` (one row of the SLIT) and ``meminfo``. Memory tiers
come from ``/sys/devices/virtual/memory_tiering/memory_tierN/nodelist`` (kernel 6.1+): a
smaller N is a faster tier (DRAM lands in tier 4 by default, slow memory described by HMAT
in higher ones).

Classification, as the DAMOS tiering schemes need it:

- a node with memory but no CPUs is CXL-like (how CXL expanders and the VM's node 1 show),
- a node in a tier below the best tier any memory node is in is CXL-like,
- other nodes with memory are DRAM; a node without memory holds nothing to place.

Placement of a process: ``read_numa_maps`` parses ``/proc/PID/numa_maps`` (pages per node
per mapping, as the kernel's page walk counted them), and ``page_nodes`` asks the kernel with
``move_pages(nodes=NULL)`` on which node each given page is, page by page.
"""

from __future__ import annotations

import enum
import errno
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from damon_agent.node import errors, files, meminfo, procfs, syscalls


class MemoryKind(enum.StrEnum):
    DRAM = "dram"
    CXL = "cxl"
    NONE = "none"  # a node without memory (CPUs only)


@dataclass(frozen=True)
class NumaNode:
    node_id: int
    cpus: tuple[int, ...]
    mem_total_bytes: int
    mem_free_bytes: int
    distances: Mapping[int, int]  # to every online node, by node id
    tier: int | None  # memory_tierN's N, None where the kernel exposes no tiers
    kind: MemoryKind

    @property
    def has_cpus(self) -> bool:
        return bool(self.cpus)


@dataclass(frozen=True)
class Topology:
    nodes: tuple[NumaNode, ...]

    def node(self, node_id: int) -> NumaNode:
        for candidate in self.nodes:
            if candidate.node_id == node_id:
                return candidate
        known = ", ".join(str(n.node_id) for n in self.nodes)
        raise errors.InvalidArgumentError(
            "node_id", f"node {node_id} is not online (online: {known})"
        )

    @property
    def dram_nodes(self) -> tuple[int, ...]:
        return tuple(n.node_id for n in self.nodes if n.kind is MemoryKind.DRAM)

    @property
    def cxl_nodes(self) -> tuple[int, ...]:
        return tuple(n.node_id for n in self.nodes if n.kind is MemoryKind.CXL)


def parse_cpulist(text: str, source: str = "cpulist") -> tuple[int, ...]:
    """Parse the kernel's list format (``0-3,8,10-11``; empty for none)."""
    values: list[int] = []
    text = text.strip()
    if not text:
        return ()
    for part in text.split(","):
        first, sep, last = part.partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise errors.MalformedFileError(source, f"{part!r} is not 'N' or 'N-M'")
        start, end = int(first), int(last) if sep else int(first)
        if end < start:
            raise errors.MalformedFileError(source, f"{part!r}: range end below start")
        values.extend(range(start, end + 1))
    return tuple(sorted(set(values)))


def classify(
    has_cpus: bool, mem_total_bytes: int, tier: int | None, best_memory_tier: int | None
) -> MemoryKind:
    """DRAM or CXL-like, from CPU presence and the tier relative to the best one."""
    if mem_total_bytes <= 0:
        return MemoryKind.NONE
    if not has_cpus:
        return MemoryKind.CXL
    if tier is not None and best_memory_tier is not None and tier > best_memory_tier:
        return MemoryKind.CXL
    return MemoryKind.DRAM


def read_memory_tiers(sys_root: str | Path = "/sys") -> dict[int, int]:
    """Node id -> tier id, empty where the kernel has no memory tiering."""
    base = Path(sys_root) / "devices" / "virtual" / "memory_tiering"
    tiers: dict[int, int] = {}
    if not base.is_dir():
        return tiers
    for entry in sorted(base.iterdir()):
        match = re.fullmatch(r"memory_tier(\d+)", entry.name)
        if match is None:
            continue
        nodelist = entry / "nodelist"
        for node_id in parse_cpulist(_read(nodelist), str(nodelist)):
            tiers[node_id] = int(match[1])
    return tiers


def read_topology(sys_root: str | Path = "/sys") -> Topology:
    """The online NUMA nodes with CPUs, memory, distances, tiers and kinds (read fresh)."""
    base = Path(sys_root) / "devices" / "system" / "node"
    online = parse_cpulist(_read(base / "online"), str(base / "online"))
    tiers = read_memory_tiers(sys_root)
    raw: list[tuple[int, tuple[int, ...], meminfo.MemInfo, dict[int, int]]] = []
    for node_id in online:
        directory = base / f"node{node_id}"
        cpus = parse_cpulist(_read(directory / "cpulist"), str(directory / "cpulist"))
        info = meminfo.read_node_meminfo(node_id, sys_root)
        row = _read(directory / "distance").split()
        if len(row) != len(online) or not all(value.isdigit() for value in row):
            raise errors.MalformedFileError(
                directory / "distance", f"expected {len(online)} distances, got {row!r}"
            )
        raw.append((node_id, cpus, info, dict(zip(online, (int(v) for v in row), strict=True))))
    memory_tiers = [
        tiers[node_id] for node_id, _, info, _ in raw if node_id in tiers and info.total_bytes > 0
    ]
    best = min(memory_tiers) if memory_tiers else None
    nodes = tuple(
        NumaNode(
            node_id=node_id,
            cpus=cpus,
            mem_total_bytes=info.total_bytes,
            mem_free_bytes=info.free_bytes,
            distances=distances,
            tier=tiers.get(node_id),
            kind=classify(bool(cpus), info.total_bytes, tiers.get(node_id), best),
        )
        for node_id, cpus, info, distances in raw
    )
    return Topology(nodes=nodes)


_ZONE = re.compile(r"^Node (\d+), zone\s+(\S+)")
_ZONE_FIELD = re.compile(r"^\s+(start_pfn|spanned):?\s+(\d+)")


def parse_node_spans(text: str, page_size: int) -> dict[int, tuple[int, int]]:
    """Node id -> the physical address range [start, end) its zones span, from the text of
    ``/proc/zoneinfo`` (each zone's ``start_pfn`` and ``spanned`` pages). Empty zones
    (spanned 0) are left out; a node whose zones all are, too. The span may hold holes
    (reserved or absent memory), never another node's memory, except on machines whose
    nodes interleave in physical memory, which the kernel's zones do not describe."""
    spans: dict[int, tuple[int, int]] = {}
    node: int | None = None
    spanned: int | None = None  # the current zone's pages, until its start_pfn line
    for line in text.splitlines():
        zone = _ZONE.match(line)
        if zone is not None:
            node, spanned = int(zone[1]), None
            continue
        found = _ZONE_FIELD.match(line)
        if found is None or node is None:
            continue
        if found[1] == "spanned":
            spanned = int(found[2]) or None
            continue
        if spanned is None:
            continue
        first, last = int(found[2]) * page_size, (int(found[2]) + spanned) * page_size
        known = spans.get(node)
        spans[node] = (
            (first, last) if known is None else (min(known[0], first), max(known[1], last))
        )
        spanned = None
    return spans


def read_node_spans(proc_root: str | Path = "/proc") -> dict[int, tuple[int, int]]:
    """``parse_node_spans`` of the host's /proc/zoneinfo."""
    path = Path(proc_root) / "zoneinfo"
    return parse_node_spans(_read(path), os.sysconf("SC_PAGE_SIZE"))


@dataclass(frozen=True)
class NumaMapping:
    """One line of ``/proc/PID/numa_maps``."""

    start: int
    policy: str
    file: str | None
    kinds: frozenset[str]  # heap, stack, huge where the kernel marks them
    pages_per_node: Mapping[int, int]
    page_size: int
    counters: Mapping[str, int] = field(default_factory=dict)  # anon, dirty, mapped, ...

    @property
    def bytes_per_node(self) -> dict[int, int]:
        return {node: pages * self.page_size for node, pages in self.pages_per_node.items()}


_NODE_PAGES = re.compile(r"^N(\d+)=(\d+)$")
_COUNTER = re.compile(r"^([a-z_]+)=(\d+)$")
_KEY_START = re.compile(r"\s(?=(?:N\d+|[A-Za-z_]+)=|heap\b|stack\b|huge\b)")


def parse_numa_maps(text: str, source: str) -> list[NumaMapping]:
    """Parse the text of ``/proc/PID/numa_maps``."""
    mappings: list[NumaMapping] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        start_text, _, rest = line.partition(" ")
        policy, _, rest = rest.partition(" ")
        try:
            start = int(start_text, 16)
        except ValueError:
            raise errors.MalformedFileError(
                source, f"line {number}: {start_text!r} is not an address"
            ) from None
        if not policy:
            raise errors.MalformedFileError(source, f"line {number}: no memory policy")
        file: str | None = None
        kinds: set[str] = set()
        per_node: dict[int, int] = {}
        counters: dict[str, int] = {}
        page_size = 4096
        # A file name may contain spaces: split only where a known key or flag starts.
        for raw_token in _KEY_START.split(" " + rest):
            token = raw_token.strip()
            if not token:
                continue
            if token.startswith("file="):
                file = token[len("file=") :]
            elif token in {"heap", "stack", "huge"}:
                kinds.add(token)
            elif node_match := _NODE_PAGES.match(token):
                per_node[int(node_match[1])] = int(node_match[2])
            elif counter_match := _COUNTER.match(token):
                counters[counter_match[1]] = int(counter_match[2])
            elif token.startswith("kernelpagesize_kB="):
                value = token.partition("=")[2]
                if not value.isdigit():
                    raise errors.MalformedFileError(source, f"line {number}: bad {token!r}")
                page_size = int(value) * 1024
            else:
                raise errors.MalformedFileError(source, f"line {number}: unknown field {token!r}")
        mappings.append(
            NumaMapping(
                start=start,
                policy=policy,
                file=file,
                kinds=frozenset(kinds),
                pages_per_node=per_node,
                page_size=page_size,
                counters=counters,
            )
        )
    return mappings


def read_numa_maps(pid: int, proc_root: str | Path = "/proc") -> list[NumaMapping]:
    path = Path(proc_root) / str(pid) / "numa_maps"
    try:
        text = files.read_named(path)
    except (FileNotFoundError, ProcessLookupError):
        raise errors.ProcessGoneError(pid) from None
    return parse_numa_maps(text, str(path))


def bytes_per_node(mappings: Sequence[NumaMapping]) -> dict[int, int]:
    """A process's resident bytes per NUMA node, summed over its mappings."""
    totals: dict[int, int] = {}
    for mapping in mappings:
        for node, amount in mapping.bytes_per_node.items():
            totals[node] = totals.get(node, 0) + amount
    return dict(sorted(totals.items()))


def page_nodes(
    pid: int, addresses: Sequence[int] | NDArray[np.uint64], proc_root: str | Path = "/proc"
) -> NDArray[np.int32]:
    """The node of each page holding ``addresses`` (>= 0), or a negative errno per page.

    ``-EFAULT`` marks an unmapped address (or the shared zero page), ``-ENOENT`` a page not
    present. Raises ``ProcessGoneError`` when the process exited.
    """
    page = syscalls.page_size()
    aligned = np.asarray(addresses, dtype=np.uint64) & np.uint64(~(page - 1) & (2**64 - 1))
    try:
        return syscalls.move_pages(pid, aligned, None, 0).status
    except OSError as error:
        # A zombie's address space is gone: the kernel says EINVAL, not ESRCH.
        if error.errno == errno.ESRCH or (
            error.errno == errno.EINVAL and not procfs.is_alive(pid, proc_root)
        ):
            raise errors.ProcessGoneError(pid) from None
        raise errors.ActionFailedError(
            "move_pages query", pid, errno.errorcode.get(error.errno or 0, "?"), str(error)
        ) from None


def _read(path: Path) -> str:
    try:
        return files.read_text(path)
    except FileNotFoundError:
        raise errors.FactUnavailableError(path, "missing") from None
    except OSError as error:
        raise errors.FactUnavailableError(path, error.strerror or str(error)) from None
