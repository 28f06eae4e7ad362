"""A typed model of the DAMON sysfs tree, one class per directory, with the kernel's names.

Read it against Documentation/admin-guide/mm/damon/usage.rst: every dataclass below is a
directory under ``/sys/kernel/mm/damon/admin``, every field a file (or a child directory)
of the same name. Values are the kernel's canonical units (microseconds, milliseconds
where the file says ``_ms``, bytes, basis points, per-mille); ``from_scheme`` translates
the agent's canonical schemes into it.

Two halves:

- what the agent writes (``Kdamond`` down to ``Filter``): frozen, compared by value, so
  "did the desired configuration change?" is ``==``;
- what the agent reads back (``SchemeStats``, ``TriedRegion``, ``TriedRegions``,
  ``TunedIntervals``).

``Optional`` fields mean "leave the kernel's default and do not write the file", so a
configuration that does not use a newer feature also applies on a kernel that lacks the
file. ``validate`` checks what no kernel would accept, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from damon_agent.ops.kernel import errors

# Largest value of an ``unsigned long`` sysfs file: "no upper bound" in access patterns.
ULONG_MAX: Final = 2**64 - 1

OPERATIONS: Final = ("vaddr", "fvaddr", "paddr")
ACTIONS: Final = (
    "willneed",
    "cold",
    "pageout",
    "hugepage",
    "nohugepage",
    "lru_prio",
    "lru_deprio",
    "migrate_hot",
    "migrate_cold",
    "stat",
)
FILTER_TYPES: Final = (
    "anon",
    "active",
    "memcg",
    "young",
    "hugepage_size",
    "unmapped",
    "addr",
    "target",
)
# Handled by the DAMON core (before the operations set looks at pages).
CORE_FILTER_TYPES: Final = ("addr", "target")
QUOTA_GOAL_METRICS: Final = (
    "user_input",
    "some_mem_psi_us",
    "node_mem_used_bp",
    "node_mem_free_bp",
    "node_memcg_used_bp",
    "node_memcg_free_bp",
    "active_mem_bp",
    "inactive_mem_bp",
)
WATERMARK_METRICS: Final = ("none", "free_mem_rate")


@dataclass(frozen=True)
class Range:
    """``min`` and ``max`` files of a closed range directory."""

    min: int = 0
    max: int = ULONG_MAX


@dataclass(frozen=True)
class IntervalsGoal:
    """``monitoring_attrs/intervals/intervals_goal`` (6.15); all zero disables tuning."""

    access_bp: int = 0
    aggrs: int = 0
    min_sample_us: int = 0
    max_sample_us: int = 0


@dataclass(frozen=True)
class Intervals:
    sample_us: int = 5_000
    aggr_us: int = 100_000
    update_us: int = 60_000_000
    intervals_goal: IntervalsGoal | None = None


@dataclass(frozen=True)
class MonitoringAttrs:
    intervals: Intervals = field(default_factory=Intervals)
    nr_regions: Range = field(default_factory=lambda: Range(10, 1_000))


@dataclass(frozen=True)
class Region:
    """``targets/N/regions/M/{start,end}``, in units of the context's ``addr_unit``."""

    start: int
    end: int


@dataclass(frozen=True)
class Target:
    """``targets/N``: ``pid_target`` for vaddr; initial ``regions`` (required for paddr).

    ``obsolete`` (``obsolete_target``, 6.19): a commit removes the running target at this
    index instead of committing into it, so the targets after it keep their own regions.
    """

    pid_target: int | None = None
    regions: tuple[Region, ...] = ()
    obsolete: bool = False


@dataclass(frozen=True)
class AccessPattern:
    """``access_pattern/{sz,nr_accesses,age}``; the default matches every region.

    ``nr_accesses`` counts sampling intervals per aggregation interval; ``age`` counts
    aggregation intervals. The kernel's own default is 0..0 everywhere, which matches
    nothing: the writes always name both ends.
    """

    sz: Range = field(default_factory=Range)
    nr_accesses: Range = field(default_factory=Range)
    age: Range = field(default_factory=Range)


@dataclass(frozen=True)
class Weights:
    sz_permil: int = 0
    nr_accesses_permil: int = 0
    age_permil: int = 0


@dataclass(frozen=True)
class QuotaGoal:
    """``quotas/goals/N``. ``nid`` (6.16) and ``path`` (6.19) only for the metrics using them."""

    target_metric: str
    target_value: int
    current_value: int = 0
    nid: int | None = None
    path: str | None = None


@dataclass(frozen=True)
class Quotas:
    ms: int = 0
    bytes: int = 0
    reset_interval_ms: int = 0
    weights: Weights = field(default_factory=Weights)
    goals: tuple[QuotaGoal, ...] = ()
    goal_tuner: str | None = None


@dataclass(frozen=True)
class Watermarks:
    metric: str = "none"
    interval_us: int = 0
    high: int = 0
    mid: int = 0
    low: int = 0


@dataclass(frozen=True)
class Filter:
    """One directory of ``filters``, ``core_filters`` or ``ops_filters``.

    ``memcg_path`` is the memory cgroup's path from its hierarchy's mount point (``/a/b``);
    ``addr_start``/``addr_end`` for ``addr``; ``min``/``max`` for ``hugepage_size``;
    ``damon_target_idx`` for ``target``.
    """

    type: str
    matching: bool = True
    allow: bool = False
    memcg_path: str | None = None
    addr_start: int | None = None
    addr_end: int | None = None
    min: int | None = None
    max: int | None = None
    damon_target_idx: int | None = None


@dataclass(frozen=True)
class Dest:
    """``dests/N`` (6.17): a migration destination node and its weight."""

    id: int
    weight: int


@dataclass(frozen=True)
class Scheme:
    action: str = "stat"
    access_pattern: AccessPattern = field(default_factory=AccessPattern)
    apply_interval_us: int | None = None
    target_nid: int | None = None
    quotas: Quotas = field(default_factory=Quotas)
    watermarks: Watermarks = field(default_factory=Watermarks)
    filters: tuple[Filter, ...] = ()
    core_filters: tuple[Filter, ...] = ()
    ops_filters: tuple[Filter, ...] = ()
    dests: tuple[Dest, ...] = ()


@dataclass(frozen=True)
class Context:
    operations: str = "paddr"
    addr_unit: int | None = None
    monitoring_attrs: MonitoringAttrs = field(default_factory=MonitoringAttrs)
    targets: tuple[Target, ...] = ()
    schemes: tuple[Scheme, ...] = ()


@dataclass(frozen=True)
class Kdamond:
    """``kdamonds/N``. The kernel runs at most one context per kdamond."""

    contexts: tuple[Context, ...] = ()


# ---- read back ------------------------------------------------------------------------


@dataclass(frozen=True)
class TriedRegion:
    """``tried_regions/N``; addresses in bytes (already multiplied by ``addr_unit``)."""

    start: int
    end: int
    nr_accesses: int
    age: int
    sz_filter_passed: int = 0


@dataclass(frozen=True)
class TriedRegions:
    total_bytes: int
    regions: tuple[TriedRegion, ...]


@dataclass(frozen=True)
class TunedIntervals:
    """``sample_us`` and ``aggr_us`` after ``update_tuned_intervals``."""

    sample_us: int
    aggr_us: int


# ---- validation -----------------------------------------------------------------------


def validate(kdamond: Kdamond, where: str = "kdamond") -> None:
    """Raise ``ConfigError`` naming the first field no kernel would accept."""
    if len(kdamond.contexts) > 1:
        raise errors.ConfigError(f"{where}.contexts", "the kernel runs at most one context")
    for c_index, context in enumerate(kdamond.contexts):
        _validate_context(context, f"{where}.contexts[{c_index}]")


def _validate_context(context: Context, where: str) -> None:
    if context.operations not in OPERATIONS:
        raise errors.ConfigError(
            f"{where}.operations", f"{context.operations!r} is not one of {', '.join(OPERATIONS)}"
        )
    if context.addr_unit is not None and context.addr_unit < 1:
        raise errors.ConfigError(f"{where}.addr_unit", "must be >= 1")
    intervals = context.monitoring_attrs.intervals
    _positive(intervals.sample_us, f"{where}.monitoring_attrs.intervals.sample_us")
    if intervals.aggr_us < intervals.sample_us:
        raise errors.ConfigError(
            f"{where}.monitoring_attrs.intervals.aggr_us",
            f"must be >= sample_us ({intervals.sample_us}), got {intervals.aggr_us}",
        )
    goal = intervals.intervals_goal
    if goal is not None and goal.access_bp and goal.min_sample_us > goal.max_sample_us:
        raise errors.ConfigError(
            f"{where}.monitoring_attrs.intervals.intervals_goal",
            "min_sample_us must be <= max_sample_us",
        )
    nr_regions = context.monitoring_attrs.nr_regions
    if nr_regions.min < 3:
        raise errors.ConfigError(f"{where}.monitoring_attrs.nr_regions.min", "must be >= 3")
    if nr_regions.max < nr_regions.min:
        raise errors.ConfigError(
            f"{where}.monitoring_attrs.nr_regions.max", "must be >= nr_regions.min"
        )
    for t_index, target in enumerate(context.targets):
        t_where = f"{where}.targets[{t_index}]"
        if context.operations == "vaddr" and target.pid_target is None:
            raise errors.ConfigError(f"{t_where}.pid_target", "vaddr targets need a pid")
        if context.operations != "vaddr" and not target.regions:
            raise errors.ConfigError(
                f"{t_where}.regions", f"{context.operations} targets need initial regions"
            )
        previous_end = -1
        for r_index, region in enumerate(target.regions):
            r_where = f"{t_where}.regions[{r_index}]"
            if region.start < 0 or region.end <= region.start:
                raise errors.ConfigError(r_where, "needs 0 <= start < end")
            if region.start < previous_end:
                raise errors.ConfigError(r_where, "regions must be sorted and must not overlap")
            previous_end = region.end
    for s_index, scheme in enumerate(context.schemes):
        _validate_scheme(scheme, f"{where}.schemes[{s_index}]")


def _validate_scheme(scheme: Scheme, where: str) -> None:
    if scheme.action not in ACTIONS:
        raise errors.ConfigError(
            f"{where}.action", f"{scheme.action!r} is not one of {', '.join(ACTIONS)}"
        )
    for name in ("sz", "nr_accesses", "age"):
        bounds: Range = getattr(scheme.access_pattern, name)
        if bounds.min < 0 or bounds.max < bounds.min:
            raise errors.ConfigError(
                f"{where}.access_pattern.{name}", f"needs 0 <= min <= max, got {bounds}"
            )
    for g_index, goal in enumerate(scheme.quotas.goals):
        if goal.target_metric not in QUOTA_GOAL_METRICS:
            raise errors.ConfigError(
                f"{where}.quotas.goals[{g_index}].target_metric",
                f"{goal.target_metric!r} is not one of {', '.join(QUOTA_GOAL_METRICS)}",
            )
        _positive(goal.target_value, f"{where}.quotas.goals[{g_index}].target_value")
    if scheme.watermarks.metric not in WATERMARK_METRICS:
        raise errors.ConfigError(
            f"{where}.watermarks.metric", f"{scheme.watermarks.metric!r} is not a metric"
        )
    if scheme.watermarks.metric != "none":
        marks = scheme.watermarks
        if not marks.high >= marks.mid >= marks.low:
            raise errors.ConfigError(f"{where}.watermarks", "needs high >= mid >= low")
    for directory in ("filters", "core_filters", "ops_filters"):
        for f_index, one in enumerate(getattr(scheme, directory)):
            _validate_filter(one, directory, f"{where}.{directory}[{f_index}]")


def _validate_filter(one: Filter, directory: str, where: str) -> None:
    if one.type not in FILTER_TYPES:
        raise errors.ConfigError(
            f"{where}.type", f"{one.type!r} is not one of {', '.join(FILTER_TYPES)}"
        )
    if directory == "core_filters" and one.type not in CORE_FILTER_TYPES:
        raise errors.ConfigError(f"{where}.type", f"{one.type} is not a core-layer filter")
    if directory == "ops_filters" and one.type in CORE_FILTER_TYPES:
        raise errors.ConfigError(f"{where}.type", f"{one.type} is not an ops-layer filter")
    if one.type == "memcg" and not (one.memcg_path and one.memcg_path.startswith("/")):
        raise errors.ConfigError(
            f"{where}.memcg_path", "a memcg filter needs an absolute path such as /a/b"
        )
    if one.type == "addr" and (
        one.addr_start is None or one.addr_end is None or one.addr_end < one.addr_start
    ):
        raise errors.ConfigError(where, "an addr filter needs addr_start <= addr_end")
    if one.type == "hugepage_size" and (one.min is None or one.max is None or one.max < one.min):
        raise errors.ConfigError(where, "a hugepage_size filter needs min <= max")
    if one.type == "target" and one.damon_target_idx is None:
        raise errors.ConfigError(f"{where}.damon_target_idx", "a target filter needs it")


def _positive(value: int, where: str) -> None:
    if value <= 0:
        raise errors.ConfigError(where, f"must be > 0, got {value}")
