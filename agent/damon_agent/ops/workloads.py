"""Workload files for the ``sim`` operations: simulated address spaces with known accesses.

In the spirit of masim: each target is an address space of named ranges; time is a
sequence of phases; in each phase every range has an access pattern. A file::

    name: hot-cold
    description: a steady hot/cold split
    interval: 5ms              # reference interval of the probabilities below
    costs:                     # optional; used by the DAMOS benchmarks
      fast_access_ns: 100      # one page access on the fast tier (NUMA node 0)
      slow_access_ns: 300      # ... on the slow tier (node 1, CPU-less CXL memory)
      refault_ns: 20000        # bringing a paged-out page back
    targets:
      - name: app
        start: 0x7f0000000000  # optional first address
        ranges:
          - {name: hot, size: 64Mi}
          - {name: cold, size: 448Mi, node: 1, gap: 1Gi}   # gap: unmapped bytes before it
          - repeat: 16                                     # a group repeated 16 times
            ranges:
              - {name: spot, size: 1Mi}
              - {name: filler, size: 63Mi}
        repeat_phases: true    # loop over the phases (default); false: the last one stays
        phases:
          - name: steady
            duration: 10s
            access:
              hot: {probability: 0.5, pattern: random}
              spot: hot          # shorthand: probability 1, random
              filler: cold       # shorthand: probability 0 (also the default)

``probability``: chance that a given page of the range is touched within one reference
interval (0..1). ``random``: every page independently; ``sequential``: a cursor sweeps
the range, touching each page once per ``interval / probability``. Ranges of a repeated
group share the group's name in ``access``; their own names get an index (``spot[3]``).

Sizes and durations take human units (``64Mi``, ``1Ti``, ``100ms``; see
``damon_agent.api.units``); sizes must be whole pages and ranges may be up to 1 PiB.

Errors: a bad file raises ``WorkloadError`` whose message starts with the field path and
says why, e.g. ``targets[0].ranges[1].size: '12Q' is not a size ...``::

    Exception
     └── SimError                      (base of the sim operations' errors)
          ├── WorkloadError (ValueError): the workload file or one of its fields is bad
          └── ActionError   (ValueError): see damon_agent.ops.sim
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from damon_agent.api import units

PAGE_SIZE = 4096
MAX_RANGE_SIZE = 1 << 50
DEFAULT_START = 0x7F00_0000_0000
NR_NODES = 2
"""Node 0 is the fast tier (DRAM), node 1 the slow tier (CPU-less CXL memory)."""


class SimError(Exception):
    """Base of every error the sim operations raise."""


class WorkloadError(SimError, ValueError):
    """A workload file, or one of its fields, is unusable."""

    def __init__(self, field: str, reason: str, source: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.source = source
        where = f"{field}: " if field else ""
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{where}{reason}")


@dataclass(frozen=True)
class AccessPattern:
    """How the pages of one range are touched during one phase."""

    probability: float = 0.0
    sequential: bool = False

    @property
    def accessed(self) -> bool:
        return self.probability > 0.0


COLD = AccessPattern(0.0)
HOT = AccessPattern(1.0)


@dataclass(frozen=True)
class RangeSpec:
    name: str
    group: str
    size: int
    gap: int = 0
    node: int = 0


@dataclass(frozen=True)
class Phase:
    name: str
    duration_us: int
    access: Mapping[str, AccessPattern]

    def pattern_of(self, group: str) -> AccessPattern:
        return self.access.get(group, COLD)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    start: int
    ranges: tuple[RangeSpec, ...]
    phases: tuple[Phase, ...]
    repeat_phases: bool = True

    @property
    def cycle_us(self) -> int:
        return sum(phase.duration_us for phase in self.phases)

    @property
    def mapped_bytes(self) -> int:
        return sum(r.size for r in self.ranges)


@dataclass(frozen=True)
class Costs:
    fast_access_ns: float = 100.0
    slow_access_ns: float = 300.0
    refault_ns: float = 20_000.0


@dataclass(frozen=True)
class Workload:
    name: str
    targets: tuple[TargetSpec, ...]
    description: str = ""
    interval_us: int = 5_000
    costs: Costs = Costs()


# -- parsing ---------------------------------------------------------------------------


def _fail(field: str, reason: str) -> WorkloadError:
    return WorkloadError(field, reason)


def _mapping(value: object, field: str, allowed: set[str], required: set[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _fail(field, f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise _fail(
                f"{field}.{key}" if field else str(key),
                f"unknown field (expected one of: {', '.join(sorted(allowed))})",
            )
    for key in sorted(required):
        if key not in value:
            raise _fail(f"{field}.{key}" if field else key, "is required")
    return {str(k): v for k, v in value.items()}


def _list(value: object, field: str) -> list[object]:
    if not isinstance(value, list) or not value:
        raise _fail(field, "expected a non-empty list")
    return value


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(field, f"{value!r} is not a name (expected a non-empty string)")
    if "[" in value or "]" in value:
        raise _fail(field, f"{value!r}: names may not contain brackets")
    return value


def _size(value: object, field: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _fail(field, f"{value!r} is not a size")
    try:
        size = units.parse_size_bytes(value)
    except units.UnitError as err:
        raise _fail(field, str(err)) from err
    if size == 0 and allow_zero:
        return 0
    if size <= 0:
        raise _fail(field, f"{value!r} must be larger than zero")
    if size > MAX_RANGE_SIZE:
        raise _fail(field, f"{value!r} is larger than the 1Pi limit")
    if size % PAGE_SIZE:
        raise _fail(field, f"{value!r} is not a whole number of {PAGE_SIZE}-byte pages")
    return size


def _duration(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _fail(field, f"{value!r} is not a duration")
    try:
        duration = units.parse_duration_us(value)
    except units.UnitError as err:
        raise _fail(field, str(err)) from err
    if duration <= 0 or duration >= units.UNBOUNDED:
        raise _fail(field, f"{value!r} must be a positive, finite duration")
    return duration


def _number(value: object, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(field, f"{value!r} is not a number")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise _fail(field, f"{value!r} is outside {low:g}..{high:g}")
    return number


def _pattern(value: object, field: str) -> AccessPattern:
    if value == "hot":
        return HOT
    if value == "cold":
        return COLD
    if isinstance(value, int | float) and not isinstance(value, bool):
        return AccessPattern(_number(value, field, 0.0, 1.0))
    if isinstance(value, str):
        raise _fail(field, f"{value!r} is not an access pattern (hot, cold, or a mapping)")
    spec = _mapping(value, field, {"probability", "pattern"}, {"probability"})
    probability = _number(spec["probability"], f"{field}.probability", 0.0, 1.0)
    kind = spec.get("pattern", "random")
    if kind not in ("random", "sequential"):
        raise _fail(f"{field}.pattern", f"{kind!r} is not 'random' or 'sequential'")
    return AccessPattern(probability, kind == "sequential")


def _ranges(value: object, field: str, suffix: str = "") -> list[RangeSpec]:
    out: list[RangeSpec] = []
    for i, item in enumerate(_list(value, field)):
        item_field = f"{field}[{i}]"
        if isinstance(item, dict) and "repeat" in item:
            spec = _mapping(item, item_field, {"repeat", "ranges"}, {"repeat", "ranges"})
            count = spec["repeat"]
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
                raise _fail(f"{item_field}.repeat", f"{count!r} is not a count in 1..100000")
            for copy in range(count):
                out.extend(_ranges(spec["ranges"], f"{item_field}.ranges", f"{suffix}[{copy}]"))
            continue
        spec = _mapping(item, item_field, {"name", "size", "gap", "node"}, {"name", "size"})
        group = _name(spec["name"], f"{item_field}.name")
        node = spec.get("node", 0)
        if node not in range(NR_NODES) or isinstance(node, bool):
            raise _fail(f"{item_field}.node", f"{node!r} is not a node (0: fast, 1: slow)")
        out.append(
            RangeSpec(
                name=group + suffix,
                group=group,
                size=_size(spec["size"], f"{item_field}.size"),
                gap=_size(spec.get("gap", 0), f"{item_field}.gap", allow_zero=True),
                node=int(node),  # type: ignore[call-overload]
            )
        )
    return out


def _phases(value: object, field: str, groups: set[str]) -> list[Phase]:
    out: list[Phase] = []
    for i, item in enumerate(_list(value, field)):
        item_field = f"{field}[{i}]"
        spec = _mapping(item, item_field, {"name", "duration", "access"}, {"duration"})
        name = _name(spec.get("name", f"phase{i}"), f"{item_field}.name")
        access_spec = spec.get("access", {})
        if access_spec is None:
            access_spec = {}
        if not isinstance(access_spec, dict):
            raise _fail(f"{item_field}.access", "expected a mapping of range name to pattern")
        access: dict[str, AccessPattern] = {}
        for group, pattern in access_spec.items():
            if group not in groups:
                raise _fail(
                    f"{item_field}.access.{group}",
                    f"no range named {group!r} (ranges: {', '.join(sorted(groups))})",
                )
            access[str(group)] = _pattern(pattern, f"{item_field}.access.{group}")
        out.append(Phase(name, _duration(spec["duration"], f"{item_field}.duration"), access))
    return out


def _target(value: object, index: int) -> TargetSpec:
    field = f"targets[{index}]"
    spec = _mapping(
        value, field, {"name", "start", "ranges", "phases", "repeat_phases"}, {"ranges", "phases"}
    )
    name = _name(spec.get("name", f"target{index}"), f"{field}.name")
    start_value = spec.get("start", DEFAULT_START)
    if isinstance(start_value, bool) or not isinstance(start_value, str | int):
        raise _fail(f"{field}.start", f"{start_value!r} is not an address")
    try:
        start = units.parse_address(start_value)
    except units.UnitError as err:
        raise _fail(f"{field}.start", str(err)) from err
    if start % PAGE_SIZE:
        raise _fail(f"{field}.start", f"{start_value!r} is not page-aligned")
    ranges = _ranges(spec["ranges"], f"{field}.ranges")
    names = [r.name for r in ranges]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(f"{field}.ranges", f"range names repeat: {', '.join(duplicates)}")
    end = start + sum(r.gap + r.size for r in ranges)
    if end >= 2**62:
        raise _fail(f"{field}.ranges", "the ranges run past the end of the address space")
    repeat = spec.get("repeat_phases", True)
    if not isinstance(repeat, bool):
        raise _fail(f"{field}.repeat_phases", f"{repeat!r} is not true or false")
    phases = _phases(spec["phases"], f"{field}.phases", {r.group for r in ranges})
    return TargetSpec(name, start, tuple(ranges), tuple(phases), repeat)


def parse_workload(data: object) -> Workload:
    """A workload from already-loaded YAML/JSON data; WorkloadError names the bad field."""
    spec = _mapping(data, "", {"name", "description", "interval", "costs", "targets"}, {"targets"})
    name = _name(spec.get("name", "workload"), "name")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise _fail("description", f"{description!r} is not a string")
    interval = _duration(spec.get("interval", "5ms"), "interval")
    costs = Costs()
    if "costs" in spec:
        cost_spec = _mapping(
            spec["costs"], "costs", {"fast_access_ns", "slow_access_ns", "refault_ns"}, set()
        )
        costs = Costs(
            **{key: _number(value, f"costs.{key}", 0.0, 1e12) for key, value in cost_spec.items()}
        )
    targets = tuple(_target(item, i) for i, item in enumerate(_list(spec["targets"], "targets")))
    target_names = [t.name for t in targets]
    if len(set(target_names)) != len(target_names):
        raise _fail("targets", f"target names repeat: {', '.join(target_names)}")
    return Workload(name, targets, description, interval, costs)


def parse_workload_text(text: str, source: str | None = None) -> Workload:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise WorkloadError("", f"not valid YAML: {err}", source) from err
    if data is None:
        raise WorkloadError("", "the workload is empty (expected a mapping with 'targets')", source)
    try:
        return parse_workload(data)
    except WorkloadError as err:
        if source is None:
            raise
        raise WorkloadError(err.field, err.reason, source) from err


def load_workload(path: str | Path) -> Workload:
    """Read and check a workload file; errors name the file, the field and the reason."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise WorkloadError(
            "", f"cannot read the workload file: {err.strerror}", str(path)
        ) from err
    return parse_workload_text(text, str(path))
