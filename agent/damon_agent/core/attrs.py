"""Monitoring attributes, in canonical units (microseconds, counts), as the kernel keeps them."""

from __future__ import annotations

from dataclasses import dataclass

from damon_agent.core import errors


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
    10..1000 regions."""

    sample_us: int = 5_000
    aggr_us: int = 100_000
    update_us: int = 60_000_000
    min_nr_regions: int = 10
    max_nr_regions: int = 1_000
    intervals_goal: IntervalsGoal | None = None

    @property
    def max_nr_accesses(self) -> int:
        """nr_accesses a region reaches when sampled as accessed at every sampling interval."""
        return max(1, self.aggr_us // max(1, self.sample_us))


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
