"""What the loop did to the node, per pod and per monitoring context: for the status and
/metrics.

Pods (``PodTracker``). A pod a running scheme selects is read from its cgroup
(``observing.PodMemory``) each time the status is built or /metrics is scraped. The
first reading of each pod (by UID) is kept as its baseline, so a pod's outcome says what
changed since the agent first saw it: memory charged then and now (what it saved), swap
then and now, and the refaults since (pages reclaimed and brought back in: what the
reclaim cost it). Baselines live in memory: a restarted agent starts over (``since``
says from when). A pod that is gone, or no longer selected, is forgotten. A pod a
protecting scheme selects carries its reclaim floor (``protection``) along.

Contexts (``CpuSampler``). The CPU time of each kdamond (``/proc/PID/stat``: the kernel
backend's ``kdamond_pids``), cumulative and as a share of one CPU since the previous
sample: the cost the project's README quotes.

The readers are injected (the daemon passes the node's; tests pass dicts), and both
classes take a lock: the loop and /metrics scrapes call them from different threads.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from damon_agent.node import errors as node_errors
from damon_agent.runtime import observing, planning, protection

MemoryReader = Callable[[str], observing.PodMemory | None]
CpuReader = Callable[[int], float]


@dataclass(frozen=True)
class PodOutcome:
    namespace: str
    name: str
    uid: str
    schemes: tuple[str, ...]  # keys of the scheme objects that select it
    now: observing.PodMemory
    first: observing.PodMemory
    since: datetime.datetime
    # Its reclaim floor (``protection.PodFloor``), where a scheme that selects it has one.
    floor: protection.PodFloor | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def saved_bytes(self) -> int:
        """How much less memory the pod is charged than at first sight (never below 0)."""
        return max(0, self.first.memory_bytes - self.now.memory_bytes)

    @property
    def refaults(self) -> int:
        """Pages refaulted since first sight (0 where the node does not count them)."""
        if self.now.refaults is None or self.first.refaults is None:
            return 0
        return max(0, self.now.refaults - self.first.refaults)


def selected_pods(plan: planning.Plan) -> dict[str, tuple[str, ...]]:
    """Pod key -> the scheme objects that run on it, from the plan's summaries (also
    those whose pageout holds off now: every pod of theirs is at its reclaim floor)."""
    found: dict[str, list[str]] = {}
    for summary in plan.sources:
        if not summary.planned and not summary.protected:
            continue
        for pod in summary.pods:
            found.setdefault(pod, []).append(summary.key)
    return {pod: tuple(keys) for pod, keys in found.items()}


def most_interesting(pods: Sequence[PodOutcome], limit: int) -> list[PodOutcome]:
    """At most ``limit`` pods: the most pressed first, then those that saved the most."""

    def interest(pod: PodOutcome) -> tuple[float, int, str]:
        pressure = pod.now.psi.some_avg10 if pod.now.psi is not None else 0.0
        return (-pressure, -pod.saved_bytes, pod.key)

    return sorted(pods, key=interest)[: max(0, limit)]


class PodTracker:
    """First sight and now of every pod a running scheme selects (module docstring)."""

    def __init__(self, read: MemoryReader) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._first: dict[str, tuple[observing.PodMemory, datetime.datetime]] = {}

    def observe(
        self,
        plan: planning.Plan,
        pods: Sequence[planning.PodFacts],
        now: datetime.datetime,
        floors: Mapping[str, protection.PodFloor] | None = None,
    ) -> list[PodOutcome]:
        """``floors``: pod key -> its reclaim floor now (``ProtectionState.by_pod``)."""
        selected = selected_pods(plan)
        readings = []
        seen = set()
        for facts in pods:
            schemes = selected.get(facts.key)
            if not schemes or not facts.cgroup_path or not facts.uid:
                continue
            seen.add(facts.uid)  # kept through a reading that fails once
            reading = self._read(facts.cgroup_path)
            if reading is not None:
                readings.append((facts, schemes, reading))
        result = []
        with self._lock:
            for uid in [u for u in self._first if u not in seen]:
                del self._first[uid]
            for facts, schemes, reading in readings:
                first, since = self._first.setdefault(facts.uid, (reading, now))
                result.append(
                    PodOutcome(
                        namespace=facts.namespace,
                        name=facts.name,
                        uid=facts.uid,
                        schemes=schemes,
                        now=reading,
                        first=first,
                        since=since,
                        floor=(floors or {}).get(facts.key),
                    )
                )
        return sorted(result, key=lambda o: o.key)


@dataclass(frozen=True)
class CpuUse:
    pid: int
    seconds: float  # since the thread started
    percent: float | None  # of one CPU since the previous sample; None at the first


class CpuSampler:
    """Kernel threads' CPU time, and their share of one CPU between two samples."""

    def __init__(self, read: CpuReader) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._last: dict[str, tuple[int, float, float]] = {}  # key -> (pid, at_s, seconds)

    def sample(
        self, pids: Mapping[str, int], now_s: float, *, record: bool = True
    ) -> dict[str, CpuUse]:
        """CPU use of each thread; ``record`` False reads without moving the window that
        ``percent`` is measured over (a /metrics scrape needs only the seconds)."""
        result = {}
        with self._lock:
            for key, pid in pids.items():
                if pid <= 0:
                    continue
                try:
                    seconds = self._read(pid)
                except (node_errors.NodeError, OSError):
                    continue
                percent = None
                last = self._last.get(key)
                if last is not None and last[0] == pid and now_s > last[1]:
                    percent = max(0.0, 100.0 * (seconds - last[2]) / (now_s - last[1]))
                if record:
                    self._last[key] = (pid, now_s, seconds)
                result[key] = CpuUse(pid=pid, seconds=seconds, percent=percent)
            if record:
                for key in [k for k in self._last if k not in pids]:
                    del self._last[key]
        return result
