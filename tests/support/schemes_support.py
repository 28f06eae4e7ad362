"""Helpers for the DAMOS tests (tests/schemes): hand-built region states, a metric source
with set values, operations that record what they were asked to do, and a fake action timer.

These fakes stand in for pure-logic inputs only; the integration tests use the real
``Monitor`` and ``SimOperations``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from damon_agent.core import attrs, regions
from damon_agent.schemes import engine, errors, model


def target(
    target_id: int,
    bounds: Sequence[tuple[int, int]],
    nr_accesses: Sequence[int],
    ages: Sequence[int],
) -> regions.TargetRegions:
    nr = np.array(nr_accesses, dtype=np.int64)
    return regions.TargetRegions(
        target_id=target_id,
        start=np.array([b[0] for b in bounds], dtype=np.int64),
        end=np.array([b[1] for b in bounds], dtype=np.int64),
        nr_accesses=nr.copy(),
        age=np.array(ages, dtype=np.int64),
        last_nr_accesses=nr.copy(),
        nr_accesses_bp=nr * 10_000,
    )


@dataclass
class StubMonitor:
    """What the engine reads of a monitor, set by hand (20 samples per aggregation)."""

    targets: list[regions.TargetRegions]
    attrs: attrs.MonitoringAttrs = field(default_factory=attrs.MonitoringAttrs)
    passed_sample_intervals: int = 0

    @property
    def aggr_samples(self) -> int:
        return self.attrs.aggr_us // self.attrs.sample_us

    def next_aggregation(self) -> int:
        """Advance to the next aggregation boundary; return the time in us."""
        self.passed_sample_intervals += self.aggr_samples
        return self.passed_sample_intervals * self.attrs.sample_us


@dataclass
class Metrics:
    """A metric source with values set by the test; unset metrics are unavailable."""

    values: dict[tuple[str, int | None, str | None], int] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)

    def set(self, metric: str, value: int, *, nid: int | None = None, path: str | None = None
            ) -> None:  # fmt: skip
        self.values[(metric, nid, path)] = value

    def read(self, metric: str, *, nid: int | None = None, path: str | None = None) -> int:
        self.reads.append(metric)
        try:
            return self.values[(metric, nid, path)]
        except KeyError:
            raise errors.MetricUnavailableError(metric) from None


@dataclass
class RecordingOps:
    """Operations that record each action and report every byte applied."""

    calls: list[tuple[int, int, int, str, int | None]] = field(default_factory=list)

    def target_ranges(self, target_id: int) -> list[tuple[int, int]]:
        return []

    def prepare_access_checks(self, target_id: int, addrs: object) -> None:
        return None

    def check_accesses(self, target_id: int, addrs: object) -> object:
        return np.zeros(0, dtype=bool)

    def apply_action(
        self, target_id: int, start: int, end: int, action: str, target_nid: int | None
    ) -> int:
        self.calls.append((target_id, start, end, action, target_nid))
        return end - start


@dataclass
class FilteringOps(RecordingOps):
    """Also takes ops-layer filters; lets half of each range through them."""

    filter_calls: list[tuple[str, ...]] = field(default_factory=list)

    def apply_action_filtered(
        self,
        target_id: int,
        start: int,
        end: int,
        action: str,
        target_nid: int | None,
        *,
        ops_filters: Sequence[model.Filter],
    ) -> engine.FilteredResult:
        self.calls.append((target_id, start, end, action, target_nid))
        self.filter_calls.append(tuple(f.type for f in ops_filters))
        passed = (end - start) // 2
        return engine.FilteredResult(applied_bytes=passed, filter_passed_bytes=passed)


class StepTimer:
    """A monotonic ns clock that advances ``step_ns`` per reading."""

    def __init__(self, step_ns: int) -> None:
        self.step_ns = step_ns
        self.now = 0

    def __call__(self) -> int:
        self.now += self.step_ns
        return self.now
