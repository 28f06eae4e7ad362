"""Process memory footprints from ``/proc/PID/status``, process liveness, and CPU time.

``status`` gives the footprints damo's profiling reports use: ``VmRSS`` (resident set) and
``VmSize`` (virtual size, "vsz"), with the resident set split into anon, file and shmem.
Kernel threads have no ``Vm*`` lines: their footprint is zero, not an error. A process that
is gone raises ``ProcessGoneError``, so that a caller iterating over a cgroup's pids can skip it.

The pids of a cgroup come from ``cgroups.pids``; ``footprints_of`` sums a set of processes
and skips the ones that exited meanwhile; ``cgroup_footprint`` does both for a cgroup (what
a recording with ``--cgroup PATH`` samples).

``cpu_seconds`` is the CPU time a process (or a kernel thread: a kdamond) has used, user
and system, from ``/proc/PID/stat`` in clock ticks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from damon_agent.core import fieldwise
from damon_agent.node import cgroups, errors, files

_KIB = 1024


@dataclass(frozen=True)
class Footprint:
    """Memory footprint of one process (or a sum of processes), in bytes."""

    rss_bytes: int
    vsz_bytes: int
    rss_anon_bytes: int = 0
    rss_file_bytes: int = 0
    rss_shmem_bytes: int = 0
    swap_bytes: int = 0

    def __add__(self, other: Footprint) -> Footprint:
        return fieldwise.add(self, other)


@dataclass(frozen=True)
class ProcessStatus:
    pid: int
    name: str
    state: str  # the letter: R, S, D, Z, ...
    footprint: Footprint

    @property
    def is_zombie(self) -> bool:
        return self.state in {"Z", "X"}


_FOOTPRINT_FIELDS = {
    "VmRSS": "rss_bytes",
    "VmSize": "vsz_bytes",
    "RssAnon": "rss_anon_bytes",
    "RssFile": "rss_file_bytes",
    "RssShmem": "rss_shmem_bytes",
    "VmSwap": "swap_bytes",
}


def parse_status(text: str, pid: int, source: str) -> ProcessStatus:
    """Parse the text of ``/proc/PID/status``."""
    name = ""
    state = ""
    values: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        if key == "Name":
            name = value
        elif key == "State":
            state = value[:1]
        elif key in _FOOTPRINT_FIELDS:
            amount, _, unit = value.partition(" ")
            if not amount.isdigit() or unit.strip() != "kB":
                raise errors.MalformedFileError(
                    source, f"line {number}: {key} is not '<n> kB': {value!r}"
                )
            values[_FOOTPRINT_FIELDS[key]] = int(amount) * _KIB
    if not state:
        raise errors.MalformedFileError(source, "no State line")
    footprint = Footprint(
        rss_bytes=values.get("rss_bytes", 0),
        vsz_bytes=values.get("vsz_bytes", 0),
        rss_anon_bytes=values.get("rss_anon_bytes", 0),
        rss_file_bytes=values.get("rss_file_bytes", 0),
        rss_shmem_bytes=values.get("rss_shmem_bytes", 0),
        swap_bytes=values.get("swap_bytes", 0),
    )
    return ProcessStatus(pid=pid, name=name, state=state, footprint=footprint)


def read_status(pid: int, proc_root: str | Path = "/proc") -> ProcessStatus:
    """A process's name, state and footprint; ``ProcessGoneError`` if it no longer exists."""
    if pid <= 0:
        raise errors.InvalidArgumentError("pid", f"{pid} is not a process id (must be > 0)")
    path = Path(proc_root) / str(pid) / "status"
    try:
        text = files.read_named(path)
    except (FileNotFoundError, ProcessLookupError):
        raise errors.ProcessGoneError(pid) from None
    return parse_status(text, pid, str(path))


def footprint(pid: int, proc_root: str | Path = "/proc") -> Footprint:
    return read_status(pid, proc_root).footprint


def footprints_of(pids: Iterable[int], proc_root: str | Path = "/proc") -> Footprint:
    """Summed footprint of processes; those that exited meanwhile count as zero."""
    total = Footprint(rss_bytes=0, vsz_bytes=0)
    for pid in pids:
        try:
            total = total + footprint(pid, proc_root)
        except errors.ProcessGoneError:
            continue
    return total


def cgroup_footprint(
    layout: cgroups.CgroupLayout, cgroup_path: str, proc_root: str | Path = "/proc"
) -> Footprint:
    """Summed footprint of the processes of a cgroup and its descendants."""
    return footprints_of(cgroups.pids(layout, cgroup_path), proc_root)


def is_alive(pid: int, proc_root: str | Path = "/proc") -> bool:
    """True while the process exists and is not a zombie (a zombie has no memory to act on)."""
    try:
        return not read_status(pid, proc_root).is_zombie
    except errors.ProcessGoneError:
        return False


def parse_cpu_ticks(text: str, source: str) -> int:
    """utime + stime (fields 14 and 15, in clock ticks) of the text of ``/proc/PID/stat``.

    The command name (field 2, in parentheses) may hold spaces and parentheses itself, so
    the fields are counted from the last ``)``.
    """
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    # fields[0] is the state (field 3): utime is field 14, stime field 15.
    if not paren or len(fields) < 13 or not (fields[11].isdigit() and fields[12].isdigit()):
        raise errors.MalformedFileError(source, "not a /proc/PID/stat line")
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int, proc_root: str | Path = "/proc") -> float:
    """CPU time (user + system) a process or kernel thread has used; ``ProcessGoneError``."""
    if pid <= 0:
        raise errors.InvalidArgumentError("pid", f"{pid} is not a process id (must be > 0)")
    path = Path(proc_root) / str(pid) / "stat"
    try:
        text = files.read_named(path)
    except (FileNotFoundError, ProcessLookupError):
        raise errors.ProcessGoneError(pid) from None
    return parse_cpu_ticks(text, str(path)) / os.sysconf("SC_CLK_TCK")
