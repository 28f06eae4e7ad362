"""The project's own monitor and DAMOS engine as a backend: the part sim and userspace share.

Each planned context runs as one ``core.monitor.Monitor`` with a
``schemes.engine.SchemesEngine`` hooked in, over operations the concrete backend builds
(``ContextParts``: the simulated workload, or real processes). What differs between the
two backends is only what ``ContextParts`` holds; everything here is the same for both.

Pacing: how monitors move forward in time.

- ``STEPPED`` (the sim in ``damon-agent run``): no thread. The backend's ``clock`` is
  virtual; sleeping on it steps every context until its own virtual clock catches up,
  so a run costs CPU, not wall time, and a seed reproduces it exactly.
- ``WALL_PACED`` (the sim in the daemon): one thread per context steps its monitor on a
  virtual clock until virtual time catches up with real elapsed time, then sleeps about
  50 ms; intervals mean what they say to an observer, and a slow step never makes the
  monitor skip sampling intervals (it only lags).
- ``REAL_TIME`` (userspace): one thread per context steps its monitor, whose clock is the
  wall clock (each step sleeps one sampling interval).

Changing a context's schemes swaps its ``SchemesEngine`` between two steps; the monitor,
its regions and their ages stay, and the counters of schemes that persist are carried
over so they stay cumulative. A context whose targets changed (a pod's processes came or
went) is rebuilt: its monitor starts over, as a kdamond does when its targets change.

All methods take the backend's lock: the loop and ``/metrics`` scrapes call them from
different threads.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from damon_agent.core import clock as clock_mod
from damon_agent.core import interfaces, snapshots
from damon_agent.core import monitor as monitor_mod
from damon_agent.node import errors as node_errors
from damon_agent.ops import userspace_errors, workloads
from damon_agent.runtime import backend, errors, planning, wire
from damon_agent.schemes import engine as schemes_engine
from damon_agent.schemes import errors as schemes_errors
from damon_agent.schemes import tuners
from damon_agent.schemes.stats import SchemeCounters

log = logging.getLogger(__name__)


class Pacing(enum.Enum):
    STEPPED = "stepped"
    WALL_PACED = "wall-paced"
    REAL_TIME = "real-time"


@dataclass(frozen=True)
class ContextParts:
    """What a concrete backend gives one context to run on."""

    ops: interfaces.ActionOperations
    target_ids: tuple[int, ...]
    # Target index in the context -> a name for people (a workload target, "pid 1234").
    target_names: Mapping[int, str]
    metrics: tuners.MetricSource
    clock: interfaces.Clock
    rng: np.random.Generator
    # Filter types the operations evaluate; the others are left out (the sim has no page
    # attributes). None: all of them.
    filter_types: frozenset[str] | None = None
    # The time quota's timer; None: the process's monotonic clock.
    action_timer_ns: Callable[[], int] | None = None


# Errors a monitor step can raise from the operations or the DAMOS engine; they stop the
# context (named in ``failures``) instead of the thread dying silently.
StepErrors = (
    schemes_errors.SchemesError,
    workloads.SimError,
    userspace_errors.UserspaceOpsError,
    node_errors.NodeError,
    ValueError,
    OSError,
)


class _Context:
    """One monitor and its DAMOS engine, stepped as ``pacing`` says."""

    PACE_S = 0.05

    def __init__(self, context: planning.Context, parts: ContextParts, pacing: Pacing) -> None:
        self.key = context.key
        self.targets = context.targets
        self.parts = parts
        self.pacing = pacing
        self.monitor = monitor_mod.Monitor(
            context.monitoring,
            parts.ops,
            parts.target_ids,
            clock=parts.clock,
            rng=parts.rng,
            # The vaddr rule (DAMON's vaddr leaves out the two biggest unmapped gaps);
            # physical memory is monitored range by range.
            leave_out_biggest_gaps=context.operations == "vaddr",
        )
        self.lock = threading.Lock()
        self.schemes: tuple[planning.PlannedScheme, ...] = ()
        self.engine: schemes_engine.SchemesEngine | None = None
        self.carried: dict[str, SchemeCounters] = {}
        self.latest: snapshots.Snapshot | None = None
        self.error = ""
        self._stop = threading.Event()
        self.set_schemes(context)
        self._thread: threading.Thread | None = None
        if pacing is not Pacing.STEPPED:
            self._thread = threading.Thread(target=self._run, name=f"monitor-{self.key}")
            self._thread.daemon = True
            self._thread.start()

    def set_schemes(self, context: planning.Context) -> None:
        kept = self.parts.filter_types
        models = []
        for planned in context.schemes:
            scheme = planned.scheme
            filters = tuple(f for f in scheme.filters if kept is None or f.type in kept)
            models.append(dataclasses.replace(scheme, name=planned.key, filters=filters))
        hook = None
        if models:
            timer = self.parts.action_timer_ns or time.monotonic_ns
            hook = schemes_engine.SchemesEngine(
                models, self.parts.ops, self.parts.metrics, action_timer_ns=timer
            )
        with self.lock:
            self.carried = self._counters_locked()
            self.schemes = context.schemes
            self.engine = hook
            self.monitor.schemes = hook

    def _counters_locked(self) -> dict[str, SchemeCounters]:
        result = dict(self.carried)
        if self.engine is not None:
            for one in self.engine.stats():
                result[one.name] = result.get(one.name, SchemeCounters()) + one.counters()
        return result

    def counters(self) -> dict[str, SchemeCounters]:
        with self.lock:
            return self._counters_locked()

    def quotas(self) -> dict[str, schemes_engine.QuotaNow]:
        with self.lock:
            return self.engine.quotas() if self.engine is not None else {}

    def snapshot_age_s(self) -> float | None:
        with self.lock:
            latest = self.latest
        if latest is None:
            return None
        return max(0, self.parts.clock.now_us() - latest.time_us) / 1e6

    def feed(self, key: str, index: int, value: int) -> None:
        with self.lock:
            if self.engine is not None:
                self.engine.set_user_input(key, value, index)

    def step_until(self, due_us: int) -> None:
        """Step the monitor until its clock reaches ``due_us`` (or the context stops)."""
        while self.parts.clock.now_us() < due_us and not self._stop.is_set() and not self.error:
            self._step()

    def _step(self) -> None:
        with self.lock:
            try:
                snap = self.monitor.step()
            except StepErrors as err:
                self.error = f"{type(err).__name__}: {err}"
                log.error("monitoring context %s stopped: %s", self.key, self.error)
                return
            if snap is not None:
                # Targets by their index in the context, as the kernel numbers them (the
                # operations' own ids are pids on userspace).
                self.latest = dataclasses.replace(
                    snap,
                    targets=tuple(
                        dataclasses.replace(t, target_id=i) for i, t in enumerate(snap.targets)
                    ),
                )

    def _run(self) -> None:
        if self.pacing is Pacing.REAL_TIME:
            while not self._stop.is_set() and not self.error:
                self._step()
            return
        started = time.monotonic()
        origin_us = self.parts.clock.now_us()
        while not self._stop.is_set() and not self.error:
            self.step_until(origin_us + int((time.monotonic() - started) * 1e6))
            self._stop.wait(self.PACE_S)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _SteppedClock:
    """The virtual time of a stepped backend: sleeping on it steps every context."""

    def __init__(self, owner: InProcessBackend) -> None:
        self._owner = owner
        self._now_us = 0

    def now_us(self) -> int:
        return self._now_us

    def sleep_us(self, duration_us: int) -> None:
        self._now_us += max(0, duration_us)
        self._owner.step_until(self._now_us)


class InProcessBackend:
    """A ``backend.Backend`` running the project's monitor; see the module docstring.

    ``make_parts(context, seed, start_us)`` builds the operations of one context;
    ``start_us`` is where a virtual clock must start so that every context's time
    reads the same.
    """

    def __init__(
        self,
        info: backend.BackendInfo,
        make_parts: Callable[[planning.Context, int, int], ContextParts],
        *,
        pacing: Pacing,
        seed: int = 0,
    ) -> None:
        self._info = info
        self._make_parts = make_parts
        self._pacing = pacing
        self._seed = seed
        self._lock = threading.Lock()
        self._contexts: dict[str, _Context] = {}
        self._plan: planning.Plan | None = None
        self._clock: interfaces.Clock = (
            _SteppedClock(self) if pacing is Pacing.STEPPED else clock_mod.WallClock()
        )

    @property
    def info(self) -> backend.BackendInfo:
        return self._info

    @property
    def clock(self) -> interfaces.Clock:
        return self._clock

    def step_until(self, due_us: int) -> None:
        """Stepped pacing: move every context's virtual time to ``due_us``."""
        with self._lock:
            contexts = list(self._contexts.values())
        for context in contexts:
            context.step_until(due_us)

    def apply(self, plan: planning.Plan) -> None:
        with self._lock:
            if plan == self._plan:
                return
            wanted = {c.key: c for c in plan.contexts}
            for key in list(self._contexts):
                running = self._contexts[key]
                if key not in wanted or running.targets != wanted[key].targets:
                    self._contexts.pop(key).stop()
            try:
                for key, context in wanted.items():
                    kept = self._contexts.get(key)
                    if kept is None:
                        parts = self._make_parts(context, self._seed, self._clock.now_us())
                        self._seed += 1
                        self._contexts[key] = _Context(context, parts, self._pacing)
                    else:
                        kept.set_schemes(context)
            except (schemes_errors.SchemesError, errors.AgentError, ValueError, OSError) as err:
                self._plan = None
                raise errors.ApplyError(f"{type(err).__name__}: {err}") from err
            self._plan = plan

    def feed_goals(self, inputs: Mapping[str, Mapping[int, int]]) -> None:
        with self._lock:
            for context in self._contexts.values():
                for planned in context.schemes:
                    for index, value in inputs.get(planned.key, {}).items():
                        context.feed(planned.key, index, value)

    def follow_tuned_intervals(self) -> list[str]:
        # The engine compares ages in time at its current intervals: nothing to follow.
        return []

    def end_warm_ups(self) -> list[str]:
        # The engine's quotas start as the kernel's tuner does, with no warm-up: what-if
        # replays compare with the kernel's tuner step for step.
        return []

    def stats(self) -> dict[str, SchemeCounters]:
        with self._lock:
            result: dict[str, SchemeCounters] = {}
            for context in self._contexts.values():
                # A scheme run in several contexts (one per source node) counts once.
                for key, counters in context.counters().items():
                    before = result.get(key)
                    result[key] = counters if before is None else before + counters
            return result

    def tuning(self) -> dict[str, backend.SchemeTuning]:
        with self._lock:
            result = {}
            for context in self._contexts.values():
                quotas = context.quotas()
                for planned in context.schemes:
                    found = quotas.get(planned.key)
                    if found is None:
                        continue
                    goals = tuple(
                        backend.GoalTuning(
                            metric=backend.goal_metric(planned, index),
                            target=goal.target,
                            current=goal.current,
                        )
                        for index, goal in enumerate(found.goals)
                    )
                    result[planned.key] = backend.SchemeTuning(found.effective, goals)
            return result

    def snapshot_ages(self) -> dict[str, float]:
        with self._lock:
            contexts = dict(self._contexts)
        ages = {key: context.snapshot_age_s() for key, context in contexts.items()}
        return {key: age for key, age in ages.items() if age is not None}

    def snapshots(self) -> list[wire.SnapshotEntry]:
        with self._lock:
            plan = self._plan
            latest = {k: c.latest for k, c in self._contexts.items() if c.latest is not None}
            names = {k: c.parts.target_names for k, c in self._contexts.items()}
        if plan is None:
            return []
        return backend.entries(plan, latest, names)

    def failures(self) -> list[str]:
        """Contexts that stopped on an error, each named with it."""
        with self._lock:
            return [f"{k}: {c.error}" for k, c in self._contexts.items() if c.error]

    def stop(self) -> None:
        with self._lock:
            for context in self._contexts.values():
                context.stop()
            self._contexts.clear()
            self._plan = None

    def release(self) -> bool:
        # The monitor and its actions run in this process: nothing can outlive it.
        self.stop()
        return False
