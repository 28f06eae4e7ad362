"""The kernel's DAMON driven as a set of contexts: apply, observe, stop.

Input is a list of ``KdamondContext``: per context its monitoring attributes
(``core.attrs.MonitoringAttrs``), targets and keyed ``schemes.model.Scheme``s, canonical
integers as the runtime's planner produces them (``planning.Context``: the runtime adapts
it; this layer cannot import runtime), translated to sysfs by ``from_scheme``. Each
context runs on one kdamond this driver owns.

- ``apply``: when the list has the same contexts as what runs (same keys, same order),
  every kdamond is updated online with ``commit`` (same threads, monitoring results
  kept); otherwise all owned kdamonds are stopped and the new set is started, because the
  kernel only resizes its kdamond list when every kdamond is off.
- Snapshots come from the tried regions of a ``stat`` scheme that matches every region:
  a user's own plain ``stat`` scheme when there is one (one target), else a hidden one
  appended after the user's schemes (one per target, with a ``target`` core filter, when
  a context has several targets, because tried regions do not say which target a region
  is of). The user's schemes keep indexes 0..n-1, so stats map to scheme keys by index.
- Several ``KdamondScheme``s may share a key: one scheme the planner runs as several
  kernel schemes (per-memcg copies on kernels without allow filters). Their stats are
  summed under the key, quota goals are fed to each, and their tried regions are merged
  (a region tried by several copies once, with their filter-passed bytes summed).
- Kernels without allow filters (before 6.14) get reject filters only: the hidden
  per-target snapshot schemes reject every other target instead of allowing their own.
- Cost: a snapshot is one ``update_schemes_tried_regions`` write plus three sysfs files
  per region (``end`` is derived when regions tile the paddr ranges): on these hosts
  about 4.7 ms of the agent's CPU at 104 regions and 24 ms at 541 (bench/agent_overhead.py;
  the kernel re-creating the region directories is most of it). The tracefs source below
  costs 2.7 ms and 11 ms. Stats are about 0.3 ms.
- Quotas (``tuning``): per user scheme with a quota, the effective size quota the kernel
  tuned for the current window and its goals' target and current values
  (``reading.quota_tunings``: one ``update_schemes_effective_quotas`` per kdamond that
  has such a scheme). Copies of one key sum their effective quotas; their goals are the
  same, so the first copy's are kept.
- Goal-tuned quotas warm up (``warm_up``): a kdamond started here runs them with quota
  resets ten times shorter until their tuner has had time to grow them from one byte;
  ``end_warm_ups`` (called about once a second) then commits the user's resets into it.
- Snapshot source (``snapshot_source``): ``sysfs`` reads the tried regions as above;
  ``tracefs`` reads each kdamond's ``damon_aggregated`` trace events from a private trace
  instance (``tracing``) and returns its latest complete aggregation, in the same columns;
  ``auto`` is tracefs where it can be set up, else sysfs (logged either way). The kernel
  configuration is the same for every source, snapshot schemes included: a snapshot falls
  back to the sysfs tried regions while the trace has no recent complete aggregation
  (a kdamond that stopped emitting), so callers cannot tell the sources apart except by
  their cost. ``tracefs`` raises ``TracefsError`` from ``apply`` (and stops what it
  started) when the trace cannot be set up; ``auto`` then falls back to sysfs for
  KernelDamon's lifetime. ``stop`` removes the trace instances and unmounts tracefs if
  KernelDamon mounted it. Setting ``snapshot_source`` to ``sysfs`` on a running
  KernelDamon reads tried regions again while its traces stay set up.
- Snapshots only as often as someone asks for them: a trace's event is off until a
  snapshot is asked for, which switches it on and waits (sleeping, at most two
  aggregation intervals and a second) for the kdamond's next aggregation; it goes off
  again once no snapshot was asked for in ``trace_idle_s``, at the next call of
  KernelDamon that a running agent makes anyway (stats, quotas, goals, who holds DAMON:
  the daemon asks the last at every tick). So nobody reading costs the kdamond no trace
  events and the agent nothing, and a reader at least every ``trace_idle_s`` is served
  from the trace. Without a reader nothing updates the sysfs tried regions either.
- Someone else's DAMON (``holders``): before starting kdamonds, KernelDamon checks that
  no DAMON module runs (they run exclusively: ``on`` would fail with a bare EBUSY) and
  that no kdamond it did not create exists, and raises ``DamonHeldError`` naming the
  holder and its remedy, without writing anything and with what it ran before still
  running. A module turned on between the check and ``on`` is named the same way (the
  EBUSY is chained). Modules are read from ``module_root`` (``on_host``: the host's
  ``/sys/module``); without one only foreign kdamonds are checked. An empty context list
  starts nothing, so it never needs DAMON free.
- No policy here: each context says its operations set (``vaddr`` or ``paddr``) and
  carries the filters that keep its schemes to their pods, as the runtime's planner
  wrote them for this kernel; this layer writes them as they are.

Errors are ``ops.kernel.errors`` exceptions; KernelDamon never leaves a kdamond it started
running after ``stop``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from damon_agent.core import attrs as core_attrs
from damon_agent.core import clock as clock_mod
from damon_agent.core import snapshots as snaps
from damon_agent.core import vaddr_layout
from damon_agent.core.interfaces import Clock
from damon_agent.ops import userspace_errors as procfs_errors
from damon_agent.ops import userspace_procfs as procfs
from damon_agent.ops.kernel import capabilities as caps
from damon_agent.ops.kernel import driver as kdriver
from damon_agent.ops.kernel import (
    errors,
    from_scheme,
    gone,
    holders,
    iomem,
    model,
    reading,
    tracing,
    warm_up,
)
from damon_agent.ops.kernel import sysfs as sysfs_io
from damon_agent.schemes import model as schemes_model
from damon_agent.schemes import stats as scheme_stats

SnapshotSource = Literal["sysfs", "tracefs", "auto"]
SNAPSHOT_SOURCES: tuple[SnapshotSource, ...] = ("sysfs", "tracefs", "auto")

log = logging.getLogger(__name__)

# Writes of one plan when the kernel refuses it for a pod gone meanwhile (``apply``).
_APPLY_ATTEMPTS = 4
# An effective quota this large is the kernel's "no limit" (ULONG_MAX on 64-bit).
_NO_LIMIT = 2**63


@dataclass(frozen=True)
class KdamondScheme:
    key: str
    scheme: schemes_model.Scheme


@dataclass(frozen=True)
class KdamondContext:
    """One monitoring context. ``pids`` are vaddr targets; ``ranges`` paddr regions
    (empty: the largest System RAM ranges)."""

    key: str
    monitoring: core_attrs.MonitoringAttrs
    operations: Literal["vaddr", "paddr"]
    schemes: tuple[KdamondScheme, ...] = ()
    pids: tuple[int, ...] = ()
    ranges: tuple[tuple[int, int], ...] = ()
    snapshot: bool = True


@dataclass
class _Running:
    context: KdamondContext
    config: model.Kdamond
    handle: kdriver.KdamondHandle
    nr_user_schemes: int
    # Index of the scheme whose tried regions are each target's snapshot.
    snapshot_schemes: list[int]
    # The paddr target's ranges when its snapshot scheme sees all its regions.
    tiling: list[tuple[int, int]] | None
    # For each target the kernel runs, in its order, the index of its pid in
    # ``context.pids`` (the planner's order, which snapshots and filters speak).
    planner_index: tuple[int, ...] = ()
    # The goal-tuned quotas' warm-up (``warm_up``) and the clock time (us) it ends at the
    # latest; None: not warming.
    warming: warm_up.WarmUp | None = None
    warm_until_us: int | None = None


@dataclass(frozen=True)
class _TraceShape:
    """What a kdamond's trace instance is set up for; another shape needs a new one."""

    kdamond_pid: int
    max_regions: int
    nr_targets: int


@dataclass(frozen=True)
class ContextStatus:
    key: str
    index: int
    pid: int
    operations: str


@dataclass
class KernelDamon:
    """The kdamonds this agent runs, one per context (module docstring)."""

    driver: kdriver.KdamondDriver
    kernel_release: str
    proc_root: Path = Path("/proc")
    clock: Clock = field(default_factory=clock_mod.WallClock)
    snapshot_source: SnapshotSource = "sysfs"
    # Where to mount tracefs when it is not mounted (default: a directory in /tmp).
    tracefs_mount_dir: Path | None = None
    tracefs_candidates: tuple[Path, ...] = (tracing.DEFAULT_TRACEFS,)
    # A tracefs to use as it is instead of looking for one (``fake.FakeTracefs``).
    tracefs: tracing.Tracefs | None = None
    # How long a trace event stays on after the last snapshot asked of its kdamond.
    trace_idle_s: float = 30.0
    # Where the DAMON modules' parameters are (``holders``); None: modules are not checked.
    module_root: Path | None = None
    # Whether a memcg path names a memory cgroup now (``gone``); None: never checked.
    memcg_exists: gone.MemcgExists | None = None
    _report: caps.CapabilityReport | None = None
    # Planned vaddr pids whose process is gone: left out of the targets written, while
    # the planner's indexes (filters, snapshots) keep counting them (``apply``).
    _gone_pids: frozenset[int] = frozenset()
    # Planned vaddr pids whose process was there at the last look (``_exited``).
    _seen_alive: frozenset[int] = frozenset()
    _running: list[_Running] = field(default_factory=list)
    _adopted: list[kdriver.KdamondHandle] = field(default_factory=list)
    _tracefs: tracing.Tracefs | None = None
    _traces: dict[str, tuple[_TraceShape, tracing.KdamondTrace]] = field(default_factory=dict)
    # Context key -> clock time (us) a snapshot of it was last asked for.
    _trace_asked_us: dict[str, int] = field(default_factory=dict)
    # Context key -> where its aggregations were last counted (``_measure_pace``).
    _pace: dict[str, _PaceMark] = field(default_factory=dict)
    # Context key -> an aggregation's measured length (us), where longer than written.
    _aggr_period_us: dict[str, int] = field(default_factory=dict)
    _tracefs_unusable: str = ""

    def __post_init__(self) -> None:
        if self.snapshot_source not in SNAPSHOT_SOURCES:
            raise errors.ConfigError(
                "snapshot_source",
                f"{self.snapshot_source!r} is not one of {', '.join(SNAPSHOT_SOURCES)}",
            )

    @classmethod
    def on_host(
        cls,
        state_dir: Path,
        *,
        admin: Path = sysfs_io.DEFAULT_ADMIN,
        proc_root: Path = Path("/proc"),
        snapshot_source: SnapshotSource = "sysfs",
        module_root: Path = holders.DEFAULT_MODULE_ROOT,
        memcg_exists: gone.MemcgExists | None = None,
    ) -> KernelDamon:
        return cls(
            driver=kdriver.KdamondDriver(sysfs_io.HostSysfs(admin), state_dir),
            kernel_release=platform.release(),
            proc_root=proc_root,
            snapshot_source=snapshot_source,
            tracefs_mount_dir=state_dir / "tracefs",
            module_root=module_root,
            memcg_exists=memcg_exists,
        )

    # ---- capabilities -----------------------------------------------------------------

    @property
    def capabilities(self) -> caps.CapabilityReport:
        """Probed once, before it starts anything (probing needs an empty list)."""
        if self._report is None:
            self._report = self.driver.capabilities(self.kernel_release)
        return self._report

    # ---- apply ------------------------------------------------------------------------

    def recover(self) -> kdriver.Recovery:
        """After a restart: adopt the kdamonds a previous run of the agent left running.

        The next ``apply`` commits into them (same threads, monitoring results kept)
        when it asks for as many contexts; otherwise it stops them and starts afresh.
        Stopped leftovers are removed now.
        """
        found = self.driver.recover(adopt=True)
        self._adopted = sorted(found.adopted, key=lambda h: h.index)
        return found

    def apply(self, contexts: Sequence[KdamondContext]) -> None:
        # The kernel refuses a whole start or commit when one vaddr pid has no process
        # (EINVAL) or one memcg path names no memory cgroup (ENOMEM): a pod that went away
        # since it was observed. Kernels before 6.15 handle a commit in the kdamond, out of
        # the writer's sight: the refusal never reaches us and the kdamond stops. So what
        # is gone is left out first, and a refusal (a pod gone in between) is retried
        # without what is gone by then.
        planned = list(contexts)
        written = [self._with_live_memcgs(c) for c in planned]
        self._gone_pids = self._exited(planned)
        for attempt in range(_APPLY_ATTEMPTS):
            try:
                self._apply(written)
                break
            except errors.SysfsInvalidError:
                # Pods keep going while a commit is written (a third of a second on a slow
                # node, where a hundred pods a minute come and go): look again.
                exited = self._exited(planned)
                again = [self._with_live_memcgs(c) for c in planned]
                if (exited, again) == (self._gone_pids, written) or attempt + 1 == _APPLY_ATTEMPTS:
                    raise
                self._gone_pids, written = exited, again
        self._sync_traces()

    def _exited(self, contexts: Sequence[KdamondContext]) -> frozenset[int]:
        """The planned vaddr pids whose process is gone; none of a context that would be
        left with no process (the kernel's refusal then stands)."""
        gone: set[int] = set()
        alive: set[int] = set()
        for context in contexts:
            if context.operations != "vaddr":
                continue
            missing = {p for p in context.pids if not (self.proc_root / str(p)).exists()}
            alive |= set(context.pids) - missing
            if len(missing) < len(set(context.pids)):
                gone |= missing
        self._seen_alive = frozenset(alive)
        if gone - self._gone_pids:
            log.info(
                "processes %s exited since they were planned: applying without them",
                sorted(gone - self._gone_pids),
            )
        return frozenset(gone)

    def _names_only_live(self, config: model.Kdamond) -> bool:
        """Whether every process and memory cgroup ``config`` names is there now: asked
        right before the kernel resolves them (``driver._check_still_valid``)."""
        for context in config.contexts:
            if context.operations == "vaddr":
                for target in context.targets:
                    pid = target.pid_target  # an obsolete one's is the writer's own
                    if pid is None or target.obsolete or pid not in self._seen_alive:
                        continue  # not seen alive: the kernel's answer stands, as planned
                    if not (self.proc_root / str(pid)).exists():
                        return False
            if self.memcg_exists is None:
                continue
            for scheme in context.schemes:
                paths = [
                    f.memcg_path
                    for f in (*scheme.filters, *scheme.core_filters, *scheme.ops_filters)
                    if f.memcg_path
                ] + [g.path for g in scheme.quotas.goals if g.path]
                if not all(self.memcg_exists(path) for path in paths):
                    return False
        return True

    def _with_live_memcgs(self, context: KdamondContext) -> KdamondContext:
        """``context`` without the memory cgroups gone since it was planned (``gone``)."""
        if self.memcg_exists is None:
            return context
        schemes = []
        for one in context.schemes:
            missing = gone.gone_memcgs(one.scheme, self.memcg_exists)
            if not missing:
                schemes.append(one)
                continue
            log.info(
                "scheme %s: memory cgroups %s are gone since it was planned: applying without them",
                one.key,
                sorted(missing),
            )
            addr = "addr" in self.capabilities.filter_types
            written = gone.without_gone_memcgs(one.scheme, missing, addr_filters=addr)
            schemes.append(replace(one, scheme=written))
        if schemes == list(context.schemes):
            return context
        return replace(context, schemes=tuple(schemes))

    def _apply(self, contexts: Sequence[KdamondContext]) -> None:
        report = self.capabilities
        # Only a kdamond started here warms up: adopted and committed ones keep the quota
        # their tuner reached.
        built = [self._build(c, report, warm=True) for c in contexts]
        adopted, self._adopted = self._adopted, []
        if not self._running and adopted and len(adopted) == len(built):
            self._running = [
                self._commit(handle, context, report)
                for handle, context in zip(adopted, contexts, strict=True)
            ]
            return
        same = [r.context.key for r in self._running] == [c.key for c in contexts]
        if same and self._running and all(self.driver.is_running(r.handle) for r in self._running):
            self._running = [
                self._commit(running.handle, context, report)
                for running, context in zip(self._running, contexts, strict=True)
            ]
            return
        if not built:
            self.stop()
            return
        # Before stopping what runs: a held DAMON leaves the previous configuration running.
        self.check_free()
        self.stop()
        try:
            handles = self.driver.start_many(
                [one.config for one in built], still_valid=self._names_only_live
            )
        except errors.SysfsBusyError as err:
            self.stop()
            # EBUSY from ``on`` says nothing of why: a module may have started meanwhile.
            found = self.find_holders()
            if found.held:
                raise found.error() from err
            raise
        except errors.KernelDamonError:
            self.stop()
            raise
        for one, handle in zip(built, handles, strict=True):
            one.handle = handle
        self._running = built

    def _commit(
        self, handle: kdriver.KdamondHandle, context: KdamondContext, report: caps.CapabilityReport
    ) -> _Running:
        """Commit ``context`` into a running kdamond, at the intervals the kernel tuned
        (writing the initial ones back would restart the tuning at every change)."""
        tuned = None
        if _tunes(context) and _tunes_with_same_goal(handle.config, context):
            tuned = self.driver.tuned_intervals(handle)
        new = self._build(
            context, report, tuned, self._aggr_period_us.get(context.key), _live_pids(handle)
        )
        self.driver.commit(handle, new.config, still_valid=self._names_only_live)
        new.handle = handle
        return new

    def follow_tuned_intervals(self) -> list[str]:
        """Keep the schemes' ages in time while an aggregation's length drifts.

        The kernel counts a scheme's age bounds in aggregations, and two things make an
        aggregation longer than the interval first written:

        - tuning: with an intervals goal the kernel retunes the intervals and rescales
          the *regions'* ages, not the schemes' bounds. An age of 30 s, written as 300
          aggregations of 100 ms, means 10 minutes once a quiet node's aggregations are
          tuned to 2 s;
        - slow sampling: since 6.7 an aggregation is a count of samples, and a kdamond
          sleeps a whole sampling interval *after* each sample's work, so a busy node's
          kdamond (or an emulated one, several times slower) stretches every aggregation,
          and every age with it (``_measure_pace``).

        So each context is read (the tuned intervals where it has a goal; its pace where
        it can be measured) and committed again when one of its age bounds moved by more
        than ``AGE_FOLLOW_TOLERANCE``. The access-count bounds keep the samples per
        aggregation, which neither drift changes. The region floor is built again too
        (``core.attrs.region_floor``: a vaddr target's mapped span grows and shrinks) and
        committed when it changed. Returns the keys committed.
        """
        followed = []
        report = self.capabilities
        for index, running in enumerate(self._running):
            tuned = self.driver.tuned_intervals(running.handle) if _tunes(running.context) else None
            # Built again even when neither drifts now: one of them may have come back.
            new = self._build(
                running.context,
                report,
                tuned,
                self._measure_pace(running),
                _live_pids(running.handle),
                warm=running.warm_until_us is not None,
            )
            if not _ages_moved(running.config, new.config) and not _floor_moved(
                running.config, new.config
            ):
                continue
            self.driver.commit(running.handle, new.config, still_valid=self._names_only_live)
            new.handle = running.handle
            new.warming, new.warm_until_us = running.warming, running.warm_until_us
            self._running[index] = new
            followed.append(running.context.key)
        return followed

    def end_warm_ups(self) -> list[str]:
        """Commit the user's quota reset intervals into the kdamonds whose warm-up
        (``warm_up``) is over: their warming schemes' effective quotas reached their warm
        size (read where the kernel shows them, 6.9), or its time is up. Returns their
        keys; reads nothing while no kdamond warms up."""
        now_us = self.clock.now_us()
        report = self.capabilities
        shown = report.has("effective_quotas")
        ended = []
        for index, running in enumerate(self._running):
            warming, until_us = running.warming, running.warm_until_us
            if warming is None or until_us is None:
                continue
            if now_us < until_us and not (
                shown and warming.done(self.driver.effective_quotas(running.handle))
            ):
                continue
            # The same context committed as a plan change would be: the user's quotas.
            self._running[index] = self._commit(running.handle, running.context, report)
            ended.append(running.context.key)
        return ended

    def _measure_pace(self, running: _Running) -> int | None:
        """How long one of the context's aggregations really takes (us), when measurably
        longer than written (by ``PACE_TOLERANCE``); else None.

        Measured where a paddr context's snapshot scheme tries every region: that scheme
        is applied once per aggregation, so its ``sz_tried`` grows by the monitored size
        at each. Aggregations passed = growth / size, counted over a window of at least
        ``PACE_MIN_AGGREGATIONS``. vaddr targets change size as processes map memory, so
        their contexts are not measured (their ages follow the tuning only).
        """
        key = running.context.key
        if running.tiling is None or not running.snapshot_schemes:
            return None
        size = sum(end - start for start, end in running.tiling)
        stats = self.driver.schemes_stats(running.handle)
        tried = stats[running.snapshot_schemes[0]].sz_tried
        now_us = self.clock.now_us()
        mark = _PaceMark(running.handle.pid, now_us, tried)
        last = self._pace.get(key)
        if last is None or last.kdamond_pid != mark.kdamond_pid or tried < last.sz_tried:
            self._pace[key] = mark  # a new kdamond (or its counters): a new window
            return self._aggr_period_us.get(key)
        aggregations = (tried - last.sz_tried) / size if size else 0.0
        if aggregations < PACE_MIN_AGGREGATIONS:
            return self._aggr_period_us.get(key)  # the window goes on
        self._pace[key] = mark
        period_us = (now_us - last.time_us) / aggregations
        written_us = running.config.contexts[0].monitoring_attrs.intervals.aggr_us
        if period_us > written_us * (1 + PACE_TOLERANCE):
            self._aggr_period_us[key] = int(period_us)
        else:
            self._aggr_period_us.pop(key, None)
        return self._aggr_period_us.get(key)

    def find_holders(self) -> holders.Holders:
        """Who else holds the node's DAMON now (only reads)."""
        self._quiet_idle_traces()
        return holders.detect(self.driver.fs, self.driver.ownership, self.module_root)

    def check_free(self) -> None:
        """Raise ``DamonHeldError`` when a module or a foreign kdamond holds DAMON."""
        found = self.find_holders()
        if found.held:
            raise found.error()

    def _build(
        self,
        context: KdamondContext,
        report: caps.CapabilityReport,
        tuned: model.TunedIntervals | None = None,
        aggr_period_us: int | None = None,
        running_pids: Sequence[int] | None = None,
        *,
        warm: bool = False,
    ) -> _Running:
        """``context`` as a kdamond configuration; at the kernel's ``tuned`` intervals
        when given, with ages counted in aggregations of ``aggr_period_us`` when that is
        longer (``follow_tuned_intervals`` says why). ``running_pids``: the vaddr targets
        the kdamond runs now, in its order, when this is a commit (``_target_layout``).
        ``warm``: the goal-tuned quotas as a new kdamond starts them (``warm_up``)."""
        if tuned is not None:
            context = replace(
                context,
                monitoring=replace(
                    context.monitoring, sample_us=tuned.sample_us, aggr_us=tuned.aggr_us
                ),
            )
        if aggr_period_us is not None and aggr_period_us <= context.monitoring.aggr_us:
            aggr_period_us = None
        operations = context.operations
        report.require_operations(operations)
        allow = report.has("filter_allow")
        planned = [s.scheme for s in context.schemes]
        planner_index: tuple[int, ...] = ()
        if operations == "vaddr":
            if not context.pids:
                raise errors.ConfigError(f"context {context.key}.pids", "vaddr needs pids")
            monitored = 0  # read only where a region size bound needs it (below)
            if context.monitoring.max_region_bytes is not None:
                monitored = sum(vaddr_span(pid, self.proc_root) for pid in context.pids)
            targets, planner_index = _target_layout(
                context.pids,
                running_pids,
                obsolete=report.has("obsolete_target"),
                placeholder_pid=os.getpid(),
                gone=self._gone_pids,
            )
            addr = "addr" in report.filter_types
            planned = [_with_target_indexes(one, planner_index, addr) for one in planned]
        else:
            ranges = context.ranges or tuple(iomem.largest_ram_ranges(self.proc_root))
            targets = (model.Target(regions=tuple(model.Region(s, e) for s, e in ranges)),)
            monitored = sum(end - start for start, end in ranges)
        # The kernel bounds a region's size only through the region count: the floor
        # follows the monitored size (core.attrs.region_floor; followed every
        # FOLLOW_INTERVALS_PERIOD_S as vaddr targets grow and shrink).
        floor = core_attrs.region_floor(context.monitoring, monitored)
        split = report.has("core_ops_filters")
        user_schemes = [
            from_scheme.scheme(
                one,
                context.monitoring,
                split_filters=split,
                where=f"schemes[{i}]",
                aggr_period_us=aggr_period_us,
            )
            for i, one in enumerate(planned)
        ]
        snapshot_indexes: list[int] = []
        extra: list[model.Scheme] = []
        if context.snapshot:
            match_all = model.Scheme(action="stat")
            if len(targets) == 1 and match_all in user_schemes:
                # A user's plain stat scheme already tries every region: reuse it rather
                # than have the kernel fill the same tried regions twice a snapshot.
                snapshot_indexes = [user_schemes.index(match_all)]
            else:
                live = sum(1 for target in targets if not target.obsolete)
                extra = _snapshot_schemes(live, split, allow=allow)
                snapshot_indexes = list(range(len(planned), len(planned) + len(extra)))
        warming, warm_until_us = None, None
        if warm:
            warming = warm_up.warm_up(user_schemes, context.monitoring.aggr_us)
            if warming.duration_us:
                user_schemes = list(warming.schemes)
                warm_until_us = self.clock.now_us() + warming.duration_us
            else:
                warming = None
        ctx = model.Context(
            operations=operations,
            monitoring_attrs=from_scheme.monitoring_attrs(
                replace(context.monitoring, min_nr_regions=floor)
            ),
            targets=targets,
            schemes=tuple(user_schemes) + tuple(extra),
        )
        config = model.Kdamond(contexts=(ctx,))
        model.validate(config)
        report.check(config)
        tiling = None
        if operations == "paddr" and snapshot_indexes:
            tiling = [(r.start, r.end) for r in targets[0].regions]
        return _Running(
            context=context,
            config=config,
            handle=kdriver.KdamondHandle(index=-1, pid=-1, config=config),
            nr_user_schemes=len(planned),
            snapshot_schemes=snapshot_indexes,
            tiling=tiling,
            planner_index=planner_index,
            warming=warming,
            warm_until_us=warm_until_us,
        )

    # ---- observe ------------------------------------------------------------------------

    def status(self) -> list[ContextStatus]:
        return [
            ContextStatus(
                key=r.context.key,
                index=r.handle.index,
                pid=r.handle.pid,
                operations=r.config.contexts[0].operations,
            )
            for r in self._running
        ]

    def snapshots(self) -> dict[str, snaps.Snapshot]:
        """The current regions of every context with a snapshot scheme, by context key."""
        result = {}
        for running in self._running:
            if running.snapshot_schemes:
                result[running.context.key] = self._snapshot(running)
        return result

    def snapshot_of(self, key: str) -> snaps.Snapshot | None:
        """The current regions of one context (None when it does not run or has none)."""
        for running in self._running:
            if running.context.key == key and running.snapshot_schemes:
                return self._snapshot(running)
        return None

    def _snapshot(self, running: _Running) -> snaps.Snapshot:
        intervals = running.config.contexts[0].monitoring_attrs.intervals
        sample_us, aggr_us = intervals.sample_us, intervals.aggr_us
        if intervals.intervals_goal is not None and intervals.intervals_goal.access_bp:
            tuned = self.driver.tuned_intervals(running.handle)
            sample_us, aggr_us = tuned.sample_us, tuned.aggr_us
        # A kdamond emits an aggregation every aggr_us: an older one means it stalled.
        max_age_s = 2 * aggr_us / 1e6 + 1.0
        trace = self._polled_trace(running, aggr_us, max_age_s)
        targets = []
        for kernel_id, scheme in enumerate(running.snapshot_schemes):
            traced = None if trace is None else trace.latest(kernel_id, max_age_s=max_age_s)
            if traced is not None:
                columns = tracing.scaled(traced.columns, running.handle.addr_unit)
            else:
                columns = self.driver.tried_region_columns(
                    running.handle, scheme, tiling=running.tiling
                )
            targets.append(
                snaps.TargetSnapshot(
                    # The planner's index: the kernel's order may differ (``_target_layout``).
                    target_id=(
                        running.planner_index[kernel_id] if running.planner_index else kernel_id
                    ),
                    start=np.array(columns.start, dtype=np.int64),
                    end=np.array(columns.end, dtype=np.int64),
                    nr_accesses=np.array(columns.nr_accesses, dtype=np.int64),
                    age=np.array(columns.age, dtype=np.int64),
                )
            )
        return snaps.Snapshot(
            time_us=self.clock.now_us(),
            sample_us=sample_us,
            aggr_us=aggr_us,
            targets=tuple(sorted(targets, key=lambda t: t.target_id)),
        )

    def stats(self) -> dict[str, scheme_stats.SchemeCounters]:
        """Cumulative stats of the user's schemes, by scheme key (copies summed)."""
        self._quiet_idle_traces()
        result: dict[str, scheme_stats.SchemeCounters] = {}
        for running in self._running:
            stats = self.driver.schemes_stats(running.handle)
            for scheme, one in zip(running.context.schemes, stats, strict=False):
                before = result.get(scheme.key)
                result[scheme.key] = one if before is None else before + one
        return result

    def tried_regions(self, scheme_key: str) -> model.TriedRegions:
        """Tried regions of one user scheme, with each region's filter-passed bytes."""
        for running in self._running:
            indexes = [i for i, s in enumerate(running.context.schemes) if s.key == scheme_key]
            if indexes:
                tried = self.driver.tried_regions(running.handle, with_filter_passed=True)
                return _merged([tried[i] for i in indexes])
        raise errors.ConfigError("scheme_key", f"no running scheme {scheme_key!r}")

    def tuning(self) -> dict[str, reading.QuotaTuning]:
        """Quota state of the user's schemes that have a quota, by scheme key.

        ``effective_bytes`` None: no size limit (the kernel's ``ULONG_MAX``), or a kernel
        before 6.9, which does not show it.
        """
        self._quiet_idle_traces()
        with_effective = self.capabilities.has("effective_quotas")
        result: dict[str, reading.QuotaTuning] = {}
        for running in self._running:
            limited = [
                s.scheme.quota is not None and s.scheme.quota.limits
                for s in running.context.schemes
            ]
            if not any(limited):
                continue
            readings = self.driver.quota_tunings(running.handle, with_effective=with_effective)
            for scheme, one, has_limits in zip(
                running.context.schemes, readings, limited, strict=False
            ):
                if not has_limits:
                    continue
                effective = one.effective_bytes
                if effective is not None and effective >= _NO_LIMIT:
                    effective = None
                before = result.get(scheme.key)
                if before is None:
                    result[scheme.key] = reading.QuotaTuning(effective, one.goals)
                    continue
                summed = (
                    None
                    if before.effective_bytes is None or effective is None
                    else before.effective_bytes + effective
                )
                result[scheme.key] = reading.QuotaTuning(summed, before.goals)
        return result

    def feed_goals(self, inputs: Mapping[str, Mapping[int, int]]) -> None:
        """Set ``current_value`` of user_input goals: scheme key -> goal index -> value."""
        self._quiet_idle_traces()
        for running in self._running:
            values = {}
            for s_index, scheme in enumerate(running.context.schemes):
                for g_index, value in inputs.get(scheme.key, {}).items():
                    values[(s_index, g_index)] = value
            if values:
                self.driver.commit_quota_goals(running.handle, values)

    def kdamond_pids(self) -> dict[str, int]:
        return {r.context.key: r.handle.pid for r in self._running}

    def paddr_ranges(self) -> dict[str, list[tuple[int, int]]]:
        """The physical ranges each running paddr context monitors, by context key."""
        return {
            r.context.key: [(g.start, g.end) for g in r.config.contexts[0].targets[0].regions]
            for r in self._running
            if r.config.contexts[0].operations == "paddr"
        }

    @property
    def active_snapshot_source(self) -> Literal["sysfs", "tracefs"]:
        """Where snapshots come from now (``auto`` resolved; sysfs before any trace)."""
        return "tracefs" if self._traces else "sysfs"

    # ---- tracefs snapshots --------------------------------------------------------------

    def _sync_traces(self) -> None:
        """One trace instance per running kdamond with snapshot schemes (module docstring)."""
        if self.snapshot_source == "sysfs" or self._tracefs_unusable:
            return
        wanted: dict[str, _TraceShape] = {}
        for running in self._running:
            if running.snapshot_schemes:
                attrs = running.config.contexts[0].monitoring_attrs
                wanted[running.context.key] = _TraceShape(
                    kdamond_pid=running.handle.pid,
                    max_regions=attrs.nr_regions.max,
                    nr_targets=len(running.snapshot_schemes),
                )
        try:
            for key, (shape, trace) in list(self._traces.items()):
                if wanted.get(key) != shape:
                    del self._traces[key]
                    trace.close()
            tracefs = self._open_tracefs()
            for key, shape in wanted.items():
                if key not in self._traces:
                    trace = tracing.KdamondTrace(
                        tracefs,
                        shape.kdamond_pid,
                        max_regions=shape.max_regions,
                        nr_targets=shape.nr_targets,
                        enabled=False,  # until a snapshot is asked for
                    )
                    self._traces[key] = (shape, trace)
                    log.info("snapshots of %s from tracefs (%s)", key, trace.directory)
        except errors.TracefsError as err:
            self._give_up_tracing(err, stop=True)

    def _open_tracefs(self) -> tracing.Tracefs:
        if self._tracefs is None:
            mount_dir = self.tracefs_mount_dir or (
                Path(tempfile.gettempdir()) / f"damon-k8s-tracefs-{os.getpid()}"
            )
            tracefs = self.tracefs or tracing.Tracefs.find(
                mount_dir, candidates=self.tracefs_candidates
            )
            try:
                tracefs.check_events()
                removed = tracefs.remove_stale_instances()
            except errors.TracefsError:
                tracefs.close()
                raise
            if removed:
                log.info("removed trace instances of dead agents: %s", ", ".join(removed))
            self._tracefs = tracefs
        return self._tracefs

    def trace_instances(self) -> dict[str, tracing.KdamondTrace]:
        """The trace of each context served from tracefs now, by context key."""
        return {key: trace for key, (_, trace) in self._traces.items()}

    def _polled_trace(
        self, running: _Running, aggr_us: int, max_age_s: float
    ) -> tracing.KdamondTrace | None:
        """The context's trace, read up to now; switched on first (and its kdamond's
        next aggregation awaited) when no snapshot was asked for lately."""
        key = running.context.key
        found = self._traces.get(key)
        if found is None or self.snapshot_source == "sysfs":
            return None
        trace = found[1]
        self._trace_asked_us[key] = self.clock.now_us()
        try:
            if trace.enabled:
                trace.poll()
                return trace
            trace.set_enabled(True)
            log.debug("trace of %s on: a snapshot was asked for", key)
            # Sleeping, not spinning: a few polls an aggregation interval.
            step_us = min(100_000, max(10_000, aggr_us // 4))
            waited_us, limit_us = 0, round(max_age_s * 1e6)
            targets = range(len(running.snapshot_schemes))
            while waited_us < limit_us:
                self.clock.sleep_us(step_us)
                waited_us += step_us
                trace.poll()
                if all(trace.latest(t) is not None for t in targets):
                    break
        except errors.TracefsError as err:
            self._give_up_tracing(err, stop=False)
            return None
        return trace

    def _quiet_idle_traces(self) -> None:
        """Switch off the trace events nobody asked a snapshot of in ``trace_idle_s``."""
        now_us = self.clock.now_us()
        for key, (_, trace) in list(self._traces.items()):
            asked_us = self._trace_asked_us.get(key)
            idle = asked_us is None or now_us - asked_us > self.trace_idle_s * 1e6
            if trace.enabled and idle:
                try:
                    trace.set_enabled(False)
                except errors.TracefsError as err:
                    self._give_up_tracing(err, stop=False)
                    return
                log.debug("trace of %s off: no snapshot asked for in %gs", key, self.trace_idle_s)

    def _give_up_tracing(self, err: errors.TracefsError, *, stop: bool) -> None:
        """``tracefs``: raise (after stopping the kdamonds when ``apply`` set the trace
        up; a failed read leaves them running and the next ``apply`` sets it up again);
        ``auto``: sysfs from now on."""
        with contextlib.suppress(errors.TracefsError):  # err says what went wrong first
            self._close_traces()
        if self.snapshot_source == "tracefs":
            if stop:
                self.stop()
            raise err
        self._tracefs_unusable = str(err)
        log.warning("snapshots from sysfs: tracefs cannot serve them: %s", err)

    def _close_traces(self) -> None:
        traces, self._traces = self._traces, {}
        self._trace_asked_us.clear()
        failures = []
        for _, trace in traces.values():
            try:
                trace.close()
            except errors.TracefsError as err:
                failures.append(err)
        if self._tracefs is not None:
            self._tracefs.close()
            self._tracefs = None
        if failures:
            raise failures[0]

    # ---- stop ---------------------------------------------------------------------------

    def release(self) -> bool:
        """Let go of the running kdamonds without turning them off; whether any runs.

        They stay recorded as ours in the state directory, so the next agent on this boot
        adopts them (``recover``). The trace instances are removed: the next agent makes
        its own when it is asked for snapshots.
        """
        running = [r.handle for r in self._running] + self._adopted
        self._running, self._adopted = [], []
        self._close_traces()
        return any(self.driver.is_running(handle) for handle in running)

    def stop(self) -> None:
        """Turn off every kdamond its driver owns (and remove them when alone),
        and remove its trace instances."""
        self._running = []
        try:
            self._close_traces()
        finally:
            self.driver.stop_all()


def _live_pids(handle: kdriver.KdamondHandle) -> tuple[int, ...] | None:
    """The vaddr targets ``handle``'s kdamond runs, in its order (None: not vaddr)."""
    contexts = handle.config.contexts
    if not contexts:
        return handle.adopted_pids  # as a previous agent staged them
    if contexts[0].operations != "vaddr":
        return None
    return tuple(
        t.pid_target for t in contexts[0].targets if t.pid_target is not None and not t.obsolete
    )


def _target_layout(
    pids: Sequence[int],
    running: Sequence[int] | None,
    *,
    obsolete: bool,
    placeholder_pid: int,
    gone: frozenset[int] = frozenset(),
) -> tuple[tuple[model.Target, ...], tuple[int, ...]]:
    """The vaddr targets to write, and for each target the kernel will run (in its
    order) the index of its pid in ``pids``. The ``gone`` pids (processes that exited
    since the plan) are not written; the indexes still count them.

    A commit matches staged targets to running ones by index, and a running target keeps
    its regions (their access counts and ages) whatever pid it is given. So a pid written
    at another index than it runs at inherits another process's regions: the pids the
    kdamond runs keep their order, and new ones go after them. A gone pid before the last
    one shifts those after it, unless the kernel has ``obsolete_target`` (6.19): then it
    is written where it runs, marked obsolete, and the commit removes it alone. Without
    it, the shift is the kernel's (those pids inherit their predecessors' regions until
    DAMON's next access checks tell them apart).

    An obsolete target is written with ``placeholder_pid`` (a live process: the writer),
    not its own: the kernel resolves every staged pid, an obsolete one's too, and refuses
    the commit (EINVAL) when its process is gone, which is why it is obsolete.
    """
    index_of = {pid: i for i, pid in enumerate(pids) if pid not in gone}
    if running is None:
        return tuple(model.Target(pid_target=pid) for pid in index_of), tuple(index_of.values())
    running_set = set(running)
    kept = [pid for pid in running if pid in index_of]
    new = [pid for pid in index_of if pid not in running_set]
    live = kept + new
    if obsolete and len(kept) < len(running):
        written = [
            model.Target(pid_target=pid)
            if pid in index_of
            else model.Target(pid_target=placeholder_pid, obsolete=True)
            for pid in running
        ]
        written += [model.Target(pid_target=pid) for pid in new]
    else:
        written = [model.Target(pid_target=pid) for pid in live]
    return tuple(written), tuple(index_of[pid] for pid in live)


def _with_target_indexes(
    scheme: schemes_model.Scheme, planner_index: Sequence[int], addr_filters: bool
) -> schemes_model.Scheme:
    """``scheme`` with its target filters' indexes moved from the planner's order to the
    kernel's (``planner_index[kernel index]`` is the planner's). A filter on a target that
    is not written (its process is gone) selects nothing and is left out; a scheme that
    loses its last allow filter so is made inert rather than run on every target
    (``gone.inert``)."""
    if not any(f.target_index is not None for f in scheme.filters):
        return scheme
    kernel_index = {planner: kernel for kernel, planner in enumerate(planner_index)}
    kept = tuple(
        f if f.target_index is None else replace(f, target_index=kernel_index[f.target_index])
        for f in scheme.filters
        if f.target_index is None or f.target_index in kernel_index
    )
    if any(f.allow for f in scheme.filters) and not any(f.allow for f in kept):
        return gone.inert(scheme, addr_filters=addr_filters)
    return replace(scheme, filters=kept)


def _snapshot_schemes(nr_targets: int, split_filters: bool, *, allow: bool) -> list[model.Scheme]:
    if nr_targets == 1:
        return [model.Scheme(action="stat")]
    result = []
    for index in range(nr_targets):
        if allow:
            only: tuple[model.Filter, ...] = (
                model.Filter(type="target", matching=True, allow=True, damon_target_idx=index),
            )
        else:
            only = tuple(
                model.Filter(type="target", matching=True, allow=False, damon_target_idx=other)
                for other in range(nr_targets)
                if other != index
            )
        if split_filters:
            result.append(model.Scheme(action="stat", core_filters=only))
        else:
            result.append(model.Scheme(action="stat", filters=only))
    return result


def _merged(copies: Sequence[model.TriedRegions]) -> model.TriedRegions:
    """One scheme's tried regions from its copies' (each region once, passed bytes summed)."""
    if len(copies) == 1:
        return copies[0]
    by_range: dict[tuple[int, int], model.TriedRegion] = {}
    for tried in copies:
        for region in tried.regions:
            key = (region.start, region.end)
            seen = by_range.get(key)
            by_range[key] = (
                region
                if seen is None
                else replace(seen, sz_filter_passed=seen.sz_filter_passed + region.sz_filter_passed)
            )
    regions = tuple(by_range[key] for key in sorted(by_range))
    return model.TriedRegions(total_bytes=sum(r.end - r.start for r in regions), regions=regions)


# An aggregation measured this much longer than written counts as stretched. Below it:
# the sample's own work, timer slack, and the bursts of a kdamond busy applying an action
# (seen in the 6.12 guest: 1.2-1.4 times for a few seconds while it migrated 300 MiB).
# Each of those would cost a commit to follow and another to come back.
PACE_TOLERANCE = 0.5
# Aggregations a pace measurement spans at least (fewer: the window's edges and short
# bursts dominate).
PACE_MIN_AGGREGATIONS = 50


@dataclass(frozen=True)
class _PaceMark:
    """Where a context's aggregations were counted: its kdamond, when, and the growing
    ``sz_tried`` of the scheme that tries every region once per aggregation."""

    kdamond_pid: int
    time_us: int
    sz_tried: int


# An age bound that moved by more than this share is committed again (a tenth: finer would
# commit at most tuning steps, and the bounds are rules of thumb, not exact times).
AGE_FOLLOW_TOLERANCE = 0.1


def _tunes(context: KdamondContext) -> bool:
    goal = context.monitoring.intervals_goal
    return goal is not None and goal.access_bp > 0


def _tunes_with_same_goal(running: model.Kdamond, context: KdamondContext) -> bool:
    """Whether the running kdamond tunes toward the goal ``context`` asks for (another
    goal, or none before, starts from the context's own intervals)."""
    if not running.contexts:
        return False
    return running.contexts[0].monitoring_attrs.intervals.intervals_goal == (
        from_scheme.monitoring_attrs(context.monitoring).intervals.intervals_goal
    )


def _floor_moved(running: model.Kdamond, new: model.Kdamond) -> bool:
    """Whether the region floor (``core.attrs.region_floor``) changed with the monitored size."""
    old_range = running.contexts[0].monitoring_attrs.nr_regions
    return new.contexts[0].monitoring_attrs.nr_regions.min != old_range.min


def vaddr_span(pid: int, proc_root: Path) -> int:
    """The bytes the kernel's vaddr operations monitor in ``pid``: its mappings' span but
    the two biggest gaps (``vaddr_layout.leave_out_two_biggest_gaps``); 0 when gone."""
    try:
        mappings = procfs.read_maps(pid, proc_root)
    except procfs_errors.UserspaceOpsError as error:
        log.debug("the size of pid %d is not known: %s", pid, error)
        return 0
    ranges = vaddr_layout.leave_out_two_biggest_gaps([(m.start, m.end) for m in mappings])
    return sum(end - start for start, end in ranges)


def _ages_moved(running: model.Kdamond, new: model.Kdamond) -> bool:
    """Whether an age bound of a scheme differs by more than ``AGE_FOLLOW_TOLERANCE``."""
    for old_scheme, new_scheme in zip(
        running.contexts[0].schemes, new.contexts[0].schemes, strict=True
    ):
        old_age, new_age = old_scheme.access_pattern.age, new_scheme.access_pattern.age
        for before, after in ((old_age.min, new_age.min), (old_age.max, new_age.max)):
            if before == after:
                continue
            if model.ULONG_MAX in (before, after):
                return True
            if abs(after - before) > AGE_FOLLOW_TOLERANCE * max(before, 1):
                return True
    return False
