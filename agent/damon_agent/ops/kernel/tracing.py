"""Snapshots from DAMON's ``damon:damon_aggregated`` trace event instead of sysfs.

At the end of every aggregation interval the kdamond emits one ``damon_aggregated``
event per region of every target (``target_id=%lu nr_regions=%u %lu-%lu: %u %u``:
target index, the target's region count, start-end in the context's address units,
nr_accesses, age). Reading them costs the agent far less than the sysfs tried regions,
whose every update makes the kernel remove and re-create one directory per region.

Design:

- ``Tracefs``: where tracefs is. ``/sys/kernel/tracing`` when it is mounted (it has
  ``instances``); else tracefs is mounted at a private mount point (the agent's state
  directory) and unmounted by ``close``. Roots are injected for tests.
- ``KdamondTrace``: one private trace instance per kdamond,
  ``instances/damon-k8s-<agent pid>-<kdamond pid>``, with its own ring buffer: the
  global instance's settings are never touched. The instance's event is filtered to
  ``common_pid == <kdamond pid>`` and its per-CPU buffer holds about
  ``BUFFERED_AGGREGATIONS`` aggregations (of the maximum region count at first, then of
  the count seen): the buffer overwrites its oldest events, so however rarely it is
  read, a read formats and parses a bounded number of events. ``poll`` reads
  ``trace_pipe`` with ``O_NONBLOCK`` (the agent never blocks on it) until it is empty
  and parses only its end (``Assembler.feed_latest``). The event can be switched off
  and on (``set_enabled``): while it is off the kdamond emits nothing, and switching it
  off empties the buffer and forgets what was parsed, so that after it is on again only
  aggregations made since are served. ``close`` disables the event and removes the
  instance. ``Tracefs.remove_stale_instances`` removes instances of agents that died
  without closing theirs.
- ``Assembler``: pure; trace text in, the latest complete aggregation per target out.
  A target's aggregation in progress ends when a region does not follow the previous
  one (a lower or equal start, or another ``nr_regions``), and is complete when it has
  ``nr_regions`` regions; an incomplete one (its head was overwritten, or events were
  lost) is dropped. Timestamps do not delimit aggregations, as each region's event has
  its own, microseconds apart; they are not parsed at all, which makes parsing several
  times cheaper. An aggregation's time is when the read that completed it ran.
- Results are ``reading.RegionColumns`` in bytes, the shape the sysfs snapshot reader
  returns, so the engine's callers cannot tell the sources apart.

Errors are ``errors.TracefsError`` (a ``KernelDamonError``): tracefs missing or not
mountable, the DAMON trace events missing, an instance that cannot be set up.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno as errno_codes
import itertools
import operator
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from damon_agent.ops.kernel import errors, reading

DEFAULT_TRACEFS: Final = Path("/sys/kernel/tracing")
INSTANCE_PREFIX: Final = "damon-k8s-"
EVENT_DIR: Final = "events/damon/damon_aggregated"
# Buffer: one event is its 48-byte record plus the ring buffer's header and time delta.
EVENT_BYTES: Final = 64
BUFFERED_AGGREGATIONS: Final = 2
_PAGE: Final = 4096
MIN_BUFFER_KB: Final = 8
_READ_SIZE: Final = 1 << 16
_MNT_DETACH: Final = 2

# Matched from the event name on: the literal lets the regex engine skip to each event,
# with or without the line's context (comm, pid, CPU, timestamp; the instance turns it off).
_EVENT = re.compile(rb"damon_aggregated: target_id=(\d+) nr_regions=(\d+) (\d+)-(\d+): (\d+) (\d+)")
_LOST = b"LOST"
_INSTANCE = re.compile(re.escape(INSTANCE_PREFIX) + r"(\d+)(?:-\d+)?")


# ---- parsing (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Aggregation:
    """One target's regions at the end of one aggregation interval (addresses as traced).

    ``time_us`` is when it was read: the ``now_us`` of the feed that completed it.
    """

    target_id: int
    time_us: int
    columns: reading.RegionColumns


@dataclass
class _Partial:
    """A target's aggregation in progress: its regions so far, as columns."""

    nr_regions: int
    start: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    nr_accesses: list[int] = field(default_factory=list)
    age: list[int] = field(default_factory=list)


class Assembler:
    """Trace text -> the latest complete aggregation of each target (module docstring).

    Lines are parsed column by column (one regex pass, then ``int`` over each column) and
    cut into aggregations where a region does not follow the one before; the per-line
    work stays in C, which matters as a read may hold thousands of events.
    """

    def __init__(self) -> None:
        self._tail = b""
        self._partial: dict[int, _Partial] = {}
        self._latest: dict[int, Aggregation] = {}
        self.records = 0
        self.dropped = 0

    def feed(self, data: bytes, now_us: int = 0) -> None:
        """Parse ``data``, the next bytes of ``trace_pipe``; a cut last line waits."""
        text = self._tail + data
        cut = text.rfind(b"\n") + 1
        self._tail = text[cut:]
        if cut:
            self.feed_lines(text[:cut], now_us)

    def feed_latest(self, data: bytes, now_us: int = 0) -> None:
        """``feed``, parsing only as much of the end of ``data`` as the latest aggregation
        of every target needs.

        ``data`` may hold several aggregations (one per aggregation interval since the
        last read): two aggregations' worth of lines plus one, at the last known region
        counts, always hold a complete one, whatever the last is cut at. Skipping lines is
        losing them, so what was in progress is dropped. When the tail completes nothing
        (the counts grew) it is all parsed after all.
        """
        text = self._tail + data
        cut = text.rfind(b"\n") + 1
        self._tail = text[cut:]
        expected = sum(len(a.columns.start) for a in self._latest.values())
        wanted = 2 * expected + 2
        if not expected or text.count(b"\n", 0, cut) <= wanted:
            self.feed_lines(text[:cut], now_us)
            return
        begin = cut - 1
        for _ in range(wanted):
            begin = text.rfind(b"\n", 0, begin)
        before = dict(self._latest)
        self._drop_partials()
        self.feed_lines(text[begin + 1 : cut], now_us)
        if all(before.get(t) is a for t, a in self._latest.items()):
            self._drop_partials()
            self.feed_lines(text[:cut], now_us)

    def feed_lines(self, text: bytes, now_us: int = 0) -> None:
        """Parse whole lines. Lines of other events are ignored; a lost-events line
        drops every aggregation in progress (it has a hole)."""
        if _LOST in text:
            for chunk in re.split(rb"[^\n]*" + _LOST + rb"[^\n]*\n?", text):
                self._parse(chunk, now_us)
                self._drop_partials()
            return
        self._parse(text, now_us)

    def _drop_partials(self) -> None:
        self.dropped += len(self._partial)
        self._partial.clear()

    def _parse(self, text: bytes, now_us: int) -> None:
        rows = _EVENT.findall(text)
        if not rows:
            return
        self.records += len(rows)
        targets, *columns = (list(map(int, c)) for c in zip(*rows, strict=True))
        first = targets[0]
        if targets.count(first) == len(targets):
            self._assemble(first, columns, now_us)
            return
        for target_id in dict.fromkeys(targets):
            picked = [i for i, t in enumerate(targets) if t == target_id]
            self._assemble(target_id, [[c[i] for i in picked] for c in columns], now_us)

    def _assemble(self, target_id: int, columns: list[list[int]], now_us: int) -> None:
        """One target's events in order, as columns (nr_regions, start, end, nr_accesses,
        age): its complete aggregations, and what is in progress."""
        nrs, starts, ends, accesses, ages = columns
        partial = self._partial.pop(target_id, None)
        if partial is not None:
            nrs = [partial.nr_regions] * len(partial.start) + nrs
            starts = partial.start + starts
            ends = partial.end + ends
            accesses = partial.nr_accesses + accesses
            ages = partial.age + ages
        total = len(starts)
        # A region that does not follow the one before starts another aggregation.
        follows = map(
            operator.and_, map(operator.eq, nrs[1:], nrs), map(operator.gt, starts[1:], starts)
        )
        cuts = [0, *itertools.compress(range(1, total), map(operator.not_, follows)), total]
        for begin, end in itertools.pairwise(cuts):
            nr_regions = nrs[begin]
            # Runs longer than nr_regions (only for broken input) are cut at its multiples.
            for piece in range(begin, end, max(1, nr_regions)):
                stop = min(end, piece + max(1, nr_regions))
                if stop - piece == nr_regions:
                    self._latest[target_id] = Aggregation(
                        target_id=target_id,
                        time_us=now_us,
                        columns=reading.RegionColumns(
                            start=starts[piece:stop],
                            end=ends[piece:stop],
                            nr_accesses=accesses[piece:stop],
                            age=ages[piece:stop],
                        ),
                    )
                elif stop == total:
                    self._partial[target_id] = _Partial(
                        nr_regions=nr_regions,
                        start=starts[piece:stop],
                        end=ends[piece:stop],
                        nr_accesses=accesses[piece:stop],
                        age=ages[piece:stop],
                    )
                else:
                    self.dropped += 1

    def latest(self, target_id: int) -> Aggregation | None:
        return self._latest.get(target_id)

    def latest_by_target(self) -> dict[int, Aggregation]:
        return dict(self._latest)

    def targets(self) -> list[int]:
        return sorted(self._latest)


def buffer_kb(max_regions: int, nr_targets: int = 1) -> int:
    """Per-CPU buffer size for ``BUFFERED_AGGREGATIONS`` aggregations of every target
    and a page (the buffer overwrites a page at a time)."""
    needed = max_regions * nr_targets * EVENT_BYTES * BUFFERED_AGGREGATIONS + _PAGE
    return max(MIN_BUFFER_KB, -(-needed // 1024))


def instance_name(agent_pid: int, kdamond_pid: int) -> str:
    return f"{INSTANCE_PREFIX}{agent_pid}-{kdamond_pid}"


def instance_owner(name: str) -> int | None:
    """The agent pid in one of our instance names, None for any other name."""
    match = _INSTANCE.fullmatch(name)
    return int(match.group(1)) if match else None


def scaled(columns: reading.RegionColumns, unit: int) -> reading.RegionColumns:
    """``columns`` with addresses in bytes (traced addresses are in ``addr_unit``s)."""
    if unit == 1:
        return columns
    return reading.RegionColumns(
        start=[s * unit for s in columns.start],
        end=[e * unit for e in columns.end],
        nr_accesses=columns.nr_accesses,
        age=columns.age,
    )


# ---- tracefs ----------------------------------------------------------------------------


def _write(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as err:
        raise errors.TracefsError(
            str(path), f"writing {value!r}: {os.strerror(err.errno or 0)}"
        ) from err
    try:
        os.write(fd, value.encode())
    except OSError as err:
        raise errors.TracefsError(
            str(path), f"writing {value!r}: {os.strerror(err.errno or 0)}"
        ) from err
    finally:
        os.close(fd)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Tracefs:
    """A tracefs root: the mounted one, or one this object mounted (module docstring)."""

    def __init__(self, root: Path, *, mounted_here: bool = False) -> None:
        self.root = root
        self.mounted_here = mounted_here

    @classmethod
    def find(cls, mount_dir: Path, *, candidates: tuple[Path, ...] = (DEFAULT_TRACEFS,)) -> Tracefs:
        """The first candidate that has ``instances``, else tracefs mounted at ``mount_dir``."""
        for candidate in candidates:
            if (candidate / "instances").is_dir():
                return cls(candidate)
        if (mount_dir / "instances").is_dir():
            return cls(mount_dir)  # mounted by a previous run that did not unmount
        mount_dir.mkdir(parents=True, exist_ok=True)
        libc = _libc()
        if libc.mount(b"nodev", os.fsencode(mount_dir), b"tracefs", 0, None) != 0:
            code = ctypes.get_errno()
            raise errors.TracefsError(
                str(mount_dir),
                f"tracefs is not mounted at {', '.join(map(str, candidates))} and mounting it "
                f"failed: {os.strerror(code)} (needs CONFIG_TRACING and CAP_SYS_ADMIN)",
            )
        return cls(mount_dir, mounted_here=True)

    def new_instance(self, name: str) -> Path:
        """Create trace instance ``name`` (the kernel fills it with its control files)."""
        directory = self.root / "instances" / name
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(directory)  # our own pid's, from a run that died before closing
        try:
            os.mkdir(directory)
        except OSError as err:
            raise errors.TracefsError(
                str(directory), f"creating the instance: {os.strerror(err.errno or 0)}"
            ) from err
        return directory

    def remove_instance(self, name: str) -> None:
        """Remove trace instance ``name`` (``OSError`` as ``rmdir`` raises it: EBUSY while
        its buffer is still in use)."""
        os.rmdir(self.root / "instances" / name)

    def check_events(self) -> None:
        if not (self.root / EVENT_DIR / "format").exists():
            raise errors.TracefsError(
                str(self.root / EVENT_DIR),
                "the kernel has no damon:damon_aggregated trace event",
            )

    def our_instances(self) -> list[str]:
        try:
            names = os.listdir(self.root / "instances")
        except OSError as err:
            raise errors.TracefsError(
                str(self.root / "instances"), os.strerror(err.errno or 0)
            ) from err
        return sorted(n for n in names if instance_owner(n) is not None)

    def remove_stale_instances(self, alive: Callable[[int], bool] = _alive) -> list[str]:
        """Remove instances of ours whose agent is dead (a crashed run's); their names."""
        removed = []
        for name in self.our_instances():
            owner = instance_owner(name)
            if owner is not None and owner != os.getpid() and not alive(owner):
                with contextlib.suppress(OSError):
                    self.remove_instance(name)
                    removed.append(name)
        return removed

    def close(self) -> None:
        """Unmount tracefs if this object mounted it."""
        if not self.mounted_here:
            return
        self.mounted_here = False
        libc = _libc()
        path = os.fsencode(self.root)
        if libc.umount2(path, 0) != 0 and ctypes.get_errno() == errno_codes.EBUSY:
            # Something still holds a file open: detach now, the kernel frees it later.
            libc.umount2(path, _MNT_DETACH)
        with contextlib.suppress(OSError):
            self.root.rmdir()


class KdamondTrace:
    """One kdamond's ``damon_aggregated`` events in a private instance (module docstring)."""

    def __init__(
        self,
        tracefs: Tracefs,
        kdamond_pid: int,
        *,
        max_regions: int,
        nr_targets: int = 1,
        enabled: bool = True,
        agent_pid: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kdamond_pid = kdamond_pid
        self.name = instance_name(os.getpid() if agent_pid is None else agent_pid, kdamond_pid)
        self.directory = tracefs.root / "instances" / self.name
        self._tracefs = tracefs
        self.assembler = Assembler()
        self._monotonic = monotonic
        self._fd: int | None = None
        self._max_kb = buffer_kb(max_regions, nr_targets)
        self._buffer_kb = 0
        self.enabled = False
        tracefs.check_events()
        tracefs.new_instance(self.name)
        try:
            self._set_buffer(self._max_kb)
            context_info = self.directory / "options" / "context-info"
            if context_info.exists():
                # Lines without comm, pid, CPU, flags and timestamp, none of which the
                # parser needs: the kernel formats, and the agent reads, half as much.
                _write(context_info, "0")
            event = self.directory / EVENT_DIR
            _write(event / "filter", f"common_pid == {kdamond_pid}")
            self.set_enabled(enabled)
            pipe = self.directory / "trace_pipe"
            try:
                self._fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as err:
                raise errors.TracefsError(str(pipe), os.strerror(err.errno or 0)) from err
        except errors.TracefsError:
            self.close()
            raise

    def set_enabled(self, enabled: bool) -> None:
        """Turn the event on or off. Off also empties the buffer and forgets what was
        parsed, and on drops what the pipe still holds: an aggregation read after the
        event is on again is one made since."""
        if enabled and self._fd is not None:
            self._read_all()  # events traced before the last switch-off, if any
        _write(self.directory / EVENT_DIR / "enable", "1" if enabled else "0")
        self.enabled = enabled
        if not enabled:
            # Opening ``trace`` for writing with O_TRUNC clears the instance's buffer.
            _write(self.directory / "trace", "")
            self.assembler = Assembler()

    def poll(self) -> int:
        """Read and parse what ``trace_pipe`` holds now, without blocking; bytes read."""
        data = self._read_all()
        if not data:
            return 0
        before = self.assembler.latest_by_target()
        self.assembler.feed_latest(data, round(self._monotonic() * 1e6))
        after = self.assembler.latest_by_target()
        self._resize(completed=any(before.get(t) is not a for t, a in after.items()))
        return len(data)

    def _read_all(self) -> bytes:
        """What ``trace_pipe`` holds now, read without blocking."""
        if self._fd is None:
            raise errors.TracefsError(str(self.directory), "the trace is closed")
        chunks = []
        read, fd = os.read, self._fd
        while True:
            try:
                data = read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as err:
                raise errors.TracefsError(
                    str(self.directory / "trace_pipe"), os.strerror(err.errno or 0)
                ) from err
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def _resize(self, *, completed: bool) -> None:
        """Keep the buffer at ``BUFFERED_AGGREGATIONS`` of the regions there are now.

        The buffer overwrites its oldest events, so its size bounds what a read formats
        and parses, however many aggregations passed. It starts sized for the maximum
        region count, shrinks to the count seen, and grows back to the maximum when a
        read brought events but no complete aggregation (the count outgrew it).
        """
        if completed:
            observed = sum(len(a.columns.start) for a in self.assembler.latest_by_target().values())
            wanted = min(self._max_kb, buffer_kb(observed))
            # Resizing reallocates the buffer: only when the count left a band around the
            # size, and then with room for it to grow a little.
            if not wanted <= self._buffer_kb <= wanted * 3 // 2:
                self._set_buffer(min(self._max_kb, wanted * 5 // 4))
        elif self._buffer_kb < self._max_kb:
            self._set_buffer(self._max_kb)

    def _set_buffer(self, size_kb: int) -> None:
        _write(self.directory / "buffer_size_kb", str(size_kb))
        self._buffer_kb = size_kb

    def latest(self, target_id: int, *, max_age_s: float | None = None) -> Aggregation | None:
        """The target's latest complete aggregation, None if none was read in the last
        ``max_age_s`` (the kdamond stopped emitting, or has not completed one yet)."""
        found = self.assembler.latest(target_id)
        if found is None or max_age_s is None:
            return found
        if self._monotonic() - found.time_us / 1e6 > max_age_s:
            return None
        return found

    def close(self) -> None:
        """Disable the event, close the pipe and remove the instance (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self.directory.exists():
            return
        with contextlib.suppress(errors.TracefsError):
            _write(self.directory / EVENT_DIR / "enable", "0")
        for _ in range(50):
            try:
                self._tracefs.remove_instance(self.name)
                return
            except FileNotFoundError:
                return
            except OSError as err:
                if err.errno != errno_codes.EBUSY:
                    raise errors.TracefsError(
                        str(self.directory), f"removing the instance: {os.strerror(err.errno or 0)}"
                    ) from err
                time.sleep(0.02)
        raise errors.TracefsError(str(self.directory), "removing the instance: still busy")
