"""``damon-agent``: run monitoring standalone on one machine, or start the node daemon.

``run`` is the daemon without Kubernetes (``runtime.standalone``): the scheme file is
planned for this node and applied to the backend the daemon would pick
(``runtime.backends``), over the whole node or a ``--pid``/``--cgroup``; with
``--workload`` it runs on the sim backend, in virtual time. ``daemon`` hands its
arguments to the Kubernetes node agent (``cli.daemon.main``), imported only then (it
pulls in the Kubernetes client). ``probe`` lists what the running kernel's DAMON offers.

This module owns all terminal I/O and exit codes of ``run``: the progress display (a bar
on a TTY, a line every few seconds otherwise, nothing with ``--quiet``) and the final
report, both built from data the run loop returns. It stops the backend on every way
out (the duration elapsed, Ctrl-C, SIGTERM, an error), so no kdamond is left running.
Errors in the user's files (workload, scheme) or options, and schemes the node cannot
carry out, print one line naming the field and exit 2, never a traceback; a backend
that fails (DAMON held by someone else, a kernel error) exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import pathlib
import platform
import signal
import sys
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TextIO

import damon_agent
from damon_agent.api import schemes as api_schemes
from damon_agent.api import units as api_units
from damon_agent.cli import damonctl
from damon_agent.core import errors as core_errors
from damon_agent.core import snapshots
from damon_agent.ops import workloads
from damon_agent.ops.kernel import capabilities as kernel_capabilities
from damon_agent.ops.kernel import errors as kernel_errors
from damon_agent.ops.kernel import sysfs as kernel_sysfs
from damon_agent.reports import access, errors, schemes, units
from damon_agent.reports import capabilities as capability_report
from damon_agent.runtime import backend, backends, feedback, observing, planning, standalone
from damon_agent.runtime import errors as runtime_errors
from damon_agent.runtime.backends import inprocess

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

DEFAULT_DURATION = "20s"
STATE_DIR_ENV = "DAMON_AGENT_STATE_DIR"
DEFAULT_STATE_DIR = pathlib.Path("/run/damon-k8s/standalone")
# The final snapshot is printed with at most this many lines of regions.
FINAL_SNAPSHOT_MAX_REGIONS = 40
# Without a TTY, one progress line per this much simulated time.
PROGRESS_LINE_EVERY_US = 2_000_000

EPILOG = """\
examples:
  # the simulated hot/cold workload for 20 s of virtual time, recorded:
  damon-agent run --workload examples/workloads/hot-cold.yaml --duration 20s --record r.jsonl
  # with DAMOS schemes (per-scheme stats are printed and recorded):
  damon-agent run --workload examples/workloads/hot-cold.yaml \\
      --scheme examples/schemes/stat-cold.yaml --duration 30s --record r.jsonl
  # this node's DAMON (or the userspace monitor where DAMON is missing or held), on one
  # process:
  damon-agent run --scheme examples/schemes/stat.yaml --pid 1234 --duration 20s --record r.jsonl
  # the Kubernetes node agent (see `damon-agent daemon --help`):
  damon-agent daemon --node-name "$NODE_NAME"

Render a recording with `damonctl report access|wss|heatmap|schemes|footprints --input r.jsonl`.
"""


class _UsageError(Exception):
    """An option combination argparse cannot check by itself."""


def main(argv: Sequence[str] | None = None) -> int:
    # A fatal signal (a crash in native code) prints every thread's Python stack to stderr,
    # which the pod's log keeps: the one clue such a crash leaves.
    if not faulthandler.is_enabled():
        faulthandler.enable()
    args_list = list(sys.argv[1:] if argv is None else argv)
    # The daemon parses its own flags (and its own --help): hand everything after the word
    # over untouched.
    if args_list[:1] == ["daemon"]:
        return _run_daemon(args_list[1:])
    parser = _parser()
    args = parser.parse_args(args_list)
    if args.command == "probe":
        return _probe(args)
    if args.command == "run":
        try:
            return _run(args)
        except _UsageError as err:
            parser.exit(EXIT_BAD_INPUT, f"damon-agent run: error: {err}\n")
    parser.print_help(sys.stderr)  # pragma: no cover - argparse requires a command
    return EXIT_BAD_INPUT  # pragma: no cover


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="damon-agent",
        description=(
            "damon-k8s node agent: DAMON-style access monitoring and DAMOS schemes, "
            "standalone (run) or as the Kubernetes node daemon (daemon)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {damon_agent.__version__}"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    run = commands.add_parser(
        "run",
        help="monitor standalone (sim workload or the host kernel), print and record",
        description=(
            "Monitor standalone, without a cluster. Shows progress on stderr, prints the "
            "final snapshot (and per-scheme stats) on stdout, and with --record writes every "
            "snapshot to a recording (docs/recording-format.md)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--backend",
        choices=("auto", "kernel", "userspace", "sim"),
        default=None,
        help=(
            "kernel: the kernel's DAMON; userspace: the agent's own monitor over processes "
            "(soft-dirty or idle page tracking); sim: a simulated workload in virtual time; "
            "auto: kernel if its DAMON is free, else userspace "
            "(default: sim with --workload, else auto)"
        ),
    )
    run.add_argument(
        "--workload",
        type=pathlib.Path,
        metavar="W.yaml",
        help="workload file of the sim backend (examples/workloads/)",
    )
    run.add_argument(
        "--scheme",
        type=pathlib.Path,
        metavar="S.yaml",
        help="scheme file: monitoring attributes and DAMOS schemes (examples/schemes/)",
    )
    run.add_argument(
        "--duration",
        default=DEFAULT_DURATION,
        metavar="TIME",
        help=f"how long to monitor, e.g. 20s, 2m (default {DEFAULT_DURATION}; virtual time on sim)",
    )
    run.add_argument("--record", type=pathlib.Path, metavar="OUT", help="write the recording here")
    run.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="random seed of the sim backend; the same seed reproduces a run (default 0)",
    )
    target = run.add_mutually_exclusive_group()
    target.add_argument(
        "--pid",
        type=int,
        metavar="PID",
        help="apply the schemes to this process only (and record its footprints)",
    )
    target.add_argument(
        "--cgroup",
        metavar="PATH",
        help=(
            "apply the schemes to this cgroup's processes only (a path such as "
            "/sys/fs/cgroup/app.slice or /app.slice; its footprints are recorded)"
        ),
    )
    run.add_argument(
        "--state-dir",
        type=pathlib.Path,
        default=None,
        metavar="DIR",
        help=(
            "kernel backend: where the kdamonds the run owns are recorded (default: "
            f"${STATE_DIR_ENV}, else {DEFAULT_STATE_DIR})"
        ),
    )
    run.add_argument(
        "--snapshot-source",
        choices=("sysfs", "tracefs", "auto"),
        default="sysfs",
        help=(
            "kernel backend: where snapshots come from: sysfs tried regions (default), "
            "tracefs (DAMON's damon_aggregated trace events, cheaper), auto (tracefs if it "
            "can be set up, else sysfs)"
        ),
    )
    run.add_argument(
        "--quiet", "-q", action="store_true", help="no progress on stderr (results still print)"
    )
    commands.add_parser(
        "daemon",
        help="the Kubernetes node agent (DaemonSet); `damon-agent daemon --help` for its flags",
        add_help=False,
    )
    probe = commands.add_parser(
        "probe",
        help="what this kernel's DAMON offers: features, actions, filters, goal metrics",
        description=(
            "Probe the running kernel's DAMON sysfs interface with a scratch kdamond "
            "(added and removed again) when no kdamond is configured; when DAMON is in "
            "use, nothing is written and the answer comes from the kernel version. "
            "Needs root."
        ),
    )
    probe.add_argument(
        "--json", action="store_true", help="machine-readable (the form docs/capabilities/ keeps)"
    )
    probe.add_argument(
        "--admin",
        type=pathlib.Path,
        default=pathlib.Path("/sys/kernel/mm/damon/admin"),
        help="the DAMON sysfs admin directory (default: %(default)s)",
    )
    return parser


def _probe(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if not args.admin.is_dir():
        # No DAMON sysfs at all (Debian 12's 6.1): an answer, not a failure; the agent
        # runs its userspace backend on such a node.
        if args.json:
            out.write(json.dumps({"damon": False}, indent=1) + "\n")
        else:
            out.write(f"no DAMON sysfs interface at {args.admin}: this kernel has no DAMON\n")
        return EXIT_OK
    try:
        report = kernel_capabilities.probe(kernel_sysfs.HostSysfs(args.admin), platform.release())
    except kernel_errors.KernelDamonError as err:
        sys.stderr.write(f"damon-agent probe: {err}\n")
        return EXIT_FAILURE
    if args.json:
        out.write(json.dumps(capability_report.to_json(report), indent=1) + "\n")
    else:
        out.write(capability_report.listing(report))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    duration_us = _duration(args.duration)
    choice: backends.Choice = args.backend or ("sim" if args.workload is not None else "auto")
    target = None
    if args.pid is not None or args.cgroup is not None:
        target = standalone.ProcessTarget(pid=args.pid, cgroup=args.cgroup)
    if choice == "sim":
        if args.workload is None:
            raise _UsageError("the sim backend needs --workload W.yaml (see examples/workloads/)")
        if target is not None:
            raise _UsageError("--pid and --cgroup need a real node's backend, not the sim")
        if args.snapshot_source != "sysfs":
            raise _UsageError("--snapshot-source is for the kernel backend")
    elif args.workload is not None:
        raise _UsageError(
            f"--workload is for the sim backend; the {choice} backend monitors this node"
        )
    try:
        scheme_file = (
            api_schemes.load_scheme_file(args.scheme)
            if args.scheme is not None
            else api_schemes.SchemeFile()
        )
    except api_schemes.SchemeFileError as err:
        print(f"damon-agent: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    state_dir = args.state_dir or pathlib.Path(
        os.environ.get(STATE_DIR_ENV, str(DEFAULT_STATE_DIR))
    )
    request = backends.BackendRequest(
        choice=choice,
        state_dir=state_dir,
        sim_workload=args.workload,
        sim_pacing=inprocess.Pacing.STEPPED,
        seed=args.seed,
        snapshot_source=args.snapshot_source,
    )
    reporter = _ProgressReporter(sys.stderr, quiet=args.quiet, virtual=choice == "sim")
    with _sigterm_interrupts():
        try:
            node = backends.open_backend(request)
        except runtime_errors.BackendError as err:
            print(f"damon-agent: {err}", file=sys.stderr)
            return _exit_status(err)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        status = EXIT_OK
        result = None
        try:
            result = _run_on(
                node,
                args,
                scheme_file=scheme_file,
                target=target,
                duration_us=duration_us,
                reporter=reporter,
            )
        except KeyboardInterrupt:
            reporter.finish()
            print("damon-agent: interrupted; stopping the backend", file=sys.stderr)
            if args.record is not None:
                print(
                    f"damon-agent: the recording {args.record} holds what was monitored so far",
                    file=sys.stderr,
                )
            status = EXIT_INTERRUPTED
        except (runtime_errors.RunError, core_errors.InvalidAttrsError) as err:
            reporter.finish()
            print(f"damon-agent: {err}", file=sys.stderr)
            status = EXIT_BAD_INPUT
        except (runtime_errors.BackendError, errors.ReportError) as err:
            reporter.finish()
            print(f"damon-agent: {err}", file=sys.stderr)
            status = _exit_status(err)
        finally:
            try:
                node.stop()
            except runtime_errors.BackendError as err:
                print(f"damon-agent: could not stop the backend: {err}", file=sys.stderr)
                status = status or EXIT_FAILURE
    reporter.finish()
    if result is None:
        return status
    try:
        _print_result(result, args.record, virtual=choice == "sim")
        sys.stdout.flush()
    except BrokenPipeError:
        damonctl.silence_stdout()  # `damon-agent run ... | head`: the reader left early
    for failure in result.failures:
        print(f"damon-agent: monitoring stopped early: {failure}", file=sys.stderr)
    return EXIT_FAILURE if result.failures else status


def _run_on(
    node: backend.Backend,
    args: argparse.Namespace,
    *,
    scheme_file: api_schemes.SchemeFile,
    target: standalone.ProcessTarget | None,
    duration_us: int,
    reporter: _ProgressReporter,
) -> standalone.RunResult:
    roots = observing.NodeRoots()
    pods = [standalone.target_facts(target, roots)] if target is not None else []
    name = args.scheme.stem if args.scheme is not None else "monitor"
    facts = observing.read_node_facts(roots) if node.info.backend != "sim" else None
    plan = standalone.plan_run(
        standalone.assigned(scheme_file, name, target), pods, node.info.capabilities, facts
    )
    if node.info.fallback_reason:
        print(
            f"damon-agent: on the userspace backend: {node.info.fallback_reason}",
            file=sys.stderr,
        )
    for problem in plan.problems:
        _warn(problem)
    meta: dict[str, object] = {
        "scheme_file": str(args.scheme) if args.scheme else None,
        "pid": args.pid,
        "cgroup": args.cgroup,
    }
    if args.workload is not None:
        meta.update(workload=str(args.workload), seed=args.seed)
    return standalone.run(
        node,
        plan,
        duration_us=duration_us,
        record=args.record,
        meta=meta,
        footprint_pids=standalone.footprint_source(target, roots) if target else None,
        on_progress=reporter.update,
        # The sim's stand-in pods have no cgroup whose pressure could be read.
        pressure=None
        if node.info.backend == "sim"
        else feedback.PsiFeedback(observing.PodResolver(roots).cgroup_pressure_total_us),
        on_problem=_warn,
    )


def _warn(problem: planning.Problem) -> None:
    print(f"damon-agent: warning: {problem.reason}: {problem.message}", file=sys.stderr)


def _exit_status(err: Exception) -> int:
    """2 for what the user can fix in the command (the state directory), else 1."""
    cause = err.__cause__
    if isinstance(cause, kernel_errors.StateDirError) or isinstance(
        err, workloads.WorkloadError | api_schemes.SchemeFileError
    ):
        return EXIT_BAD_INPUT
    if isinstance(cause, workloads.WorkloadError):
        return EXIT_BAD_INPUT
    return EXIT_FAILURE


class _TerminatedError(KeyboardInterrupt):
    """SIGTERM arrived: handled as Ctrl-C is (the backend stops, exit 130)."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _TerminatedError()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_result(
    result: standalone.RunResult, record: pathlib.Path | None, *, virtual: bool
) -> None:
    if result.final is None:
        print(
            "no snapshot was taken (the duration is shorter than one aggregation interval"
            + ("" if virtual else ", or than a second")
            + ")"
        )
    else:
        print(_final_snapshot_text(result.final, result.target_names, record, result.start_us))
    if result.schemes:
        print()
        rows = [t.row() for t in result.schemes]
        print(schemes.render([(result.end_us, rows)], start_us=result.start_us))
    if record is not None:
        print(
            f"\nrecorded {result.nr_snapshots} snapshots to {record}; render with "
            f"`damonctl report access|wss|heatmap --input {record}`"
        )


def _final_snapshot_text(
    snap: snapshots.Snapshot,
    names: dict[int, str],
    record: pathlib.Path | None,
    start_us: int = 0,
) -> str:
    """The final snapshot as boxes, merged for display when it has too many regions."""
    shown, tolerance = access.fit_for_display(snap, FINAL_SNAPSHOT_MAX_REGIONS)
    text = access.render(shown, target_names=names, start_us=start_us)
    if tolerance > 0:
        nr_regions = sum(len(t) for t in snap.targets)
        nr_shown = sum(len(t) for t in shown.targets)
        every = (
            f"`damonctl report access --input {record}` shows every region"
            if record is not None
            else "record with --record to see every region"
        )
        text += (
            f"\n({nr_regions} regions shown as {nr_shown}: touching regions with access rates"
            f" within {units.format_percent(tolerance)} merged; {every})"
        )
    return text


def _run_daemon(argv: list[str]) -> int:
    # Imported only here: the daemon pulls in the Kubernetes client, which `run` never needs.
    from damon_agent.cli import daemon  # noqa: PLC0415

    return daemon.main(argv)


def _duration(text: str) -> int:
    try:
        value = api_units.parse_duration_us(text)
    except ValueError as err:
        raise _UsageError(f"--duration: {err}") from None
    if value <= 0 or value >= api_units.UNBOUNDED:
        raise _UsageError(f"--duration: needs a positive time such as 20s, not {text!r}")
    return value


class _ProgressReporter:
    """Progress of a run on stderr: a redrawn bar on a TTY, occasional lines otherwise."""

    BAR_WIDTH = 30

    def __init__(self, stream: TextIO, *, quiet: bool, virtual: bool = True) -> None:
        self._stream = stream
        self._quiet = quiet
        self._virtual = virtual
        self._tty = stream.isatty()
        self._next_line_us = 0
        self._drawn = False

    def update(self, progress: standalone.Progress) -> None:
        if self._quiet:
            return
        done = f"{units.format_seconds(progress.elapsed_us)} / "
        done += f"{units.format_seconds(progress.duration_us)}"
        done += " simulated" if self._virtual else ""
        state = f"{progress.nr_regions} regions, wss {api_units.format_bytes(progress.wss_bytes)}"
        for scheme in progress.schemes:
            state += (
                f"; {scheme.name}: tried {api_units.format_bytes(scheme.counters.sz_tried)},"
                f" applied {api_units.format_bytes(scheme.counters.sz_applied)}"
            )
        if self._tty:
            share = min(1.0, progress.elapsed_us / max(1, progress.duration_us))
            filled = int(share * self.BAR_WIDTH)
            bar = "#" * filled + "." * (self.BAR_WIDTH - filled)
            self._stream.write(f"\r[{bar}] {done}, {state}\x1b[K")
            self._drawn = True
        elif progress.elapsed_us >= self._next_line_us or progress.elapsed_us >= (
            progress.duration_us
        ):
            self._stream.write(f"damon-agent: {done}, {state}\n")
            self._next_line_us = progress.elapsed_us + PROGRESS_LINE_EVERY_US
        self._stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


if __name__ == "__main__":
    sys.exit(main())
