"""Virtual pages of a process -> physical frames, through /proc/PID/pagemap.

Each virtual page has one 64-bit entry (Documentation/admin-guide/mm/pagemap.rst): bit 63
"present in RAM", bit 62 "swapped", bits 0-54 the page frame number. Only a process with
CAP_SYS_ADMIN sees PFNs (others read zeros), which ``frames`` reports as an error rather
than as "nothing is present".

Reads are one ``pread`` per range and decoded with numpy, so mapping a 1 GiB range
(262144 pages) costs one 2 MiB read and a few array operations.

Used to check paddr monitoring against a workload whose hot and cold virtual ranges are
known: ``physical_addresses`` gives the byte address of each present page's frame.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

PAGE_SIZE: Final = mmap.PAGESIZE
_ENTRY_BYTES: Final = 8
_PRESENT: Final = np.uint64(1 << 63)
_PFN_MASK: Final = np.uint64((1 << 55) - 1)


class PagemapError(OSError):
    """The pagemap could not be read, or PFNs are hidden (not root)."""


def frames(pid: int, start: int, end: int, *, proc_root: Path = Path("/proc")) -> NDArray[np.int64]:
    """PFN of each page of [start, end) of ``pid``'s address space; -1 where not present."""
    first = start // PAGE_SIZE
    count = max(0, -(-end // PAGE_SIZE) - first)
    path = proc_root / str(pid) / "pagemap"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise PagemapError(err.errno, f"cannot open {path}: {err.strerror}") from err
    try:
        raw = os.pread(fd, count * _ENTRY_BYTES, first * _ENTRY_BYTES)
    except OSError as err:
        raise PagemapError(err.errno, f"cannot read {path}: {err.strerror}") from err
    finally:
        os.close(fd)
    entries = np.frombuffer(raw, dtype=np.uint64)
    present = (entries & _PRESENT) != 0
    pfns = (entries & _PFN_MASK).astype(np.int64)
    if present.any() and not pfns[present].any():
        raise PagemapError(0, f"{path}: present pages show PFN 0: reading PFNs needs root")
    return np.where(present, pfns, -1)


def physical_addresses(
    pid: int, start: int, end: int, *, proc_root: Path = Path("/proc")
) -> NDArray[np.int64]:
    """Physical byte address of each present page of [start, end) (absent pages left out)."""
    pfns = frames(pid, start, end, proc_root=proc_root)
    return pfns[pfns >= 0] * PAGE_SIZE
