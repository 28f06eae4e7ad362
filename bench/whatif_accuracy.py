"""What-if accuracy: ``damonctl whatif`` predictions against live sim runs of the same schemes.

For each workload and seed:

1. record it on the sim backend without schemes, through ``runtime.standalone.run`` on
   the backend ``backends.open_backend`` gives, as ``damon-agent run --backend sim
   --record`` does (stepped virtual time, fixed seed, one snapshot per aggregation);
2. replay that recording through the what-if (``reports.whatif``, what ``damonctl
   whatif`` runs) with each scheme file;
3. run the same scheme file live on the sim with the same seed, through the same
   ``standalone.run``, on a sim backend built as ``runtime.backends.sim.open_sim`` builds
   it but whose operations log every action the engine takes (``LoggingOps``); the
   bench checks on each workload that this backend records exactly what the stock one
   records when it runs no scheme;
4. baseline, side by side: the scheme file run live as a dry run (``dryRun: true``, the
   engine runs ``stat``), which is what a user learns today without the what-if: its
   ``sz_tried``, read as "this much would be tried and applied".

Compared, over the whole run: bytes tried (``sz_tried``), bytes applied (``sz_applied``)
and refaults. Refaults are measured in the live run the way the what-if estimates them:
bytes of ranges a cold-like action (pageout, migrate_cold) was given (every range the
engine hands the operations, which is what it tries) that a later snapshot of the live
run's own monitor shows accessed (``nr_accesses > 0``); a byte counts once until the
action is given it again. Computed at page granularity from the action log and the live
recording (``live_refaults``). Beside it, for pageout, the sim's page-level ground truth:
bytes of pages faulted back in during the live run.

Target: within 10% on the steady workloads (hot-cold, tiering), for the mean over the
seeds (the largest single-seed error is printed beside it). The
phase-change workload (the hot set moves every 5 s) is printed with a per-phase
breakdown and the share of memory where the live monitor saw accesses differently from
the recording: the live run's actions change what it monitors later (a pageout's age
reset, quota splits of regions, different random samples), which a recording made
without the scheme cannot show.

    .venv/bin/python bench/whatif_accuracy.py --quick   # one seed, 10 s runs (~6 s)
    .venv/bin/python bench/whatif_accuracy.py           # five seeds, full workloads (~70 s)
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import yaml
from numpy.typing import NDArray

from damon_agent.api import schemes as api_schemes
from damon_agent.core import clock as clock_mod
from damon_agent.core import snapshots
from damon_agent.core.regions import Int64Array
from damon_agent.ops import sim, workloads
from damon_agent.reports import recording, whatif
from damon_agent.runtime import backend, backends, planning, standalone
from damon_agent.runtime.backends import inprocess
from damon_agent.runtime.backends import sim as sim_backend

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT / "examples" / "workloads"
MI: Final = 1 << 20
PAGE: Final = workloads.PAGE_SIZE
TARGET: Final = 0.10
COLD_LIKE: Final = whatif.REFAULT_ACTIONS

# Pageout of idle memory: the slow and bounded one (64 MiB per second, memory idle for
# 5 s, in address order as the weights leave it), and a faster one bounded by time as
# well as size (1 ms per second is 100 actions at the sim's 10 us each), coldest first.
PAGEOUT_5S = """\
schemes:
  - name: pageout-5s
    action: pageout
    accessPattern:
      accessRate: {min: 0%, max: 0%}
      age: {min: 5s, max: max}
    quota: {size: 64Mi, resetInterval: 1s}
"""
PAGEOUT_2S = """\
schemes:
  - name: pageout-2s
    action: pageout
    accessPattern:
      accessRate: {min: 0%, max: 0%}
      age: {min: 2s, max: max}
    quota:
      size: 256Mi
      time: 1ms
      resetInterval: 1s
      weights: {accessRate: 1000, age: 1000}
"""
TIERING_FILE = ROOT / "examples" / "schemes" / "tiering.yaml"


@dataclass(frozen=True)
class Case:
    workload: str
    steady: bool
    schemes: tuple[tuple[str, api_schemes.SchemeFile], ...]
    """(label, scheme file) pairs; each file runs live on its own."""


def _text_file(text: str) -> api_schemes.SchemeFile:
    return api_schemes.parse_scheme_file(yaml.safe_load(text))


def cases() -> list[Case]:
    pageouts = (("pageout-5s", _text_file(PAGEOUT_5S)), ("pageout-2s", _text_file(PAGEOUT_2S)))
    tiering = api_schemes.load_scheme_file(TIERING_FILE)
    return [
        Case("hot-cold", True, pageouts),
        Case("tiering", True, (("tiering.yaml", tiering),)),
        Case("phase-change", False, pageouts),
    ]


# ---------------------------------------------------------------------------------------
# Progress


class Progress:
    def __init__(self) -> None:
        self.began = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f} s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# The sim, with its actions logged


@dataclass(frozen=True)
class Action:
    time_us: int
    target: int
    """Index of the target in the context, as snapshots number them."""
    start: int
    end: int
    action: str
    applied: int


class LoggingOps:
    """The sim operations, logging every ``apply_action``: the engine calls it once per
    region it tries (all actions but ``stat``), and it returns the bytes applied."""

    def __init__(self, ops: sim.SimOperations, sim_clock: clock_mod.SimClock) -> None:
        self.ops = ops
        self.clock = sim_clock
        self.actions: list[Action] = []
        self._index = {tid: i for i, tid in enumerate(ops.target_ids)}

    def target_ranges(self, target_id: int) -> list[tuple[int, int]]:
        return self.ops.target_ranges(target_id)

    def prepare_access_checks(self, target_id: int, addrs: Int64Array) -> None:
        self.ops.prepare_access_checks(target_id, addrs)

    def check_accesses(self, target_id: int, addrs: Int64Array) -> NDArray[np.bool_]:
        return self.ops.check_accesses(target_id, addrs)

    def apply_action(
        self, target_id: int, start: int, end: int, action: str, target_nid: int | None
    ) -> int:
        applied = self.ops.apply_action(target_id, start, end, action, target_nid)
        self.actions.append(
            Action(self.clock.now_us(), self._index[target_id], start, end, action, applied)
        )
        return applied


def logging_sim(
    workload_path: Path, seed: int
) -> tuple[inprocess.InProcessBackend, list[LoggingOps]]:
    """A stepped sim backend made as ``sim_backend.open_sim`` makes it (same seed streams,
    metrics, action timer and filters), over operations that log their actions."""
    workload = workloads.load_workload(workload_path)
    made: list[LoggingOps] = []

    def make_parts(context: planning.Context, seed: int, start_us: int) -> inprocess.ContextParts:
        del context
        workload_seed, monitor_seed = np.random.SeedSequence(seed).spawn(2)
        sim_clock = clock_mod.SimClock(start_us)
        ops = sim.SimOperations(workload, clock=sim_clock, rng=np.random.default_rng(workload_seed))
        logged = LoggingOps(ops, sim_clock)
        made.append(logged)
        return inprocess.ContextParts(
            ops=logged,
            target_ids=tuple(ops.target_ids),
            target_names={i: ops.target_name(t) for i, t in enumerate(ops.target_ids)},
            metrics=sim_backend.SimMetrics(ops),
            clock=sim_clock,
            rng=np.random.default_rng(monitor_seed),
            filter_types=sim_backend.SIM_FILTER_TYPES,
            action_timer_ns=sim_backend.fake_action_timer(),
        )

    info = backend.BackendInfo(backend="sim", capabilities=sim_backend.CAPABILITIES)
    node = inprocess.InProcessBackend(info, make_parts, pacing=inprocess.Pacing.STEPPED, seed=seed)
    return node, made


def stock_sim(workload_path: Path, seed: int, state_dir: Path) -> backend.Backend:
    """The backend ``damon-agent run --backend sim --seed SEED`` opens."""
    request = backends.BackendRequest(
        choice="sim",
        state_dir=state_dir,
        sim_workload=workload_path,
        sim_pacing=inprocess.Pacing.STEPPED,
        seed=seed,
    )
    return backends.open_backend(request)


def run_on(
    node: backend.Backend,
    scheme_file: api_schemes.SchemeFile,
    *,
    name: str,
    seconds: float,
    out: Path,
    meta: dict[str, object],
) -> tuple[standalone.RunResult, recording.Recording]:
    """``damon-agent run --record OUT``'s path: plan the file for the node, run, stop."""
    try:
        plan = standalone.plan_run(
            standalone.assigned(scheme_file, name, None), [], node.info.capabilities
        )
        result = standalone.run(node, plan, duration_us=int(seconds * 1e6), record=out, meta=meta)
    finally:
        node.stop()
    if result.failures:
        raise RuntimeError(f"{out.name}: the sim stopped early: {'; '.join(result.failures)}")
    return result, recording.read_recording(out)


# ---------------------------------------------------------------------------------------
# Byte ranges as page bitmaps


class PageMap:
    """Ranges of one target's address span as a bitmap of pages."""

    def __init__(self, start: int, end: int) -> None:
        if start % PAGE or end % PAGE:
            raise ValueError(f"monitored span {start:#x}..{end:#x} is not page aligned")
        self.base = start
        self.pages = (end - start) // PAGE

    def mask(self, starts: Int64Array, ends: Int64Array) -> NDArray[np.bool_]:
        if starts.size and (np.any(starts % PAGE) or np.any(ends % PAGE)):
            raise ValueError("a range is not page aligned")
        first = np.clip((starts - self.base) // PAGE, 0, self.pages)
        last = np.clip((ends - self.base) // PAGE, 0, self.pages)
        edges = np.zeros(self.pages + 1, dtype=np.int64)
        np.add.at(edges, first, 1)
        np.add.at(edges, last, -1)
        covered: NDArray[np.bool_] = np.cumsum(edges[:-1]) > 0
        return covered


def page_maps(snaps: Sequence[snapshots.Snapshot]) -> dict[int, PageMap]:
    spans: dict[int, tuple[int, int]] = {}
    for snap in snaps:
        for t in snap.targets:
            if len(t):
                low, high = spans.get(t.target_id, (int(t.start[0]), int(t.end[-1])))
                spans[t.target_id] = (min(low, int(t.start[0])), max(high, int(t.end[-1])))
    return {tid: PageMap(low, high) for tid, (low, high) in spans.items()}


def accessed_masks(
    snap: snapshots.Snapshot, maps: dict[int, PageMap]
) -> dict[int, NDArray[np.bool_]]:
    return {
        t.target_id: maps[t.target_id].mask(t.start[t.nr_accesses > 0], t.end[t.nr_accesses > 0])
        for t in snap.targets
    }


def live_refaults(
    snaps: Sequence[snapshots.Snapshot],
    actions: Sequence[Action],
    action: str,
    maps: dict[int, PageMap],
) -> Int64Array:
    """Bytes, per snapshot, that ``action`` was given earlier and this snapshot shows
    accessed; each byte counts once until the action is given it again."""
    pending = {tid: np.zeros(m.pages, dtype=bool) for tid, m in maps.items()}
    mine = sorted((a for a in actions if a.action == action), key=lambda a: a.time_us)
    refaults = np.zeros(len(snaps), dtype=np.int64)
    taken = 0
    for k, snap in enumerate(snaps):
        for tid, hit in accessed_masks(snap, maps).items():
            refaults[k] += int(np.count_nonzero(pending[tid] & hit)) * PAGE
            pending[tid] &= ~hit
        # Actions at this snapshot's time acted on the regions it shows: they count from
        # the next snapshot on, as the what-if counts them.
        batch: dict[int, tuple[list[int], list[int]]] = {}
        while taken < len(mine) and mine[taken].time_us <= snap.time_us:
            one = mine[taken]
            starts, ends = batch.setdefault(one.target, ([], []))
            starts.append(one.start)
            ends.append(one.end)
            taken += 1
        for tid, (starts, ends) in batch.items():
            pending[tid] |= maps[tid].mask(np.array(starts, np.int64), np.array(ends, np.int64))
    return refaults


# ---------------------------------------------------------------------------------------
# One workload, one seed


@dataclass(frozen=True)
class Series:
    """One scheme's bytes per snapshot (time relative to the start)."""

    times_us: Int64Array
    tried: Int64Array
    applied: Int64Array
    refaults: Int64Array | None

    def total(self, name: str) -> int | None:
        values: Int64Array | None = getattr(self, name)
        return None if values is None else int(values.sum())

    def window(self, name: str, low_us: int, high_us: int) -> int | None:
        values: Int64Array | None = getattr(self, name)
        if values is None:
            return None
        inside = (self.times_us > low_us) & (self.times_us <= high_us)
        return int(values[inside].sum())


@dataclass(frozen=True)
class SchemeRun:
    """One scheme of a file on one seed: predicted, measured, baseline."""

    name: str
    action: str
    predicted: Series
    live: Series
    dry_tried: int
    sim_fault_bytes: int | None
    """Pages the sim faulted back in during the live run (pageout only), in bytes."""


@dataclass(frozen=True)
class FileRun:
    label: str
    schemes: tuple[SchemeRun, ...]
    divergence: Int64Array
    """Per snapshot: bytes whose accessed state differs between live and recorded."""
    dry_divergence: Int64Array
    """The same between the dry run and the recording."""
    live_regions: Int64Array
    plain_regions: Int64Array
    """Regions per snapshot, live and recorded."""
    times_us: Int64Array
    notes: tuple[str, ...]


def _relative(snaps: Sequence[snapshots.Snapshot], start_us: int) -> Int64Array:
    return np.array([s.time_us - start_us for s in snaps], dtype=np.int64)


def _live_series(
    action: str,
    rec: recording.Recording,
    actions: Sequence[Action],
    maps: dict[int, PageMap],
) -> Series:
    times = _relative(rec.snapshots, rec.start_us)
    tried = np.zeros(times.size, dtype=np.int64)
    applied = np.zeros(times.size, dtype=np.int64)
    absolute = np.array([s.time_us for s in rec.snapshots], dtype=np.int64)
    for one in actions:
        if one.action != action:
            continue
        k = int(np.searchsorted(absolute, one.time_us, side="left"))
        if k >= times.size:
            continue  # after the last snapshot: not in the recording's totals either
        tried[k] += one.end - one.start
        applied[k] += one.applied
    refaults = live_refaults(rec.snapshots, actions, action, maps) if action in COLD_LIKE else None
    return Series(times, tried, applied, refaults)


def run_file(
    workload_path: Path,
    label: str,
    scheme_file: api_schemes.SchemeFile,
    plain: recording.Recording,
    *,
    seed: int,
    seconds: float,
    work: Path,
) -> FileRun:
    meta: dict[str, object] = {"workload": str(workload_path), "seed": seed}
    actions_of = {s.name: s.action for s in scheme_file.schemes}
    if len(set(actions_of.values())) != len(actions_of):
        raise ValueError(
            f"{label}: two schemes share an action; the action log cannot tell them apart"
        )

    # 2. What-if over the recording made without schemes.
    schemes, notes = whatif.prepare_schemes(scheme_file)
    result = whatif.simulate(plain.snapshots, schemes, start_us=plain.start_us, notes=notes)

    # 3. The same schemes live, same seed.
    node, made = logging_sim(workload_path, seed)
    live_result, live = run_on(
        node, scheme_file, name="live", seconds=seconds, out=work / "live.jsonl", meta=meta
    )
    (logged,) = made
    counters = {t.name: t.counters for t in live_result.schemes}

    # 4. Baseline: the same file as a dry run.
    dry_file = scheme_file.model_copy(
        update={"schemes": [s.model_copy(update={"dry_run": True}) for s in scheme_file.schemes]}
    )
    dry_result, dry_rec = run_on(
        stock_sim(workload_path, seed, work / "state"),
        dry_file,
        name="dry",
        seconds=seconds,
        out=work / "dry.jsonl",
        meta=meta,
    )
    dry = {t.name: t.counters.sz_tried for t in dry_result.schemes}

    maps = page_maps([*plain.snapshots, *live.snapshots, *dry_rec.snapshots])
    runs = []
    for outcome in result.schemes:
        action = actions_of[outcome.name]
        live_series = _live_series(action, live, logged.actions, maps)
        # The log must account for what the engine counted (less what it did after the
        # last recorded snapshot, which neither side sees).
        measured = counters[outcome.name]
        late = [
            a
            for a in logged.actions
            if a.action == action and a.time_us > live.snapshots[-1].time_us
        ]
        if (
            int(live_series.tried.sum()) + sum(a.end - a.start for a in late) != (measured.sz_tried)
            or int(live_series.applied.sum()) + sum(a.applied for a in late) != measured.sz_applied
        ):
            raise AssertionError(f"{label}/{outcome.name}: the action log misses actions")
        predicted = Series(
            np.array([i.time_us - result.start_us for i in outcome.intervals], dtype=np.int64),
            np.array([i.tried_bytes for i in outcome.intervals], dtype=np.int64),
            np.array([i.applied_bytes for i in outcome.intervals], dtype=np.int64),
            np.array([i.refault_bytes for i in outcome.intervals], dtype=np.int64)
            if outcome.estimates_refaults
            else None,
        )
        faults = logged.ops.counters().refaults * PAGE if action == "pageout" else None
        runs.append(
            SchemeRun(outcome.name, action, predicted, live_series, dry[outcome.name], faults)
        )

    return FileRun(
        label,
        tuple(runs),
        drift(live, plain, maps),
        drift(dry_rec, plain, maps),
        _region_counts(live),
        _region_counts(plain),
        _relative(plain.snapshots, plain.start_us),
        tuple(notes),
    )


def _region_counts(rec: recording.Recording) -> Int64Array:
    return np.array([sum(len(t) for t in s.targets) for s in rec.snapshots], dtype=np.int64)


def drift(
    other: recording.Recording, plain: recording.Recording, maps: dict[int, PageMap]
) -> Int64Array:
    """Per snapshot, bytes whose seen-accessed state differs between ``other`` and the
    recording made without schemes (at the same time)."""
    if [s.time_us for s in other.snapshots] != [s.time_us for s in plain.snapshots]:
        raise AssertionError("the runs' snapshots are not at the same times")
    bytes_ = np.zeros(len(plain.snapshots), dtype=np.int64)
    for k, (mine, theirs) in enumerate(zip(other.snapshots, plain.snapshots, strict=True)):
        seen = accessed_masks(mine, maps)
        for tid, recorded in accessed_masks(theirs, maps).items():
            bytes_[k] += int(np.count_nonzero(recorded ^ seen[tid])) * PAGE
    return bytes_


def check_logging_sim(
    workload_path: Path,
    *,
    plain: recording.Recording,
    monitor_only: api_schemes.SchemeFile,
    seed: int,
    seconds: float,
    work: Path,
) -> None:
    """The logging backend, running no scheme, must record what the stock one recorded."""
    node, _ = logging_sim(workload_path, seed)
    _, mine = run_on(
        node, monitor_only, name="check", seconds=seconds, out=work / "check.jsonl", meta={}
    )
    same = len(mine.snapshots) == len(plain.snapshots) and all(
        a.time_us == b.time_us
        and all(
            np.array_equal(x.start, y.start)
            and np.array_equal(x.end, y.end)
            and np.array_equal(x.nr_accesses, y.nr_accesses)
            and np.array_equal(x.age, y.age)
            for x, y in zip(a.targets, b.targets, strict=True)
        )
        for a, b in zip(mine.snapshots, plain.snapshots, strict=True)
    )
    if not same:
        raise AssertionError(
            f"{workload_path.name}: the logging sim backend does not record what the stock "
            "one does (runtime.backends.sim changed?): its live runs would not be comparable"
        )


# ---------------------------------------------------------------------------------------
# Over the seeds


def run_case(
    case: Case,
    seeds: Sequence[int],
    seconds: float | None,
    work: Path,
    progress: Callable[[str], None],
) -> tuple[float, dict[str, list[FileRun]]]:
    """Every scheme file of the case on every seed; the simulated seconds per run."""
    path = WORKLOADS / f"{case.workload}.yaml"
    workload = workloads.load_workload(path)
    cycle_s = max(t.cycle_us for t in workload.targets) / 1e6
    length = cycle_s if seconds is None else min(seconds, cycle_s)
    monitoring = {f.monitoring for _, f in case.schemes}
    if len(monitoring) != 1:
        raise ValueError(f"{case.workload}: the scheme files monitor differently")
    monitor_only = api_schemes.SchemeFile(monitoring=monitoring.pop())
    runs: dict[str, list[FileRun]] = {label: [] for label, _ in case.schemes}
    for seed in seeds:
        where = work / f"{case.workload}-{seed}"
        where.mkdir(parents=True)
        progress(f"{case.workload} seed {seed}: recording {length:g} s without schemes")
        _, plain = run_on(
            stock_sim(path, seed, where / "state"),
            monitor_only,
            name="record",
            seconds=length,
            out=where / "plain.jsonl",
            meta={"workload": str(path), "seed": seed},
        )
        check_logging_sim(
            path, plain=plain, monitor_only=monitor_only, seed=seed, seconds=length, work=where
        )
        for label, scheme_file in case.schemes:
            progress(f"{case.workload} seed {seed}: {label}: what-if, live run, dry run")
            sub = where / label
            sub.mkdir()
            runs[label].append(
                run_file(path, label, scheme_file, plain, seed=seed, seconds=length, work=sub)
            )
    return length, runs


def _error(predicted: int | None, actual: int | None) -> float | None:
    """Relative error of the prediction; 0 when both are 0, inf when only actual is."""
    if predicted is None or actual is None:
        return None
    if actual == 0:
        return 0.0 if predicted == 0 else float("inf")
    return (predicted - actual) / actual


def _pct(error: float | None) -> str:
    if error is None:
        return "-"
    if np.isinf(error):
        return "+inf"
    return f"{error * 100:+.1f}%"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MI:.1f}"


def _mean(values: Sequence[int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known and len(known) == len(values) else None


METRICS: Final = (("tried", "tried"), ("applied", "applied"), ("refaults", "refaults"))
HEADER: Final = (
    "workload",
    "scheme (action)",
    "metric",
    "dryRun",
    "what-if",
    "live",
    "sim faults",
    "error",
    "worst seed",
    "verdict",
)


def table_rows(
    case: Case, runs: dict[str, list[FileRun]]
) -> tuple[list[tuple[str, ...]], int, int]:
    """Rows of the main table for one case, and (figures within target, figures)."""
    rows: list[tuple[str, ...]] = []
    held = total = 0
    first = True
    for label, per_seed in runs.items():
        for index, scheme in enumerate(per_seed[0].schemes):
            name = f"{scheme.name} ({scheme.action})"
            if len(per_seed[0].schemes) > 1:
                name = f"{label}: {name}"
            seeds = [run.schemes[index] for run in per_seed]
            for metric, field in METRICS:
                predicted = [s.predicted.total(field) for s in seeds]
                actual = [s.live.total(field) for s in seeds]
                if predicted[0] is None and actual[0] is None:
                    continue  # not cold-like: no refaults either way
                errors = [_error(p, a) for p, a in zip(predicted, actual, strict=True)]
                worst = max((e for e in errors if e is not None), key=abs, default=None)
                mean_p, mean_a = _mean(predicted), _mean(actual)
                error = (
                    None
                    if mean_p is None or mean_a is None
                    else _error(round(mean_p), round(mean_a))
                )
                within = error is not None and abs(error) <= TARGET
                if case.steady:
                    total += 1
                    held += within
                    verdict = "PASS" if within else "MISS"
                else:
                    verdict = "(within)" if within else "(miss)"
                dry = _mean([s.dry_tried for s in seeds]) if field != "refaults" else None
                faults = _mean([s.sim_fault_bytes for s in seeds]) if field == "refaults" else None
                rows.append(
                    (
                        case.workload if first else "",
                        name,
                        metric,
                        _mib(dry),
                        _mib(mean_p),
                        _mib(mean_a),
                        _mib(faults),
                        _pct(error),
                        _pct(worst),
                        verdict,
                    )
                )
                first = False
                name = ""
    return rows, held, total


def _print_table(rows: Sequence[tuple[str, ...]], right_from: int = 3) -> None:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.rjust(widths[c]) if c >= right_from else cell.ljust(widths[c])
                for c, cell in enumerate(row)
            ).rstrip()
        )


def phase_breakdown(case: Case, runs: dict[str, list[FileRun]], length_s: float) -> None:
    """Per phase of the workload, predicted against live, and how far the live monitor's
    view drifted from the recording's (summed over the seeds)."""
    workload = workloads.load_workload(WORKLOADS / f"{case.workload}.yaml")
    bounds = [0]
    for phase in workload.targets[0].phases:
        if bounds[-1] >= length_s * 1e6:
            break
        bounds.append(min(bounds[-1] + phase.duration_us, int(length_s * 1e6)))
    names = [p.name for p in workload.targets[0].phases]
    for label, per_seed in runs.items():
        for index, scheme in enumerate(per_seed[0].schemes):
            print(
                f"\n{case.workload}, {label} ({scheme.name}): per phase, MiB summed over "
                f"{len(per_seed)} seed{'s' if len(per_seed) > 1 else ''} (what-if / live)"
            )
            rows: list[tuple[str, ...]] = [
                (
                    "phase",
                    "time",
                    "tried",
                    "applied",
                    "refaults",
                    "drift live / dry",
                    "regions live / rec",
                )
            ]
            for k, (low, high) in enumerate(itertools.pairwise(bounds)):
                cells = []
                for field in ("tried", "applied", "refaults"):
                    p = sum(
                        r.schemes[index].predicted.window(field, low, high) or 0 for r in per_seed
                    )
                    a = sum(r.schemes[index].live.window(field, low, high) or 0 for r in per_seed)
                    cells.append(f"{p / MI:7.1f} / {a / MI:7.1f}")
                inside = [(r.times_us > low) & (r.times_us <= high) for r in per_seed]
                pairs = list(zip(per_seed, inside, strict=True))
                live_drift = np.mean(
                    [r.divergence[m].mean() for r, m in zip(per_seed, inside, strict=True)]
                )
                dry_drift = np.mean(
                    [r.dry_divergence[m].mean() for r, m in zip(per_seed, inside, strict=True)]
                )
                rows.append(
                    (
                        names[k],
                        f"{low / 1e6:g}-{high / 1e6:g} s",
                        *cells,
                        f"{live_drift / MI:5.1f} / {dry_drift / MI:5.1f} MiB",
                        f"{np.mean([r.live_regions[m].mean() for r, m in pairs]):5.0f} / "
                        f"{np.mean([r.plain_regions[m].mean() for r, m in pairs]):5.0f}",
                    )
                )
            _print_table(rows, right_from=2)


def drift_summary(results: Sequence[tuple[Case, float, dict[str, list[FileRun]]]]) -> None:
    """How far each run's monitor strayed from the recording, per workload and file."""
    rows: list[tuple[str, ...]] = [("workload", "scheme file", "live", "dryRun")]
    for case, _, runs in results:
        for label, per_seed in runs.items():
            live = np.mean([r.divergence.mean() for r in per_seed])
            dry = np.mean([r.dry_divergence.mean() for r in per_seed])
            rows.append((case.workload, label, f"{live / MI:.2f}", f"{dry / MI:.2f}"))
    print(
        "\nmonitor drift, MiB per snapshot (mean): bytes whose seen-accessed state "
        "(nr_accesses > 0) differs from the recording's at the same time"
    )
    _print_table(rows, right_from=2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Progress goes to stderr, the results to stdout.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one seed, runs of at most 10 s (about 6 s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="how many seeds, from --seed on (default 5, 1 with --quick)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the recordings here (plain.jsonl: the input of `damonctl whatif`)",
    )
    args = parser.parse_args()
    count = args.seeds if args.seeds is not None else (1 if args.quick else 5)
    if count < 1:
        parser.error("--seeds must be at least 1")
    seeds = list(range(args.seed, args.seed + count))
    seconds = 10.0 if args.quick else None
    progress = Progress()

    with tempfile.TemporaryDirectory(prefix="whatif-accuracy-") as scratch:
        work = args.keep if args.keep is not None else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        results = [(case, *run_case(case, seeds, seconds, work, progress)) for case in cases()]

    print(
        f"what-if accuracy: `damonctl whatif` on a recording made without schemes, against the "
        f"same schemes run live on the sim; seeds {', '.join(map(str, seeds))}"
    )
    for case, length, _ in results:
        kind = "steady" if case.steady else "moving hot set"
        print(f"  {case.workload}: {length:g} s simulated per run, {kind}")
    print(
        "MiB over the whole run, mean of the seeds. dryRun: the baseline, the scheme live as a "
        "dry run (stat), whose sz_tried is read as the prediction of tried and applied. "
        "error: (what-if - live) / live of the means, which the verdict holds to 10%; worst seed: "
        "the largest error of a single seed. "
        "sim faults: pages the sim faulted back in during the live run (page-level ground "
        "truth; the refaults rows count region bytes given to the action and later seen "
        "accessed, live as in the what-if)."
    )
    print()
    rows: list[tuple[str, ...]] = [HEADER]
    held = total = 0
    for case, _, runs in results:
        case_rows, case_held, case_total = table_rows(case, runs)
        rows.extend(case_rows)
        held += case_held
        total += case_total
    _print_table(rows)
    print()
    verdict = "PASS" if held == total else "MISS"
    print(
        f"steady workloads (hot-cold, tiering): {held}/{total} figures within "
        f"{TARGET * 100:.0f}% (error of the means): {verdict}"
    )
    print("phase-change is not held to the target: (within)/(miss) are for reading only")
    drift_summary(results)
    for case, length, runs in results:
        if not case.steady:
            phase_breakdown(case, runs, length)
    notes = sorted({n for _, _, runs in results for r in runs.values() for n in r[0].notes})
    for note in notes:
        print(f"note: {note}")
    print(f"(ran in {time.monotonic() - progress.began:.1f} s)")


if __name__ == "__main__":
    main()
