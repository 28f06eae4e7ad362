"""``damonctl``: reports on recordings and on live agents.

The CLI is thin: it parses options, loads the source, calls one pure report function of
``damon_agent.reports`` and prints the text. Subcommands take their data from a recording
(``--input``, through ``_load_recording``); ``report access`` can instead fetch a live
snapshot of one pod from a node agent (``--agent URL --pod NS/NAME``). The agent serves
it only to a bearer token whose user may ``get damonnodes/snapshot``: ``--token`` or
``--token-file``, else the current kubeconfig context's token, else the in-cluster
ServiceAccount's (``snapshot_client.default_token``). ``status`` reads what the agents
report from the apiserver instead (``damonctl_status``).

Exit codes: 0 success; 2 bad usage or bad input (missing or malformed recording, a
recording lacking what was asked, a bad --at, an unreadable --token-file); 1 a failure
while writing output or while fetching from an agent (one line on stderr; also when the
agent refuses the token: 401, 403) or from the apiserver (``status``: an object that does
not exist, an apiserver that cannot be reached).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Callable, Sequence

import damon_agent
from damon_agent.api import units as api_units
from damon_agent.cli import argtypes, damonctl_record, damonctl_status, damonctl_whatif
from damon_agent.reports import (
    access,
    errors,
    footprints,
    heatmap,
    recording,
    schemes,
    units,
    wss,
)
from damon_agent.runtime import errors as runtime_errors
from damon_agent.runtime import snapshot_client

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

EPILOG = """\
examples:
  damon-agent run --workload examples/workloads/hot-cold.yaml --duration 20s --record r.jsonl
  damonctl report access --input r.jsonl                    # last snapshot, as boxes
  damonctl report access --input r.jsonl --at 12s --style detailed
  damonctl report access --agent http://node-1:8080 --pod shop/cart-0   # live, from an agent
      # (with the kubeconfig's token; or --token-file FILE: a token that may get
      # damonnodes/snapshot, e.g. from `kubectl create token`)
  damonctl report wss --input r.jsonl                       # working set size percentiles
  damonctl report heatmap --input r.jsonl --output heat.png
  damonctl report schemes --input r.jsonl                   # with damon-agent run --scheme
  damonctl report footprints --input r.jsonl                # with --pid/--cgroup recordings
  damonctl status --node node-1                             # quotas, goals, pods' PSI, saved
  damonctl status --scheme shop/reclaim-cold                # a scheme over its nodes
  damonctl record --agent http://node-1:8080 --pod shop/cart-0 --duration 5m --output r.jsonl
  damonctl whatif --input r.jsonl --scheme reclaim.yaml --png whatif.png   # offline, no apply

The recording format is described in docs/recording-format.md; what-if in docs/whatif.md.
"""


class _UsageError(Exception):
    """A bad option value the parser could not catch by itself."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    run: Callable[[argparse.Namespace], str] = args.run
    try:
        text = run(args)
    except _UsageError as err:
        parser.exit(EXIT_BAD_INPUT, f"damonctl: error: {err}\n")
    except errors.ReportError as err:
        print(f"damonctl: {err}", file=sys.stderr)
        return EXIT_FAILURE if isinstance(err, errors.OutputError) else EXIT_BAD_INPUT
    except runtime_errors.SnapshotFetchError as err:
        print(f"damonctl: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except runtime_errors.KubeError as err:
        print(f"damonctl: {err}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # `damonctl report ... | head`: the reader left; not an error worth a traceback.
        silence_stdout()
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="damonctl",
        description="Reports on DAMON access-monitoring recordings of damon-k8s.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {damon_agent.__version__}"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    damonctl_status.add_parser(commands, argparse.RawDescriptionHelpFormatter)
    damonctl_whatif.add_parser(commands, argparse.RawDescriptionHelpFormatter)
    damonctl_record.add_parser(commands, argparse.RawDescriptionHelpFormatter)
    report = commands.add_parser(
        "report",
        help="render a recording as text (or a PNG heatmap)",
        description="Render a recording written by `damon-agent run --record`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = report.add_subparsers(title="reports", metavar="REPORT", required=True)

    def add(
        name: str, help_text: str, run: Callable[[argparse.Namespace], str], live: bool = False
    ) -> argparse.ArgumentParser:
        sub = kinds.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--input",
            "-i",
            type=pathlib.Path,
            required=not live,
            metavar="REC",
            help="recording file (JSON lines, see docs/recording-format.md)",
        )
        sub.set_defaults(run=run)
        return sub

    access_parser = add(
        "access",
        "one snapshot's regions: size, access rate and age per region",
        _report_access,
        live=True,
    )
    access_parser.add_argument(
        "--agent",
        metavar="URL",
        help="instead of --input: fetch the latest snapshot from a node agent's HTTP "
        "endpoint, e.g. http://10.0.0.7:8080 (needs --pod)",
    )
    access_parser.add_argument(
        "--pod", metavar="NS/NAME", help="with --agent: the pod whose snapshot to show"
    )
    access_parser.add_argument(
        "--scheme", metavar="NAME", help="with --agent: the scheme's snapshot (default: any)"
    )
    credentials = access_parser.add_mutually_exclusive_group()
    credentials.add_argument(
        "--token",
        metavar="TOKEN",
        help="with --agent: the bearer token to send (visible to other users in the "
        "process list: prefer --token-file). Default: the current kubeconfig context's "
        "token ($KUBECONFIG or ~/.kube/config), else the in-cluster service account's",
    )
    credentials.add_argument(
        "--token-file",
        metavar="FILE",
        help="with --agent: read the bearer token from FILE",
    )
    access_parser.add_argument(
        "--style",
        choices=access.STYLES,
        default="simple-boxes",
        help="simple-boxes: a box per region, its length from the log of the size and its "
        "digits from the access rate (default); detailed: address ranges and raw counters",
    )
    access_parser.add_argument(
        "--at",
        metavar="TIME",
        help="snapshot nearest to TIME after the recording's start, e.g. 12s, 1500ms "
        "(default: the last snapshot)",
    )
    access_parser.add_argument(
        "--max-regions",
        type=argtypes.positive_int,
        metavar="N",
        help="merge touching regions of similar access rate (in 5 %% steps of tolerance) "
        "until at most N are left (default: show every region)",
    )
    add("wss", "working set size percentiles (0, 25, 50, 75, 100) and average", _report_wss)
    heatmap_parser = add(
        "heatmap",
        "access rate over time x monitored address space, as text (and a PNG with --output)",
        _report_heatmap,
    )
    heatmap_parser.add_argument(
        "--output", "-o", type=pathlib.Path, metavar="FILE.png", help="also draw a PNG here"
    )
    heatmap_parser.add_argument(
        "--rows",
        type=argtypes.positive_int,
        default=heatmap.TEXT_ROWS,
        help=f"time rows of the text heatmap (default {heatmap.TEXT_ROWS})",
    )
    heatmap_parser.add_argument(
        "--columns",
        type=argtypes.positive_int,
        default=heatmap.TEXT_COLUMNS,
        help=f"address columns of the text heatmap (default {heatmap.TEXT_COLUMNS})",
    )
    add(
        "schemes",
        "per-scheme DAMOS stats: tried and applied regions and bytes, bytes that passed "
        "the ops filters (n/a where not counted), quota exceeds",
        _report_schemes,
    )
    add(
        "footprints",
        "percentiles of wss, rss, vsz and the system's used memory over the recording",
        _report_footprints,
    )
    return parser


def _load_recording(args: argparse.Namespace) -> recording.Recording:
    path: pathlib.Path = args.input
    rec = recording.read_recording(path)
    if rec.torn_tail:
        print(
            f"damonctl: warning: {path}: the last line is incomplete (the writer stopped "
            "mid-line); it was skipped",
            file=sys.stderr,
        )
    return rec


def _report_access(args: argparse.Namespace) -> str:
    if args.agent is not None:
        return _report_live_access(args)
    if args.input is None:
        raise _UsageError("report access: give --input REC, or --agent URL with --pod NS/NAME")
    if args.pod is not None or args.scheme is not None:
        raise _UsageError("--pod and --scheme select a live snapshot: they need --agent URL")
    if args.token is not None or args.token_file is not None:
        raise _UsageError("--token and --token-file are sent to an agent: they need --agent URL")
    at_us = None if args.at is None else _parse_time("--at", args.at)
    rec = _load_recording(args)
    snap = access.pick_snapshot(rec.snapshots, rec.start_us, at_us)
    tolerance = 0.0
    if args.max_regions is not None:
        snap, tolerance = access.fit_for_display(snap, args.max_regions)
    text = access.render(
        snap,
        style=args.style,
        start_us=rec.start_us,
        target_names=recording.target_names(rec.meta),
    )
    if tolerance > 0:
        text += (
            f"\n(touching regions with access rates within {units.format_percent(tolerance)}"
            " are shown merged)"
        )
    return text


def _report_live_access(args: argparse.Namespace) -> str:
    if args.input is not None:
        raise _UsageError("--agent and --input are two sources: give one of them")
    if args.pod is None:
        raise _UsageError("--agent needs --pod NS/NAME: which pod's snapshot to show")
    if args.at is not None:
        raise _UsageError("--at picks a time in a recording; a live snapshot is the latest")
    snap = snapshot_client.fetch_pod_snapshot(
        args.agent, args.pod, scheme=args.scheme, token=_agent_token(args)
    )
    tolerance = 0.0
    if args.max_regions is not None:
        snap, tolerance = access.fit_for_display(snap, args.max_regions)
    text = access.render(snap, style=args.style)
    if tolerance > 0:
        text += (
            f"\n(touching regions with access rates within {units.format_percent(tolerance)}"
            " are shown merged)"
        )
    return f"pod {args.pod} on {args.agent}\n{text}"


def _agent_token(args: argparse.Namespace) -> snapshot_client.Token:
    if args.token is not None:
        if not args.token.strip():
            raise _UsageError("--token: empty")
        return snapshot_client.Token(args.token.strip(), "--token")
    if args.token_file is not None:
        try:
            return snapshot_client.token_file(args.token_file)
        except runtime_errors.SnapshotFetchError as err:
            raise _UsageError(str(err)) from None
    return snapshot_client.default_token()


def _report_wss(args: argparse.Namespace) -> str:
    rec = _load_recording(args)
    return wss.render(rec.snapshots, start_us=rec.start_us)


def _report_heatmap(args: argparse.Namespace) -> str:
    rec = _load_recording(args)
    names = recording.target_names(rec.meta)
    text = heatmap.render(
        rec.snapshots,
        start_us=rec.start_us,
        rows=args.rows,
        columns=args.columns,
        target_names=names,
    )
    output: pathlib.Path | None = args.output
    if output is not None:
        heatmap.write_png(
            rec.snapshots,
            output,
            start_us=rec.start_us,
            title=f"access heatmap of {args.input.name}",
            target_names=names,
        )
        text += f"\nwrote {output}"
    return text


def _report_schemes(args: argparse.Namespace) -> str:
    rec = _load_recording(args)
    return schemes.render(rec.scheme_stats, start_us=rec.start_us, meta=rec.meta)


def _report_footprints(args: argparse.Namespace) -> str:
    rec = _load_recording(args)
    return footprints.render(rec.snapshots, rec.footprints)


def _parse_time(option: str, text: str) -> int:
    try:
        value = api_units.parse_duration_us(text)
    except ValueError as err:
        raise _UsageError(f"{option}: {err}") from None
    if value == api_units.UNBOUNDED:
        raise _UsageError(f"{option}: needs a time such as 12s, not {text!r}")
    return value


def silence_stdout() -> None:
    """After a BrokenPipeError on stdout (the pipe's reader left): drop further output."""
    # Point stdout at /dev/null so the interpreter's final flush does not raise again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
