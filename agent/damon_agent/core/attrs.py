"""Monitoring attributes, in canonical units (microseconds, counts), as the kernel keeps them."""

from __future__ import annotations

from dataclasses import dataclass

from damon_agent.core import errors, regions


@dataclass(frozen=True)
class IntervalsGoal:
    """Intervals auto-tuning goal (kernel 6.15 ``monitoring_attrs/intervals/intervals_goal``).

    ``access_bp`` is the wanted share of observed access events among all possible ones,
    in basis points; tuning happens every ``aggrs`` aggregations, keeping the sampling
    interval within [min_sample_us, max_sample_us].
    """

    access_bp: int = 400
    aggrs: int = 3
    min_sample_us: int = 5_000
    max_sample_us: int = 10_000_000


@dataclass(frozen=True)
class MonitoringAttrs:
    """The kernel's defaults: 5 ms sampling, 100 ms aggregation, 60 s ops update,
    10..1000 regions.

    ``max_region_bytes`` is not the kernel's: it bounds how big a region may grow by
    merging, which the kernel bounds only through the region count (a merge stops at
    total / min_nr_regions). With it, the region floor follows the monitored size
    (``region_floor``), so that a few small hot spots in gigabytes of idle memory are not
    merged away (the kernel's 10 regions over 4 GiB make 400 MiB regions, and 2 MiB hot
    spots vanish in them). None: the floor is ``min_nr_regions``, as in the kernel.
    """

    sample_us: int = 5_000
    aggr_us: int = 100_000
    update_us: int = 60_000_000
    min_nr_regions: int = 10
    max_nr_regions: int = 1_000
    intervals_goal: IntervalsGoal | None = None
    max_region_bytes: int | None = None

    @property
    def max_nr_accesses(self) -> int:
        """nr_accesses a region reaches when sampled as accessed at every sampling interval."""
        return max(1, self.aggr_us // max(1, self.sample_us))


def region_floor(attrs: MonitoringAttrs, total_bytes: int) -> int:
    """The ``min_nr_regions`` to give the kernel for ``total_bytes`` of monitored memory.

    Enough regions that none grows beyond ``max_region_bytes``, rounded up to a power of
    two (so that a target whose size drifts changes it seldom), never below
    ``min_nr_regions`` and never above half of ``max_nr_regions``: the kernel splits
    regions only while there are at most max/2 of them, so a higher floor would leave no
    room to adapt, and the region count, which bounds DAMON's cost, stays within the
    user's maximum.
    """
    floor = attrs.min_nr_regions
    if attrs.max_region_bytes is None or total_bytes <= 0:
        return floor
    needed = -(-total_bytes // attrs.max_region_bytes)
    wanted = 1 << max(0, needed - 1).bit_length()
    return max(floor, min(wanted, attrs.max_nr_regions // 2))


def validate_attrs(attrs: MonitoringAttrs) -> None:
    """Refuse what the kernel's damon_set_attrs() refuses; the error names the field."""
    if attrs.sample_us <= 0:
        raise errors.InvalidAttrsError(f"sample_us: {attrs.sample_us} must be positive")
    if attrs.aggr_us < attrs.sample_us:
        raise errors.InvalidAttrsError(
            f"aggr_us: {attrs.aggr_us} is shorter than sample_us ({attrs.sample_us})"
        )
    if attrs.update_us < 0:
        raise errors.InvalidAttrsError(f"update_us: {attrs.update_us} must not be negative")
    if attrs.min_nr_regions < 3:
        raise errors.InvalidAttrsError(
            f"min_nr_regions: {attrs.min_nr_regions} is below the minimum of 3"
        )
    if attrs.max_nr_regions < attrs.min_nr_regions:
        raise errors.InvalidAttrsError(
            f"max_nr_regions: {attrs.max_nr_regions} is below min_nr_regions "
            f"({attrs.min_nr_regions})"
        )
    if attrs.max_region_bytes is not None and attrs.max_region_bytes < regions.MIN_REGION_SIZE:
        raise errors.InvalidAttrsError(
            f"max_region_bytes: {attrs.max_region_bytes} is below a page "
            f"({regions.MIN_REGION_SIZE})"
        )
    goal = attrs.intervals_goal
    if goal is not None:
        if goal.access_bp <= 0 or goal.access_bp > 10_000:
            raise errors.InvalidAttrsError(
                f"intervals_goal.access_bp: {goal.access_bp} is outside 1..10000"
            )
        if goal.aggrs < 0:
            raise errors.InvalidAttrsError(f"intervals_goal.aggrs: {goal.aggrs} is negative")
        if goal.min_sample_us <= 0 or goal.max_sample_us < goal.min_sample_us:
            raise errors.InvalidAttrsError(
                f"intervals_goal.min_sample_us/max_sample_us: [{goal.min_sample_us}, "
                f"{goal.max_sample_us}] is not a valid range"
            )
