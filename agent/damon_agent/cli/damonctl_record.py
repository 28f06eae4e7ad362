"""``damonctl record``: a recording made from a running agent's snapshots.

::

    damonctl record --agent URL (--pod NS/NAME | --node) [--scheme NAME]
                    --duration 5m --output r.jsonl [--from-past] [--interval 1s]

It asks the agent's ``/v1/snapshot`` once, to check the credentials and the pod and to
pick the scheme to follow, then polls ``/v1/snapshots`` (``runtime.history``) every
``--interval`` for that scheme's snapshots newer than the last one written, and appends
them to ``--output`` in the recording format (``reports.recording.RecordingWriter``,
docs/recording-format.md), so every ``damonctl report ... --input`` reads the file.

One scheme per recording: a recording is one stream of snapshots of one address space,
and two schemes may monitor different ones (a pod's processes, the node's physical
memory). ``--scheme`` picks it (its key as ``/v1/snapshot`` lists it, or just its name);
without it, the first scheme the agent lists (selecting the pod, with ``--pod``), and the
others are named on stderr.

``--duration`` counts from the start of the command. Without ``--from-past`` the
recording starts at the agent's latest snapshot; with it, at the oldest snapshot the
agent's ring still holds (its ``--snapshot-history``, 5 minutes by default). The recording
holds the snapshots the agent read: one per poll, or more when something else read them
too (the daemon keeps the sim and userspace backends' snapshots at each status build).

While it records, one progress line on stderr (rewritten in place on a terminal, else one
line every ``PROGRESS_EVERY_S``): elapsed / duration, snapshots and regions written.
Ctrl-C (or SIGTERM) stops it: the file holds every snapshot written so far, each a
whole line, and the command exits 0. Errors, one line each, exit non-zero and leave no
file when nothing was recorded: an unreachable agent or a refused token (401, 403: the
token's source is named), a pod no scheme on the agent selects, a path that cannot be
written. A poll that fails mid-recording is retried; ``MAX_FAILED_POLLS`` in a row stop
the recording with an error naming the file, which stays valid.
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final, TextIO

import damon_agent
from damon_agent.api import names, units
from damon_agent.reports import errors as report_errors
from damon_agent.reports import recording
from damon_agent.runtime import errors, snapshot_client, wire

DEFAULT_INTERVAL_US: Final = 1_000_000
MIN_INTERVAL_US: Final = 100_000
MAX_INTERVAL_US: Final = 60_000_000
PROGRESS_EVERY_S: Final = 10.0
MAX_FAILED_POLLS: Final = 5


def add_parser(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "record",
        help="record a pod's or a node's snapshots from a running agent into a recording",
        description="Poll a node agent's recent snapshots of one scheme and write them as a\n"
        "recording (docs/recording-format.md) that every `damonctl report` reads. The\n"
        "agent serves them only to a bearer token whose user may get damonnodes/snapshot.",
        epilog="examples:\n"
        "  damonctl record --agent http://10.0.0.7:8080 --pod shop/cart-0 --duration 5m \\\n"
        "      --output cart.jsonl\n"
        "  damonctl record --agent http://10.0.0.7:8080 --node --from-past --duration 1m \\\n"
        "      --output node.jsonl            # starting with the agent's last minutes\n"
        "  damonctl report heatmap --input cart.jsonl --output heat.png\n",
        formatter_class=formatter,
    )
    parser.add_argument(
        "--agent", required=True, metavar="URL", help="the node agent, e.g. http://10.0.0.7:8080"
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--pod",
        type=_pod,
        metavar="NS/NAME",
        help="record a scheme selecting this pod, its targets narrowed to the pod's "
        "processes where targets are processes (vaddr)",
    )
    which.add_argument(
        "--node", action="store_true", help="record a scheme of the node, whatever it selects"
    )
    parser.add_argument(
        "--scheme",
        metavar="NAME",
        help="the scheme to follow: its key as the agent lists it, or its name (default: "
        "the first the agent lists)",
    )
    parser.add_argument(
        "--duration",
        required=True,
        type=_duration(1, None),
        metavar="TIME",
        help="how long to record from now, e.g. 30s, 5m",
    )
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        type=pathlib.Path,
        metavar="FILE",
        help="the recording to write (JSON lines, docs/recording-format.md)",
    )
    parser.add_argument(
        "--from-past",
        action="store_true",
        help="start with the snapshots the agent still holds (its --snapshot-history), "
        "not at its latest one",
    )
    parser.add_argument(
        "--interval",
        type=_duration(MIN_INTERVAL_US, MAX_INTERVAL_US),
        default=DEFAULT_INTERVAL_US,
        metavar="TIME",
        help="time between two polls of the agent (default 1s; from 100ms to 60s)",
    )
    credentials = parser.add_mutually_exclusive_group()
    credentials.add_argument(
        "--token",
        metavar="TOKEN",
        help="the bearer token to send (visible in the process list: prefer --token-file). "
        "Default: the current kubeconfig context's token, else the in-cluster service "
        "account's",
    )
    credentials.add_argument("--token-file", metavar="FILE", help="read the bearer token here")
    parser.set_defaults(run=lambda args: run(args, parser))


def _pod(text: str) -> str:
    try:
        return str(names.NamespacedName.parse(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _duration(low_us: int, high_us: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = units.parse_duration_us(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        if value < low_us or (high_us is not None and value > high_us):
            bound = f" and at most {units.format_duration_us(high_us)}" if high_us else ""
            raise argparse.ArgumentTypeError(
                f"{text!r}: must be at least {units.format_duration_us(low_us)}{bound}"
            )
        return value

    return parse


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """Record as ``args`` ask; returns the summary line for stdout."""
    token = _token(args, parser)
    recorder = Recorder(
        agent=args.agent,
        pod=args.pod,
        scheme=args.scheme,
        token=token,
        duration_us=args.duration,
        interval_us=args.interval,
        from_past=args.from_past,
        progress=Progress(sys.stderr, args.duration),
    )
    return recorder.record(args.output)


def _token(args: argparse.Namespace, parser: argparse.ArgumentParser) -> snapshot_client.Token:
    if args.token is not None:
        if not args.token.strip():
            parser.error("--token: empty")
        return snapshot_client.Token(args.token.strip(), "--token")
    if args.token_file is not None:
        try:
            return snapshot_client.token_file(args.token_file)
        except errors.SnapshotFetchError as err:
            parser.error(str(err))
    return snapshot_client.default_token()


class Progress:
    """The progress line on stderr: rewritten in place on a terminal, else now and then."""

    def __init__(self, stream: TextIO, duration_us: int) -> None:
        self.stream = stream
        self.duration_us = duration_us
        self.in_place = stream.isatty()
        self._shown_at: float | None = None
        self._width = 0

    def note(self, text: str) -> None:
        """A line of its own (which scheme, a failed poll)."""
        self._end_line()
        print(f"damonctl: {text}", file=self.stream, flush=True)

    def show(self, elapsed_us: int, written: Written, *, final: bool = False) -> None:
        now = time.monotonic()
        if not (self.in_place or final) and (
            self._shown_at is not None and now - self._shown_at < PROGRESS_EVERY_S
        ):
            return
        self._shown_at = now
        line = (
            f"recording {units.format_duration_us(elapsed_us)} / "
            f"{units.format_duration_us(self.duration_us)}: "
            f"{_count(written.snapshots, 'snapshot')}, {_count(written.regions, 'region')} "
            f"({written.last_regions} in the last)"
        )
        if self.in_place:
            padding = " " * max(0, self._width - len(line))
            self.stream.write(f"\r{line}{padding}")
            self._width = len(line)
            if final:
                self._end_line()
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self.in_place and self._width:
            self.stream.write("\n")
            self._width = 0


@dataclass
class Written:
    """What the recording holds so far."""

    snapshots: int = 0
    regions: int = 0
    last_regions: int = 0
    # Times (the agent's clock) of the first and the last snapshot written.
    first_us: int | None = None
    last_us: int | None = None


@dataclass
class Recorder:
    """One ``damonctl record`` run against one agent."""

    agent: str
    pod: str | None
    scheme: str | None
    token: snapshot_client.Token
    duration_us: int
    interval_us: int
    from_past: bool
    progress: Progress
    clock_s: Callable[[], float] = time.monotonic
    sleep_s: Callable[[float], None] = time.sleep
    written: Written = field(default_factory=Written)

    def record(self, output: pathlib.Path) -> str:
        """Record into ``output``; returns the summary line."""
        started = self.clock_s()
        # SIGTERM stops a recording as Ctrl-C does (only the main thread may set handlers).
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_stop) if in_main else None
        try:
            return self._record(output, started)
        except KeyboardInterrupt:
            raise errors.SnapshotFetchError(
                f"stopped before anything was recorded; {output} was not written"
            ) from None
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    def _record(self, output: pathlib.Path, started: float) -> str:
        # Everything that can be refused is asked before the file exists: the token and
        # the pod (/v1/snapshot), then /v1/snapshots (an older agent has none).
        first = self._choose()
        since_us = None if self.from_past else first.snapshot.time_us
        page = self._fetch(first.scheme, since_us)
        try:
            writer = recording.RecordingWriter(output, self._meta(first, page))
        except recording.RecordingError as err:
            raise report_errors.OutputError(str(err)) from None
        stopped = False
        try:
            with writer:
                if not self.from_past:
                    self._write(writer, [first])
                self._write(writer, page.entries)
                while page.more:
                    page = self._fetch(first.scheme, self.written.last_us)
                    self._write(writer, page.entries)
                self._poll_until_done(writer, first.scheme, started)
        except KeyboardInterrupt:
            stopped = True
        elapsed_us = round((self.clock_s() - started) * 1e6)
        self.progress.show(elapsed_us, self.written, final=True)
        done = self.written
        span = ""
        if done.first_us is not None and done.last_us is not None and done.snapshots > 1:
            span = f" over {units.format_duration_us(done.last_us - done.first_us)}"
        what = "stopped after" if stopped else "recorded"
        return (
            f"{what} {units.format_duration_us(elapsed_us)}: {_count(done.snapshots, 'snapshot')}"
            f"{span} of {first.scheme} to {output}"
        )

    def _choose(self) -> wire.SnapshotEntry:
        """The scheme to follow, from one /v1/snapshot (checks the token and the pod)."""
        entries = snapshot_client.fetch_entries(self.agent, pod=self.pod, token=self.token)
        if self.pod is not None:
            entries = [e for e in entries if self.pod in e.pods]
        candidates = entries
        if self.scheme is not None:
            candidates = [
                e for e in entries if self.scheme in (e.scheme, e.scheme.rsplit("/", 1)[-1])
            ]
        if not candidates:
            raise errors.SnapshotFetchError(self._nothing_to_record(entries))
        chosen = candidates[0]
        others = [e.scheme for e in candidates[1:]]
        if others:
            self.progress.note(
                f"recording {chosen.scheme}; also there: {', '.join(others)} (--scheme picks)"
            )
        if self.pod is not None:
            snap = snapshot_client.pod_view(chosen, self.pod)
            chosen = wire.SnapshotEntry(
                scheme=chosen.scheme,
                operations=chosen.operations,
                pods=chosen.pods,
                snapshot=snap,
                target_pods={k: v for k, v in chosen.target_pods.items() if v == self.pod},
            )
        return chosen

    def _nothing_to_record(self, entries: list[wire.SnapshotEntry]) -> str:
        which = f"scheme {self.scheme!r}" if self.scheme else "scheme"
        if self.pod is None:
            if entries:
                listed = ", ".join(e.scheme for e in entries)
                return f"{self.agent}: no {which} on the agent (it has: {listed})"
            return (
                f"{self.agent}: the agent has no snapshot of any scheme yet (is a scheme "
                "assigned to its node, and has monitoring run one aggregation interval?)"
            )
        if entries:
            listed = ", ".join(e.scheme for e in entries)
            return f"{self.agent}: no {which} selecting pod {self.pod} (selecting it: {listed})"
        return (
            f"{self.agent}: no scheme on the agent selects pod {self.pod} (is the pod on that "
            "node, selected by a scheme, and has monitoring run one aggregation interval?)"
        )

    def _fetch(self, scheme: str, since_us: int | None) -> snapshot_client.HistoryPage:
        return snapshot_client.fetch_history(
            self.agent, scheme=scheme, pod=self.pod, since_us=since_us, token=self.token
        )

    def _poll_until_done(
        self, writer: recording.RecordingWriter, scheme: str, started: float
    ) -> None:
        failed = 0
        while True:
            elapsed_s = self.clock_s() - started
            self.progress.show(round(elapsed_s * 1e6), self.written)
            left_s = self.duration_us / 1e6 - elapsed_s
            if left_s <= 0:
                return
            self.sleep_s(min(self.interval_us / 1e6, left_s))
            try:
                page = self._fetch(scheme, self.written.last_us)
                self._write(writer, page.entries)
                while page.more:
                    page = self._fetch(scheme, self.written.last_us)
                    self._write(writer, page.entries)
            except errors.SnapshotFetchError as err:
                failed += 1
                # A refused token does not come back by retrying; an agent that could not
                # check it (503: its API server away) or could not be reached may.
                refused = isinstance(err, errors.SnapshotAccessError) and err.code in (401, 403)
                if refused or failed >= MAX_FAILED_POLLS:
                    why = "refused" if refused else f"{failed} polls in a row failed"
                    raise errors.SnapshotFetchError(
                        f"{err} ({why}; the {_count(self.written.snapshots, 'snapshot')} "
                        f"recorded are in {writer.path})"
                    ) from None
                self.progress.note(f"poll failed, retrying: {err}")
            else:
                failed = 0

    def _write(self, writer: recording.RecordingWriter, entries: list[wire.SnapshotEntry]) -> None:
        for entry in entries:
            snap = entry.snapshot
            last = self.written.last_us
            if last is not None and snap.time_us <= last:
                continue  # already written (a page overlapping the one before)
            writer.snapshot(snap)
            regions = sum(len(t) for t in snap.targets)
            self.written.snapshots += 1
            self.written.regions += regions
            self.written.last_regions = regions
            self.written.last_us = snap.time_us
            if self.written.first_us is None:
                self.written.first_us = snap.time_us

    def _meta(
        self, first: wire.SnapshotEntry, page: snapshot_client.HistoryPage
    ) -> dict[str, object]:
        return {
            "source": "agent",
            "agent": self.agent,
            "node": page.node,
            "backend": page.backend,
            "scheme": first.scheme,
            "operations": first.operations,
            "pod": self.pod,
            "from_past": self.from_past,
            "duration_us": self.duration_us,
            "interval_us": self.interval_us,
            "damonctl_version": damon_agent.__version__,
            "targets": [
                {"target_id": target_id, "name": f"pod {pod}"}
                for target_id, pod in sorted(first.target_pods.items())
            ],
            "agent_history_s": page.window_s,
        }


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise KeyboardInterrupt
