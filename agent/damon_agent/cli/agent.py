"""``damon-agent``: run monitoring standalone on one machine, or start the node daemon.

``run`` drives one monitoring context without a cluster: on the ``sim`` backend over a
simulated workload in virtual time (``runtime.standalone.run_sim``), or on the host
kernel's DAMON (``runtime.standalone_kernel.run_kernel``). ``daemon`` hands its arguments
to the Kubernetes node agent (``runtime.daemon.main``). ``probe`` lists what the running
kernel's DAMON offers. Backends are imported only when chosen: the kernel and daemon code
pull in modules the sim path does not need.

This module owns all terminal I/O of ``run``: the progress display (a bar on a TTY, a
line every few simulated seconds otherwise, nothing with ``--quiet``) and the final
report, both built from data the run loop returns. Errors in the user's files (workload,
scheme) or options print one line naming the field and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
from collections.abc import Sequence
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
from damon_agent.runtime import standalone

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

DEFAULT_DURATION = "20s"
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
  # the host kernel's DAMON over physical memory, profiling one process:
  damon-agent run --backend kernel --scheme examples/schemes/stat.yaml --pid 1234 \\
      --duration 20s --record r.jsonl
  # the Kubernetes node agent (see `damon-agent daemon --help`):
  damon-agent daemon --node-name "$NODE_NAME"

Render a recording with `damonctl report access|wss|heatmap|schemes|footprints --input r.jsonl`.
"""


class _UsageError(Exception):
    """An option combination argparse cannot check by itself."""


def main(argv: Sequence[str] | None = None) -> int:
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
        choices=("sim", "kernel"),
        default="sim",
        help="sim: a simulated workload in virtual time (default); kernel: the host's DAMON",
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
    run.add_argument(
        "--pid", type=int, metavar="PID", help="kernel backend: record this process's footprints"
    )
    run.add_argument(
        "--cgroup",
        type=pathlib.Path,
        metavar="PATH",
        help="kernel backend: record this cgroup's footprints",
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


def _probe(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    # The kernel driver only when asked for (see the module docstring).

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
    if args.backend == "kernel":
        if args.workload is not None:
            raise _UsageError(
                "--workload is for the sim backend; the kernel backend monitors "
                "the host's physical memory"
            )
        return _run_kernel(args, duration_us)
    if args.workload is None:
        raise _UsageError("the sim backend needs --workload W.yaml (see examples/workloads/)")
    if args.pid is not None or args.cgroup is not None:
        raise _UsageError("--pid and --cgroup are for --backend kernel")
    if args.snapshot_source != "sysfs":
        raise _UsageError("--snapshot-source is for --backend kernel")
    reporter = _ProgressReporter(sys.stderr, quiet=args.quiet)
    try:
        result = standalone.run_sim(
            args.workload,
            duration_us=duration_us,
            scheme_path=args.scheme,
            record_path=args.record,
            seed=args.seed,
            on_progress=reporter.update,
        )
    except KeyboardInterrupt:
        reporter.finish()
        print("damon-agent: interrupted", file=sys.stderr)
        if args.record is not None:
            print(
                f"damon-agent: the recording {args.record} holds what was monitored so far",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED
    except (
        workloads.WorkloadError,
        api_schemes.SchemeFileError,
        core_errors.InvalidAttrsError,
        standalone.StandaloneError,
    ) as err:
        reporter.finish()
        print(f"damon-agent: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except errors.ReportError as err:  # the recording could not be written
        reporter.finish()
        print(f"damon-agent: {err}", file=sys.stderr)
        return EXIT_FAILURE
    reporter.finish()
    try:
        _print_result(result, args.record)
        sys.stdout.flush()
    except BrokenPipeError:
        damonctl.silence_stdout()  # `damon-agent run ... | head`: the reader left early
    return EXIT_OK


def _print_result(result: standalone.SimRunResult, record: pathlib.Path | None) -> None:
    if result.final is None:
        print("no snapshot was taken (the duration is shorter than one aggregation interval)")
    else:
        print(_final_snapshot_text(result.final, result.target_names, record))
    if result.scheme_stats:
        print()
        print(schemes.render([(result.end_us, result.scheme_stats)], start_us=result.start_us))
    if record is not None:
        print(
            f"\nrecorded {result.nr_snapshots} snapshots to {record}; render with "
            f"`damonctl report access|wss|heatmap --input {record}`"
        )


def _final_snapshot_text(
    snap: snapshots.Snapshot, names: dict[int, str], record: pathlib.Path | None
) -> str:
    """The final snapshot as boxes, merged for display when it has too many regions."""
    shown, tolerance = access.fit_for_display(snap, FINAL_SNAPSHOT_MAX_REGIONS)
    text = access.render(shown, target_names=names)
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


def _run_kernel(args: argparse.Namespace, duration_us: int) -> int:
    # Imported only here: it probes the host's DAMON sysfs and /proc.
    from damon_agent.runtime import standalone_kernel  # noqa: PLC0415

    result: int = standalone_kernel.run_kernel(
        scheme_path=args.scheme,
        duration_us=duration_us,
        record=args.record,
        pid=args.pid,
        cgroup=args.cgroup,
        progress=not args.quiet,
        snapshot_source=args.snapshot_source,
    )
    return result


def _run_daemon(argv: list[str]) -> int:
    # Imported only here: the daemon pulls in the Kubernetes client, which `run` never needs.
    from damon_agent.runtime import daemon  # noqa: PLC0415

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
    """Progress of a sim run on stderr: a redrawn bar on a TTY, occasional lines otherwise."""

    BAR_WIDTH = 30

    def __init__(self, stream: TextIO, *, quiet: bool) -> None:
        self._stream = stream
        self._quiet = quiet
        self._tty = stream.isatty()
        self._next_line_us = 0
        self._drawn = False

    def update(self, progress: standalone.Progress) -> None:
        if self._quiet:
            return
        done = f"{units.format_seconds(progress.elapsed_us)} / "
        done += f"{units.format_seconds(progress.duration_us)} simulated"
        state = f"{progress.nr_regions} regions, wss {units.format_bytes(progress.wss_bytes)}"
        for scheme in progress.schemes:
            state += (
                f"; {scheme.name}: tried {units.format_bytes(scheme.sz_tried)},"
                f" applied {units.format_bytes(scheme.sz_applied)}"
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
