"""``damonctl whatif``: what DAMOS schemes would have done over a recording, offline.

Reads a recording (``reports.recording``) and a scheme file in the format of ``damon-agent
run --scheme`` (``api.schemes.load_scheme_file``), replays the snapshots through the DAMOS
engine (``reports.whatif``) and prints a table per scheme, or the full result as JSON
with ``--json``; ``--png`` also draws the access heatmap with the schemes' curves under it.

Bad input is one line on stderr and exit 2 (through ``damonctl.main``): a recording that
cannot be read (named line and field), one whose last line was cut mid-line (unless
``--allow-torn-tail``), a scheme file that is missing, not YAML or has an invalid field
(named field path), or a scheme the engine refuses.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from damon_agent.api import schemes as api_schemes
from damon_agent.cli import argtypes
from damon_agent.reports import errors, recording, whatif


def add_parser(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "whatif",
        help="what a scheme file would have done over a recording (offline)",
        description="Replay a recording through the DAMOS engine running the schemes of a\n"
        "scheme file, as if they had run while it was recorded: per scheme and over time\n"
        "the bytes tried and applied, the share of the working set touched, and the bytes\n"
        "acted on (pageout and other cold-like actions) that were later accessed again\n"
        "(an estimate of refaults). What a recording cannot tell (page-level filters,\n"
        "watermarks, most quota goals) is printed as notes. See docs/whatif.md.",
        epilog="examples:\n"
        "  damon-agent run --workload examples/workloads/phase-change.yaml --record r.jsonl\n"
        "  damonctl whatif --input r.jsonl --scheme examples/schemes/pageout-cold.yaml\n"
        "  damonctl whatif --input r.jsonl --scheme S.yaml --png whatif.png\n"
        "  damonctl whatif --input r.jsonl --scheme S.yaml --json > whatif.json\n",
        formatter_class=formatter,
    )
    parser.add_argument(
        "--input",
        "-i",
        type=pathlib.Path,
        required=True,
        metavar="REC",
        help="recording file (JSON lines, see docs/recording-format.md)",
    )
    parser.add_argument(
        "--scheme",
        "-s",
        type=pathlib.Path,
        required=True,
        metavar="S.yaml",
        help="scheme file, as `damon-agent run --scheme` takes (only its schemes are used)",
    )
    parser.add_argument(
        "--png", type=pathlib.Path, metavar="FILE.png", help="also draw the result here"
    )
    parser.add_argument(
        "--json", action="store_true", help="print every interval as JSON instead of tables"
    )
    parser.add_argument(
        "--rows",
        type=argtypes.positive_int,
        default=whatif.DEFAULT_ROWS,
        help=f"time rows of each table (default {whatif.DEFAULT_ROWS})",
    )
    parser.add_argument(
        "--allow-torn-tail",
        action="store_true",
        help="replay a recording whose last line is incomplete (still being written, or "
        "its writer died) without that line, instead of refusing it",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> str:
    path: pathlib.Path = args.input
    rec = recording.read_recording(path)
    if rec.torn_tail:
        line = _line_count(path)
        message = (
            f"{path}: line {line}: incomplete (no newline, not valid JSON): the writer "
            "stopped mid-line"
        )
        if not args.allow_torn_tail:
            raise errors.RecordingError(
                f"{message}; give --allow-torn-tail to replay the lines before it"
            )
        print(f"damonctl: warning: {message}; it was skipped", file=sys.stderr)
    try:
        scheme_file = api_schemes.load_scheme_file(args.scheme)
    except api_schemes.SchemeFileError as err:
        raise whatif.SchemeInputError(str(err)) from None
    schemes, notes = whatif.prepare_schemes(scheme_file)
    result = whatif.simulate(rec.snapshots, schemes, start_us=rec.start_us, notes=notes)
    text = (
        json.dumps(result.to_dict(), indent=1)
        if args.json
        else whatif.render(result, rows=args.rows)
    )
    output: pathlib.Path | None = args.png
    if output is not None:
        whatif.write_png(
            result, rec.snapshots, output, title=f"what-if of {args.scheme.name} on {path.name}"
        )
        if not args.json:
            text += f"\nwrote {output}"
    return text


def _line_count(path: pathlib.Path) -> int:
    """Number of the file's last line (the torn one)."""
    try:
        return path.read_bytes().count(b"\n") + 1
    except OSError:
        return 0
