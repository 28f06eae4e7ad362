"""The agent's recent snapshots, kept in a bounded ring so a recording can start in the past.

``damonctl record --agent`` polls ``/v1/snapshots`` (``http``) for the snapshots newer than
the last one it wrote; ``--from-past`` first takes whatever this ring holds. It is fed:

- by every ``/v1/snapshot`` and ``/v1/snapshots`` request, which reads the backend's latest
  snapshots (on the kernel backend, DAMON's regions) and adds them here;
- by the daemon when it builds a status: the in-process backends' (sim, userspace) latest
  snapshots each time, as they hold them in memory; the kernel's at most every
  ``daemon.HISTORY_FEED_PERIOD_S`` (10 s), since each is a read of the kdamond's regions
  (a few milliseconds a context), so that a past is there without a poller.

Bounds (whichever is reached first; the oldest arrivals go first):

- ``window_s``: snapshots older than this behind the newest one held are dropped
  (default ``DEFAULT_WINDOW_S``, 5 minutes);
- ``max_bytes``: the held region arrays plus a fixed estimate of the Python objects
  around each snapshot and target stay under it (default ``DEFAULT_MAX_BYTES``,
  32 MiB). The newest snapshot is always kept, so the real bound is ``max_bytes`` plus
  one snapshot (a snapshot is bounded by max_nr_regions: 32 bytes a region).

Compactness: the schemes of one monitoring context share its snapshot (``backend.entries``
serves the same regions under each scheme's key), so one snapshot read for several schemes
is held once and counted once. Region arrays are copied into arrays the ring owns: a
held view into a bigger buffer would keep the whole buffer alive behind a small count.

Time: ``time_us`` is the backend's clock (monotonic on a node; the sim's virtual clock).
Within one scheme, held snapshots have strictly increasing times (a snapshot not newer than
the scheme's last one held is the same aggregation read again, and is skipped), so a
client asking for one scheme "newer than the last time I got" misses nothing the ring held.

No I/O and no clock of its own. One lock: the HTTP handlers add on the event loop's thread,
the daemon from the worker thread that builds its status. ``add`` is O(1) amortised per
snapshot (appends, and drops from the other end); ``page`` scans the ring, which is bounded.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from damon_agent.core import snapshots
from damon_agent.runtime import wire

DEFAULT_WINDOW_S: Final = 300.0
DEFAULT_MAX_BYTES: Final = 32 << 20
# Estimates of what CPython spends around the arrays: the Snapshot, its SnapshotEntry
# objects and dicts, and per target the TargetSnapshot and four ndarray headers (112
# bytes each on 64-bit). Counted so a ring of many tiny snapshots is bounded too.
SNAPSHOT_OVERHEAD_BYTES: Final = 1024
TARGET_OVERHEAD_BYTES: Final = 4 * 112 + 200


@dataclass(frozen=True)
class _Held:
    """One snapshot held, with each scheme it was served under when it was read."""

    time_us: int
    entries: tuple[wire.SnapshotEntry, ...]
    nbytes: int


@dataclass(frozen=True)
class Page:
    """The answer to one query: snapshots in time order, and whether more are waiting."""

    entries: list[wire.SnapshotEntry]
    # True when ``limit`` cut the answer short: ask again from the last time returned.
    more: bool
    # The oldest and newest times the ring holds (any scheme); None when it is empty.
    oldest_us: int | None
    newest_us: int | None


class SnapshotHistory:
    """A bounded ring of recent snapshots, per scheme (see the module docstring)."""

    def __init__(
        self, *, window_s: float = DEFAULT_WINDOW_S, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if window_s < 0:
            raise ValueError(f"window_s: {window_s} is negative")
        if max_bytes < 0:
            raise ValueError(f"max_bytes: {max_bytes} is negative")
        self.window_us = round(window_s * 1e6)
        self.max_bytes = max_bytes
        self._ring: deque[_Held] = deque()
        self._nbytes = 0
        self._newest_us: int | None = None
        # scheme -> time of its newest snapshot held; kept only for schemes in the ring.
        self._last_us: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """What the held snapshots take, as counted against ``max_bytes``."""
        return self._nbytes

    def __len__(self) -> int:
        """Snapshots held (a snapshot shared by several schemes counts once)."""
        return len(self._ring)

    def add(self, entries: Iterable[wire.SnapshotEntry]) -> int:
        """Hold the snapshots of ``entries`` not held yet; returns how many entries were new."""
        with self._lock:
            return self._add(entries)

    def _add(self, entries: Iterable[wire.SnapshotEntry]) -> int:
        # Entries of one context share one Snapshot object: group them so it is held once.
        groups: dict[int, list[wire.SnapshotEntry]] = {}
        for entry in entries:
            last = self._last_us.get(entry.scheme)
            if last is not None and entry.snapshot.time_us <= last:
                continue  # the same aggregation read again (or an older one)
            groups.setdefault(id(entry.snapshot), []).append(entry)
        added = 0
        for group in groups.values():
            owned = _owned(group[0].snapshot)
            kept = tuple(replace(entry, snapshot=owned) for entry in group)
            self._ring.append(_Held(owned.time_us, kept, _nbytes(owned)))
            self._nbytes += self._ring[-1].nbytes
            for entry in kept:
                self._last_us[entry.scheme] = owned.time_us
            if self._newest_us is None or owned.time_us > self._newest_us:
                self._newest_us = owned.time_us
            added += len(kept)
        self._evict()
        return added

    def page(
        self,
        *,
        since_us: int | None = None,
        limit: int | None = None,
        keep: Callable[[wire.SnapshotEntry], bool] | None = None,
    ) -> Page:
        """The held entries newer than ``since_us`` that ``keep`` accepts, oldest first.

        With ``limit``, at most that many snapshot times (all the entries of the last time
        included are returned, so asking again with ``since_us`` = the last time returned
        skips none).
        """
        with self._lock:
            ring = list(self._ring)
            newest = self._newest_us
        found = [
            entry
            for held in ring
            if since_us is None or held.time_us > since_us
            for entry in held.entries
            if keep is None or keep(entry)
        ]
        found.sort(key=lambda e: e.snapshot.time_us)  # stable: arrival order within a time
        more = False
        if limit is not None:
            times = sorted({e.snapshot.time_us for e in found})
            if len(times) > limit:
                cut_us = times[limit - 1]
                found = [e for e in found if e.snapshot.time_us <= cut_us]
                more = True
        oldest = min((h.time_us for h in ring), default=None)
        return Page(entries=found, more=more, oldest_us=oldest, newest_us=newest)

    def _evict(self) -> None:
        """Drop the oldest arrivals while over a bound; the newest snapshot always stays."""
        while len(self._ring) > 1:
            oldest = self._ring[0]
            too_old = (
                self._newest_us is not None and self._newest_us - oldest.time_us > self.window_us
            )
            if not too_old and self._nbytes <= self.max_bytes:
                return
            self._ring.popleft()
            self._nbytes -= oldest.nbytes
            for entry in oldest.entries:
                # Forget the scheme's last time once its newest snapshot has gone too.
                if self._last_us.get(entry.scheme) == oldest.time_us:
                    del self._last_us[entry.scheme]


def _owned(snap: snapshots.Snapshot) -> snapshots.Snapshot:
    """The snapshot with region arrays of its own, contiguous and int64."""
    return snapshots.Snapshot(
        time_us=int(snap.time_us),
        sample_us=int(snap.sample_us),
        aggr_us=int(snap.aggr_us),
        targets=tuple(
            snapshots.TargetSnapshot(
                target_id=int(target.target_id),
                start=np.array(target.start, dtype=np.int64, copy=True),
                end=np.array(target.end, dtype=np.int64, copy=True),
                nr_accesses=np.array(target.nr_accesses, dtype=np.int64, copy=True),
                age=np.array(target.age, dtype=np.int64, copy=True),
            )
            for target in snap.targets
        ),
    )


def _nbytes(snap: snapshots.Snapshot) -> int:
    arrays = sum(
        t.start.nbytes + t.end.nbytes + t.nr_accesses.nbytes + t.age.nbytes for t in snap.targets
    )
    return SNAPSHOT_OVERHEAD_BYTES + TARGET_OVERHEAD_BYTES * len(snap.targets) + arrays
