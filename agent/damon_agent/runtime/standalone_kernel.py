"""``damon-agent run --backend kernel``: the host kernel's DAMON over physical memory.

One kdamond (paddr over the largest "System RAM" ranges of /proc/iomem) runs the scheme
file's schemes plus the engine's snapshot scheme. Every ``period`` (1 s, or the
aggregation interval when longer) the loop reads a snapshot (tried regions), the schemes'
stats and, with ``--pid``/``--cgroup``, the target's footprints (rss and vsz summed over
its processes, and the system's used memory), and appends them to the recording.

Shutdown is the point of the structure: the kdamond is turned off and removed on every
way out (the duration elapsed, Ctrl-C, SIGTERM, an error), because a kdamond left running
keeps sampling the host after the tool is gone. SIGTERM is turned into the same path as
Ctrl-C. A run killed with SIGKILL leaves its kdamond recorded in the state directory; the
next run cleans it before starting (``KdamondDriver.recover``).

When someone else holds the host's DAMON (a DAMON module such as DAMON_STAT, which runs
exclusively, or kdamonds another tool made: ``ops.kernel.holders``), nothing is started
and one line on stderr names the holder and what frees it; the exit status is 1. The
runner never touches the holder.

Progress goes to stderr, the final summary to stdout (this is the CLI's runner; the
library modules below it never print).
"""

from __future__ import annotations

import os
import platform
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

from damon_agent.api import schemes as api
from damon_agent.core import snapshots
from damon_agent.node import cgroups, meminfo, procfs
from damon_agent.node import errors as node_errors
from damon_agent.ops.kernel import engine as kernel_engine
from damon_agent.ops.kernel import errors as kernel_errors
from damon_agent.ops.kernel import iomem
from damon_agent.reports import access, recording
from damon_agent.reports import errors as report_errors
from damon_agent.reports import schemes as scheme_report

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_INTERRUPTED: Final = 130

STATE_DIR_ENV: Final = "DAMON_AGENT_STATE_DIR"
DEFAULT_STATE_DIR: Final = Path("/run/damon-k8s/standalone-kernel")
CONTEXT_KEY: Final = "host"
MIN_PERIOD_US: Final = 1_000_000


class _TerminatedError(Exception):
    """SIGTERM arrived."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _TerminatedError()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_kernel(  # noqa: PLR0917 (the CLI's agreed signature)
    scheme_path: Path | None,
    duration_us: int,
    record: Path | None,
    pid: int | None,
    cgroup: Path | None,
    progress: bool,
    *,
    snapshot_source: kernel_engine.SnapshotSource = "sysfs",
) -> int:
    """Monitor the host for ``duration_us``; return the process exit code."""
    return _run(
        scheme_path,
        duration_us,
        record,
        pid,
        cgroup,
        progress=sys.stderr if progress else None,
        out=sys.stdout,
        err=sys.stderr,
        snapshot_source=snapshot_source,
    )


def _run(
    scheme_path: Path | None,
    duration_us: int,
    record: Path | None,
    pid: int | None,
    cgroup: Path | None,
    *,
    progress: TextIO | None,
    out: TextIO,
    err: TextIO,
    state_dir: Path | None = None,
    snapshot_source: kernel_engine.SnapshotSource = "sysfs",
) -> int:
    try:
        scheme_file = (
            api.load_scheme_file(scheme_path) if scheme_path is not None else api.SchemeFile()
        )
        footprint_pids = _footprint_source(pid, cgroup)
        ranges = tuple(iomem.largest_ram_ranges())
    except (api.SchemeFileError, kernel_errors.ConfigError, node_errors.NodeError) as error:
        err.write(f"damon-agent: {error}\n")
        return EXIT_BAD_INPUT
    directory = state_dir or Path(os.environ.get(STATE_DIR_ENV, str(DEFAULT_STATE_DIR)))
    engine = kernel_engine.KernelEngine.on_host(directory, snapshot_source=snapshot_source)
    context = kernel_engine.EngineContext(
        key=CONTEXT_KEY,
        monitoring=scheme_file.monitoring,
        schemes=tuple(kernel_engine.EngineScheme(s.name, s) for s in scheme_file.schemes),
        operations="paddr",
        ranges=ranges,
    )
    started = False
    status = EXIT_OK
    last: snapshots.Snapshot | None = None
    stats_rows: list[dict[str, object]] = []
    start_us = end_us = 0
    nr_snapshots = 0
    try:
        with _sigterm_raises():
            recovered = engine.driver.recover(adopt=False)
            if recovered.cleaned and progress is not None:
                progress.write(f"cleaned kdamonds {recovered.cleaned} left by an earlier run\n")
            _ = engine.capabilities  # probe before starting: it needs an empty kdamond list
            engine.apply([context])
            started = True
            start_us = engine.clock.now_us()
            meta: dict[str, object] = {
                "backend": "kernel",
                "kernel_release": platform.release(),
                "operations": "paddr",
                "ranges": [list(r) for r in ranges],
                "start_us": start_us,
                "kdamond_pid": engine.kdamond_pids().get(CONTEXT_KEY, -1),
                "scheme_file": str(scheme_path) if scheme_path else None,
                "pid": pid,
                "cgroup": str(cgroup) if cgroup else None,
            }
            if progress is not None:
                total = sum(e - s for s, e in ranges)
                progress.write(
                    f"monitoring {_gib(total)} of physical memory with kdamond pid "
                    f"{meta['kdamond_pid']} for {duration_us / 1e6:g} s\n"
                )
            writer = recording.RecordingWriter(record, meta) if record is not None else None
            try:
                period_us = max(MIN_PERIOD_US, scheme_file.monitoring.intervals.aggregation_us)
                deadline = start_us + duration_us
                next_us = start_us + period_us
                while True:
                    now = engine.clock.now_us()
                    if now >= deadline:
                        break
                    engine.clock.sleep_us(min(next_us, deadline) - now)
                    next_us += period_us
                    last = engine.snapshots()[CONTEXT_KEY]
                    end_us = last.time_us
                    nr_snapshots += 1
                    stats_rows = _stats_rows(engine, scheme_file)
                    if writer is not None:
                        writer.snapshot(last)
                        if stats_rows:
                            writer.scheme_stats(last.time_us, stats_rows)
                        if footprint_pids is not None:
                            writer.footprint(last.time_us, _footprint(footprint_pids()))
                    if progress is not None:
                        progress.write(_progress_line(last, start_us) + "\n")
            finally:
                if writer is not None:
                    writer.close()
    except (KeyboardInterrupt, _TerminatedError):
        err.write("damon-agent: interrupted; turning the kdamond off\n")
        status = EXIT_INTERRUPTED
    except kernel_errors.StateDirError as error:
        err.write(f"damon-agent: {error}\n")
        status = EXIT_BAD_INPUT
    except kernel_errors.DamonHeldError as error:
        # One line naming the holder and its remedy, in place of the kernel's bare EBUSY.
        err.write(f"damon-agent: {error}\n")
        status = EXIT_FAILURE
    except kernel_errors.KernelDamonError as error:
        err.write(f"damon-agent: kernel DAMON: {type(error).__name__}: {error}\n")
        status = EXIT_FAILURE
    except (report_errors.ReportError, node_errors.NodeError) as error:
        err.write(f"damon-agent: {error}\n")
        status = EXIT_FAILURE
    finally:
        try:
            engine.stop()
        except kernel_errors.KernelDamonError as error:
            err.write(f"damon-agent: could not turn the kdamond off: {error}\n")
            status = status or EXIT_FAILURE
    if started:
        _summary(
            out,
            last=last,
            stats_rows=stats_rows,
            start_us=start_us,
            end_us=end_us,
            nr_snapshots=nr_snapshots,
            record=record,
        )
    return status


def _stats_rows(
    engine: kernel_engine.KernelEngine, scheme_file: api.SchemeFile
) -> list[dict[str, object]]:
    if not scheme_file.schemes:
        return []
    stats = engine.stats()
    rows: list[dict[str, object]] = []
    for spec in scheme_file.schemes:
        one = stats.get(spec.name)
        if one is not None:
            rows.append({"name": spec.name, "action": spec.action, **vars(one)})
    return rows


def _footprint_source(pid: int | None, cgroup: Path | None) -> _PidSource | None:
    if pid is not None:
        procfs.read_status(pid)  # fails now, naming the pid, if there is no such process
        return _PidSource((pid,), None)
    if cgroup is not None:
        source = _PidSource((), cgroup)
        source()
        return source
    return None


class _PidSource:
    """The processes whose footprints are recorded: a fixed pid, or a cgroup's members."""

    def __init__(self, pids: tuple[int, ...], cgroup: Path | None) -> None:
        self._pids = pids
        self._cgroup = cgroup

    def __call__(self) -> tuple[int, ...]:
        if self._cgroup is None:
            return self._pids
        if self._cgroup.is_dir():
            return _procs_below(self._cgroup)
        return cgroups.pids(cgroups.discover(), str(self._cgroup))


def _procs_below(directory: Path) -> tuple[int, ...]:
    found: set[int] = set()
    for procs in directory.rglob("cgroup.procs"):
        try:
            found.update(int(line) for line in procs.read_text().split())
        except OSError:
            continue  # a child cgroup removed meanwhile
    return tuple(sorted(found))


def _footprint(pids: tuple[int, ...]) -> dict[str, int]:
    summed = procfs.footprints_of(pids)
    info = meminfo.read_meminfo()
    used = info.get("MemTotal") - info.get("MemAvailable")
    return {"rss": summed.rss_bytes, "vsz": summed.vsz_bytes, "sys_used": max(0, used)}


def _progress_line(snap: snapshots.Snapshot, start_us: int) -> str:
    target = snap.targets[0] if snap.targets else None
    if target is None or not len(target):
        return f"[{(snap.time_us - start_us) / 1e6:6.1f}s] no regions yet"
    accessed = int(target.sizes[target.nr_accesses > 0].sum())
    return (
        f"[{(snap.time_us - start_us) / 1e6:6.1f}s] {len(target)} regions, "
        f"{_gib(accessed)} accessed in the last aggregation"
    )


def _summary(
    out: TextIO,
    *,
    last: snapshots.Snapshot | None,
    stats_rows: list[dict[str, object]],
    start_us: int,
    end_us: int,
    nr_snapshots: int,
    record: Path | None,
) -> None:
    if last is None:
        out.write("no snapshot was taken (the run ended within its first second)\n")
    else:
        out.write(access.render(last, start_us=start_us) + "\n")
    if stats_rows:
        out.write("\n" + scheme_report.render([(end_us, stats_rows)], start_us=start_us) + "\n")
    if record is not None:
        out.write(
            f"\nrecorded {nr_snapshots} snapshots to {record}; render with "
            f"`damonctl report access|wss|heatmap --input {record}`\n"
        )


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"
