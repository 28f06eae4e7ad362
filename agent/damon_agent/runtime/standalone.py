"""The standalone run loop of the ``sim`` backend (``damon-agent run --backend sim``).

One monitoring context over a simulated workload, in virtual time: the monitor
(``core.monitor.Monitor``) samples the ``SimOperations`` of the workload file on a
``SimClock``, so 20 s of monitoring take a few seconds of CPU and a seed reproduces a run
exactly. With a scheme file, its monitoring attributes replace the defaults and its
schemes run in a ``schemes.engine.SchemesEngine`` acting on the same sim operations.

The loop steps the monitor one sampling interval at a time until the virtual clock passes
the duration; at every snapshot it appends the snapshot (and the schemes' cumulative
stats) to the recording and reports ``Progress`` to the caller's callback. It prints
nothing: the CLI decides how progress and results look.

Two things the engine needs are modelled here so that a seeded run stays reproducible:

- action time, for the time quota: every action costs ``SIM_ACTION_COST_NS`` (a fake
  timer), instead of the wall time of the Python that simulates it;
- node metrics, for quota goals and watermarks (``SimMetrics``): derived from the sim's
  counters, e.g. memory PSI from the time spent on refaults.

Errors: bad input files raise the loaders' own errors (``ops.workloads.WorkloadError``,
``api.schemes.SchemeFileError``, ``core.errors.InvalidAttrsError``); a scheme set the sim
cannot run raises ``StandaloneError``; a recording that cannot be written raises
``reports.errors.RecordingError``::

    runtime.errors.AgentError
     └── StandaloneError        the scheme file asks for what the sim operations cannot do
"""

from __future__ import annotations

import contextlib
import itertools
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np

import damon_agent
from damon_agent.api import schemes as api_schemes
from damon_agent.core import attrs as core_attrs
from damon_agent.core import clock as core_clock
from damon_agent.core import monitor as core_monitor
from damon_agent.core import snapshots
from damon_agent.ops import sim, workloads
from damon_agent.reports import recording, wss
from damon_agent.runtime import errors
from damon_agent.schemes import conversion, engine, tuners
from damon_agent.schemes import errors as schemes_errors

# Fake duration of one DAMOS action for the time quota (see the module docstring).
SIM_ACTION_COST_NS: Final = 10_000
# The simulated node's memory, as a multiple of what the workload maps: node metrics
# (free/used shares, watermarks) need a capacity, and the sim models only the workload.
SIM_NODE_CAPACITY_FACTOR: Final = 2


class StandaloneError(errors.AgentError):
    """The standalone run cannot do what its inputs ask (names the scheme and reason)."""


@dataclass(frozen=True)
class SchemeProgress:
    """One scheme's cumulative counters, for progress lines."""

    name: str
    action: str
    sz_tried: int
    sz_applied: int


@dataclass(frozen=True)
class Progress:
    """Where a run stands, reported at every snapshot."""

    elapsed_us: int
    duration_us: int
    nr_regions: int
    nr_snapshots: int
    wss_bytes: int
    schemes: tuple[SchemeProgress, ...] = ()


@dataclass(frozen=True)
class SimRunResult:
    """What a finished run hands back to the CLI to print."""

    final: snapshots.Snapshot | None
    nr_snapshots: int
    start_us: int
    end_us: int
    target_names: dict[int, str]
    # Per-scheme cumulative stats at the end, as recorded (no tried regions); empty
    # without a scheme file.
    scheme_stats: list[dict[str, object]] = field(default_factory=list)


class SimMetrics:
    """Node metrics of the simulated machine, for quota goals and watermarks.

    - ``some_mem_psi_us``: cumulative time tasks stalled on refaults (the sim's refault
      cost), the part of memory pressure that reclaim causes;
    - ``node_mem_used_bp`` / ``node_mem_free_bp`` of node 0 or 1: resident bytes on the
      node against its capacity (``SIM_NODE_CAPACITY_FACTOR`` x the workload's mapping);
    - ``free_mem_rate`` (permil, for watermarks): the same for the whole node.

    Anything else (cgroup metrics, PSI of pods) is not simulated and is unavailable.
    """

    def __init__(self, ops: sim.SimOperations) -> None:
        self._ops = ops

    def read(self, metric: str, *, nid: int | None = None, path: str | None = None) -> int:
        counters = self._ops.counters()
        capacity = max(1, SIM_NODE_CAPACITY_FACTOR * counters.mapped_bytes)
        if metric == "some_mem_psi_us":
            return int(counters.refault_cost_ns // 1_000)
        if metric == "free_mem_rate":
            return max(0, 1_000 - counters.resident_bytes * 1_000 // capacity)
        if metric in ("node_mem_used_bp", "node_mem_free_bp"):
            if nid not in (0, 1):
                raise schemes_errors.MetricUnavailableError(
                    f"{metric}: the sim has NUMA nodes 0 and 1, not {nid}"
                )
            node_capacity = max(1, capacity // 2)
            # Resident share of the node's bytes; paged-out bytes free memory.
            resident_share = counters.resident_bytes / max(1, counters.mapped_bytes)
            used = int(counters.node_bytes[nid] * resident_share)
            used_bp = min(10_000, used * 10_000 // node_capacity)
            return used_bp if metric == "node_mem_used_bp" else 10_000 - used_bp
        raise schemes_errors.MetricUnavailableError(f"{metric} is not simulated")


def run_sim(
    workload_path: pathlib.Path,
    *,
    duration_us: int,
    scheme_path: pathlib.Path | None = None,
    record_path: pathlib.Path | None = None,
    seed: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
) -> SimRunResult:
    """Monitor the workload for ``duration_us`` of virtual time; see the module docstring."""
    workload = workloads.load_workload(workload_path)
    scheme_file = api_schemes.load_scheme_file(scheme_path) if scheme_path else None
    attrs = (
        conversion.monitoring_attrs(scheme_file.monitoring)
        if scheme_file is not None
        else core_attrs.MonitoringAttrs()
    )
    clock = core_clock.SimClock()
    # Separate streams for the workload's accesses and the monitor's sampling: adding a
    # scheme must not change which addresses the monitor samples.
    workload_seed, monitor_seed = np.random.SeedSequence(seed).spawn(2)
    ops = sim.SimOperations(workload, clock=clock, rng=np.random.default_rng(workload_seed))
    schemes_engine = _engine(scheme_file, ops) if scheme_file is not None else None
    monitor = core_monitor.Monitor(
        attrs,
        ops,
        ops.target_ids,
        clock=clock,
        rng=np.random.default_rng(monitor_seed),
        schemes=schemes_engine,
    )
    names = {tid: ops.target_name(tid) for tid in ops.target_ids}
    start_us = clock.now_us()
    meta: dict[str, object] = {
        "backend": "sim",
        "workload": str(workload_path),
        "scheme_file": str(scheme_path) if scheme_path else None,
        "seed": seed,
        "start_us": start_us,
        "duration_us": duration_us,
        "attrs": {
            "sample_us": attrs.sample_us,
            "aggr_us": attrs.aggr_us,
            "update_us": attrs.update_us,
            "min_nr_regions": attrs.min_nr_regions,
            "max_nr_regions": attrs.max_nr_regions,
        },
        "targets": [{"target_id": tid, "name": name} for tid, name in names.items()],
        "agent_version": damon_agent.__version__,
    }

    final: snapshots.Snapshot | None = None
    nr_snapshots = 0
    stats: list[dict[str, object]] = []
    deadline = start_us + duration_us
    with _maybe_writer(record_path, meta) as writer:
        while clock.now_us() < deadline:
            snap = monitor.step()
            if snap is None:
                continue
            final = snap
            nr_snapshots += 1
            if schemes_engine is not None:
                stats = _recordable_stats(schemes_engine)
            if writer is not None:
                writer.snapshot(snap)
                if schemes_engine is not None:
                    writer.scheme_stats(snap.time_us, stats)
            if on_progress is not None:
                on_progress(
                    Progress(
                        elapsed_us=snap.time_us - start_us,
                        duration_us=duration_us,
                        nr_regions=sum(len(t) for t in snap.targets),
                        nr_snapshots=nr_snapshots,
                        wss_bytes=wss.working_set_size(snap),
                        schemes=tuple(_scheme_progress(entry) for entry in stats),
                    )
                )
    if schemes_engine is not None:
        stats = _recordable_stats(schemes_engine)
    return SimRunResult(
        final=final,
        nr_snapshots=nr_snapshots,
        start_us=start_us,
        end_us=clock.now_us(),
        target_names=names,
        scheme_stats=stats,
    )


def _engine(scheme_file: api_schemes.SchemeFile, ops: sim.SimOperations) -> engine.SchemesEngine:
    unsupported = [s for s in scheme_file.schemes if s.action not in sim.SUPPORTED_ACTIONS]
    if unsupported:
        raise StandaloneError(
            f"scheme {unsupported[0].name}: action {unsupported[0].action} is not simulated "
            f"(the sim does {', '.join(sim.SUPPORTED_ACTIONS)})"
        )
    metrics: tuners.MetricSource = SimMetrics(ops)
    try:
        return engine.SchemesEngine(
            conversion.schemes(scheme_file.schemes),
            ops,
            metrics,
            action_timer_ns=_fake_action_timer(),
        )
    except schemes_errors.SchemeConfigError as err:
        raise StandaloneError(str(err)) from err


def _fake_action_timer() -> Callable[[], int]:
    # The engine reads it right before and right after each action, so consecutive reads
    # SIM_ACTION_COST_NS apart make every action "take" that long.
    ticks = itertools.count(step=SIM_ACTION_COST_NS)
    return lambda: next(ticks)


def _scheme_progress(entry: dict[str, object]) -> SchemeProgress:
    def counter(name: str) -> int:
        value = entry.get(name)
        return value if isinstance(value, int) else 0

    return SchemeProgress(
        name=str(entry.get("name", "")),
        action=str(entry.get("action", "")),
        sz_tried=counter("sz_tried"),
        sz_applied=counter("sz_applied"),
    )


def _recordable_stats(schemes_engine: engine.SchemesEngine) -> list[dict[str, object]]:
    result = []
    for scheme_stats in schemes_engine.stats():
        entry = scheme_stats.to_dict()
        entry.pop("tried_regions", None)  # up to thousands of regions; not a stats counter
        result.append(entry)
    return result


@contextlib.contextmanager
def _maybe_writer(
    path: pathlib.Path | None, meta: dict[str, object]
) -> Iterator[recording.RecordingWriter | None]:
    if path is None:
        yield None
        return
    with recording.RecordingWriter(path, meta) as writer:
        yield writer
