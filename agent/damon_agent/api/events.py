"""Kubernetes Events (core v1): what to post about an object, and how often.

The agent posts Warning Events on its DamonNode when something fails on the node (a plan
the backend refused, a backend that would not start); the operator posts Events on a
scheme when its Accepted, Ready or Degraded condition changes. This module is what both
share (the one package the operator may import from the agent's tree): the data, a pure
rate limiter, and the small asyncio loop that posts through a function each side injects.

* ``ObjectRef``   the object an Event is about (``involvedObject``) or relates to
                  (``related``: the scheme a node-side failure concerns);
* ``Occurrence``  something that happened once: type, reason, message, about what;
* ``Correlator``  folds occurrences into series, one per (object, related, type, reason):
                  the first occurrence of a series is due at once, repeats at most once per
                  ``interval_s``, carrying the series' ``count`` and the latest message, as
                  client-go's event correlator does with ``count``. A series' Event object
                  is created once and patched afterwards, so a burst of failures makes one
                  Event object whose ``count`` says how many. At most ``max_series`` series
                  are kept (the least recently seen goes first); a series silent for
                  ``idle_s`` starts afresh (the apiserver has dropped its Event by then:
                  ``--event-ttl``, one hour by default).
* ``Posting``     one write of a series: the Event's name and namespace, its whole body
                  (``body``: for a create) or what a patch brings up to date (``patch``).
* ``Recorder``    ``record`` never blocks and never fails (it only updates the
                  correlator): the agent's node-local loop and the operator's status loop
                  call it and go on. ``run``, a task of its own, posts what is due, each
                  write with a timeout; while the apiserver is away it backs off, and
                  repeats meanwhile fold into the series' counts (bounded memory).

Core v1 rather than events.k8s.io/v1: ``kubectl describe`` and ``kubectl get events`` of
every supported version read it, and its ``count`` is the correlator's. An Event about a
cluster-scoped object (a DamonNode, a ClusterDamonScheme) lives in namespace ``default``,
as the kubelet's Events about Nodes do (the apiserver accepts only that or none).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from damon_agent.api import conditions

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
# Events are read by people in ``kubectl describe``; the apiserver's own limit is larger.
MAX_MESSAGE = 1024
# Where Events about cluster-scoped objects go.
CLUSTER_EVENTS_NAMESPACE = "default"
# Event names are DNS subdomains (253 characters): the object's name, a dot, 16 hex digits.
_MAX_NAME_PREFIX = 253 - 17


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None = None  # None: cluster-scoped
    uid: str = ""

    def to_api(self) -> dict[str, str]:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            ref["namespace"] = self.namespace
        if self.uid:
            ref["uid"] = self.uid
        return ref


@dataclasses.dataclass(frozen=True)
class Occurrence:
    about: ObjectRef
    type: EventType
    reason: str  # CamelCase, as condition reasons
    message: str
    related: ObjectRef | None = None

    @property
    def series_key(self) -> tuple[ObjectRef, ObjectRef | None, str, str]:
        # Not the message: a failure whose details vary (an errno, a pid) is one series,
        # shown with its latest message.
        return (self.about, self.related, self.type, self.reason)


def _timestamp(at: datetime.datetime) -> str:
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


@dataclasses.dataclass(frozen=True)
class Posting:
    name: str
    namespace: str
    occurrence: Occurrence  # the latest of the series
    count: int  # occurrences of the series so far
    first_at: datetime.datetime
    last_at: datetime.datetime
    create: bool  # no Event object was made for the series yet

    def body(self, *, component: str, instance: str) -> dict[str, Any]:
        """The whole core v1 Event, for a create (or a re-create after it expired)."""
        occurrence = self.occurrence
        event: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "involvedObject": occurrence.about.to_api(),
            "type": occurrence.type,
            "reason": occurrence.reason,
            "message": _message(occurrence.message),
            "count": self.count,
            "firstTimestamp": _timestamp(self.first_at),
            "lastTimestamp": _timestamp(self.last_at),
            "source": {"component": component, "host": instance},
            "reportingComponent": component,
            "reportingInstance": instance,
        }
        if occurrence.related is not None:
            event["related"] = occurrence.related.to_api()
        return event

    def patch(self) -> dict[str, Any]:
        """A merge patch bringing the series' existing Event up to date."""
        return {
            "count": self.count,
            "lastTimestamp": _timestamp(self.last_at),
            "message": _message(self.occurrence.message),
        }


@dataclasses.dataclass
class _Series:
    name: str
    namespace: str
    latest: Occurrence
    first_at: datetime.datetime
    last_at: datetime.datetime
    seen_s: float
    count: int = 1
    posted_count: int = 0
    posted_s: float = float("-inf")
    created: bool = False

    @property
    def pending(self) -> int:
        return self.count - self.posted_count


def _event_name(occurrence: Occurrence, first_at: datetime.datetime) -> str:
    # Stable for the series, distinct across series and across restarts (the start time),
    # as client-go's <name>.<nanoseconds> is.
    about, related = occurrence.about, occurrence.related
    parts = [about.kind, about.namespace or "", about.name, about.uid, occurrence.type]
    parts += [occurrence.reason, related.kind if related else "", related.name if related else ""]
    parts.append(first_at.isoformat())
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return f"{about.name[:_MAX_NAME_PREFIX]}.{digest}"


class Correlator:
    """Occurrences in, postings out, at most one per series per ``interval_s``; pure."""

    def __init__(
        self, *, interval_s: float = 60.0, max_series: int = 256, idle_s: float = 3600.0
    ) -> None:
        if interval_s < 0 or max_series < 1:
            raise ValueError("interval_s must be >= 0 and max_series >= 1")
        self.interval_s = interval_s
        self.max_series = max_series
        self.idle_s = idle_s
        self._series: collections.OrderedDict[tuple[Any, ...], _Series] = collections.OrderedDict()
        self.dropped = 0  # occurrences never posted: their series was pushed out

    def __len__(self) -> int:
        return len(self._series)

    def observe(self, occurrence: Occurrence, *, now_s: float, at: datetime.datetime) -> None:
        key = occurrence.series_key
        series = self._series.get(key)
        if series is not None and not series.pending and now_s - series.seen_s > self.idle_s:
            del self._series[key]
            series = None
        if series is None:
            self._make_room()
            self._series[key] = _Series(
                name=_event_name(occurrence, at),
                namespace=occurrence.about.namespace or CLUSTER_EVENTS_NAMESPACE,
                latest=occurrence,
                first_at=at,
                last_at=at,
                seen_s=now_s,
            )
            return
        series.count += 1
        series.latest, series.last_at, series.seen_s = occurrence, at, now_s
        self._series.move_to_end(key)

    def _make_room(self) -> None:
        while len(self._series) >= self.max_series:
            # Least recently seen first, preferring series with nothing left to post.
            victim = next((k for k, s in self._series.items() if not s.pending), None)
            if victim is None:
                victim = next(iter(self._series))
            self.dropped += self._series.pop(victim).pending

    def due(self, now_s: float) -> list[Posting]:
        """The series with unposted occurrences whose interval has passed."""
        return [
            Posting(
                name=s.name,
                namespace=s.namespace,
                occurrence=s.latest,
                count=s.count,
                first_at=s.first_at,
                last_at=s.last_at,
                create=not s.created,
            )
            for s in self._series.values()
            if s.pending and now_s >= s.posted_s + self.interval_s
        ]

    def next_due_in(self, now_s: float) -> float | None:
        """Seconds until the next series falls due (0: now); None when nothing waits."""
        waits = [s.posted_s + self.interval_s - now_s for s in self._series.values() if s.pending]
        return max(0.0, min(waits)) if waits else None

    def posted(self, posting: Posting, *, now_s: float) -> None:
        """``posting`` was written: its occurrences are out, the series' interval restarts."""
        series = self._series.get(posting.occurrence.series_key)
        if series is None or series.name != posting.name:
            return  # pushed out (or restarted) meanwhile
        series.posted_count = max(series.posted_count, posting.count)
        series.posted_s = now_s
        series.created = True


Post = Callable[[Posting], Awaitable[None]]


class Recorder:
    """Posts what the correlator says is due, on its own task (see the module docstring).

    ``post`` writes one posting: creates the Event when ``posting.create`` (patching it if
    it exists: a restarted poster), patches it otherwise (creating it if it expired); it
    raises one of ``failures`` when the apiserver does not take it.
    """

    def __init__(
        self,
        correlator: Correlator,
        post: Post,
        *,
        failures: tuple[type[Exception], ...],
        timeout_s: float = 10.0,
        retry_first_s: float = 1.0,
        retry_max_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime.datetime] = conditions.now,
    ) -> None:
        self.correlator = correlator
        self._post = post
        self._failures: tuple[type[Exception], ...] = (TimeoutError, *failures)
        self._timeout_s = timeout_s
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._monotonic = monotonic
        self._clock = clock
        self._wake = asyncio.Event()
        self.recorded = 0
        self.posted = 0
        self.post_errors = 0

    def record(self, occurrence: Occurrence) -> None:
        """Note an occurrence; returns at once (the posting happens on ``run``'s task)."""
        self.recorded += 1
        self.correlator.observe(occurrence, now_s=self._monotonic(), at=self._clock())
        self._wake.set()

    async def flush(self) -> bool:
        """Post everything due now; False when a write failed (it stays due)."""
        for posting in self.correlator.due(self._monotonic()):
            try:
                await asyncio.wait_for(self._post(posting), timeout=self._timeout_s)
            except self._failures as err:
                self.post_errors += 1
                log.warning("event %s %s: %s", posting.occurrence.reason, posting.name, err)
                return False
            self.posted += 1
            self.correlator.posted(posting, now_s=self._monotonic())
        return True

    async def run(self) -> None:
        """Forever: post what is due, sleep until more is (or something is recorded)."""
        backoff = self._retry_first_s
        while True:
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._retry_max_s)
                continue
            backoff = self._retry_first_s
            wait = self.correlator.next_due_in(self._monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
