"""Reclaim floors per pod: the floor and the hysteresis (pure), the tracker across ticks
(a dict stands in for the cgroups), the planner leaving protected pods out of pageout,
and what the status and /metrics say of them."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from node_support import TREES

from damon_agent.api import resources
from damon_agent.node import cgroups
from damon_agent.node import errors as node_errors
from damon_agent.runtime import backend, metrics, observing, outcome, planning, protection, status
from damon_agent.schemes.stats import SchemeCounters

MI = 1 << 20
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
PADDR = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": frozenset({"pageout", "stat"})},
    filter_types=frozenset({"memcg", "anon"}),
    goal_metrics=frozenset(),
)
VADDR = planning.Capabilities(
    operations=frozenset({"paddr", "vaddr"}),
    actions={"paddr": frozenset({"pageout", "stat"}), "vaddr": frozenset({"pageout", "stat"})},
    filter_types=frozenset({"memcg", "anon", "target"}),
    goal_metrics=frozenset(),
)


def floor(kind: str = "none", minimum: str = "0") -> resources.Protection:
    return resources.Protection.model_validate({"floor": kind, "minimum": minimum})


# -- the rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "minimum", "reading", "requests", "expected"),
    [
        ("memoryLow", "64Mi", protection.FloorReading(500 * MI, 100 * MI), 0, 100 * MI),
        ("memoryMin", "64Mi", protection.FloorReading(500 * MI, 0), 0, 64 * MI),  # minimum wins
        ("requests", "0", protection.FloorReading(500 * MI), 256 * MI, 256 * MI),
        ("requests", "300Mi", protection.FloorReading(500 * MI), 256 * MI, 300 * MI),
        ("none", "64Mi", protection.FloorReading(500 * MI), 256 * MI, 64 * MI),
        # What cannot be read: no floor (the pod is then protected).
        ("memoryLow", "64Mi", protection.FloorReading(500 * MI, problem="cgroup v1"), 0, None),
        ("requests", "64Mi", protection.FloorReading(500 * MI), None, None),
    ],
)
def test_the_floor_is_the_larger_of_its_base_and_the_minimum(
    kind: str,
    minimum: str,
    reading: protection.FloorReading,
    requests: int | None,
    expected: int | None,
) -> None:
    assert protection.floor_bytes(floor(kind, minimum), reading, requests) == expected


def test_protection_starts_at_the_floor_and_ends_above_it_by_five_percent() -> None:
    limit = 100 * MI
    assert protection.release_above(limit) == 105 * MI
    # Unprotected: only at or below the floor does it start.
    assert not protection.decide(limit + 1, limit, was_protected=False)
    assert protection.decide(limit, limit, was_protected=False)
    # Protected: it holds through the margin, and ends only above it.
    assert protection.decide(104 * MI, limit, was_protected=True)
    assert protection.decide(105 * MI, limit, was_protected=True)
    assert not protection.decide(105 * MI + 1, limit, was_protected=True)
    # A zero floor has no margin; unknown facts protect.
    assert protection.decide(0, 0, was_protected=False)
    assert not protection.decide(1, 0, was_protected=True)
    assert protection.decide(None, limit, was_protected=False)
    assert protection.decide(limit * 9, None, was_protected=False)


def test_a_pod_hovering_at_its_floor_does_not_flap() -> None:
    limit = 200 * MI
    was = False
    changes = 0
    # Memory use wobbling by 2% around the floor, as reclaim and refaults make it do.
    for used in [210, 201, 199, 203, 198, 204, 200, 206, 211, 199]:
        now = protection.decide(used * MI, limit, was_protected=was)
        changes += now != was
        was = now
    assert changes == 3  # in at 199, out at 211 (> 210), in again at 199


# -- the tracker across ticks ---------------------------------------------------------------


def assigned(name: str = "s", *schemes: dict[str, Any], **scope: Any) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "DamonScheme",
            "namespace": "shop",
            "name": name,
            "uid": f"u-{name}",
            "generation": 1,
            "namespaces": ["shop"],
            "podSelector": {},
            "spec": {"schemes": list(schemes or ({"name": "cold", "action": "pageout"},))},
            **scope,
        }
    )


def pod(name: str, requests: int | None = 0, pids: tuple[int, ...] = ()) -> planning.PodFacts:
    return planning.PodFacts(
        namespace="shop",
        name=name,
        uid=f"uid-{name}",
        cgroup_path=f"/kubepods/{name}",
        memcg_paths=(f"/kubepods/{name}",),
        pids=pids,
        memory_request_bytes=requests,
    )


class Node:
    """pod cgroup path -> (memory.current, memory.low); counts the reads."""

    def __init__(self) -> None:
        self.cgroups: dict[str, tuple[int | None, int | None]] = {}
        self.reads = 0

    def read(self, path: str, kind: resources.Floor) -> protection.FloorReading:
        self.reads += 1
        used, low = self.cgroups.get(path, (None, None))
        if used is None:
            return protection.FloorReading(None, problem="no memory use: cgroup gone")
        if kind != "memoryLow":
            return protection.FloorReading(used)
        if low is None:
            return protection.FloorReading(used, problem="no memory.low: cgroup v1")
        return protection.FloorReading(used, low)


def test_the_tracker_keeps_each_pods_state_between_ticks_and_forgets_gone_pods() -> None:
    node = Node()
    tracker = protection.ProtectionTracker(node.read)
    guarded = assigned("low", protection={"floor": "memoryLow"})
    a, b = pod("a"), pod("b")
    node.cgroups = {"/kubepods/a": (90 * MI, 100 * MI), "/kubepods/b": (300 * MI, 100 * MI)}
    state = tracker.update([guarded], [a, b])
    assert state.protected() == {"DamonScheme/shop/low": frozenset({"shop/a"})}
    assert node.reads == 2

    node.cgroups["/kubepods/a"] = (104 * MI, 100 * MI)  # within the margin: still held
    assert tracker.update([guarded], [a, b]).protected() == {
        "DamonScheme/shop/low": frozenset({"shop/a"})
    }
    node.cgroups["/kubepods/a"] = (106 * MI, 100 * MI)  # above it: released
    assert tracker.update([guarded], [a, b]).protected() == {}
    node.cgroups["/kubepods/a"] = (104 * MI, 100 * MI)  # not at the floor: stays released
    assert tracker.update([guarded], [a, b]).protected() == {}

    node.cgroups["/kubepods/a"] = (100 * MI, 100 * MI)
    assert tracker.update([guarded], [a, b]).protected()
    tracker.update([guarded], [b])  # a went away: its state goes with it
    node.cgroups["/kubepods/a"] = (104 * MI, 100 * MI)
    assert tracker.update([guarded], [a, b]).protected() == {}  # a new start, unprotected


def test_unreadable_facts_protect_and_are_warned_about_per_scheme() -> None:
    node = Node()
    node.cgroups = {"/kubepods/a": (500 * MI, None)}  # memory.low not there (cgroup v1)
    tracker = protection.ProtectionTracker(node.read)
    low = assigned("low", protection={"floor": "memoryLow"})
    requests = assigned("req", protection={"floor": "requests"})
    state = tracker.update([low, requests], [pod("a", requests=None), pod("gone")])
    assert state.protected() == {
        "DamonScheme/shop/low": frozenset({"shop/a", "shop/gone"}),
        "DamonScheme/shop/req": frozenset({"shop/a", "shop/gone"}),
    }
    messages = {(p.source, p.reason, p.message) for p in state.problems()}
    assert (
        "DamonScheme/shop/low",
        "FloorUnreadable",
        "pod shop/a: no memory.low: cgroup v1; it is kept out of reclaim (the safe side)",
    ) in messages
    assert (
        "DamonScheme/shop/req",
        "FloorUnreadable",
        "pod shop/a: its memory requests cannot be read; it is kept out of reclaim (the safe side)",
    ) in messages
    assert all(p.severity == "warning" for p in state.problems()) and len(messages) == 4


def test_only_schemes_with_a_floor_and_a_pageout_read_their_pods() -> None:
    node = Node()
    node.cgroups = {"/kubepods/a": (10 * MI, None)}
    tracker = protection.ProtectionTracker(node.read)
    plain = assigned("plain")
    counting = assigned("count", {"name": "c", "action": "stat"})
    counting = counting.model_copy(update={"protection": floor("requests")})
    finished = planning.PodFacts(
        namespace="shop", name="done", uid="u-done", cgroup_path="/kubepods/done", phase="Failed"
    )
    assert tracker.update([plain, counting], [pod("a"), finished]).pods == ()
    assert node.reads == 0


def test_a_pod_two_schemes_protect_shows_the_highest_floor() -> None:
    node = Node()
    node.cgroups = {"/kubepods/a": (150 * MI, 100 * MI)}
    tracker = protection.ProtectionTracker(node.read)
    state = tracker.update(
        [
            assigned("low", protection={"floor": "memoryLow"}),
            assigned("big", protection={"minimum": "200Mi"}),
        ],
        [pod("a")],
    )
    assert state.protected() == {"DamonScheme/shop/big": frozenset({"shop/a"})}
    assert state.by_pod() == {"shop/a": protection.PodFloor(protected=True, floor_bytes=200 * MI)}


# -- the planner --------------------------------------------------------------------------

GUARDED = assigned(
    "g",
    {"name": "cold", "action": "pageout"},
    {"name": "count", "action": "stat"},
    protection={"floor": "requests"},
)


def scheme(plan: planning.Plan, name: str) -> planning.PlannedScheme:
    return next(s for s in plan.schemes() if s.name == name)


def test_a_protected_pod_leaves_the_pageouts_memcg_filters_on_paddr() -> None:
    pods = [pod("a"), pod("b")]
    plan = planning.plan([GUARDED], pods, PADDR, protected={GUARDED.key: frozenset({"shop/a"})})
    cold = scheme(plan, "cold")
    assert cold.pods == ("shop/b",)
    assert [f.memcg_path for f in cold.scheme.filters if f.type == "memcg"] == ["/kubepods/b"]
    assert scheme(plan, "count").pods == ("shop/a", "shop/b")  # stat takes nothing away
    (summary,) = plan.sources
    assert summary.protected == ("shop/a",) and summary.pods == ("shop/a", "shop/b")


def test_with_every_pod_protected_the_pageout_is_not_planned_never_node_wide() -> None:
    pods = [pod("a"), pod("b")]
    both = {GUARDED.key: frozenset({"shop/a", "shop/b"})}
    plan = planning.plan([GUARDED], pods, PADDR, protected=both)
    assert [s.name for s in plan.schemes()] == ["count"]
    only_pageout = assigned("p", protection={"floor": "requests"})
    alone = planning.plan(
        [only_pageout], pods, PADDR, protected={only_pageout.key: both[GUARDED.key]}
    )
    assert alone.contexts == () and alone.problems == ()
    (summary,) = alone.sources
    assert summary.planned == () and summary.protected == ("shop/a", "shop/b")


def test_a_protected_pod_leaves_the_pageouts_targets_on_vaddr() -> None:
    pods = [pod("a", pids=(10, 11)), pod("b", pids=(20,))]
    plan = planning.plan([GUARDED], pods, VADDR, protected={GUARDED.key: frozenset({"shop/a"})})
    (context,) = plan.contexts
    assert [t.pid for t in context.targets] == [10, 11, 20]  # stat still watches a
    own = [f.target_index for f in scheme(plan, "cold").scheme.filters if f.type == "target"]
    assert [context.targets[i].pid for i in own] == [20]


def test_protection_on_kernels_without_allow_filters_drops_the_pods_memcg_copy() -> None:
    reject_only = planning.Capabilities(
        operations=PADDR.operations,
        actions=PADDR.actions,
        filter_types=PADDR.filter_types,
        goal_metrics=PADDR.goal_metrics,
        allow_filters=False,
    )
    pods = [pod("a"), pod("b"), pod("c")]
    plan = planning.plan(
        [GUARDED], pods, reject_only, protected={GUARDED.key: frozenset({"shop/a"})}
    )
    copies = scheme(plan, "cold").runs_as()
    assert [c.filters[0].memcg_path for c in copies] == ["/kubepods/b", "/kubepods/c"]


def test_the_protected_set_applies_only_to_schemes_with_a_protection() -> None:
    plain = assigned("plain")
    plan = planning.plan([plain], [pod("a")], PADDR, protected={plain.key: frozenset({"shop/a"})})
    assert scheme(plan, "cold").pods == ("shop/a",)


# -- status and metrics ---------------------------------------------------------------------


def pod_outcome(name: str, floor_state: protection.PodFloor | None) -> outcome.PodOutcome:
    memory = observing.PodMemory(memory_bytes=90 * MI)
    return outcome.PodOutcome(
        namespace="shop",
        name=name,
        uid=f"uid-{name}",
        schemes=(GUARDED.key,),
        now=memory,
        first=memory,
        since=T0,
        floor=floor_state,
    )


def built(plan: planning.Plan, pods: list[outcome.PodOutcome]) -> resources.DamonNodeStatus:
    return status.build(
        assigned=[GUARDED],
        plan=plan,
        outcome=status.ApplyOutcome(applied=True, plan=plan),
        info=backend.BackendInfo(backend="kernel", capabilities=PADDR),
        stats={},
        numa=[],
        psi=resources.Psi(),
        node_generation=1,
        previous=None,
        now=T0,
        pods=pods,
    )


def test_the_status_says_which_pods_are_held_at_which_floor() -> None:
    pods = [pod("a"), pod("b")]
    plan = planning.plan([GUARDED], pods, PADDR, protected={GUARDED.key: frozenset({"shop/a"})})
    held = protection.PodFloor(protected=True, floor_bytes=100 * MI)
    free = protection.PodFloor(protected=False, floor_bytes=None)
    node = built(plan, [pod_outcome("a", held), pod_outcome("b", free)])
    api = resources.to_api(node)
    by_name = {p["name"]: p for p in api["pods"]}
    assert (by_name["a"]["protected"], by_name["a"]["floorBytes"]) == (True, 100 * MI)
    assert by_name["b"]["protected"] is False and "floorBytes" not in by_name["b"]
    ready = next(c for c in node.schemes[0].conditions if c.type == "Ready")
    assert ready.reason == "Applied"
    assert "1 pod(s) at or below their reclaim floor are left out of pageout" in ready.message
    resources.DamonNodeStatus.model_validate(api)  # round-trips through the API form

    # A pod no scheme protects carries no protection fields at all.
    plain = built(plan, [pod_outcome("a", None)])
    assert "protected" not in resources.to_api(plain)["pods"][0]


def test_a_scheme_whose_every_pod_is_protected_is_ready_and_says_why() -> None:
    only_pageout = assigned("g", protection={"floor": "requests"})
    protected = {only_pageout.key: frozenset({"shop/a"})}
    plan = planning.plan([only_pageout], [pod("a")], PADDR, protected=protected)
    node = status.build(
        assigned=[only_pageout],
        plan=plan,
        outcome=status.ApplyOutcome(applied=True, plan=plan),
        info=backend.BackendInfo(backend="kernel", capabilities=PADDR),
        stats={},
        numa=[],
        psi=resources.Psi(),
        node_generation=1,
        previous=None,
        now=T0,
    )
    ready = next(c for c in node.schemes[0].conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", status.REASON_PODS_PROTECTED)
    assert "its 1 pod(s) ready here are all at or below their reclaim floor" in ready.message


class Source:
    """A metrics.MetricsSource with nothing but pods."""

    node_name = "n1"
    backend = "kernel"

    def __init__(self, pods: list[outcome.PodOutcome]) -> None:
        self.pods = pods

    def readiness(self) -> tuple[bool, str]:
        return True, "ok"

    def current_plan(self) -> planning.Plan:
        return planning.Plan()

    def current_stats(self) -> dict[str, SchemeCounters]:
        return {}

    def current_psi(self) -> resources.Psi:
        return resources.Psi()

    def loop_counters(self) -> metrics.LoopCounters:
        return metrics.LoopCounters()

    def pod_placement(self) -> dict[str, dict[int, int]]:
        return {}

    def node_stat(self) -> None:
        return None

    def counts_filter_passed(self) -> bool:
        return False

    def current_tuning(self) -> dict[str, backend.SchemeTuning]:
        return {}

    def current_pods(self) -> list[outcome.PodOutcome]:
        return self.pods

    def current_kdamond_cpu(self) -> dict[str, outcome.CpuUse]:
        return {}

    def current_kernel_tiering(self) -> resources.KernelTiering | None:
        return None

    def current_dying_cgroups(self) -> int | None:
        return None

    def current_snapshot_ages(self) -> dict[str, float]:
        return {}


def test_metrics_say_which_pods_are_protected_and_their_floors() -> None:
    pods = [
        pod_outcome("a", protection.PodFloor(protected=True, floor_bytes=100 * MI)),
        pod_outcome("b", protection.PodFloor(protected=False, floor_bytes=None)),
        pod_outcome("c", None),
    ]
    text = prometheus_client.generate_latest(metrics.registry_for(Source(pods))).decode()
    lines = {line for line in text.splitlines() if not line.startswith("#")}
    assert 'damon_pod_protected{pod="shop/a"} 1.0' in lines
    assert 'damon_pod_protected{pod="shop/b"} 0.0' in lines
    assert not any(line.startswith('damon_pod_protected{pod="shop/c"}') for line in lines)
    floors = {
        series: float(value)
        for series, _, value in (line.rpartition(" ") for line in lines)
        if series.startswith("damon_pod_protection_floor_bytes")
    }
    assert floors == {'damon_pod_protection_floor_bytes{pod="shop/a"}': 100 * MI}


# -- the node readers behind it (a copy of the checked-in cgroup v2 tree) -------------------

BURSTABLE_POD = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice"
)


def test_the_floor_reading_of_a_v2_pod_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "systemd-v2"
    shutil.copytree(TREES / "systemd-v2", root)
    pod_dir = root / "sys" / "fs" / "cgroup" / BURSTABLE_POD.lstrip("/")
    (pod_dir / "memory.low").write_text("33554432\n")
    (pod_dir / "memory.min").write_text("max\n")
    resolver = observing.PodResolver(observing.NodeRoots(proc=root / "proc", sys=root / "sys"))
    used = 50331648  # the tree's memory.current
    assert resolver.floor_reading(BURSTABLE_POD, "memoryLow") == protection.FloorReading(
        used, 32 * MI
    )
    assert resolver.floor_reading(BURSTABLE_POD, "memoryMin") == protection.FloorReading(
        used, cgroups.PROTECTION_MAX
    )
    assert resolver.floor_reading(BURSTABLE_POD, "requests") == protection.FloorReading(used)

    (pod_dir / "memory.low").write_text("a lot\n")
    bad = resolver.floor_reading(BURSTABLE_POD, "memoryLow")
    assert bad.protection_bytes is None and "not a byte count or 'max'" in bad.problem
    (pod_dir / "memory.low").unlink()
    assert "no memory.low" in resolver.floor_reading(BURSTABLE_POD, "memoryLow").problem
    gone = resolver.floor_reading("/kubepods.slice/gone", "memoryLow")
    assert gone.memory_bytes is None and gone.problem.startswith("no memory use")
    layout = cgroups.discover(root / "proc", root / "sys")
    with pytest.raises(node_errors.CgroupNotFoundError):
        cgroups.memory_protection_bytes(layout, "/kubepods.slice/gone", "memory.min")


def test_a_v1_node_has_no_memory_low_and_says_so() -> None:
    hybrid = TREES / "hybrid-v1"
    layout = cgroups.discover(hybrid / "proc", hybrid / "sys")
    assert layout.memory_version == 1
    with pytest.raises(node_errors.FactUnavailableError, match=r"cgroup v1 has no memory\.low"):
        cgroups.memory_protection_bytes(layout, "/kubepods", "memory.low")
