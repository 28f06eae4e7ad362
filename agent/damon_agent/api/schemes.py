"""The scheme spec: monitoring attributes and DAMOS schemes, as users write them.

These pydantic models are the single source of truth for both the standalone agent's
scheme files (``damon-agent run --scheme FILE``) and the ``DamonScheme`` /
``ClusterDamonScheme`` custom resources, whose CRD schemas are generated from them. Hence
Kubernetes conventions: camelCase names, ``extra="forbid"``, every number bounded, human
units as strings (see ``units``). Canonical integers are available through each model's
``*_us`` / ``*_bytes`` / ``*_bp`` properties; ``damon_agent.schemes.conversion`` turns a
whole spec into the engine's canonical dataclasses (and ``MonitoringAttrs``: the api layer
is the lowest one and cannot import ``core``).

Field, unit and the kernel sysfs file each maps to (under ``kdamonds/N/contexts/0/``)::

  monitoring.mode                 auto|vaddr|paddr    operations
  monitoring.intervals.sample     duration (us)       monitoring_attrs/intervals/sample_us
  monitoring.intervals.aggregation duration (us)      monitoring_attrs/intervals/aggr_us
  monitoring.intervals.update     duration (us)       monitoring_attrs/intervals/update_us
  monitoring.intervalsGoal.access percent (bp)        .../intervals_goal/access_bp
  monitoring.intervalsGoal.aggrs  count               .../intervals_goal/aggrs
  monitoring.intervalsGoal.minSample / maxSample (us) .../intervals_goal/{min,max}_sample_us
  monitoring.regions.min / max    count               monitoring_attrs/nr_regions/{min,max}
  monitoring.regions.maxSize      size (bytes)        (agent-side: raises nr_regions/min to
                                                      the monitored size / maxSize, at most
                                                      max / 2)
  schemes[i].action               name                schemes/i/action
  schemes[i].targetNid | tier     node id | tier      schemes/i/target_nid (tier resolved per node)
  schemes[i].applyInterval        duration (us)       schemes/i/apply_interval_us
  schemes[i].accessPattern.size   size range (bytes)  schemes/i/access_pattern/sz/{min,max}
  schemes[i].accessPattern.accessRate % of max (bp)   .../nr_accesses/{min,max} (x max_nr_accesses)
  schemes[i].accessPattern.age    duration range (us) .../age/{min,max} (/ aggregation interval:
                                                      the tuned one under intervalsGoal)
  schemes[i].quota.time           duration (us)       schemes/i/quotas/ms (/1000)
  schemes[i].quota.size           size (bytes)        schemes/i/quotas/bytes
  schemes[i].quota.resetInterval  duration (us)       schemes/i/quotas/reset_interval_ms (/1000)
  schemes[i].quota.weights.*      per-thousand        quotas/weights/{sz,nr_accesses,age}_permil
  schemes[i].quota.goals[j].*     metric/target/nid/path  quotas/goals/j/{target_metric,
                                                      target_value,current_value,nid,path}
  schemes[i].quota.tuner          consist|temporal    schemes/i/quotas/goal_tuner
  schemes[i].watermarks.metric    none|free_mem_rate  schemes/i/watermarks/metric
  schemes[i].watermarks.interval  duration (us)       schemes/i/watermarks/interval_us
  schemes[i].watermarks.high/mid/low percent (permil) schemes/i/watermarks/{high,mid,low}
  schemes[i].filters[k].*         see Filter          schemes/i/{core,ops}_filters/k/...
  schemes[i].dryRun               bool                (agent-side: action replaced by stat)
  schemes[i].kernelTiering        Coexist|Refuse      (agent-side, migrate_* only: where the
                                                      kernel's NUMA balancing promotes pages
                                                      itself, run and warn, or stand aside;
                                                      absent: Coexist)
  schemes[i].fill.dram            percent (bp)        quotas/goals/N: node_mem_used_bp (migrate_hot,
                                                      its DRAM node) or node_mem_free_bp at 100% -
                                                      dram (migrate_cold, its DRAM node), per node
  schemes[i].fill.podShare        percent (bp)        quotas/goals/N: node_memcg_{used,free}_bp of
                                                      the scheme's pod (6.19; agent-side choice)

Errors: ``load_scheme_file`` raises ``SchemeFileError`` naming the field path and the
reason, e.g. ``schemes[0].accessPattern.age: min 30s is greater than max 10s``::

    Exception
     └── SchemeFileError
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import pydantic
import pydantic.alias_generators
import yaml

from damon_agent.api import base, units

# Mutable field defaults are safe: pydantic copies them for every instance. Ruff knows
# that of pydantic.BaseModel subclasses but cannot follow base.ApiModel to it.
# ruff: noqa: RUF012

# ---------------------------------------------------------------------------------------
# Unit-carrying string types. The JSON schema (and so the CRD) says "string"; the
# validators parse the value now, so that a bad one is reported with its field path and
# the reason.


def _numbers_to_text(value: Any) -> Any:
    # YAML reads "0" or "4096" as an int; accept it as the same text a CRD would carry.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _checked(parse: Any) -> Any:
    def check(value: str) -> str:
        parse(value)
        return value

    return pydantic.AfterValidator(check)


Duration = Annotated[
    str,
    pydantic.BeforeValidator(_numbers_to_text),
    pydantic.Field(max_length=32, examples=["5ms", "1.5s", "2m", "max"]),
    _checked(units.parse_duration_us),
]
Size = Annotated[
    str,
    pydantic.BeforeValidator(_numbers_to_text),
    pydantic.Field(max_length=32, examples=["4Ki", "128Mi", "1Gi", "max"]),
    _checked(units.parse_size_bytes),
]
Percent = Annotated[
    str,
    pydantic.BeforeValidator(_numbers_to_text),
    pydantic.Field(max_length=16, examples=["0%", "0.05%", "4%", "100%"]),
    _checked(units.parse_percent_bp),
]
PercentPermil = Annotated[
    str,
    pydantic.BeforeValidator(_numbers_to_text),
    pydantic.Field(max_length=16, examples=["20%", "50.5%"]),
    _checked(units.parse_percent_permil),
]
Address = Annotated[
    str,
    pydantic.BeforeValidator(_numbers_to_text),
    pydantic.Field(max_length=32, examples=["0x7f0000000000", "4Ki"]),
    _checked(units.parse_address),
]

MAX_NID = 1023
MAX_WEIGHT = 10_000
MAX_SCHEMES = 64
MAX_GOALS = 16
MAX_FILTERS = 32

Action = Literal[
    "pageout",
    "cold",
    "migrate_hot",
    "migrate_cold",
    "lru_prio",
    "lru_deprio",
    "hugepage",
    "nohugepage",
    "willneed",
    "stat",
]
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]
MIGRATIONS = frozenset({"migrate_hot", "migrate_cold"})
# What a migration does on a node whose kernel moves pages between tiers itself
# (kernel.numa_balancing with either bit: KernelTiering.promotes): runs beside it, warned
# about, or is not applied there. Absent means Coexist.
KernelTieringPolicy = Literal["Coexist", "Refuse"]

Metric = Literal[
    "user_input",
    "some_mem_psi_us",
    "node_mem_used_bp",
    "node_mem_free_bp",
    "node_memcg_used_bp",
    "node_memcg_free_bp",
    "active_mem_bp",
    "inactive_mem_bp",
    "pod_mem_psi_us",
]
METRICS: tuple[str, ...] = Metric.__args__  # type: ignore[attr-defined]
# Which goal metrics need which extra field, and the unit of their target.
METRICS_NEEDING_NID = frozenset(
    {"node_mem_used_bp", "node_mem_free_bp", "node_memcg_used_bp", "node_memcg_free_bp"}
)
METRICS_NEEDING_PATH = frozenset({"node_memcg_used_bp", "node_memcg_free_bp", "pod_mem_psi_us"})
DURATION_METRICS = frozenset({"some_mem_psi_us", "pod_mem_psi_us"})
PERCENT_METRICS = frozenset(
    {
        "node_mem_used_bp",
        "node_mem_free_bp",
        "node_memcg_used_bp",
        "node_memcg_free_bp",
        "active_mem_bp",
        "inactive_mem_bp",
    }
)

FilterType = Literal[
    "anon", "memcg", "young", "hugepage_size", "unmapped", "active", "addr", "target"
]
CORE_FILTER_TYPES = frozenset({"addr", "target"})


class _Model(base.ApiModel):
    # Defaults are validated too: a wrong default would be a bug here, not the user's.
    model_config = pydantic.ConfigDict(validate_default=True)


def _check_range(low: int, high: int, low_text: str, high_text: str) -> None:
    if low > high:
        raise ValueError(f"min {low_text} is greater than max {high_text}")


class _Range(_Model):
    """A closed range: ``min`` may not be greater than ``max``, both read with ``_read``.

    Subclasses declare ``min`` and ``max`` with their unit's type and defaults, set
    ``_read`` to the unit's parser, and name the canonical bounds after the unit.
    """

    min: Any
    max: Any
    _read: ClassVar[staticmethod[[Any], int]]

    @property
    def _bounds(self) -> tuple[int, int]:
        return self._read(self.min), self._read(self.max)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Self:
        _check_range(*self._bounds, str(self.min), str(self.max))
        return self


# ---------------------------------------------------------------------------------------
# Monitoring


class Intervals(_Model):
    """Sampling, aggregation and operations-update intervals.

    The kernel's defaults but the aggregation: 200 ms (40 samples) where the kernel has
    100 ms (20). A page touched ten times a second is then seen in 87 % of aggregations
    instead of 64 %, which takes the tiering workload's hot-set F1 from 0.93 to 0.98 in
    bench/monitor_accuracy.py; the sampling, DAMON's cost, is unchanged.
    """

    sample: Duration = "5ms"
    aggregation: Duration = "200ms"
    update: Duration = "60s"

    @property
    def sample_us(self) -> int:
        return units.parse_duration_us(self.sample)

    @property
    def aggregation_us(self) -> int:
        return units.parse_duration_us(self.aggregation)

    @property
    def update_us(self) -> int:
        return units.parse_duration_us(self.update)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Intervals:
        if self.sample_us == 0:
            raise ValueError("sample must be more than 0")
        if self.sample_us >= units.UNBOUNDED or self.update_us >= units.UNBOUNDED:
            raise ValueError("intervals must be finite ('max' is not an interval)")
        if self.sample_us > self.aggregation_us:
            raise ValueError(f"sample {self.sample} is longer than aggregation {self.aggregation}")
        return self


class IntervalsGoal(_Model):
    """Intervals auto-tuning (kernel 6.15): aim at ``access`` of all possible access events."""

    access: Percent = "4%"
    aggrs: Annotated[int, pydantic.Field(ge=1, le=10_000)] = 3
    min_sample: Duration = "5ms"
    max_sample: Duration = "10s"

    @property
    def access_bp(self) -> int:
        return units.parse_percent_bp(self.access)

    @property
    def min_sample_us(self) -> int:
        return units.parse_duration_us(self.min_sample)

    @property
    def max_sample_us(self) -> int:
        return units.parse_duration_us(self.max_sample)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> IntervalsGoal:
        if self.access_bp == 0:
            raise ValueError("access must be more than 0%")
        _check_range(self.min_sample_us, self.max_sample_us, self.min_sample, self.max_sample)
        return self


class Regions(_Range):
    """Bounds of the adaptive region count, and of a region's size.

    ``maxSize`` is the agent's, not the kernel's: no region grows beyond it by merging.
    The agent raises the kernel's minimum region count to the monitored size over
    ``maxSize`` (a power of two, at most ``max / 2``; ``core.attrs.region_floor``), so
    small hot spots in a large idle space are not merged away. ``max``: the kernel's own
    bound only (total size / ``min``).
    """

    min: Annotated[int, pydantic.Field(ge=3, le=1_000_000)] = 10
    max: Annotated[int, pydantic.Field(ge=3, le=1_000_000)] = 1000
    max_size: Size = "32Mi"
    _read = staticmethod(int)

    @property
    def max_size_bytes(self) -> int | None:
        """``maxSize`` in bytes; None for ``max``."""
        value = units.parse_size_bytes(self.max_size)
        return None if value >= units.UNBOUNDED else value

    @pydantic.model_validator(mode="after")
    def _max_size_a_page(self) -> Regions:
        value = self.max_size_bytes
        if value is not None and value < 4096:
            raise ValueError(f"maxSize {self.max_size} is below a page (4Ki)")
        return self


class MonitoringSpec(_Model):
    """How to monitor: operations set, intervals, optional auto-tuning, region bounds."""

    mode: Literal["auto", "vaddr", "paddr"] = "auto"
    intervals: Intervals = Intervals()
    intervals_goal: IntervalsGoal | None = None
    regions: Regions = Regions()

    def attrs_kwargs(self) -> dict[str, Any]:
        """Canonical keyword arguments of ``core.attrs.MonitoringAttrs`` (without the goal).

        The conversion itself is ``damon_agent.schemes.conversion.monitoring_attrs``.
        """
        return {
            "sample_us": self.intervals.sample_us,
            "aggr_us": self.intervals.aggregation_us,
            "update_us": self.intervals.update_us,
            "min_nr_regions": self.regions.min,
            "max_nr_regions": self.regions.max,
            "max_region_bytes": self.regions.max_size_bytes,
        }


# ---------------------------------------------------------------------------------------
# Access pattern


class SizeRange(_Range):
    min: Size = "0"
    max: Size = "max"
    _read = staticmethod(units.parse_size_bytes)

    @property
    def min_bytes(self) -> int:
        return self._bounds[0]

    @property
    def max_bytes(self) -> int:
        return self._bounds[1]


class RateRange(_Range):
    """Access rate as a share of the maximum possible (sampled accessed every time = 100%)."""

    min: Percent = "0%"
    max: Percent = "100%"
    _read = staticmethod(units.parse_percent_bp)

    @property
    def min_bp(self) -> int:
        return self._bounds[0]

    @property
    def max_bp(self) -> int:
        return self._bounds[1]


class AgeRange(_Range):
    """How long the region kept its access rate (rounded down to aggregation intervals)."""

    min: Duration = "0"
    max: Duration = "max"
    _read = staticmethod(units.parse_duration_us)

    @property
    def min_us(self) -> int:
        return self._bounds[0]

    @property
    def max_us(self) -> int:
        return self._bounds[1]


class AccessPattern(_Model):
    """Closed ranges a region must fall in, for all three, to be acted on."""

    size: SizeRange = SizeRange()
    access_rate: RateRange = RateRange()
    age: AgeRange = AgeRange()


# ---------------------------------------------------------------------------------------
# Quota


class Weights(_Model):
    """Prioritization weights (per-thousand in the kernel; only their ratio matters)."""

    size: Annotated[int, pydantic.Field(ge=0, le=MAX_WEIGHT)] = 0
    access_rate: Annotated[int, pydantic.Field(ge=0, le=MAX_WEIGHT)] = 1000
    age: Annotated[int, pydantic.Field(ge=0, le=MAX_WEIGHT)] = 1000


class Goal(_Model):
    """A quota goal: the quota is tuned so that ``metric`` reaches ``target``.

    Target units by metric: ``*_psi_us`` a duration of stall per reset interval ("10ms");
    ``*_bp`` a percentage ("0.5%"); ``user_input`` a plain integer. ``nid`` is required by
    the node_* metrics; ``path`` (a cgroup path) by the memcg and pod metrics.
    ``current`` is the initial value of a user_input goal (fed later by the agent).
    """

    metric: Metric
    target: Annotated[str, pydantic.BeforeValidator(_numbers_to_text), pydantic.Field(
        max_length=32, examples=["10ms", "0.5%", "100"])]  # fmt: skip
    nid: Annotated[int, pydantic.Field(ge=0, le=MAX_NID)] | None = None
    path: Annotated[str, pydantic.Field(min_length=1, max_length=4096)] | None = None
    current: Annotated[int, pydantic.Field(ge=0, le=units.UNBOUNDED)] | None = None

    @property
    def target_value(self) -> int:
        """The target in the metric's canonical unit (us, bp, or a plain count)."""
        if self.metric in DURATION_METRICS:
            return units.parse_duration_us(self.target)
        if self.metric in PERCENT_METRICS:
            return units.parse_percent_bp(self.target)
        return units.parse_count(self.target)

    @pydantic.model_validator(mode="after")
    def _fields_of_metric(self) -> Goal:
        try:
            value = self.target_value
        except units.UnitError as err:
            raise ValueError(f"target of {self.metric}: {err}") from None
        if value == 0 or value >= units.UNBOUNDED:
            raise ValueError(f"target of {self.metric} must be more than 0 and finite")
        if self.metric in METRICS_NEEDING_NID and self.nid is None:
            raise ValueError(f"metric {self.metric} needs nid (the NUMA node to measure)")
        if self.metric not in METRICS_NEEDING_NID and self.nid is not None:
            raise ValueError(f"metric {self.metric} takes no nid")
        if self.metric in METRICS_NEEDING_PATH and self.path is None:
            raise ValueError(f"metric {self.metric} needs path (the cgroup to measure)")
        if self.metric not in METRICS_NEEDING_PATH and self.path is not None:
            raise ValueError(f"metric {self.metric} takes no path")
        if self.metric != "user_input" and self.current is not None:
            raise ValueError(f"metric {self.metric} is measured: only user_input takes current")
        return self


class Quota(_Model):
    """Limits per reset interval, prioritization weights and auto-tuning goals.

    ``time`` and ``size`` of "0" mean no such limit. With goals, the effective size is
    tuned each reset interval (and still capped by ``time`` and ``size``).
    """

    time: Duration = "0"
    size: Size = "0"
    reset_interval: Duration = "1s"
    weights: Weights = Weights()
    goals: Annotated[list[Goal], pydantic.Field(max_length=MAX_GOALS)] = []
    tuner: Literal["consist", "temporal"] = "consist"

    @property
    def time_us(self) -> int:
        return units.parse_duration_us(self.time)

    @property
    def size_bytes(self) -> int:
        return units.parse_size_bytes(self.size)

    @property
    def reset_interval_us(self) -> int:
        return units.parse_duration_us(self.reset_interval)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Quota:
        if self.time_us >= units.UNBOUNDED or self.size_bytes >= units.UNBOUNDED:
            raise ValueError("time and size take '0' for no limit, not 'max'")
        if self.reset_interval_us == 0 or self.reset_interval_us >= units.UNBOUNDED:
            raise ValueError("resetInterval must be more than 0 and finite")
        if self.time_us and self.time_us < 1000:
            raise ValueError(f"time {self.time} is under 1ms (the kernel's resolution)")
        return self


# ---------------------------------------------------------------------------------------
# Watermarks


class Watermarks(_Model):
    """Turn the scheme on only while free memory is between ``low`` and ``high``.

    Above ``high`` or below ``low`` the scheme is off; between ``mid`` and ``high`` an off
    scheme stays off (hysteresis). Checked every ``interval``. Metric ``none``: always on.
    """

    metric: Literal["none", "free_mem_rate"] = "free_mem_rate"
    interval: Duration = "5s"
    high: PercentPermil = "100%"
    mid: PercentPermil = "100%"
    low: PercentPermil = "0%"

    @property
    def interval_us(self) -> int:
        return units.parse_duration_us(self.interval)

    @property
    def high_permil(self) -> int:
        return units.parse_percent_permil(self.high)

    @property
    def mid_permil(self) -> int:
        return units.parse_percent_permil(self.mid)

    @property
    def low_permil(self) -> int:
        return units.parse_percent_permil(self.low)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Watermarks:
        if not self.high_permil >= self.mid_permil >= self.low_permil:
            raise ValueError(
                f"watermarks must be high >= mid >= low, got high {self.high}, "
                f"mid {self.mid}, low {self.low}"
            )
        if self.interval_us == 0 or self.interval_us >= units.UNBOUNDED:
            raise ValueError("interval must be more than 0 and finite")
        return self


# ---------------------------------------------------------------------------------------
# Filters

_FILTER_FIELDS: dict[str, frozenset[str]] = {
    "anon": frozenset(),
    "young": frozenset(),
    "unmapped": frozenset(),
    "active": frozenset(),
    "memcg": frozenset({"memcg_path"}),
    "hugepage_size": frozenset({"min_size", "max_size"}),
    "addr": frozenset({"addr_start", "addr_end"}),
    "target": frozenset({"target_index"}),
}
_OPTIONAL_FILTER_FIELDS = frozenset(
    {"memcg_path", "min_size", "max_size", "addr_start", "addr_end", "target_index"}
)


def _camel(name: str) -> str:
    return pydantic.alias_generators.to_camel(name)


class Filter(_Model):
    """One DAMOS filter. ``allow`` false rejects what the filter selects.

    The filter selects memory that matches its condition (``matching`` true) or that does
    not (``matching`` false). Filters are evaluated in order and the first that selects a
    region decides; past the last filter, a region is rejected if that last filter was an
    allow filter and allowed otherwise. ``addr`` and ``target`` are evaluated by the core,
    before the others (which the operations set evaluates per page).
    """

    type: FilterType
    allow: bool = False
    matching: bool = True
    memcg_path: Annotated[str, pydantic.Field(min_length=1, max_length=4096)] | None = None
    addr_start: Address | None = None
    addr_end: Address | None = None
    target_index: Annotated[int, pydantic.Field(ge=0, le=65_535)] | None = None
    min_size: Size | None = None
    max_size: Size | None = None

    @property
    def is_core(self) -> bool:
        return self.type in CORE_FILTER_TYPES

    @pydantic.model_validator(mode="after")
    def _fields_of_type(self) -> Filter:
        needed = _FILTER_FIELDS[self.type]
        for name in sorted(needed):
            if getattr(self, name) is None:
                raise ValueError(f"a {self.type} filter needs {_camel(name)}")
        for name in sorted(_OPTIONAL_FILTER_FIELDS - needed):
            if getattr(self, name) is not None:
                raise ValueError(f"a {self.type} filter takes no {_camel(name)}")
        if self.type == "addr":
            assert self.addr_start is not None and self.addr_end is not None
            start = units.parse_address(self.addr_start)
            end = units.parse_address(self.addr_end)
            if start >= end:
                raise ValueError(
                    f"addrStart {self.addr_start} is not below addrEnd {self.addr_end}"
                )
        if self.type == "hugepage_size":
            assert self.min_size is not None and self.max_size is not None
            _check_range(
                units.parse_size_bytes(self.min_size),
                units.parse_size_bytes(self.max_size),
                self.min_size,
                self.max_size,
            )
        return self


# ---------------------------------------------------------------------------------------
# Goal-driven tiering


def _more_than_zero(value: str) -> str:
    if units.parse_percent_bp(value) == 0:
        raise ValueError(f"{value!r} is no fill: write more than 0%")
    return value


FillPercent = Annotated[Percent, pydantic.AfterValidator(_more_than_zero)]


class Fill(_Model):
    """Goal-driven tiering: the DRAM fill a ``migrate_hot``/``migrate_cold`` scheme steers
    toward, instead of hand-written quota goals (kernel 6.16+).

    ``dram``: how full each DRAM NUMA node should be. A promotion (``migrate_hot``,
    ``tier: dram``) goes on while the DRAM node it moves to is used less than that (a
    ``node_mem_used_bp`` goal on that node); a demotion (``migrate_cold``, ``tier: cxl``)
    while the DRAM node it moves from is used more (a ``node_mem_free_bp`` goal of
    100% - ``dram`` on that node). The agent writes the goals per NUMA node of the node's
    tiers. The DAMON maintainer's self-tuned tiering promotes toward 99.7% and demotes
    toward 99.5%: the two meet, so hot and cold pages keep trading places in a full DRAM.

    ``podShare`` (schemes that select pods): also at most this share of each DRAM node for
    the pod's own memory (``node_memcg_used_bp``/``node_memcg_free_bp`` of its memory
    cgroup, Linux 6.19). Where the node cannot measure it, only ``dram`` steers (a
    ``TieringGoalNodeWide`` warning says why).
    """

    dram: FillPercent
    pod_share: FillPercent | None = None

    @property
    def dram_bp(self) -> int:
        return units.parse_percent_bp(self.dram)

    @property
    def pod_share_bp(self) -> int | None:
        return None if self.pod_share is None else units.parse_percent_bp(self.pod_share)


# ---------------------------------------------------------------------------------------
# Scheme


class SchemeSpec(_Model):
    """One DAMOS scheme: act on regions of a given access pattern, within limits."""

    name: Annotated[
        str, pydantic.Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ]
    action: Action
    target_nid: Annotated[int, pydantic.Field(ge=0, le=MAX_NID)] | None = None
    tier: Literal["dram", "cxl"] | None = None
    apply_interval: Duration | None = None
    dry_run: bool = False
    access_pattern: AccessPattern = AccessPattern()
    quota: Quota | None = None
    watermarks: Watermarks | None = None
    filters: Annotated[list[Filter], pydantic.Field(max_length=MAX_FILTERS)] = []
    kernel_tiering: KernelTieringPolicy | None = None

    @pydantic.field_validator("kernel_tiering")
    @classmethod
    def _kernel_tiering_of_migrations(
        cls, value: KernelTieringPolicy | None, info: pydantic.ValidationInfo
    ) -> KernelTieringPolicy | None:
        # A field validator, so that the error names the field. ``action`` is validated
        # before it (declared first); absent from ``info.data`` when it was invalid.
        action = info.data.get("action")
        if value is not None and action is not None and action not in MIGRATIONS:
            raise ValueError(
                f"only for migrate_hot and migrate_cold (this scheme's action is {action})"
            )
        return value

    fill: Fill | None = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _goals_belong_to_quota(cls, data: Any) -> Any:
        if isinstance(data, dict) and "goals" in data:
            raise ValueError(
                "goals belong under quota.goals: a goal tunes the quota, so it needs a quota"
            )
        return data

    @property
    def apply_interval_us(self) -> int:
        """0 means "every aggregation interval", as in the kernel."""
        return 0 if self.apply_interval is None else units.parse_duration_us(self.apply_interval)

    @pydantic.model_validator(mode="after")
    def _destination(self) -> SchemeSpec:
        if self.action in MIGRATIONS:
            if (self.target_nid is None) == (self.tier is None):
                raise ValueError(f"action {self.action} needs exactly one of targetNid or tier")
        elif self.target_nid is not None or self.tier is not None:
            raise ValueError(f"action {self.action} takes no targetNid or tier")
        if self.apply_interval is not None and self.apply_interval_us >= units.UNBOUNDED:
            raise ValueError("applyInterval must be finite")
        if self.fill is not None:
            self._fill_fits()
        return self

    def _fill_fits(self) -> None:
        """``fill`` steers migrations between the DRAM and CXL tiers (``Fill``)."""
        assert self.fill is not None
        wanted = {"migrate_hot": "dram", "migrate_cold": "cxl"}.get(self.action)
        if wanted is None:
            raise ValueError(f"fill steers migrate_hot and migrate_cold schemes, not {self.action}")
        if self.tier != wanted:
            raise ValueError(
                f"fill needs tier {wanted} on a {self.action} scheme (the agent finds the "
                f"DRAM node of each migration from the tiers), got "
                + (f"tier {self.tier}" if self.tier else f"targetNid {self.target_nid}")
            )
        if self.action == "migrate_cold":
            for name, value in (("dram", self.fill.dram), ("podShare", self.fill.pod_share)):
                if value is not None and units.parse_percent_bp(value) >= 10_000:
                    raise ValueError(
                        f"fill.{name}: {value} leaves nothing free, and a demotion steers "
                        "toward free DRAM: write less than 100%"
                    )


class SchemeFile(_Model):
    """A scheme file: how to monitor and which schemes to apply."""

    monitoring: MonitoringSpec = MonitoringSpec()
    schemes: Annotated[list[SchemeSpec], pydantic.Field(max_length=MAX_SCHEMES)] = []

    @pydantic.model_validator(mode="after")
    def _unique_names(self) -> SchemeFile:
        seen: set[str] = set()
        for scheme in self.schemes:
            if scheme.name in seen:
                raise ValueError(f"scheme name {scheme.name!r} is used twice")
            seen.add(scheme.name)
        return self


# ---------------------------------------------------------------------------------------
# Loading


class SchemeFileError(Exception):
    """A scheme file could not be read or is invalid; the message names the field."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-") or part in {"str", "int"}:
            continue  # pydantic's names of union/validator branches, not fields
        else:
            path += f".{part}" if path else part
    return path or "(top level)"


def _reason(error: Any) -> str:
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "literal_error":
        return f"{error['input']!r} is not one of {error['ctx']['expected']}"
    return str(error["msg"])


def describe_validation_error(err: pydantic.ValidationError) -> str:
    """One line per problem: ``field.path: reason``."""
    return "; ".join(f"{_field_path(e['loc'])}: {_reason(e)}" for e in err.errors())


def parse_scheme_file(data: Any, *, source: str = "scheme file") -> SchemeFile:
    """Validate already-parsed YAML/JSON data."""
    if data is None:
        data = {}
    try:
        return SchemeFile.model_validate(data)
    except pydantic.ValidationError as err:
        raise SchemeFileError(f"{source}: {describe_validation_error(err)}") from None


def load_scheme_file(path: str | Path) -> SchemeFile:
    """Read and validate a YAML scheme file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SchemeFileError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SchemeFileError(f"{path}: not valid YAML: {err}") from None
    return parse_scheme_file(data, source=str(path))
