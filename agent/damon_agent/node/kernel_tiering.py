"""The kernel's own memory tiering: NUMA balancing and demotion, read only.

Two settings decide whether the kernel moves pages between memory tiers by itself, where
the agent's ``migrate_hot`` / ``migrate_cold`` schemes may meet it:

- ``/proc/sys/kernel/numa_balancing`` (sysctl ``kernel.numa_balancing``), a bit mask:
  ``NUMA_BALANCING_NORMAL`` (1) places tasks and their pages across the nodes with CPUs;
  ``NUMA_BALANCING_MEMORY_TIERING`` (2, Linux 5.18) promotes hot pages from slower-tier
  (CPU-less) nodes to faster ones, as NUMA hinting faults find them. 0 is off. No file:
  a kernel built without NUMA balancing.
- ``/sys/kernel/mm/numa/demotion_enabled`` (Linux 5.15), ``true`` or ``false``: whether
  reclaim demotes pages to a lower tier instead of discarding or swapping them. No file:
  a kernel without demotion.

Both belong to the node's administrator: the agent reads them and never writes them. A
missing file is a fact (``None``); an unreadable one raises ``FactUnavailableError``, a
content outside the kernel's format ``MalformedFileError``, each naming the file. What
the bits mean to the agent is the api model's (``resources.KernelTiering``).
"""

from __future__ import annotations

import re
from pathlib import Path

from damon_agent.node import errors

# The sysctl is a C int: a value past it is none the kernel wrote.
MAX_NUMA_BALANCING = 2**31 - 1


def parse_numa_balancing(text: str, source: str) -> int:
    """The sysctl's value: a non-negative integer (a bit mask)."""
    value = text.strip()
    if re.fullmatch(r"[0-9]+", value) is None:
        raise errors.MalformedFileError(source, f"{value!r} is not a non-negative integer")
    if int(value) > MAX_NUMA_BALANCING:
        raise errors.MalformedFileError(source, f"{value} is beyond an int's range")
    return int(value)


def parse_demotion_enabled(text: str, source: str) -> bool:
    """``true`` or ``false``, as the kernel writes it."""
    value = text.strip()
    if value not in ("true", "false"):
        raise errors.MalformedFileError(source, f"{value!r} is neither 'true' nor 'false'")
    return value == "true"


def read_numa_balancing(proc_root: str | Path = "/proc") -> int | None:
    """``kernel.numa_balancing``; None where the kernel has no NUMA balancing."""
    path = Path(proc_root) / "sys" / "kernel" / "numa_balancing"
    text = _read_if_present(path)
    return None if text is None else parse_numa_balancing(text, str(path))


def read_demotion_enabled(sys_root: str | Path = "/sys") -> bool | None:
    """``demotion_enabled``; None where the kernel has no demotion."""
    path = Path(sys_root) / "kernel" / "mm" / "numa" / "demotion_enabled"
    text = _read_if_present(path)
    return None if text is None else parse_demotion_enabled(text, str(path))


def _read_if_present(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise errors.FactUnavailableError(path, error.strerror or str(error)) from None
