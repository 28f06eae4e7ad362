"""The ``sim`` operations: simulated address spaces with known ground truth.

A workload file (``workloads``) describes targets made of named ranges and phases in
which every range has an access pattern. ``SimOperations`` answers the monitor's access
checks from those patterns, applies DAMOS actions, and exposes the ground truth the
benchmarks score against. It shares the monitor's ``Clock``: simulated time is the
clock's time, counted from when the operations were built.

Nothing here is per page, so a 1 TiB target costs what a 1 GiB one does:

- Access checks are answered per sampled address from the pattern of the range holding
  it over the window since it was prepared: ``random`` pages are touched independently
  with the range's probability per reference interval (``1 - (1-p)^(dt/interval)``);
  ``sequential`` pages are touched when a cursor sweeping the range (one sweep per
  ``interval / p``) passes the page's first byte. A check says whether the page was
  touched since ``prepare_access_checks``.
- Residency after ``pageout`` is a sorted list of pieces (start, end, non-resident page
  count) inside one range, the non-resident pages spread uniformly over the piece. As
  time passes, the non-resident pages of a random range survive with probability
  ``(1-p)^(dt/interval)`` (a binomial draw: the rest are refaults, counted with their
  cost); a sequential sweep refaults every non-resident page it passes (a hypergeometric
  draw splits a piece's count where the sweep cuts it). This bookkeeping runs lazily, when
  an action or a counter needs it.
- Tiers: node 0 is fast, node 1 slow; which bytes sit on node 1 is an interval set.
  Accesses cost ``fast_access_ns`` or ``slow_access_ns`` per page (in expectation, from
  each range's access rate and its share on each node), refaults ``refault_ns``.

Ground truth, for tests and benchmarks: ``hot_ranges`` (bytes touched with a positive
chance in a time window), ``cold_ranges``, ``working_set_bytes`` (expected bytes touched
in a window), ``last_access_us`` per address, ``phase_at`` / ``phase_changes``, and
``score_snapshot`` (a snapshot's hot-set precision/recall/F1 and working-set error).
``counters`` reports what actions did and what accesses cost: refaults and their cost,
resident bytes, bytes per tier in all and of the truly hot, cold bytes paged out.

Actions (``apply_action``): ``pageout`` (pages become non-resident; returns the bytes
that were resident), ``cold`` (deprioritised; counted; returns resident bytes),
``migrate_hot`` / ``migrate_cold`` (move the bytes to ``target_nid``; returns the bytes
that moved), ``stat`` (nothing; returns 0). Other DAMOS actions raise ``ActionError``.

Errors::

    Exception
     └── SimError                       (damon_agent.ops.workloads)
          ├── WorkloadError (ValueError) bad workload file or field
          ├── ActionError   (ValueError) unsupported action, or a migration without a node
          └── UnknownTargetError (LookupError) a target id the workload does not have
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from damon_agent.core import fieldwise, interfaces, snapshots
from damon_agent.core.regions import Int64Array
from damon_agent.ops import workloads

PAGE_SIZE = workloads.PAGE_SIZE
SUPPORTED_ACTIONS = ("pageout", "cold", "migrate_hot", "migrate_cold", "stat")
_FOREVER = 2**62
# Beyond this many pages numpy's hypergeometric draw is not defined: split counts
# proportionally instead (the error is below one page in a billion).
_HYPERGEOMETRIC_LIMIT = 10**9 - 1

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


class ActionError(workloads.SimError, ValueError):
    """A DAMOS action the sim cannot apply, or bad arguments for it."""


class UnknownTargetError(workloads.SimError, LookupError):
    """A target id that is not one of the workload's targets."""


@dataclass(frozen=True)
class SimRange:
    """One named range of a target, where it is mapped."""

    name: str
    group: str
    start: int
    end: int
    node: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SimCounters:
    """What the actions did and what accesses cost, for one target or all of them."""

    access_checks: int
    page_accesses: float
    access_cost_ns: float
    refaults: int
    refault_cost_ns: float
    pageout_bytes: int
    cold_bytes: int
    migrated_bytes: int
    mapped_bytes: int
    resident_bytes: int
    node_bytes: tuple[int, int]
    hot_node_bytes: tuple[int, int]
    cold_total_bytes: int
    cold_nonresident_bytes: int

    @property
    def nonresident_bytes(self) -> int:
        return self.mapped_bytes - self.resident_bytes

    @property
    def average_access_cost_ns(self) -> float:
        """Cost per page access, refaults included."""
        if self.page_accesses <= 0:
            return 0.0
        return (self.access_cost_ns + self.refault_cost_ns) / self.page_accesses

    @property
    def hot_bytes(self) -> int:
        return sum(self.hot_node_bytes)

    @property
    def hot_fast_share(self) -> float:
        """Share of the truly hot bytes that sit on the fast tier (node 0)."""
        return self.hot_node_bytes[0] / self.hot_bytes if self.hot_bytes else 1.0

    def __add__(self, other: SimCounters) -> SimCounters:
        return fieldwise.add(self, other)


class _IntervalSet:
    """Disjoint, sorted [start, end) byte intervals, touching ones joined.

    Updates find the affected intervals by bisection and replace that slice only.
    """

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def measure(self, start: int, end: int) -> int:
        total = 0
        i = bisect.bisect_right(self.ends, start)
        while i < len(self.starts) and self.starts[i] < end:
            total += min(end, self.ends[i]) - max(start, self.starts[i])
            i += 1
        return total

    def _affected(self, start: int, end: int) -> tuple[int, int]:
        """Slice of the intervals that overlap or touch [start, end)."""
        return bisect.bisect_left(self.ends, start), bisect.bisect_right(self.starts, end)

    def remove(self, start: int, end: int) -> None:
        first, last = self._affected(start, end)
        starts: list[int] = []
        ends: list[int] = []
        for s, e in zip(self.starts[first:last], self.ends[first:last], strict=True):
            if s < start:
                starts.append(s)
                ends.append(min(e, start))
            if e > end:
                starts.append(max(s, end))
                ends.append(e)
        self.starts[first:last] = starts
        self.ends[first:last] = ends

    def add(self, start: int, end: int) -> None:
        first, last = self._affected(start, end)
        if first < last:
            start = min(start, self.starts[first])
            end = max(end, self.ends[last - 1])
        self.starts[first:last] = [start]
        self.ends[first:last] = [end]


@dataclass
class _Piece:
    """Part of one range holding ``nonresident`` paged-out pages, spread uniformly."""

    start: int
    end: int
    nonresident: int
    range_index: int

    @property
    def pages(self) -> int:
        return (self.end - self.start) // PAGE_SIZE


@dataclass
class _TargetState:
    spec: workloads.TargetSpec
    ranges: list[SimRange]
    range_start: Int64Array
    range_end: Int64Array
    probability: list[FloatArray]  # per phase, per range
    sequential: list[BoolArray]  # per phase, per range
    phase_offsets: list[int]
    slow: _IntervalSet
    slow_bytes: Int64Array  # per range
    prepared_at: int | None = None
    advanced_to: int = 0
    pieces: list[_Piece] = field(default_factory=list)
    access_checks: int = 0
    page_accesses: float = 0.0
    access_cost_ns: float = 0.0
    refaults: int = 0
    pageout_bytes: int = 0
    cold_bytes: int = 0
    migrated_bytes: int = 0

    @property
    def sizes(self) -> Int64Array:
        return self.range_end - self.range_start


class SimOperations:
    """Operations set over simulated targets (ids 0..n-1, in workload order)."""

    def __init__(
        self,
        workload: workloads.Workload,
        *,
        clock: interfaces.Clock,
        rng: np.random.Generator,
    ) -> None:
        self.workload = workload
        self.clock = clock
        self._rng = rng
        self._origin_us = clock.now_us()
        self._interval_us = float(workload.interval_us)
        self._targets = [self._build(spec) for spec in workload.targets]

    @classmethod
    def from_file(
        cls, path: str | Path, *, clock: interfaces.Clock, rng: np.random.Generator
    ) -> SimOperations:
        return cls(workloads.load_workload(path), clock=clock, rng=rng)

    @staticmethod
    def _build(spec: workloads.TargetSpec) -> _TargetState:
        ranges: list[SimRange] = []
        address = spec.start
        slow = _IntervalSet()
        for r in spec.ranges:
            address += r.gap
            ranges.append(SimRange(r.name, r.group, address, address + r.size, r.node))
            if r.node == 1:
                slow.add(address, address + r.size)
            address += r.size
        starts = np.array([r.start for r in ranges], dtype=np.int64)
        ends = np.array([r.end for r in ranges], dtype=np.int64)
        probability = [
            np.array([phase.pattern_of(r.group).probability for r in ranges], dtype=np.float64)
            for phase in spec.phases
        ]
        sequential = [
            np.array([phase.pattern_of(r.group).sequential for r in ranges], dtype=bool)
            for phase in spec.phases
        ]
        offsets = [0]
        for phase in spec.phases:
            offsets.append(offsets[-1] + phase.duration_us)
        slow_bytes = np.array([r.size if r.node == 1 else 0 for r in ranges], dtype=np.int64)
        return _TargetState(
            spec, ranges, starts, ends, probability, sequential, offsets, slow, slow_bytes
        )

    # -- targets and time ---------------------------------------------------------------

    @property
    def target_ids(self) -> list[int]:
        return list(range(len(self._targets)))

    def target_name(self, target_id: int) -> str:
        return self._target(target_id).spec.name

    def ranges(self, target_id: int) -> list[SimRange]:
        return list(self._target(target_id).ranges)

    def _target(self, target_id: int) -> _TargetState:
        if not 0 <= target_id < len(self._targets):
            raise UnknownTargetError(
                f"target id {target_id} is not in the workload (ids 0..{len(self._targets) - 1})"
            )
        return self._targets[target_id]

    def _now(self) -> int:
        return max(0, self.clock.now_us() - self._origin_us)

    def _relative(self, time_us: int) -> int:
        return max(0, time_us - self._origin_us)

    def _phase_at(self, state: _TargetState, t: int) -> tuple[int, int, int]:
        """(phase index, start, end) of the phase holding relative time ``t``."""
        cycle = state.phase_offsets[-1]
        last = len(state.spec.phases) - 1
        if not state.spec.repeat_phases and t >= cycle - state.spec.phases[-1].duration_us:
            return last, cycle - state.spec.phases[-1].duration_us, _FOREVER
        base = (t // cycle) * cycle
        index = bisect.bisect_right(state.phase_offsets, t - base) - 1
        start = base + state.phase_offsets[index]
        return index, start, start + state.spec.phases[index].duration_us

    def _pieces(self, state: _TargetState, a: int, b: int) -> Iterator[tuple[int, int, int, int]]:
        """(phase index, phase start, piece start, piece end) covering [a, b)."""
        t = a
        while t < b:
            index, start, end = self._phase_at(state, t)
            piece_end = min(b, end)
            yield index, start, t, piece_end
            t = piece_end

    def phase_at(self, target_id: int, time_us: int) -> workloads.Phase:
        """The phase a target is in at (clock) time ``time_us``."""
        state = self._target(target_id)
        return state.spec.phases[self._phase_at(state, self._relative(time_us))[0]]

    def phase_changes(self, target_id: int, until_us: int) -> list[int]:
        """Clock times at which a target enters a new phase, up to ``until_us``."""
        state = self._target(target_id)
        changes: list[int] = []
        t = 0
        end = self._relative(until_us)
        while True:
            _, _, phase_end = self._phase_at(state, t)
            if phase_end >= end or phase_end >= _FOREVER:
                return changes
            changes.append(phase_end + self._origin_us)
            t = phase_end

    # -- the Operations protocol ----------------------------------------------------------

    def target_ranges(self, target_id: int) -> list[tuple[int, int]]:
        state = self._target(target_id)
        return [(r.start, r.end) for r in state.ranges]

    def prepare_access_checks(self, target_id: int, addrs: Int64Array) -> None:
        self._target(target_id).prepared_at = self._now()

    def check_accesses(self, target_id: int, addrs: Int64Array) -> NDArray[np.bool_]:
        state = self._target(target_id)
        now = self._now()
        since = now if state.prepared_at is None else state.prepared_at
        addrs = np.asarray(addrs, dtype=np.int64)
        state.access_checks += int(addrs.size)
        index, inside = self._locate(state, addrs)
        untouched = np.ones(addrs.size, dtype=np.float64)
        swept = np.zeros(addrs.size, dtype=bool)
        for phase, phase_start, a, b in self._pieces(state, since, now):
            probability = state.probability[phase][index]
            sequential = state.sequential[phase][index]
            randomly = ~sequential & (probability > 0)
            untouched[randomly] *= (1.0 - probability[randomly]) ** ((b - a) / self._interval_us)
            swept_now = sequential & (probability > 0)
            if swept_now.any():
                swept[swept_now] |= self._swept_pages(
                    state,
                    index[swept_now],
                    addrs[swept_now],
                    probability[swept_now],
                    phase_start=phase_start,
                    a=a,
                    b=b,
                )
        draws = self._rng.random(addrs.size)
        accessed: NDArray[np.bool_] = inside & ((draws >= untouched) | swept)
        return accessed

    @staticmethod
    def _locate(state: _TargetState, addrs: Int64Array) -> tuple[Int64Array, BoolArray]:
        raw = np.searchsorted(state.range_start, addrs, side="right") - 1
        index = np.clip(raw, 0, len(state.ranges) - 1).astype(np.int64)
        inside = (raw >= 0) & (addrs < state.range_end[index])
        return index, inside

    def _sweep(
        self, probability: FloatArray | float, phase_start: int, a: int, b: int
    ) -> tuple[FloatArray, FloatArray]:
        """Cursor position at ``a`` (share of the range) and distance swept until ``b``."""
        period = self._interval_us / np.asarray(probability, dtype=np.float64)
        position = np.fmod(float(a - phase_start), period) / period
        distance = (b - a) / period
        return position, distance

    def _swept_pages(
        self,
        state: _TargetState,
        index: Int64Array,
        addrs: Int64Array,
        probability: FloatArray,
        *,
        phase_start: int,
        a: int,
        b: int,
    ) -> BoolArray:
        position, distance = self._sweep(probability, phase_start, a, b)
        offset = (addrs - state.range_start[index]) // PAGE_SIZE * PAGE_SIZE
        share = offset / state.sizes[index]
        swept: BoolArray = (distance >= 1.0) | (np.mod(share - position, 1.0) < distance)
        return swept

    def _swept_intervals(
        self, state: _TargetState, r: int, probability: float, *, phase_start: int, a: int, b: int
    ) -> list[tuple[int, int]]:
        """Byte intervals of range ``r`` whose pages the cursor passes in [a, b)."""
        start, size = int(state.range_start[r]), int(state.sizes[r])
        if b <= a:
            return []
        position, distance = self._sweep(probability, phase_start, a, b)
        if float(distance) >= 1.0:
            return [(start, start + size)]

        def page_up(x: float) -> int:
            return min(size, math.ceil(x / PAGE_SIZE) * PAGE_SIZE)

        low = float(position) * size
        high = low + float(distance) * size
        spans = [(page_up(low), page_up(min(high, size)))]
        if high > size:
            spans.append((0, page_up(high - size)))
        return [(start + s, start + e) for s, e in spans if e > s]

    # -- ground truth ---------------------------------------------------------------------

    def patterns_at(
        self, target_id: int, time_us: int
    ) -> list[tuple[SimRange, workloads.AccessPattern]]:
        state = self._target(target_id)
        phase = state.spec.phases[self._phase_at(state, self._relative(time_us))[0]]
        return [(r, phase.pattern_of(r.group)) for r in state.ranges]

    def hot_ranges(self, target_id: int, start_us: int, end_us: int) -> list[tuple[int, int]]:
        """Byte ranges whose pages are touched with a positive chance in [start, end).

        Random ranges count whole; of a sequential range, the part the cursor passes.
        """
        state = self._target(target_id)
        spans: list[tuple[int, int]] = []
        a, b = self._relative(start_us), self._relative(end_us)
        for phase, phase_start, pa, pb in self._pieces(state, a, b):
            for r, sim_range in enumerate(state.ranges):
                probability = float(state.probability[phase][r])
                if probability <= 0:
                    continue
                if state.sequential[phase][r]:
                    spans.extend(
                        self._swept_intervals(
                            state, r, probability, phase_start=phase_start, a=pa, b=pb
                        )
                    )
                else:
                    spans.append((sim_range.start, sim_range.end))
        return _union(spans)

    def cold_ranges(self, target_id: int, time_us: int) -> list[tuple[int, int]]:
        """Byte ranges not accessed at all in the phase holding ``time_us``."""
        return _union(
            [(r.start, r.end) for r, p in self.patterns_at(target_id, time_us) if not p.accessed]
        )

    def working_set_bytes(self, target_id: int, start_us: int, end_us: int) -> float:
        """Expected bytes touched in [start, end): each range's size times the chance
        that one of its pages is touched in the window."""
        state = self._target(target_id)
        untouched = np.ones(len(state.ranges), dtype=np.float64)
        a, b = self._relative(start_us), self._relative(end_us)
        for phase, _, pa, pb in self._pieces(state, a, b):
            probability = state.probability[phase]
            sequential = state.sequential[phase]
            random_part = (1.0 - probability) ** ((pb - pa) / self._interval_us)
            with np.errstate(divide="ignore"):
                swept = np.where(probability > 0, (pb - pa) * probability / self._interval_us, 0.0)
            sequential_part = 1.0 - np.minimum(1.0, swept)
            untouched *= np.where(sequential, sequential_part, random_part)
        return float((state.sizes * (1.0 - untouched)).sum())

    def last_access_us(self, target_id: int, addrs: Int64Array) -> Int64Array:
        """Clock time of the last access to each page before now; -1 if never touched.

        Exact for sequential ranges; for random ones, the time the range was last in an
        accessing phase (now, if it is in one): a page is touched every 1/p intervals.
        """
        state = self._target(target_id)
        addrs = np.asarray(addrs, dtype=np.int64)
        index, inside = self._locate(state, addrs)
        result = np.full(addrs.size, -1, dtype=np.int64)
        unresolved = inside.copy()
        now = self._now()
        t = now
        for _ in range(len(state.spec.phases) + 1):
            if not unresolved.any() or t <= 0:
                break
            phase, phase_start, phase_end = self._phase_at(state, t - 1)
            a, b = max(phase_start, 0), min(phase_end, t)
            probability = state.probability[phase][index]
            sequential = state.sequential[phase][index]
            random_hit = unresolved & ~sequential & (probability > 0)
            result[random_hit] = b
            unresolved &= ~random_hit
            swept = unresolved & sequential & (probability > 0)
            if swept.any():
                period = self._interval_us / probability[swept]
                offset = (addrs[swept] - state.range_start[index[swept]]) // PAGE_SIZE * PAGE_SIZE
                share = offset / state.sizes[index[swept]]
                laps = np.floor((b - phase_start) / period - share)
                when = phase_start + (share + laps) * period
                hit = when >= a
                chosen = np.flatnonzero(swept)[hit]
                result[chosen] = np.floor(when[hit]).astype(np.int64)
                unresolved[chosen] = False
            t = a
        resolved = result >= 0
        result[resolved] += self._origin_us
        return result

    # -- actions --------------------------------------------------------------------------

    def apply_action(
        self, target_id: int, start: int, end: int, action: str, target_nid: int | None
    ) -> int:
        state = self._target(target_id)
        if action not in SUPPORTED_ACTIONS:
            raise ActionError(
                f"action {action!r} is not supported by the sim operations "
                f"(supported: {', '.join(SUPPORTED_ACTIONS)})"
            )
        if action == "stat":
            return 0
        if action in ("migrate_hot", "migrate_cold") and target_nid not in range(
            workloads.NR_NODES
        ):
            raise ActionError(
                f"{action} needs target_nid 0 (fast tier) or 1 (slow tier), got {target_nid!r}"
            )
        if end <= start:
            return 0
        self._advance(state)
        start = start // PAGE_SIZE * PAGE_SIZE
        end = -(-end // PAGE_SIZE) * PAGE_SIZE
        applied = 0
        for r, s, e in self._clip(state, start, end):
            if action == "pageout":
                applied += self._pageout(state, r, s, e)
            elif action == "cold":
                applied += (e - s) - self._nonresident_in(state, s, e)
            else:
                assert target_nid is not None
                applied += self._migrate(state, r, s, e, target_nid)
        if action == "pageout":
            state.pageout_bytes += applied
        elif action == "cold":
            state.cold_bytes += applied
        else:
            state.migrated_bytes += applied
        return applied

    @staticmethod
    def _clip(state: _TargetState, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        first = max(0, int(np.searchsorted(state.range_end, start, side="right")))
        for r in range(first, len(state.ranges)):
            s = max(start, int(state.range_start[r]))
            e = min(end, int(state.range_end[r]))
            if int(state.range_start[r]) >= end:
                return
            if e > s:
                yield r, s, e

    def _migrate(self, state: _TargetState, r: int, s: int, e: int, nid: int) -> int:
        on_slow = state.slow.measure(s, e)
        if nid == 1:
            moved = (e - s) - on_slow
            state.slow.add(s, e)
        else:
            moved = on_slow
            state.slow.remove(s, e)
        state.slow_bytes[r] = state.slow.measure(int(state.range_start[r]), int(state.range_end[r]))
        return moved

    @staticmethod
    def _overlapping(state: _TargetState, s: int, e: int) -> tuple[int, int]:
        """Slice of the (sorted, disjoint) pieces that overlap [s, e)."""
        first = bisect.bisect_right(state.pieces, s, key=lambda piece: piece.end)
        last = bisect.bisect_left(state.pieces, e, key=lambda piece: piece.start)
        return first, max(first, last)

    def _nonresident_in(self, state: _TargetState, s: int, e: int) -> int:
        total = 0.0
        first, last = self._overlapping(state, s, e)
        for piece in state.pieces[first:last]:
            overlap = min(e, piece.end) - max(s, piece.start)
            total += piece.nonresident * PAGE_SIZE * overlap / (piece.end - piece.start)
        return round(total)

    def _split_count(self, nonresident: int, pages: int, part_pages: int) -> int:
        """Non-resident pages falling in a part of ``part_pages`` of a piece of ``pages``."""
        if nonresident == 0 or part_pages == 0:
            return 0
        if part_pages >= pages or nonresident == pages:
            return min(nonresident, part_pages)
        if pages > _HYPERGEOMETRIC_LIMIT:
            return round(nonresident * part_pages / pages)
        return int(self._rng.hypergeometric(nonresident, pages - nonresident, part_pages))

    def _cut(self, piece: _Piece, cuts: Sequence[int]) -> list[_Piece]:
        """The piece cut at the given addresses, its count shared out by random draws."""
        bounds = [piece.start, *sorted(c for c in cuts if piece.start < c < piece.end), piece.end]
        parts: list[_Piece] = []
        remaining, pages = piece.nonresident, piece.pages
        for s, e in itertools.pairwise(bounds):
            part_pages = (e - s) // PAGE_SIZE
            count = self._split_count(remaining, pages, part_pages)
            parts.append(_Piece(s, e, count, piece.range_index))
            remaining -= count
            pages -= part_pages
        return parts

    def _pageout(self, state: _TargetState, r: int, s: int, e: int) -> int:
        first, last = self._overlapping(state, s, e)
        outside: list[_Piece] = []
        already = 0
        for piece in state.pieces[first:last]:
            for part in self._cut(piece, (s, e)):
                if s <= part.start and part.end <= e:
                    already += part.nonresident
                else:
                    outside.append(part)
        pages = (e - s) // PAGE_SIZE
        replacement = sorted([*outside, _Piece(s, e, pages, r)], key=lambda piece: piece.start)
        # Neighbours may now touch the new piece: coalesce around the changed slice.
        low = max(0, first - 1)
        high = min(len(state.pieces), last + 1)
        state.pieces[low:high] = _coalesce(
            [*state.pieces[low:first], *replacement, *state.pieces[last:high]]
        )
        return (pages - already) * PAGE_SIZE

    def _advance(self, state: _TargetState) -> None:
        """Bring refaults and access costs up to now."""
        now = self._now()
        if now <= state.advanced_to:
            return
        costs = self.workload.costs
        sizes = state.sizes.astype(np.float64)
        slow_share = state.slow_bytes / sizes
        cost_per_access = (1.0 - slow_share) * costs.fast_access_ns + (
            slow_share * costs.slow_access_ns
        )
        pages = sizes / PAGE_SIZE
        for phase, phase_start, a, b in self._pieces(state, state.advanced_to, now):
            probability = state.probability[phase]
            sequential = state.sequential[phase]
            intervals = (b - a) / self._interval_us
            accesses = pages * probability * intervals
            state.page_accesses += float(accesses.sum())
            state.access_cost_ns += float((accesses * cost_per_access).sum())
            if not state.pieces:
                continue
            pieces: list[_Piece] = []
            for piece in state.pieces:
                p = float(probability[piece.range_index])
                if p <= 0 or piece.nonresident == 0:
                    pieces.append(piece)
                    continue
                if not sequential[piece.range_index]:
                    survive = float((1.0 - p) ** intervals)
                    left = int(self._rng.binomial(piece.nonresident, survive))
                    state.refaults += piece.nonresident - left
                    piece.nonresident = left
                    pieces.append(piece)
                    continue
                swept = self._swept_intervals(
                    state, piece.range_index, p, phase_start=phase_start, a=a, b=b
                )
                cuts = [x for span in swept for x in span]
                for part in self._cut(piece, cuts):
                    if any(s <= part.start and part.end <= e for s, e in swept):
                        state.refaults += part.nonresident
                        part.nonresident = 0
                    pieces.append(part)
            state.pieces = _coalesce([piece for piece in pieces if piece.nonresident > 0])
        state.advanced_to = now

    # -- counters -------------------------------------------------------------------------

    def counters(self, target_id: int | None = None) -> SimCounters:
        """Counters of one target, or summed over all targets (``None``)."""
        if target_id is None:
            ids = self.target_ids
            total = self._counters_of(self._targets[ids[0]])
            for other in ids[1:]:
                total = total + self._counters_of(self._targets[other])
            return total
        return self._counters_of(self._target(target_id))

    def _counters_of(self, state: _TargetState) -> SimCounters:
        self._advance(state)
        mapped = int(state.sizes.sum())
        nonresident_by_range = np.zeros(len(state.ranges), dtype=np.int64)
        for piece in state.pieces:
            nonresident_by_range[piece.range_index] += piece.nonresident * PAGE_SIZE
        phase = self._phase_at(state, self._now())[0]
        hot = state.probability[phase] > 0
        slow_total = int(state.slow_bytes.sum())
        slow_hot = int(state.slow_bytes[hot].sum())
        hot_total = int(state.sizes[hot].sum())
        return SimCounters(
            access_checks=state.access_checks,
            page_accesses=state.page_accesses,
            access_cost_ns=state.access_cost_ns,
            refaults=state.refaults,
            refault_cost_ns=state.refaults * self.workload.costs.refault_ns,
            pageout_bytes=state.pageout_bytes,
            cold_bytes=state.cold_bytes,
            migrated_bytes=state.migrated_bytes,
            mapped_bytes=mapped,
            resident_bytes=mapped - int(nonresident_by_range.sum()),
            node_bytes=(mapped - slow_total, slow_total),
            hot_node_bytes=(hot_total - slow_hot, slow_hot),
            cold_total_bytes=int(state.sizes[~hot].sum()),
            cold_nonresident_bytes=int(nonresident_by_range[~hot].sum()),
        )


def _coalesce(pieces: list[_Piece]) -> list[_Piece]:
    """Join touching, fully paged-out pieces of the same range (sorted input)."""
    out: list[_Piece] = []
    for piece in pieces:
        last = out[-1] if out else None
        if (
            last is not None
            and last.end == piece.start
            and last.range_index == piece.range_index
            and last.nonresident == last.pages
            and piece.nonresident == piece.pages
        ):
            last.end = piece.end
            last.nonresident += piece.nonresident
        else:
            out.append(piece)
    return out


def _union(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def overlap_bytes(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> int:
    """Bytes in both of two sorted, disjoint interval lists."""
    total = 0
    i = j = 0
    while i < len(a) and j < len(b):
        low = max(a[i][0], b[j][0])
        high = min(a[i][1], b[j][1])
        if high > low:
            total += high - low
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def total_bytes(spans: Sequence[tuple[int, int]]) -> int:
    return sum(e - s for s, e in spans)


@dataclass(frozen=True)
class HotSetScore:
    """A snapshot's hot set and working set against the ground truth, in bytes.

    Predicted hot: regions with at least ``min_nr_accesses`` accesses in the aggregation
    interval; truly hot: pages touched with a positive chance in that interval. Byte
    counts are page-level (every range and region is page-aligned). Scores add up, so a
    run's pooled precision and recall come from the sum over its snapshots.
    """

    true_positive_bytes: int = 0
    false_positive_bytes: int = 0
    false_negative_bytes: int = 0
    estimated_wss_bytes: int = 0
    true_wss_bytes: float = 0.0
    snapshots: int = 0
    wss_relative_error_sum: float = 0.0

    @property
    def precision(self) -> float:
        predicted = self.true_positive_bytes + self.false_positive_bytes
        return self.true_positive_bytes / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positive_bytes + self.false_negative_bytes
        return self.true_positive_bytes / actual if actual else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def wss_error(self) -> float:
        """Mean over snapshots of |estimated - true| / true working set size."""
        return self.wss_relative_error_sum / self.snapshots if self.snapshots else 0.0

    def __add__(self, other: HotSetScore) -> HotSetScore:
        return fieldwise.add(self, other)


def score_snapshot(
    ops: SimOperations, snapshot: snapshots.Snapshot, min_nr_accesses: int = 1
) -> HotSetScore:
    """Score one snapshot (all its targets together) against the sim's ground truth."""
    start_us = snapshot.time_us - snapshot.aggr_us
    tp = fp = fn = estimated = 0
    true_wss = 0.0
    for target in snapshot.targets:
        hot = target.nr_accesses >= min_nr_accesses
        predicted = _union(
            list(zip(target.start[hot].tolist(), target.end[hot].tolist(), strict=True))
        )
        truth = ops.hot_ranges(target.target_id, start_us, snapshot.time_us)
        both = overlap_bytes(predicted, truth)
        tp += both
        fp += total_bytes(predicted) - both
        fn += total_bytes(truth) - both
        estimated += int(target.sizes[target.nr_accesses > 0].sum())
        true_wss += ops.working_set_bytes(target.target_id, start_us, snapshot.time_us)
    error = abs(estimated - true_wss) / true_wss if true_wss > 0 else float(estimated > 0)
    return HotSetScore(tp, fp, fn, estimated, true_wss, 1, error)
