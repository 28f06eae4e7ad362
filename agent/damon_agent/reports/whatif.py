"""What-if: what DAMOS schemes would have done over a recording, computed offline.

``simulate`` replays a recording's snapshots through the project's own DAMOS engine
(``schemes.engine.SchemesEngine``: access patterns, quotas with access-based
prioritization, core filters, goal tuning, watermarks) and reports per scheme and per
snapshot interval the bytes it would have tried and applied, the share of the working set
it would have touched, and an estimate of the refaults it would have caused.

How a recording stands in for the live monitor:

- Each snapshot becomes the monitor's regions for one apply: ``nr_accesses`` as recorded
  (the engine reads ``nr_accesses_bp // 10000``, which equals it at an aggregation
  boundary), the recorded intervals, and a sampling-interval count taken from the time,
  so that apply intervals and quota windows fall as they would live.
- Ages: a live engine resets the age of every region it acts on (all actions but
  ``stat``), so a region paged out is not tried again before it ages once more. The
  recording was made without the scheme, so its ages never saw those resets; the what-if
  keeps them itself (``_AgeResets``): the part of a region acted on is aged from then,
  and the region takes the size-weighted average of its parts' ages, as the monitor's
  merge of those parts would (checked against live sim runs in tests/reports).
- Actions go to ``ReplayOperations``, which keeps what the actions did: pageout makes
  memory non-resident (a second pageout of it applies nothing, as the sim and the kernel
  find no resident page), ``cold``/``lru_deprio`` apply to resident memory only,
  ``migrate_cold`` / ``migrate_hot`` move memory once until the other one moves it back
  (where memory starts is not recorded: a first migration of a range counts whole, an
  upper bound). Memory later seen accessed is resident again. The remaining actions
  (``lru_prio``, ``hugepage``, ``nohugepage``, ``willneed``) apply to all they try.
- Action time, for time quotas, is a fixed cost per action (``ACTION_COST_NS``, the sim
  backend's), so a what-if is reproducible.

What a recording cannot tell (``prepare_schemes`` turns these into notes):

- filters evaluated page by page (anon, memcg, young, unmapped, active, hugepage_size)
  need page attributes: they are left out, as the sim backend leaves them out, and the
  numbers are those of the scheme without them. ``addr`` and ``target`` filters are
  evaluated exactly.
- watermarks need the node's free memory: the scheme is taken as always on.
- quota goals: ``active_mem_bp`` / ``inactive_mem_bp`` are stood in for by the share of
  the monitored memory that is resident and seen accessed (``RecordedMetrics``); every
  other goal keeps its initial current value (0 for a measured metric, which the tuner
  reads as "goal not reached": the quota grows to its ceiling).

The estimates, at region granularity (the recording's resolution):

- working set: the bytes of the snapshot's regions with ``nr_accesses > 0``
  (``wss.working_set_size``); "touched" is the part of it lying in ranges the scheme has
  tried so far, this interval included;
- refaults: bytes of ranges a cold-like scheme (``model.COLD_FIRST_ACTIONS``) tried that
  a later snapshot shows accessed; each byte counts once until the scheme acts on it
  again.

``simulate`` does no I/O (parsed snapshots and converted schemes in, a ``WhatIfResult``
out); ``render`` makes the text table and ``write_png`` the only file this module writes.
The CLI (``cli.damonctl_whatif``) reads the files and prints.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from damon_agent.api import schemes as api_schemes
from damon_agent.api import units as api_units
from damon_agent.core import attrs as core_attrs
from damon_agent.core import clock as core_clock
from damon_agent.core import errors as core_errors
from damon_agent.core import monitor as core_monitor
from damon_agent.core import regions, snapshots
from damon_agent.core.regions import Int64Array
from damon_agent.reports import errors, heatmap, units, wss
from damon_agent.schemes import conversion, engine, model
from damon_agent.schemes import errors as scheme_errors
from damon_agent.schemes import stats as scheme_stats

# The sim backend's fake cost of one action (runtime.backends.sim.SIM_ACTION_COST_NS, which
# this layer may not import): the time quota then limits a what-if as it limits a sim run.
ACTION_COST_NS: Final = 10_000
DEFAULT_ROWS: Final = 20
STOOD_IN_METRICS: Final = frozenset({"active_mem_bp", "inactive_mem_bp"})
REFAULT_ACTIONS: Final = model.COLD_FIRST_ACTIONS
# Each migration and the one that undoes it.
MIGRATIONS: Final = {"migrate_cold": "migrate_hot", "migrate_hot": "migrate_cold"}


class SchemeInputError(errors.ReportError):
    """A scheme file the what-if cannot run (names the scheme and the field)."""


# ---------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class IntervalOutcome:
    """What one scheme would have done at one snapshot (one apply opportunity)."""

    time_us: int
    tried_bytes: int
    applied_bytes: int
    wss_bytes: int
    touched_wss_bytes: int
    """Bytes of this snapshot's working set in ranges the scheme has tried so far."""
    refault_bytes: int
    """Bytes the scheme acted on (cold-like) earlier that this snapshot shows accessed."""


@dataclass(frozen=True)
class SchemeOutcome:
    """One scheme over the whole recording."""

    name: str
    action: str
    intervals: tuple[IntervalOutcome, ...]
    qt_exceeds: int
    estimates_refaults: bool
    """Whether the action is cold-like, so that accessing its memory again is a refault."""

    @property
    def total_tried(self) -> int:
        return sum(i.tried_bytes for i in self.intervals)

    @property
    def total_applied(self) -> int:
        return sum(i.applied_bytes for i in self.intervals)

    @property
    def total_refaults(self) -> int:
        return sum(i.refault_bytes for i in self.intervals)

    def cumulative(self, name: str) -> Int64Array:
        """Running sum of an ``IntervalOutcome`` byte field, one entry per snapshot."""
        values = np.array([getattr(i, name) for i in self.intervals], dtype=np.int64)
        return np.cumsum(values, dtype=np.int64)


@dataclass(frozen=True)
class WhatIfResult:
    start_us: int
    schemes: tuple[SchemeOutcome, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: every interval at full resolution, times relative to the start."""
        return {
            "start_us": self.start_us,
            "notes": list(self.notes),
            "schemes": [
                {
                    "name": s.name,
                    "action": s.action,
                    "qt_exceeds": s.qt_exceeds,
                    "estimates_refaults": s.estimates_refaults,
                    "total_tried_bytes": s.total_tried,
                    "total_applied_bytes": s.total_applied,
                    "total_refault_bytes": s.total_refaults if s.estimates_refaults else None,
                    "intervals": [
                        {**dataclasses.asdict(i), "time_us": i.time_us - self.start_us}
                        for i in s.intervals
                    ],
                }
                for s in self.schemes
            ],
        }


# ---------------------------------------------------------------------------------------
# Schemes


def prepare_schemes(scheme_file: api_schemes.SchemeFile) -> tuple[list[model.Scheme], list[str]]:
    """The file's schemes as the engine runs them in a what-if, and a note for everything
    the recording cannot tell (module docstring)."""
    notes: list[str] = []
    prepared: list[model.Scheme] = []
    for spec in scheme_file.schemes:
        scheme = conversion.scheme(spec)
        where = f"scheme {scheme.name}"
        if spec.dry_run:
            notes.append(
                f"{where}: dryRun is ignored: the what-if shows what {scheme.action} would do"
            )
        left_out = [f.type for f in scheme.filters if not f.is_core]
        if left_out:
            notes.append(
                f"{where}: filter{'s' if len(left_out) > 1 else ''} {', '.join(left_out)} "
                "cannot be evaluated from a recording (they need page attributes): left "
                "out, the numbers are those of the scheme without them"
            )
            scheme = dataclasses.replace(
                scheme, filters=tuple(f for f in scheme.filters if f.is_core)
            )
        if scheme.watermarks is not None and scheme.watermarks.metric != "none":
            notes.append(
                f"{where}: watermarks ({scheme.watermarks.metric}) cannot be evaluated from "
                "a recording: the scheme is taken as always on"
            )
        for goal in scheme.quota.goals if scheme.quota else ():
            if goal.metric in STOOD_IN_METRICS:
                notes.append(
                    f"{where}: quota goal {goal.metric} is fed the share of resident "
                    "monitored memory seen accessed in each snapshot"
                )
            else:
                notes.append(
                    f"{where}: quota goal {goal.metric}: no recorded signal stands in; "
                    f"its current value is held at {goal.initial_current}"
                )
        if scheme.action in MIGRATIONS:
            notes.append(
                f"{where}: the recording does not say which node memory starts on: applied "
                f"bytes count every first {scheme.action} of a range (an upper bound)"
            )
        prepared.append(scheme)
    return prepared, notes


# ---------------------------------------------------------------------------------------
# Byte ranges: sorted, disjoint [start, end) arrays, combined vectorised


@dataclass(frozen=True)
class _Ranges:
    starts: Int64Array
    ends: Int64Array

    @staticmethod
    def empty() -> _Ranges:
        return _Ranges(np.zeros(0, np.int64), np.zeros(0, np.int64))

    @staticmethod
    def of(starts: Int64Array, ends: Int64Array) -> _Ranges:
        """Any ranges (unsorted, overlapping) as a normalised set."""
        keep = ends > starts
        starts, ends = starts[keep], ends[keep]
        if starts.size == 0:
            return _Ranges.empty()
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], ends[order]
        reach = np.maximum.accumulate(ends)
        # A new range begins where a start lies beyond everything before it reached.
        begins = np.ones(starts.size, dtype=bool)
        begins[1:] = starts[1:] > reach[:-1]
        first = np.flatnonzero(begins)
        last = np.append(first[1:] - 1, starts.size - 1)
        return _Ranges(starts[first], reach[last])

    @property
    def size(self) -> int:
        return int((self.ends - self.starts).sum())

    def covers(self, points: Int64Array) -> Int64Array:
        """Index of the range holding each point, -1 where none does."""
        index = np.searchsorted(self.starts, points, side="right").astype(np.int64) - 1
        inside = index >= 0
        inside[inside] = points[inside] < self.ends[index[inside]]
        return np.where(inside, index, -1)

    def overlap(self, start: int, end: int) -> int:
        """Bytes of [start, end) in the set."""
        first = int(np.searchsorted(self.ends, start, side="right"))
        last = int(np.searchsorted(self.starts, end, side="left"))
        if first >= last:
            return 0
        low = np.maximum(self.starts[first:last], start)
        high = np.minimum(self.ends[first:last], end)
        return int((high - low).sum())

    def _pieces(
        self, other: _Ranges
    ) -> tuple[Int64Array, Int64Array, NDArray[np.bool_], NDArray[np.bool_]]:
        bounds = np.unique(np.concatenate([self.starts, self.ends, other.starts, other.ends]))
        low, high = bounds[:-1], bounds[1:]
        return low, high, self.covers(low) >= 0, other.covers(low) >= 0

    def union(self, other: _Ranges) -> _Ranges:
        return _Ranges.of(
            np.concatenate([self.starts, other.starts]), np.concatenate([self.ends, other.ends])
        )

    def minus(self, other: _Ranges) -> _Ranges:
        if self.starts.size == 0 or other.starts.size == 0:
            return self
        low, high, in_self, in_other = self._pieces(other)
        keep = in_self & ~in_other
        return _Ranges.of(low[keep], high[keep])

    def overlap_size(self, other: _Ranges) -> int:
        if self.starts.size == 0 or other.starts.size == 0:
            return 0
        low, high, in_self, in_other = self._pieces(other)
        both = in_self & in_other
        return int((high[both] - low[both]).sum())


def _accessed(target: snapshots.TargetSnapshot) -> _Ranges:
    hit = target.nr_accesses > 0
    return _Ranges.of(target.start[hit], target.end[hit])


# ---------------------------------------------------------------------------------------
# The engine's view of a recording


class ReplayOperations:
    """``ActionOperations`` over recorded memory: applies actions to a model of what they
    did (module docstring), never to real memory; it does not sample."""

    def __init__(self) -> None:
        self.paged_out: dict[int, _Ranges] = {}
        # Memory known to sit on the slow node (moved there by migrate_cold) or on the
        # fast one (by migrate_hot); where neither is known, a migration moves it all.
        self.placed: dict[str, dict[int, _Ranges]] = {kind: {} for kind in MIGRATIONS}
        # Ranges acted on during the current apply, merged in by ``commit``. Kept apart
        # because the engine walks regions in address order: an overlap with this apply's
        # earlier actions can only be at the end of the list.
        self._pending: dict[tuple[str, int], list[tuple[int, int]]] = {}

    def target_ranges(self, target_id: int) -> list[tuple[int, int]]:
        del target_id  # the what-if sets the monitor's regions from each snapshot itself
        return []

    def prepare_access_checks(self, target_id: int, addrs: Int64Array) -> None:
        raise NotImplementedError("a what-if replays recorded accesses; it does not sample")

    def check_accesses(self, target_id: int, addrs: Int64Array) -> NDArray[np.bool_]:
        raise NotImplementedError("a what-if replays recorded accesses; it does not sample")

    def apply_action(
        self, target_id: int, start: int, end: int, action: str, target_nid: int | None
    ) -> int:
        del target_nid  # placement is tracked as fast/slow only
        if action in ("pageout", "cold", "lru_deprio"):
            applied = (end - start) - self._done("pageout", self.paged_out, target_id, start, end)
            if action == "pageout":
                self._pending.setdefault(("pageout", target_id), []).append((start, end))
            return max(0, applied)
        if action in MIGRATIONS:
            moved = self._done(action, self.placed[action], target_id, start, end)
            self._pending.setdefault((action, target_id), []).append((start, end))
            return max(0, (end - start) - moved)
        return end - start

    def _done(
        self, kind: str, state: Mapping[int, _Ranges], target_id: int, start: int, end: int
    ) -> int:
        """Bytes of [start, end) an earlier action of ``kind`` already did."""
        done = state[target_id].overlap(start, end) if target_id in state else 0
        for low, high in reversed(self._pending.get((kind, target_id), [])):
            if high <= start:
                break
            done += max(0, min(high, end) - max(low, start))
        return min(done, end - start)

    def commit(self) -> None:
        """Merge the actions of the apply that just ended into the state."""
        for (kind, target_id), spans in self._pending.items():
            added = _Ranges.of(
                np.array([s for s, _ in spans], np.int64), np.array([e for _, e in spans], np.int64)
            )
            if kind == "pageout":
                self.paged_out[target_id] = self.paged_out.get(target_id, _Ranges.empty()).union(
                    added
                )
            else:
                placed = self.placed[kind]
                placed[target_id] = placed.get(target_id, _Ranges.empty()).union(added)
                opposite = self.placed[MIGRATIONS[kind]]
                if target_id in opposite:
                    opposite[target_id] = opposite[target_id].minus(added)
        self._pending.clear()

    def accessed(self, target_id: int, ranges: _Ranges) -> None:
        """Memory seen accessed is resident again (a refault brings it back)."""
        if target_id in self.paged_out:
            self.paged_out[target_id] = self.paged_out[target_id].minus(ranges)

    def resident_bytes(self, target_id: int, monitored: int) -> int:
        out = self.paged_out.get(target_id)
        return monitored - (out.size if out is not None else 0)


class RecordedMetrics:
    """``tuners.MetricSource`` from the snapshot being replayed (module docstring)."""

    def __init__(self) -> None:
        self.active_bp: int | None = None

    def read(self, metric: str, *, nid: int | None = None, path: str | None = None) -> int:
        if self.active_bp is not None and metric == "active_mem_bp":
            return self.active_bp
        if self.active_bp is not None and metric == "inactive_mem_bp":
            return 10_000 - self.active_bp
        raise scheme_errors.MetricUnavailableError(f"{metric} is not in a recording")


@dataclass
class _AgeResets:
    """When the engine last acted on each byte range of a target (``time_us``), to lower
    the recorded ages as a live run's resets would (module docstring)."""

    starts: Int64Array
    ends: Int64Array
    times_us: Int64Array

    @staticmethod
    def empty() -> _AgeResets:
        zero = np.zeros(0, np.int64)
        return _AgeResets(zero, zero.copy(), zero.copy())

    def mark(self, acted: _Ranges, time_us: int) -> None:
        if acted.starts.size == 0:
            return
        bounds = np.unique(np.concatenate([self.starts, self.ends, acted.starts, acted.ends]))
        low, high = bounds[:-1], bounds[1:]
        old = _Ranges(self.starts, self.ends).covers(low)
        new = acted.covers(low) >= 0
        earlier = np.full(low.size, -1, dtype=np.int64)
        earlier[old >= 0] = self.times_us[old[old >= 0]]
        times = np.where(new, time_us, earlier)
        keep = times >= 0
        self.starts, self.ends, self.times_us = low[keep], high[keep], times[keep]

    def forget_older_than(self, time_us: int) -> None:
        """Drop marks whose age limit no recorded age can exceed any more."""
        keep = self.times_us >= time_us
        self.starts, self.ends, self.times_us = (
            self.starts[keep],
            self.ends[keep],
            self.times_us[keep],
        )

    def regions_of(
        self, target: snapshots.TargetSnapshot, now_us: int, aggr_us: int
    ) -> regions.TargetRegions:
        """The snapshot's regions for the engine, with the ages a live run would have.

        The part of a region the engine acted on is aged from that moment; the monitor
        then merges it back with the rest of the region (same access count), and a merge
        keeps the size-weighted average of the ages, as the kernel's ``damon_merge_two_
        regions`` does: so each region takes the weighted average of its parts' ages.
        """
        start, end, nr, age = target.start, target.end, target.nr_accesses, target.age
        if self.starts.size and start.size:
            bounds = np.unique(np.concatenate([start, end, self.starts, self.ends]))
            low, high = bounds[:-1], bounds[1:]
            parent = _Ranges(start, end).covers(low)
            monitored = parent >= 0
            low, high, parent = low[monitored], high[monitored], parent[monitored]
            piece_age = age[parent].copy()
            mark = _Ranges(self.starts, self.ends).covers(low)
            marked = mark >= 0
            since = (now_us - self.times_us[mark[marked]]) // max(1, aggr_us)
            piece_age[marked] = np.minimum(piece_age[marked], since)
            weighted = np.bincount(parent, weights=piece_age * (high - low), minlength=start.size)
            age = (weighted // np.maximum(1, end - start)).astype(np.int64)
        return regions.TargetRegions(
            target.target_id,
            start=start.copy(),
            end=end.copy(),
            nr_accesses=nr.copy(),
            age=age.copy(),
            last_nr_accesses=nr.copy(),
            nr_accesses_bp=nr * 10_000,
        )


# ---------------------------------------------------------------------------------------
# The replay


@dataclass
class _Tally:
    """One scheme's running state across snapshots."""

    touched: dict[int, _Ranges] = dataclasses.field(default_factory=dict)
    not_reaccessed: dict[int, _Ranges] = dataclasses.field(default_factory=dict)
    intervals: list[IntervalOutcome] = dataclasses.field(default_factory=list)


def _attrs_of(snap: snapshots.Snapshot) -> core_attrs.MonitoringAttrs:
    return core_attrs.MonitoringAttrs(sample_us=snap.sample_us, aggr_us=snap.aggr_us)


def simulate(
    snaps: Sequence[snapshots.Snapshot],
    schemes: Sequence[model.Scheme],
    *,
    start_us: int,
    notes: Sequence[str] = (),
    action_cost_ns: int = ACTION_COST_NS,
) -> WhatIfResult:
    """Replay ``snaps`` (in time order) through a DAMOS engine running ``schemes``.

    ``schemes`` should come from ``prepare_schemes`` (page-level filters left out);
    ``SchemeInputError`` for a scheme the engine refuses. ``notes`` are carried into the
    result.
    """
    if not snaps:
        raise errors.SelectionError("the recording holds no snapshot: nothing to replay")
    if not schemes:
        raise SchemeInputError("the scheme file has no schemes: nothing to evaluate")
    for snap in snaps:
        try:
            core_attrs.validate_attrs(_attrs_of(snap))
        except core_errors.InvalidAttrsError as err:
            raise errors.RecordingError(
                f"snapshot at {units.format_seconds(snap.time_us - start_us)}: {err}"
            ) from None
    ops = ReplayOperations()
    metrics = RecordedMetrics()
    # The engine reads its timer right before and after each action: reads this far apart
    # make every action take ``action_cost_ns``.
    ticks = iter(range(0, 2**62, max(1, action_cost_ns)))
    try:
        damos = engine.SchemesEngine(schemes, ops, metrics, action_timer_ns=lambda: next(ticks))
    except scheme_errors.SchemesError as err:
        raise SchemeInputError(str(err)) from err
    monitor = core_monitor.Monitor(
        _attrs_of(snaps[0]),
        ops,
        [t.target_id for t in snaps[0].targets],
        clock=core_clock.SimClock(start_us),
        rng=np.random.default_rng(0),  # never drawn from: the monitor is not stepped
    )
    resets: dict[int, _AgeResets] = {}
    tallies = [_Tally() for _ in schemes]
    before = damos.stats()
    passed = 0
    for snap in snaps:
        attrs = _attrs_of(snap)
        if attrs != monitor.attrs:
            monitor.set_attrs(attrs)
        # Each snapshot closes at least one aggregation, however late it was written.
        by_time = round((snap.time_us - start_us) / snap.sample_us)
        passed = max(passed + monitor.aggr_samples, by_time)
        monitor.passed_sample_intervals = passed

        accessed = {t.target_id: _accessed(t) for t in snap.targets}
        refaults = [0] * len(schemes)
        for k, tally in enumerate(tallies):
            for tid, hit in accessed.items():
                pending = tally.not_reaccessed.get(tid)
                if pending is not None:
                    refaults[k] += pending.overlap_size(hit)
                    tally.not_reaccessed[tid] = pending.minus(hit)
        monitored = 0
        resident = 0
        for target in snap.targets:
            ops.accessed(target.target_id, accessed[target.target_id])
            size = int(target.sizes.sum())
            monitored += size
            resident += ops.resident_bytes(target.target_id, size)
        snap_wss = wss.working_set_size(snap)
        metrics.active_bp = snap_wss * 10_000 // resident if resident > 0 else 0

        monitor.targets = [
            resets.setdefault(t.target_id, _AgeResets.empty()).regions_of(
                t, snap.time_us, snap.aggr_us
            )
            for t in snap.targets
        ]
        damos.apply(monitor, snap.time_us)
        ops.commit()
        after = damos.stats()

        acted_by_any: dict[int, list[_Ranges]] = {}
        for k, (scheme, tally, old, new) in enumerate(
            zip(schemes, tallies, before, after, strict=True)
        ):
            tried = _tried_ranges(new) if new.nr_applies > old.nr_applies else {}
            for tid, spans in tried.items():
                tally.touched[tid] = tally.touched.get(tid, _Ranges.empty()).union(spans)
                if scheme.action in REFAULT_ACTIONS:
                    pending = tally.not_reaccessed.get(tid, _Ranges.empty())
                    tally.not_reaccessed[tid] = pending.union(spans)
                if scheme.action != "stat":
                    acted_by_any.setdefault(tid, []).append(spans)
            touched = sum(
                tally.touched[tid].overlap_size(hit)
                for tid, hit in accessed.items()
                if tid in tally.touched
            )
            tally.intervals.append(
                IntervalOutcome(
                    time_us=snap.time_us,
                    tried_bytes=new.sz_tried - old.sz_tried,
                    applied_bytes=new.sz_applied - old.sz_applied,
                    wss_bytes=snap_wss,
                    touched_wss_bytes=touched,
                    refault_bytes=refaults[k],
                )
            )
        before = after
        oldest_age_us = max((int(t.age.max()) for t in snap.targets if len(t)), default=0)
        for tid, spans_list in acted_by_any.items():
            acted = spans_list[0]
            for spans in spans_list[1:]:
                acted = acted.union(spans)
            resets.setdefault(tid, _AgeResets.empty()).mark(acted, snap.time_us)
        for mark in resets.values():
            mark.forget_older_than(snap.time_us - (oldest_age_us + 1) * snap.aggr_us)

    return WhatIfResult(
        start_us=start_us,
        schemes=tuple(
            SchemeOutcome(
                name=scheme.name,
                action=scheme.action,
                intervals=tuple(tally.intervals),
                qt_exceeds=final.qt_exceeds,
                estimates_refaults=scheme.action in REFAULT_ACTIONS,
            )
            for scheme, tally, final in zip(schemes, tallies, damos.stats(), strict=True)
        ),
        notes=tuple(notes),
    )


def _tried_ranges(stats: scheme_stats.SchemeStats) -> dict[int, _Ranges]:
    """The regions a scheme tried in its last apply, per target."""
    by_target: dict[int, tuple[list[int], list[int]]] = {}
    for region in stats.tried_regions:
        starts, ends = by_target.setdefault(region.target_id, ([], []))
        starts.append(region.start)
        ends.append(region.end)
    return {
        tid: _Ranges.of(np.array(s, np.int64), np.array(e, np.int64))
        for tid, (s, e) in by_target.items()
    }


# ---------------------------------------------------------------------------------------
# Rendering

COLUMNS: Final = (
    "time",
    "tried",
    "tried total",
    "applied",
    "applied total",
    "wss",
    "wss touched",
    "refaults",
    "refaults total",
)


def _row_bounds(count: int, rows: int) -> list[tuple[int, int]]:
    """[first, last] snapshot indexes of each row: ``count`` snapshots in at most ``rows``
    rows of (nearly) equal length."""
    rows = max(1, min(rows, count))
    edges = [round(i * count / rows) for i in range(rows + 1)]
    return [(a, b - 1) for a, b in itertools.pairwise(edges) if b > a]


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.rjust(widths[c]) for c, cell in enumerate(row)) for row in rows]


def render(result: WhatIfResult, *, rows: int = DEFAULT_ROWS) -> str:
    """One table per scheme, time on rows (each row sums its snapshot intervals)."""
    if rows < 1:
        raise errors.SelectionError(f"what-if table needs at least 1 row, got {rows}")
    first = result.schemes[0].intervals
    count = len(first)
    bounds = _row_bounds(count, rows)
    per_row = count / len(bounds)
    lines = [
        f"what-if of {len(result.schemes)} scheme{'' if len(result.schemes) == 1 else 's'} "
        f"over {count} snapshot{'' if count == 1 else 's'} "
        f"({units.format_seconds(first[0].time_us - result.start_us)}"
        f" .. {units.format_seconds(first[-1].time_us - result.start_us)})",
        "tried/applied/refaults: per row, summed over its snapshot intervals"
        + (f" (about {per_row:.3g} per row)" if per_row > 1 else "")
        + "; wss and wss touched: at the row's last snapshot",
    ]
    for note in result.notes:
        lines.append(f"note: {note}")
    for scheme in result.schemes:
        refaults = scheme.estimates_refaults
        lines.append("")
        lines.append(
            f"scheme {scheme.name} ({scheme.action}): tried "
            f"{api_units.format_bytes(scheme.total_tried)}, applied "
            f"{api_units.format_bytes(scheme.total_applied)}, refaults "
            + (api_units.format_bytes(scheme.total_refaults) if refaults else "- (not cold-like)")
            + f", quota exceeded {scheme.qt_exceeds} time{'' if scheme.qt_exceeds == 1 else 's'}"
        )
        tried_total = scheme.cumulative("tried_bytes")
        applied_total = scheme.cumulative("applied_bytes")
        refault_total = scheme.cumulative("refault_bytes")
        table: list[tuple[str, ...]] = [COLUMNS]
        for low, high in bounds:
            part = scheme.intervals[low : high + 1]
            last = part[-1]
            share = last.touched_wss_bytes / last.wss_bytes if last.wss_bytes else 0.0
            table.append(
                (
                    units.format_seconds(last.time_us - result.start_us),
                    api_units.format_bytes(sum(i.tried_bytes for i in part)),
                    api_units.format_bytes(int(tried_total[high])),
                    api_units.format_bytes(sum(i.applied_bytes for i in part)),
                    api_units.format_bytes(int(applied_total[high])),
                    api_units.format_bytes(last.wss_bytes),
                    units.format_percent(share),
                    api_units.format_bytes(sum(i.refault_bytes for i in part)) if refaults else "-",
                    api_units.format_bytes(int(refault_total[high])) if refaults else "-",
                )
            )
        lines.extend(_table(table))
    return "\n".join(lines)


def write_png(
    result: WhatIfResult,
    snaps: Sequence[snapshots.Snapshot],
    path: pathlib.Path,
    *,
    title: str = "what-if",
) -> None:
    """The recording's access heatmap, with under it, on the same time axis, each scheme's
    cumulative applied bytes and refaults, and the share of the working set it touched."""
    # Imported here, as in ``heatmap``: matplotlib is slow to import and only this needs it.
    from matplotlib import colormaps, figure  # noqa: PLC0415
    from matplotlib.backends import backend_agg  # noqa: PLC0415

    fig = figure.Figure(figsize=(11, 9), dpi=100, layout="constrained")
    backend_agg.FigureCanvasAgg(fig)
    access_ax, bytes_ax, share_ax = fig.subplots(3, 1, sharex=True, height_ratios=(3, 2, 1.2))
    rates = heatmap.build(
        snaps, rows=heatmap.PNG_ROWS, columns=heatmap.PNG_COLUMNS, start_us=result.start_us
    )
    times_s = rates.row_times_us / 1e6
    spacing = (
        float(times_s[-1] - times_s[0]) / (times_s.size - 1)
        if times_s.size > 1
        else snaps[-1].aggr_us / 1e6
    )
    image = access_ax.imshow(
        np.ma.masked_invalid(rates.rates.T * 100),
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap=colormaps["inferno"].with_extremes(bad="#d0d0d0"),
        vmin=0,
        vmax=100,
        extent=(
            float(times_s[0]) - spacing / 2,
            float(times_s[-1]) + spacing / 2,
            0.0,
            rates.total_bytes / 2**20,
        ),
    )
    fig.colorbar(image, ax=access_ax).set_label("access rate (% of samples)")
    access_ax.set_ylabel("monitored MiB\n(gaps left out)")
    access_ax.set_title(title)

    for scheme in result.schemes:
        seconds = np.array([i.time_us - result.start_us for i in scheme.intervals]) / 1e6
        (line,) = bytes_ax.plot(
            seconds, scheme.cumulative("applied_bytes") / 2**20, label=f"{scheme.name} applied"
        )
        if scheme.estimates_refaults:
            bytes_ax.plot(
                seconds,
                scheme.cumulative("refault_bytes") / 2**20,
                linestyle="--",
                color=line.get_color(),
                label=f"{scheme.name} refaults",
            )
        touched = np.array([i.touched_wss_bytes for i in scheme.intervals], dtype=np.float64)
        wss_bytes = np.array([i.wss_bytes for i in scheme.intervals], dtype=np.float64)
        share = np.divide(touched, wss_bytes, out=np.zeros_like(touched), where=wss_bytes > 0)
        share_ax.plot(seconds, share * 100, color=line.get_color(), label=scheme.name)
    bytes_ax.set_ylabel("cumulative MiB")
    bytes_ax.legend(loc="upper left", fontsize="small")
    share_ax.set_ylabel("wss touched (%)")
    share_ax.set_ylim(0, 105)
    share_ax.set_xlabel("time (s)")
    # The heatmap's colorbar narrows its axes; keep the curves' axes as wide.
    for ax in (bytes_ax, share_ax):
        fig.colorbar(image, ax=ax).remove()
    try:
        fig.savefig(path, format="png")
    except OSError as err:
        raise errors.OutputError(f"cannot write {path}: {err.strerror or err}") from err
