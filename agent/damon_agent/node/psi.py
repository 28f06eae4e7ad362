"""Pressure stall information (PSI): system-wide and per cgroup.

A PSI file has a ``some`` line and (for memory and io, and for cpu since 5.13) a ``full``
line::

    some avg10=0.12 avg60=0.05 avg300=0.01 total=123456
    full avg10=0.00 avg60=0.00 avg300=0.00 total=4567

``avg*`` are the percentages of wall time some (or all) non-idle tasks were stalled, over
the last 10, 60 and 300 seconds; ``total`` is the cumulative stall time in microseconds,
monotonic, which is what a feedback loop should difference (DAMOS' ``some_mem_psi_us`` goal
metric is the growth of the system's memory ``some`` total).

System-wide files live in ``/proc/pressure/{memory,cpu,io}``; per-cgroup files are
``memory.pressure`` (``cpu.pressure``, ``io.pressure``) in a cgroup v2 directory. cgroup v1
has no per-cgroup PSI: asking for it raises ``PressureUnavailableError`` instead of returning
zeros that would look like "no pressure".
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from damon_agent.node import cgroups, errors, files

_LINE = re.compile(
    r"^(?P<kind>some|full)\s+avg10=(?P<avg10>\d+(?:\.\d+)?)\s+avg60=(?P<avg60>\d+(?:\.\d+)?)"
    r"\s+avg300=(?P<avg300>\d+(?:\.\d+)?)\s+total=(?P<total>\d+)\s*$",
    re.ASCII,  # the kernel writes ASCII digits; \d would take any script's
)
# The kernel's total is a u64 of microseconds; the API carries int64 (292,000 years).
MAX_TOTAL_US = 2**63 - 1


class Resource(enum.StrEnum):
    MEMORY = "memory"
    CPU = "cpu"
    IO = "io"


@dataclass(frozen=True)
class StallLine:
    """One line of a PSI file: stall percentages and the cumulative stall time."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True)
class Pressure:
    """A PSI file. ``full`` is None where the kernel has no such line (cpu before 5.13)."""

    resource: Resource
    some: StallLine
    full: StallLine | None
    source: str


def parse_pressure(text: str, resource: Resource, source: str) -> Pressure:
    """Parse the text of a PSI file; ``source`` names it in errors."""
    lines: dict[str, StallLine] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line.strip())
        if match is None:
            raise errors.MalformedFileError(
                source, f"line {number} is not 'some|full avg10= avg60= avg300= total=': {line!r}"
            )
        stall = StallLine(
            avg10=float(match["avg10"]),
            avg60=float(match["avg60"]),
            avg300=float(match["avg300"]),
            total_us=int(match["total"]),
        )
        if stall.total_us > MAX_TOTAL_US:
            raise errors.MalformedFileError(
                source, f"line {number}: total={stall.total_us} is beyond 64-bit signed range"
            )
        for name, value in (
            ("avg10", stall.avg10),
            ("avg60", stall.avg60),
            ("avg300", stall.avg300),
        ):
            if value > 100.0:
                raise errors.MalformedFileError(
                    source, f"line {number}: {name}={value} exceeds 100%"
                )
        lines[match["kind"]] = stall
    if "some" not in lines:
        raise errors.MalformedFileError(source, "no 'some' line")
    return Pressure(resource=resource, some=lines["some"], full=lines.get("full"), source=source)


def read_system(resource: Resource = Resource.MEMORY, proc_root: str | Path = "/proc") -> Pressure:
    """System-wide pressure of ``resource`` (``/proc/pressure/<resource>``)."""
    path = Path(proc_root) / "pressure" / resource.value
    try:
        text = files.read_text(path)
    except FileNotFoundError:
        raise errors.PressureUnavailableError(
            f"{path}: missing (kernel built without CONFIG_PSI, or booted with psi=0)"
        ) from None
    except OSError as error:
        # With CONFIG_PSI_DEFAULT_DISABLED and no psi=1 the files exist but reads fail.
        raise errors.PressureUnavailableError(f"{path}: {error.strerror or error}") from None
    return parse_pressure(text, resource, str(path))


def read_cgroup(
    layout: cgroups.CgroupLayout, cgroup_path: str, resource: Resource = Resource.MEMORY
) -> Pressure:
    """Pressure of one cgroup (path relative to the hierarchy root, as ``cgroups`` gives it).

    Read from the cgroup v2 hierarchy; raises ``PressureUnavailableError`` when the node has no v2
    hierarchy holding that cgroup (cgroup v1 has no per-cgroup PSI).
    """
    unified = layout.unified
    if unified is None:
        raise errors.PressureUnavailableError(
            f"cgroup {cgroup_path}: this node has no cgroup v2 hierarchy, and cgroup v1 has no "
            "per-cgroup pressure files"
        )
    directory = unified.directory(cgroup_path)
    path = directory / f"{resource.value}.pressure"
    if not directory.is_dir():
        memory = layout.memory
        on_v1 = (
            memory is not None and memory.version == 1 and memory.directory(cgroup_path).is_dir()
        )
        reason = (
            "exists only on the cgroup v1 memory hierarchy, and cgroup v1 has no per-cgroup "
            "pressure files"
            if on_v1
            else "no such cgroup"
        )
        raise errors.PressureUnavailableError(f"cgroup {cgroup_path}: {reason} ({directory})")
    try:
        text = files.read_text(path)
    except FileNotFoundError:
        raise errors.PressureUnavailableError(
            f"{path}: missing (PSI disabled, or cgroup.pressure turned off for this cgroup)"
        ) from None
    except OSError as error:
        raise errors.PressureUnavailableError(f"{path}: {error.strerror or error}") from None
    return parse_pressure(text, resource, str(path))
