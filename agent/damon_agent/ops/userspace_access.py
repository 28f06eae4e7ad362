"""Access checks of sampled pages of real processes, with what the kernel offers.

The monitor asks, per sampling interval and per target process, to *prepare* the pages
holding one sampled address per region and, one interval later, to *check* which were
accessed. Two kernel primitives can answer, behind the ``AccessCheck`` protocol:

- ``IdlePageCheck`` (idle page tracking, ``/sys/kernel/mm/page_idle/bitmap``): prepare
  marks the sampled pages' frames idle (frame numbers from pagemap: root only); check
  reads whether they still are. It sees reads and writes, like the accessed bit the
  kernel's own vaddr operations use, and touches only the sampled frames.
- ``SoftDirtyCheck`` (``/proc/PID/clear_refs`` and pagemap bit 55): prepare clears the
  soft-dirty bits of the *whole process* (the kernel offers no finer grain), so it runs
  once per target per sampling interval, never per address; check reads bit 55 of the
  sampled pages. It sees **writes only**: a page that is only read looks idle. Clearing
  write-protects every page of the process, so its next write to each page takes one
  minor fault; the sampling interval bounds that cost.

Idle page tracking is preferred where both exist, because it also sees reads.

``probe`` finds out which primitives work, functionally rather than from the kernel
config: soft-dirty on a page of a child process (a fresh page written must be soft-dirty;
after ``clear_refs`` it must not be; written again it must be), idle page tracking by
opening its bitmap for reading and writing. ``select`` returns the best one available
or raises ``NoAccessCheckError`` naming each primitive and why it is missing.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from damon_agent.core.regions import Int64Array
from damon_agent.ops import userspace_errors as errors
from damon_agent.ops import userspace_procfs as procfs

IDLE_PAGE: Final = "idle_page"
SOFT_DIRTY: Final = "soft_dirty"
PREFERENCE: Final = (IDLE_PAGE, SOFT_DIRTY)
IDLE_BITMAP: Final = Path("kernel/mm/page_idle/bitmap")  # under the /sys root
PAGE_SIZE: Final = mmap.PAGESIZE
# Python and numpy start in well under a second on a host; an emulated guest is slower.
_PROBE_TIMEOUT_S: Final = 60.0


class AccessCheck(Protocol):
    """One access-check primitive for the pages of real processes."""

    @property
    def name(self) -> str: ...

    @property
    def sees_reads(self) -> bool:
        """False when only writes are seen (soft-dirty)."""
        ...

    def prepare(self, pid: int, addrs: Int64Array) -> None:
        """Reset the accessed state of the pages holding ``addrs`` (at least)."""
        ...

    def check(self, pid: int, addrs: Int64Array) -> NDArray[np.bool_]:
        """Whether each page holding ``addrs`` was accessed since ``prepare``."""
        ...


class SoftDirtyCheck:
    """Writes since the last clear, from pagemap's soft-dirty bit."""

    name: Final = SOFT_DIRTY
    sees_reads: Final = False

    def __init__(self, proc_root: Path = Path("/proc"), page_size: int = PAGE_SIZE) -> None:
        self.proc_root = Path(proc_root)
        self.page_size = page_size

    def prepare(self, pid: int, addrs: Int64Array) -> None:
        # The whole process at once: the addresses do not matter to clear_refs.
        procfs.clear_soft_dirty(pid, self.proc_root)

    def check(self, pid: int, addrs: Int64Array) -> NDArray[np.bool_]:
        entries = procfs.read_pagemap_at(pid, addrs, self.proc_root, self.page_size)
        return entries.soft_dirty


class IdlePageCheck:
    """Reads and writes since the sampled frames were marked idle (page_idle/bitmap)."""

    name: Final = IDLE_PAGE
    sees_reads: Final = True

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        sys_root: Path = Path("/sys"),
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.proc_root = Path(proc_root)
        self.bitmap = Path(sys_root) / IDLE_BITMAP
        self.page_size = page_size

    def prepare(self, pid: int, addrs: Int64Array) -> None:
        pfns = self._frames(pid, addrs)
        procfs.mark_idle(self.bitmap, pfns[pfns >= 0])

    def check(self, pid: int, addrs: Int64Array) -> NDArray[np.bool_]:
        # Frames are looked up again: a page that was faulted in, migrated or replaced
        # since prepare sits on a frame that was never marked, and counts as accessed.
        pfns = self._frames(pid, addrs)
        present = pfns >= 0
        accessed = np.zeros(pfns.size, dtype=bool)
        accessed[present] = ~procfs.read_idle(self.bitmap, pfns[present])
        return accessed

    def _frames(self, pid: int, addrs: Int64Array) -> NDArray[np.int64]:
        entries = procfs.read_pagemap_at(pid, addrs, self.proc_root, self.page_size)
        pfns = entries.pfn
        present = entries.present
        if present.any() and not pfns[present].any():
            raise errors.ProcFileError(
                self.proc_root / str(pid) / "pagemap",
                "present pages show frame number 0: reading frames needs CAP_SYS_ADMIN",
            )
        return pfns


# -- probing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrimitiveSupport:
    name: str
    available: bool
    detail: str  # how it was confirmed, or why it is missing


@dataclass(frozen=True)
class AccessCheckSupport:
    """What ``probe`` found, for each primitive in order of preference."""

    idle_page: PrimitiveSupport
    soft_dirty: PrimitiveSupport

    @property
    def primitives(self) -> tuple[PrimitiveSupport, ...]:
        return (self.idle_page, self.soft_dirty)

    @property
    def available(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.primitives if p.available)

    def missing_reasons(self) -> dict[str, str]:
        return {p.name: p.detail for p in self.primitives if not p.available}


def probe(proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys")) -> AccessCheckSupport:
    """Find out which access-check primitives work on this kernel, by trying them."""
    return AccessCheckSupport(
        idle_page=_probe_idle_page(Path(sys_root)),
        soft_dirty=_probe_soft_dirty(Path(proc_root)),
    )


def select(
    support: AccessCheckSupport,
    *,
    proc_root: Path = Path("/proc"),
    sys_root: Path = Path("/sys"),
    prefer: str | None = None,
) -> AccessCheck:
    """The preferred available primitive (``prefer`` to insist on one)."""
    if prefer is not None and prefer not in PREFERENCE:
        raise errors.InvalidRequestError(
            "prefer", f"{prefer!r} is not one of {', '.join(PREFERENCE)}"
        )
    candidates = (prefer,) if prefer is not None else PREFERENCE
    for name in candidates:
        found = support.idle_page if name == IDLE_PAGE else support.soft_dirty
        if not found.available:
            continue
        if name == IDLE_PAGE:
            return IdlePageCheck(Path(proc_root), Path(sys_root))
        return SoftDirtyCheck(Path(proc_root))
    reasons = support.missing_reasons()
    if prefer is not None:
        reasons = {prefer: reasons[prefer]}
    raise errors.NoAccessCheckError(reasons)


def _probe_idle_page(sys_root: Path) -> PrimitiveSupport:
    bitmap = sys_root / IDLE_BITMAP
    try:
        fd = os.open(bitmap, os.O_RDWR)
    except OSError as error:
        why = (
            "the kernel was built without CONFIG_IDLE_PAGE_TRACKING"
            if isinstance(error, FileNotFoundError)
            else error.strerror
        )
        return PrimitiveSupport(IDLE_PAGE, False, f"cannot open {bitmap}: {why}")
    os.close(fd)
    return PrimitiveSupport(IDLE_PAGE, True, f"{bitmap} opens for reading and writing")


def _probe_soft_dirty(proc_root: Path) -> PrimitiveSupport:
    """Soft-dirty tried in a child process (``userspace_soft_dirty_probe`` says why)."""
    package_root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(package_root), env.get("PYTHONPATH", "")) if p
    )
    command = [sys.executable, "-m", "damon_agent.ops.userspace_soft_dirty_probe", str(proc_root)]
    try:
        child = subprocess.run(
            command, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return PrimitiveSupport(
            SOFT_DIRTY, False, f"the probe process did not answer in {_PROBE_TIMEOUT_S:.0f} s"
        )
    try:
        answer = json.loads(child.stdout.splitlines()[-1])
        return PrimitiveSupport(SOFT_DIRTY, bool(answer["available"]), str(answer["detail"]))
    except (IndexError, ValueError, KeyError, TypeError):
        why = child.stderr.strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
        return PrimitiveSupport(SOFT_DIRTY, False, f"the probe process failed: {why[0]}")
