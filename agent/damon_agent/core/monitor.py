"""The monitor: one DAMON monitoring context, stepped one sampling interval at a time.

``Monitor.step`` is one iteration of the kernel's ``kdamond_fn`` loop, in its order:

1. watermarks: if a schemes hook says every scheme is off, only sleep (no sampling), as
   ``kdamond_wait_activation`` does;
2. prepare access checks: one random address per region, its accessed state cleared;
3. sleep one sampling interval (virtual time on a ``SimClock``);
4. check accesses: ``nr_accesses += 1`` where the sampled page was touched, and the
   pseudo moving sum ``nr_accesses_bp`` follows;
5. if an aggregation interval closed: age and merge (``aggregation``);
6. let the schemes hook act (every sampling interval; DAMOS keeps its own apply interval);
7. if an aggregation interval closed: take the snapshot, tune the intervals when a goal is
   set and its turn came (``tuning``), reset the counts and split (``splitting``);
8. if the ops update interval passed: refit the regions to the target's current layout
   (``vaddr_layout``) and recompute the merge size limit.

Time is counted in passed sampling intervals, like the kernel, so that tuning the sampling
interval does not shift the aggregation boundaries. All randomness comes from the injected
``numpy.random.Generator``: with the same seed, the same operations and clock, a run is
reproduced exactly. Per sampling interval the work is a few numpy operations over the
regions; merge and split run once per aggregation interval, also O(regions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from damon_agent.core import (
    aggregation,
    interfaces,
    regions,
    snapshots,
    splitting,
    tuning,
    vaddr_layout,
)
from damon_agent.core import attrs as attrs_module


class Monitor:
    """One monitoring context over one or more targets of one operations set."""

    def __init__(
        self,
        attrs: attrs_module.MonitoringAttrs,
        ops: interfaces.Operations,
        target_ids: Sequence[int],
        *,
        clock: interfaces.Clock,
        rng: np.random.Generator,
        schemes: interfaces.SchemesHook | None = None,
        leave_out_biggest_gaps: bool = True,
    ) -> None:
        """``leave_out_biggest_gaps``: apply the vaddr rule to the targets' ranges (the
        default); turn it off for physical-address targets, monitored range by range."""
        attrs_module.validate_attrs(attrs)
        self.attrs = attrs
        self.ops = ops
        self.clock = clock
        self.rng = rng
        self.schemes = schemes
        self.leave_out_biggest_gaps = leave_out_biggest_gaps
        self.target_ids = list(target_ids)
        self.passed_sample_intervals = 0
        self.nr_access_checks = 0
        """Addresses checked so far (one per region per sampling interval)."""
        self.nr_aggregations = 0
        self._aggr_samples = max(1, attrs.aggr_us // attrs.sample_us)
        self._next_aggregation_sis = self._aggr_samples
        self._next_ops_update_sis = attrs.update_us // attrs.sample_us
        aggrs = attrs.intervals_goal.aggrs if attrs.intervals_goal else 0
        self._next_intervals_tune_sis = self._next_aggregation_sis * aggrs
        self._last_nr_regions = 0
        layouts = [(tid, self._layout(tid)) for tid in self.target_ids]
        total = sum(end - start for _, layout in layouts for start, end in layout)
        floor = attrs_module.region_floor(attrs, total)
        self.targets: list[regions.TargetRegions] = [
            vaddr_layout.initial_regions(tid, layout, floor) for tid, layout in layouts
        ]
        self._size_limit = self._compute_size_limit()

    # -- public API -------------------------------------------------------------------

    @property
    def aggr_samples(self) -> int:
        """Sampling intervals per aggregation interval (kept when intervals are tuned)."""
        return self._aggr_samples

    @property
    def size_limit(self) -> int:
        """Largest size a merge may produce: total monitored size / the region floor
        (``attrs.region_floor``)."""
        return self._size_limit

    @property
    def nr_regions(self) -> int:
        return sum(len(target) for target in self.targets)

    def step(self) -> snapshots.Snapshot | None:
        """One sampling interval; the snapshot if an aggregation interval closed in it."""
        now = self.clock.now_us()
        if self.schemes is not None and not self.schemes.wants_monitoring(now):
            self.clock.sleep_us(self.attrs.sample_us)
            return None
        # The kernel reads these before the iteration: changes made during it (tuning)
        # take effect from the next one.
        next_aggregation_sis = self._next_aggregation_sis
        next_ops_update_sis = self._next_ops_update_sis

        self._prepare_access_checks()
        self.clock.sleep_us(self.attrs.sample_us)
        self.passed_sample_intervals += 1
        max_nr_accesses = self._check_accesses()

        aggregating = self.passed_sample_intervals >= next_aggregation_sis
        if aggregating:
            aggregation.merge_regions(
                self.targets,
                aggregation.merge_threshold(max_nr_accesses),
                self._size_limit,
                self.attrs.max_nr_regions,
                self._aggr_samples,
            )
        if self.schemes is not None:
            self.schemes.apply(self, self.clock.now_us())

        snapshot: snapshots.Snapshot | None = None
        if aggregating:
            snapshot = self.snapshot()
            self.nr_aggregations += 1
            self._maybe_tune_intervals()
            self._next_aggregation_sis = next_aggregation_sis + self._aggr_samples
            for target in self.targets:
                aggregation.reset_aggregated(target)
            self._last_nr_regions = splitting.split_regions(
                self.targets, self._last_nr_regions, self.attrs.max_nr_regions, self.rng
            )

        if self.passed_sample_intervals >= next_ops_update_sis:
            self._next_ops_update_sis = next_ops_update_sis + (
                self.attrs.update_us // self.attrs.sample_us
            )
            self.update_layout()
        return snapshot

    def run(
        self,
        duration_us: int,
        on_snapshot: Callable[[snapshots.Snapshot], None] | None = None,
    ) -> snapshots.Snapshot | None:
        """Step until the clock passes start + ``duration_us``; the last snapshot taken."""
        deadline = self.clock.now_us() + duration_us
        last: snapshots.Snapshot | None = None
        while self.clock.now_us() < deadline:
            snapshot = self.step()
            if snapshot is not None:
                last = snapshot
                if on_snapshot is not None:
                    on_snapshot(snapshot)
        return last

    def snapshot(self) -> snapshots.Snapshot:
        """The current regions (copies), stamped with the current time and intervals."""
        return snapshots.Snapshot(
            time_us=self.clock.now_us(),
            sample_us=self.attrs.sample_us,
            aggr_us=self.attrs.aggr_us,
            targets=tuple(
                snapshots.TargetSnapshot(
                    target_id=target.target_id,
                    start=target.start.copy(),
                    end=target.end.copy(),
                    nr_accesses=target.nr_accesses.copy(),
                    age=target.age.copy(),
                )
                for target in self.targets
            ),
        )

    def update_layout(self) -> None:
        """Refit every target's regions to its current ranges (the ops update)."""
        for target in self.targets:
            vaddr_layout.fit_regions_to_ranges(target, self._layout(target.target_id))
        self._size_limit = self._compute_size_limit()

    def set_attrs(self, attrs: attrs_module.MonitoringAttrs) -> None:
        """Change the attributes online (as a sysfs commit does); boundaries restart now."""
        attrs_module.validate_attrs(attrs)
        self.attrs = attrs
        self._aggr_samples = max(1, attrs.aggr_us // attrs.sample_us)
        self._next_aggregation_sis = self.passed_sample_intervals + self._aggr_samples
        self._next_ops_update_sis = self.passed_sample_intervals + (
            attrs.update_us // attrs.sample_us
        )
        aggrs = attrs.intervals_goal.aggrs if attrs.intervals_goal else 0
        self._next_intervals_tune_sis = self._next_aggregation_sis + self._aggr_samples * aggrs
        self._size_limit = self._compute_size_limit()

    # -- internals ----------------------------------------------------------------------

    def _layout(self, target_id: int) -> list[vaddr_layout.AddressRange]:
        ranges = self.ops.target_ranges(target_id)
        if self.leave_out_biggest_gaps:
            return vaddr_layout.leave_out_two_biggest_gaps(ranges)
        return vaddr_layout.normalize_ranges(ranges)

    def _compute_size_limit(self) -> int:
        total = sum(target.total_size for target in self.targets)
        floor = attrs_module.region_floor(self.attrs, total)
        return vaddr_layout.region_size_limit(total, floor)

    def _prepare_access_checks(self) -> None:
        for target in self.targets:
            if len(target) == 0:
                continue
            target.sampling_addr = self.rng.integers(target.start, target.end, dtype=np.int64)
            self.ops.prepare_access_checks(target.target_id, target.sampling_addr)

    def _check_accesses(self) -> int:
        """Count the accesses seen; return the highest nr_accesses of any region."""
        highest = 0
        window = self._aggr_samples
        for target in self.targets:
            if len(target) == 0:
                continue
            accessed = np.asarray(
                self.ops.check_accesses(target.target_id, target.sampling_addr), dtype=bool
            )
            self.nr_access_checks += len(target)
            hits = accessed.astype(np.int64)
            target.nr_accesses = target.nr_accesses + hits
            # The kernel's pseudo moving sum: drop an average past sample, add this one.
            target.nr_accesses_bp = (
                target.nr_accesses_bp - target.last_nr_accesses * 10_000 // window + hits * 10_000
            )
            highest = max(highest, int(target.nr_accesses.max()))
        return highest

    def _maybe_tune_intervals(self) -> None:
        goal = self.attrs.intervals_goal
        if goal is None or goal.aggrs <= 0:
            return
        if self.passed_sample_intervals < self._next_intervals_tune_sis:
            return
        self._next_intervals_tune_sis += self._aggr_samples * goal.aggrs
        new_attrs = tuning.tuned_attrs(self.attrs, self.targets, self._aggr_samples)
        if new_attrs is self.attrs:
            return
        self.attrs = dataclasses.replace(new_attrs)
        self._next_ops_update_sis = self.passed_sample_intervals + (
            self.attrs.update_us // self.attrs.sample_us
        )
