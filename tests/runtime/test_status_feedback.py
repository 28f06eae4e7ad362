"""Status building and write throttling; PSI feedback (pure, fake readers)."""

from __future__ import annotations

import dataclasses
import datetime

from damon_agent.api import resources
from damon_agent.node import errors as node_errors
from damon_agent.runtime import backend, feedback, planning, status
from damon_agent.schemes import model
from damon_agent.schemes.stats import SchemeCounters

CAPS = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": frozenset({"pageout", "stat"})},
    filter_types=frozenset({"memcg"}),
    goal_metrics=frozenset({"user_input"}),
)
INFO = backend.BackendInfo(backend="kernel", capabilities=CAPS, kernel_release="6.18.0")
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _assigned(name: str, generation: int = 1, action: str = "pageout") -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "DamonScheme",
            "namespace": "shop",
            "name": name,
            "uid": f"u-{name}",
            "generation": generation,
            "namespaces": ["shop"],
            "podSelector": {},
            "spec": {"schemes": [{"name": "cold", "action": action}]},
        }
    )


POD = planning.PodFacts(namespace="shop", name="a", uid="ua", memcg_paths=("/kubepods/poda",))


def _build(
    assigned: list[resources.AssignedScheme],
    *,
    applied: bool = True,
    previous: resources.DamonNodeStatus | None = None,
    at: datetime.datetime = T0,
    sz_applied: int = 0,
) -> resources.DamonNodeStatus:
    plan = planning.plan(assigned, [POD], CAPS)
    stats = {s.key: SchemeCounters(sz_applied=sz_applied) for s in plan.schemes()}
    return status.build(
        assigned=assigned,
        plan=plan,
        outcome=status.ApplyOutcome(applied=applied, plan=plan if applied else None),
        info=INFO,
        stats=stats,
        numa=[resources.NumaNode(nid=0, tier="dram", total_bytes=1 << 30)],
        psi=resources.Psi(),
        node_generation=4,
        previous=previous,
        now=at,
    )


def _condition(s: resources.NodeSchemeStatus, kind: str) -> tuple[str, str]:
    c = next(c for c in s.conditions if c.type == kind)
    return c.status, c.reason


def test_scheme_conditions_follow_plan_and_apply() -> None:
    good, bad = _assigned("good"), _assigned("bad", action="hugepage")
    pending = _build([good, bad], applied=False)
    assert _condition(pending.schemes[0], "Ready") == ("False", "Pending")
    built = _build([good, bad], sz_applied=4096)
    by_name = {s.name: s for s in built.schemes}
    assert _condition(by_name["good"], "Ready") == ("True", "Applied")
    assert _condition(by_name["bad"], "Ready") == ("False", "ActionUnsupported")
    assert _condition(by_name["bad"], "Degraded")[0] == "True"
    assert by_name["good"].stats[0].applied_bytes == 4096
    assert by_name["good"].observed_generation == 1
    assert built.backend == "kernel" and built.capabilities.kernel_release == "6.18.0"
    dumped = built.model_dump(mode="json", exclude_none=True)
    assert dumped["schemes"][0]["observedGeneration"] == 1  # camelCase on the wire
    assert dumped["schemesReady"] == "1/2"


def test_transition_time_kept_while_status_holds() -> None:
    first = _build([_assigned("good")])
    later = _build([_assigned("good")], previous=first, at=T0 + datetime.timedelta(minutes=5))
    assert (
        later.schemes[0].conditions[0].last_transition_time
        == first.schemes[0].conditions[0].last_transition_time
        == T0
    )
    assert later.heartbeat == T0 + datetime.timedelta(minutes=5)


def test_throttle_writes_material_changes_fast_and_the_rest_every_10s() -> None:
    throttle = status.WriteThrottle(steady_interval_s=10, burst_interval_s=1)
    first = _build([_assigned("good")])
    assert throttle.due(0.0, first)
    throttle.written(0.0, first)
    counters_moved = _build([_assigned("good")], sz_applied=1 << 20, previous=first)
    assert not throttle.due(5.0, counters_moved)  # only counters: wait for the steady slot
    assert throttle.due(10.0, counters_moved)
    throttle.written(10.0, counters_moved)
    new_generation = _build([_assigned("good", generation=2)], previous=counters_moved)
    assert not throttle.due(10.5, new_generation)  # coalesced with the burst window
    assert throttle.due(11.0, new_generation)
    # 60 s of steady state (a tick each second): at most one write per 10 s.
    writes = 0
    throttle.written(11.0, new_generation)
    for second in range(12, 72):
        now = _build([_assigned("good", generation=2)], sz_applied=second, previous=new_generation)
        if throttle.due(float(second), now):
            throttle.written(float(second), now)
            writes += 1
    assert writes == 6


def test_throttle_says_no_build_is_worth_it_until_inputs_change_or_the_steady_slot() -> None:
    throttle = status.WriteThrottle(steady_interval_s=10, burst_interval_s=1)
    first = _build([_assigned("good")])
    assert throttle.worth_building(0.0, ("plan", 1))  # nothing written yet
    throttle.written(0.0, first, ("plan", 1))
    assert not throttle.worth_building(2.0, ("plan", 1))  # idle: nothing to read or build
    assert throttle.worth_building(2.0, ("plan", 2))  # a material input moved
    assert throttle.worth_building(10.0, ("plan", 1))  # the steady write's slot
    throttle.forget()  # a failed write
    assert throttle.worth_building(3.0, ("plan", 1))


def _psi_scheme(cgroups: tuple[str, ...]) -> planning.PlannedScheme:
    quota = model.Quota(
        size_bytes=1 << 30,
        reset_interval_us=2_000_000,
        goals=(model.QuotaGoal("user_input", 10_000),),
    )
    return planning.PlannedScheme(
        source="DamonScheme/shop/s",
        generation=1,
        scheme=model.Scheme("cold", "pageout", quota=quota),
        pods=("shop/a",),
        psi_goal_indexes=(0,),
        psi_cgroups=cgroups,
    )


def test_feedback_is_worst_pod_stall_per_reset_interval() -> None:
    totals = {"/a": 1_000, "/b": 5_000}

    def read(path: str) -> int:
        if path not in totals:
            raise node_errors.FactUnavailableError(path, "cgroup v1 has no memory.pressure")
        return totals[path]

    loop = feedback.PsiFeedback(read)
    scheme = _psi_scheme(("/a", "/b", "/v1-only"))
    values, problems = loop.inputs([scheme], now_us=0)
    assert values == {scheme.key: {0: 0}}  # first reading: no rate yet
    assert [p.reason for p in problems] == ["PodPressureUnavailable"]
    assert "/v1-only" in problems[0].message
    totals["/a"] += 30_000  # 30 ms of stall in 1 s
    totals["/b"] += 10_000
    values, _ = loop.inputs([scheme], now_us=1_000_000)
    assert values[scheme.key][0] == 60_000  # 30 ms/s over a 2 s reset interval


def test_a_fallback_backend_says_why_in_backend_available() -> None:
    plan = planning.plan([], [], CAPS)
    info = backend.BackendInfo(
        backend="userspace", capabilities=CAPS, fallback_reason="kernel DAMON is held: DAMON_STAT"
    )
    built = status.build(
        assigned=[],
        plan=plan,
        outcome=status.ApplyOutcome(applied=True, plan=plan),
        info=info,
        stats={},
        numa=[],
        psi=resources.Psi(),
        node_generation=1,
        previous=None,
        now="2026-12-02T00:00:00Z",
    )
    (available,) = [c for c in built.conditions if c.type == "BackendAvailable"]
    assert (available.status, available.reason) == ("True", "FellBack")
    assert "userspace backend, because kernel DAMON is held: DAMON_STAT" in available.message
    assert built.backend == "userspace"


def _filter_passed_status(
    info: backend.BackendInfo, passed: int
) -> tuple[resources.SchemeStats, dict[str, object]]:
    """The one scheme's stats built on ``info``, and their API form."""
    assigned = [_assigned("good")]
    plan = planning.plan(assigned, [POD], info.capabilities)
    stats = {
        s.key: SchemeCounters(sz_tried=1 << 20, sz_ops_filter_passed=passed) for s in plan.schemes()
    }
    built = status.build(
        assigned=assigned,
        plan=plan,
        outcome=status.ApplyOutcome(applied=True, plan=plan),
        info=info,
        stats=stats,
        numa=[],
        psi=resources.Psi(),
        node_generation=1,
        previous=None,
        now=T0,
    )
    (one,) = built.schemes[0].stats
    (api,) = resources.to_api(built)["schemes"][0]["stats"]
    return one, api


def test_filter_passed_bytes_reach_the_status_where_the_kernel_counts_them() -> None:
    counting = dataclasses.replace(
        INFO, capabilities=dataclasses.replace(CAPS, counts_filter_passed=True)
    )
    one, api = _filter_passed_status(counting, 12_288)
    assert one.filter_passed_bytes == 12_288 and api["filterPassedBytes"] == 12_288
    # Counted, none passed: a 0 on the wire, not an absent field.
    one, api = _filter_passed_status(counting, 0)
    assert one.filter_passed_bytes == 0 and api["filterPassedBytes"] == 0


def test_filter_passed_bytes_are_left_out_where_the_backend_does_not_count_them() -> None:
    # Linux before 6.14 has no sz_ops_filter_passed (nor allow filters): the 0 it reads
    # back stands for "no such file".
    reject_only = backend.BackendInfo(
        backend="kernel",
        capabilities=dataclasses.replace(CAPS, allow_filters=False),
        kernel_release="6.12.0",
    )
    sim = backend.BackendInfo(backend="sim", capabilities=CAPS)
    for info in (reject_only, sim, INFO):
        one, api = _filter_passed_status(info, 0)
        assert one.filter_passed_bytes is None and "filterPassedBytes" not in api, info.backend
        assert api["triedBytes"] == 1 << 20  # its neighbours are still there
    assert not status.counts_filter_passed(None)


def test_ready_says_which_nodes_each_tier_resolved_to() -> None:
    caps = dataclasses.replace(
        CAPS,
        actions={"paddr": frozenset({"migrate_hot", "migrate_cold"})},
        tiers={"dram": (0, 1), "cxl": (2, 3)},
        node_spans={n: (n << 30, (n + 1) << 30) for n in range(4)},
        node_distances={2: {0: 14, 1: 24}, 3: {0: 24, 1: 14}},
    )
    assigned = resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": "tiering",
            "uid": "u",
            "generation": 1,
            "wholeNode": True,
            "spec": {"schemes": [{"name": "promote", "action": "migrate_hot", "tier": "dram"}]},
        }
    )
    plan = planning.plan([assigned], [], caps)
    built = status.build(
        assigned=[assigned],
        plan=plan,
        outcome=status.ApplyOutcome(applied=True, plan=plan),
        info=dataclasses.replace(INFO, capabilities=caps),
        stats={},
        numa=[],
        psi=resources.Psi(),
        node_generation=1,
        previous=None,
        now=T0,
    )
    ready = next(c for c in built.schemes[0].conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "Applied")
    assert ready.message == (
        "1 scheme(s) over the node's physical memory; "
        "promote to dram: node 0 from node 2, node 1 from node 3"
    )
