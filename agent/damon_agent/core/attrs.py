"""Monitoring attributes, in canonical units (microseconds, counts), as the kernel keeps them."""

from __future__ import annotations

from dataclasses import dataclass


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
    """The kernel's defaults: 5 ms sampling, 100 ms aggregation, 60 s ops update, 10..1000 regions."""

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
