"""System and per-NUMA-node memory counters, and the ratios DAMOS uses.

``/proc/meminfo`` lines are ``Name:   value kB`` (a few counters have no unit: they count
pages, such as ``HugePages_Total``); ``/sys/devices/system/node/nodeN/meminfo`` lines carry
a ``Node N`` prefix. Both parse to a mapping of counter name to bytes (kB-valued) or count
(unit-less), read fresh on each call.

The ratios follow the kernel's own definitions, so that the agent can predict what a
kernel scheme will see:

- ``free_mem_rate_permille``: free memory per thousand of total RAM, the metric of DAMOS
  watermarks (``free_mem_rate``).
- ``node_mem_used_bp`` / ``node_mem_free_bp``: a NUMA node's used/free memory in basis
  points (per ten thousand) of its total, the DAMOS quota goal metrics of those names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from damon_agent.node import errors, files

_KIB = 1024
_PROC_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_()]+):\s+(?P<value>\d+)(?:\s+(?P<unit>kB))?\s*$")
_NODE_LINE = re.compile(
    r"^Node\s+(?P<node>\d+)\s+(?P<name>[A-Za-z0-9_()]+):\s+(?P<value>\d+)(?:\s+(?P<unit>kB))?\s*$"
)


@dataclass(frozen=True)
class MemInfo:
    """Counters of one meminfo file; values in bytes (kB counters) or plain counts."""

    counters: Mapping[str, int]
    source: str

    def get(self, name: str) -> int:
        try:
            return self.counters[name]
        except KeyError:
            raise errors.MalformedFileError(self.source, f"no {name} line") from None

    @property
    def total_bytes(self) -> int:
        return self.get("MemTotal")

    @property
    def free_bytes(self) -> int:
        return self.get("MemFree")

    @property
    def available_bytes(self) -> int:
        """MemAvailable (system-wide only: node meminfo files have no such line)."""
        return self.get("MemAvailable")

    @property
    def used_bytes(self) -> int:
        """Total minus free: what DAMOS calls used memory, and damo's ``sys_used``."""
        return self.total_bytes - self.free_bytes


def parse_meminfo(text: str, source: str) -> MemInfo:
    """Parse ``/proc/meminfo`` or a node's meminfo (lines with the ``Node N`` prefix)."""
    counters: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _NODE_LINE.match(line) or _PROC_LINE.match(line)
        if match is None:
            raise errors.MalformedFileError(
                source, f"line {number} is not 'Name: value [kB]': {line!r}"
            )
        value = int(match["value"])
        counters[match["name"]] = value * _KIB if match["unit"] else value
    if "MemTotal" not in counters:
        raise errors.MalformedFileError(source, "no MemTotal line")
    return MemInfo(counters=counters, source=source)


def read_meminfo(proc_root: str | Path = "/proc") -> MemInfo:
    """The system-wide counters of ``/proc/meminfo``."""
    path = Path(proc_root) / "meminfo"
    return parse_meminfo(_read(path), str(path))


def read_node_meminfo(node_id: int, sys_root: str | Path = "/sys") -> MemInfo:
    """The counters of one NUMA node (``/sys/devices/system/node/nodeN/meminfo``)."""
    path = Path(sys_root) / "devices" / "system" / "node" / f"node{node_id}" / "meminfo"
    return parse_meminfo(_read(path), str(path))


def free_mem_rate_permille(info: MemInfo) -> int:
    """Free memory per thousand of total, as DAMOS watermarks measure ``free_mem_rate``."""
    if info.total_bytes <= 0:
        raise errors.MalformedFileError(info.source, "MemTotal is 0")
    return info.free_bytes * 1000 // info.total_bytes


def node_mem_used_bp(info: MemInfo) -> int:
    """A node's used memory in basis points of its total (DAMOS goal ``node_mem_used_bp``)."""
    if info.total_bytes <= 0:
        # A memory-less node (CPUs only) has nothing to use: report it as full, not a crash.
        return 10_000
    return info.used_bytes * 10_000 // info.total_bytes


def node_mem_free_bp(info: MemInfo) -> int:
    """A node's free memory in basis points of its total (DAMOS goal ``node_mem_free_bp``)."""
    if info.total_bytes <= 0:
        return 0
    return info.free_bytes * 10_000 // info.total_bytes


def _read(path: Path) -> str:
    try:
        return files.read_text(path)
    except FileNotFoundError:
        raise errors.FactUnavailableError(path, "missing") from None
    except OSError as error:
        raise errors.FactUnavailableError(path, error.strerror or str(error)) from None
