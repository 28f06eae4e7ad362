"""Protection: a reclaim floor per pod, decided at every tick, with hysteresis.

A scheme object with ``protection`` (``resources.Protection``) keeps its pageout schemes
off a pod whose memory use is at or below the pod's floor::

    floor     = max(base, minimum)   base: the pod cgroup's memory.low or memory.min
                                           (cgroup v2), the sum of its containers'
                                           memory requests, or 0 (floor: none)
    protected when  memory.current <= floor
    released  when  memory.current >  floor + 5 % of floor    (resources.HYSTERESIS_BP)

Between the two a pod keeps its state, so one hovering at its floor does not flap in and
out of the plan (each change re-plans and re-applies the contexts). A fact that cannot be
read (``memory.low`` on cgroup v1, a memory request that is no quantity, a cgroup that is
gone) protects the pod: someone asked for this pod to be protected, and reclaim it should
not have taken cannot be undone. Each such pod is a ``FloorUnreadable`` warning of the
scheme object.

``floor_bytes`` and ``decide`` are the pure rules. ``ProtectionTracker`` keeps each
(scheme object, pod)'s state from one tick to the next and reads the pods' cgroups
through an injected reader (the daemon passes ``observing.PodResolver.floor_reading``;
tests pass a dict). The planner gets ``ProtectionState.protected``; the status and
/metrics ``ProtectionState.by_pod``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from damon_agent.api import resources
from damon_agent.runtime import planning

REASON_FLOOR_UNREADABLE = "FloorUnreadable"


@dataclass(frozen=True)
class FloorReading:
    """What a pod's cgroup says now: ``memory.current`` and, for a memoryLow or memoryMin
    floor, that file (None where not asked for or not readable: ``problem`` says why)."""

    memory_bytes: int | None
    protection_bytes: int | None = None
    problem: str = ""


# (the pod's cgroup path, the floor's kind) -> what its cgroup says.
Reader = Callable[[str, resources.Floor], FloorReading]


def floor_bytes(
    protection: resources.Protection, reading: FloorReading, request_bytes: int | None
) -> int | None:
    """The pod's floor in bytes; None when its base cannot be read."""
    base: int | None
    if protection.floor in ("memoryLow", "memoryMin"):
        base = reading.protection_bytes
    elif protection.floor == "requests":
        base = request_bytes
    else:
        base = 0
    return None if base is None else max(base, protection.minimum_bytes)


def release_above(floor: int) -> int:
    """The memory use a protected pod must exceed to be reclaimed from again."""
    return floor + -(-floor * resources.HYSTERESIS_BP // 10_000)


def decide(memory_bytes: int | None, floor: int | None, *, was_protected: bool) -> bool:
    """Whether the pod is protected now (module docstring); unknown facts protect it."""
    if memory_bytes is None or floor is None:
        return True
    if was_protected:
        return memory_bytes <= release_above(floor)
    return memory_bytes <= floor


@dataclass(frozen=True)
class PodProtection:
    """One scheme object's floor for one of its pods, and whether it holds the pod now."""

    source: str  # resources.AssignedScheme.key
    pod: str  # PodFacts.key
    uid: str
    protected: bool
    floor_bytes: int | None  # None: not readable (then protected)
    memory_bytes: int | None
    problem: str = ""


@dataclass(frozen=True)
class PodFloor:
    """A pod's protection over every scheme object that protects it (for the status)."""

    protected: bool  # some scheme object's pageout leaves it alone now
    floor_bytes: int | None  # the highest readable floor; None: none readable


@dataclass(frozen=True)
class ProtectionState:
    pods: tuple[PodProtection, ...] = ()

    def protected(self) -> dict[str, frozenset[str]]:
        """Scheme object key -> the keys of its pods held at their floor now (the
        planner's ``protected``)."""
        found: dict[str, set[str]] = {}
        for one in self.pods:
            if one.protected:
                found.setdefault(one.source, set()).add(one.pod)
        return {source: frozenset(pods) for source, pods in found.items()}

    def by_pod(self) -> dict[str, PodFloor]:
        """Pod key -> its protection over the scheme objects that have a floor for it."""
        found: dict[str, PodFloor] = {}
        for one in self.pods:
            before = found.get(one.pod, PodFloor(protected=False, floor_bytes=None))
            floors = [f for f in (one.floor_bytes, before.floor_bytes) if f is not None]
            found[one.pod] = PodFloor(
                protected=one.protected or before.protected,
                floor_bytes=max(floors) if floors else None,
            )
        return found

    def problems(self) -> tuple[planning.Problem, ...]:
        """A warning for each pod whose floor or memory use could not be read."""
        return tuple(
            planning.Problem(
                one.source,
                "warning",
                REASON_FLOOR_UNREADABLE,
                f"pod {one.pod}: {one.problem}; it is kept out of reclaim (the safe side)",
            )
            for one in self.pods
            if one.problem
        )


def protecting(assigned: resources.AssignedScheme) -> resources.Protection | None:
    """The scheme object's protection, where it has a pageout scheme to hold back."""
    if assigned.protection is None or assigned.whole_node:
        return None
    if not any(s.action in resources.PROTECTED_ACTIONS for s in assigned.spec.schemes):
        return None
    return assigned.protection


class ProtectionTracker:
    """Each (scheme object, pod)'s protection across ticks (module docstring)."""

    def __init__(self, read: Reader) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._state = ProtectionState()

    @property
    def state(self) -> ProtectionState:
        with self._lock:
            return self._state

    def update(
        self, assigned: Sequence[resources.AssignedScheme], pods: Sequence[planning.PodFacts]
    ) -> ProtectionState:
        """Read the protected schemes' pods and decide; pods no longer selected, and
        scheme objects no longer assigned or protecting, are forgotten."""
        with self._lock:
            was = {(p.source, p.uid): p.protected for p in self._state.pods}
        readings: dict[tuple[str, resources.Floor], FloorReading] = {}
        decided = []
        for source in sorted(assigned, key=lambda a: a.key):
            protection = protecting(source)
            if protection is None:
                continue
            for pod in planning.select_pods(source, pods):
                if pod.done or not pod.cgroup_path or not pod.uid:
                    continue
                where = (pod.cgroup_path, protection.floor)
                if where not in readings:
                    readings[where] = self._read(*where)
                decided.append(self._decide(source.key, protection, pod, readings[where], was))
        state = ProtectionState(tuple(decided))
        with self._lock:
            self._state = state
        return state

    @staticmethod
    def _decide(
        source: str,
        protection: resources.Protection,
        pod: planning.PodFacts,
        reading: FloorReading,
        was: Mapping[tuple[str, str], bool],
    ) -> PodProtection:
        floor = floor_bytes(protection, reading, pod.memory_request_bytes)
        problem = reading.problem
        if not problem and floor is None:
            problem = "its memory requests cannot be read"
        return PodProtection(
            source=source,
            pod=pod.key,
            uid=pod.uid,
            protected=decide(
                reading.memory_bytes, floor, was_protected=was.get((source, pod.uid), False)
            ),
            floor_bytes=floor,
            memory_bytes=reading.memory_bytes,
            problem=problem,
        )
