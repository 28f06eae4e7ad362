"""The planner's rules, one test each (pure: no I/O)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from damon_agent.api import resources, selectors
from damon_agent.api import schemes as api
from damon_agent.core import attrs
from damon_agent.runtime import planning
from damon_agent.schemes import model

PADDR_ONLY = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": frozenset({"pageout", "stat", "migrate_hot", "migrate_cold", "lru_prio"})},
    filter_types=frozenset({"anon", "memcg", "young", "addr", "target"}),
    goal_metrics=frozenset({"user_input", "some_mem_psi_us"}),
    tiers={"dram": (0,), "cxl": (1,)},
)
WITH_VADDR = planning.Capabilities(
    operations=frozenset({"paddr", "vaddr"}),
    actions={
        "paddr": frozenset({"pageout", "stat"}),
        "vaddr": frozenset({"pageout", "stat", "cold"}),
    },
    filter_types=frozenset({"anon", "memcg", "young", "addr", "target"}),
    goal_metrics=frozenset({"user_input"}),
)


def _pod(
    ns: str,
    name: str,
    *,
    app: str = "web",
    pids: tuple[int, ...] = (),
    memcg: bool = True,
    phase: str = "Running",
) -> planning.PodFacts:
    return planning.PodFacts(
        namespace=ns,
        name=name,
        uid=f"uid-{ns}-{name}",
        labels=(("app", app),),
        phase=phase,
        cgroup_path=f"/kubepods/burstable/pod-{ns}-{name}" if memcg else None,
        memcg_paths=(f"/kubepods/burstable/pod-{ns}-{name}",) if memcg else (),
        pids=pids,
    )


def _scheme(name: str = "cold", **fields: object) -> api.SchemeSpec:
    return api.SchemeSpec.model_validate({"name": name, "action": "pageout", **fields})


def _namespaced(
    ns: str,
    *specs: api.SchemeSpec,
    app: str | None = "web",
    monitoring: api.MonitoringSpec | None = None,
    name: str = "s",
    namespaces: list[str] | None = None,
) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_construct(
        kind="DamonScheme",
        name=name,
        namespace=ns,
        uid=f"uid-{name}",
        generation=3,
        whole_node=False,
        namespaces=namespaces or [ns],
        pod_selector=selectors.LabelSelector(match_labels={"app": app} if app else {}),
        spec=api.SchemeFile(
            monitoring=monitoring or api.MonitoringSpec(), schemes=list(specs or (_scheme(),))
        ),
    )


def _cluster(name: str, *specs: api.SchemeSpec, **fields: object) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": name,
            "uid": "u",
            "generation": 1,
            "spec": api.SchemeFile(schemes=list(specs or (_scheme(),))),
            **fields,
        }
    )


def test_namespaced_scheme_never_selects_another_namespace() -> None:
    pods = [_pod("shop", "a"), _pod("bank", "b"), _pod("bank", "c", app="db")]
    # An empty selector, and an assignment that (wrongly) lists another namespace: the
    # planner still keeps to the scheme's own namespace. (The API model refuses such an
    # assignment; model_construct skips that check to prove the planner's own.)
    assigned = _namespaced("shop", app=None, namespaces=["shop", "bank"])
    plan = planning.plan([assigned], pods, PADDR_ONLY)
    (context,) = plan.contexts
    (scheme,) = context.schemes
    assert scheme.pods == ("shop/a",)
    memcgs = [f.memcg_path for f in scheme.scheme.filters if f.type == "memcg"]
    assert memcgs == ["/kubepods/burstable/pod-shop-a"]


def test_paddr_pod_filters_are_the_only_allow_filters_and_come_last() -> None:
    user_filters = [
        {"type": "young", "allow": False},
        {"type": "anon", "allow": True},  # would admit every anon page of the node
    ]
    assigned = _namespaced("shop", _scheme(filters=user_filters))
    plan = planning.plan([assigned], [_pod("shop", "a"), _pod("shop", "b")], PADDR_ONLY)
    filters = next(iter(plan.schemes())).scheme.filters
    assert [(f.type, f.allow, f.matching) for f in filters] == [
        ("young", False, True),
        ("anon", False, False),  # allow anon -> reject what is not anon
        ("memcg", True, True),
        ("memcg", True, True),
    ]


def test_pod_scheme_without_any_pod_cgroup_is_not_planned_nodewide() -> None:
    plan = planning.plan([_namespaced("shop")], [_pod("shop", "a", memcg=False)], PADDR_ONLY)
    assert plan.contexts == ()
    (problem,) = plan.problems
    assert problem.reason == "PodsNotFound" and "shop/a" in problem.message


def test_schemes_with_equal_monitoring_share_one_context() -> None:
    fast = api.MonitoringSpec.model_validate(
        {"intervals": {"sample": "1ms", "aggregation": "20ms"}}
    )
    pods = [_pod("shop", "a"), _pod("bank", "b")]
    plan = planning.plan(
        [
            _namespaced("shop", name="x"),
            _namespaced("bank", name="y"),
            _namespaced("bank", name="z", monitoring=fast),
        ],
        pods,
        PADDR_ONLY,
    )
    assert len(plan.contexts) == 2
    by_size = sorted(plan.contexts, key=lambda c: len(c.schemes))
    assert [s.source for s in by_size[1].schemes] == ["DamonScheme/bank/y", "DamonScheme/shop/x"]
    assert (by_size[0].monitoring.sample_us, by_size[0].monitoring.aggr_us) == (1_000, 20_000)
    assert all(c.targets == (planning.Target(),) for c in plan.contexts)


def test_vaddr_targets_are_pids_and_target_filters_pick_each_schemes_own() -> None:
    pods = [_pod("shop", "a", pids=(300, 100)), _pod("bank", "b", pids=(200,))]
    plan = planning.plan(
        [_namespaced("shop", name="x"), _namespaced("bank", name="y")], pods, WITH_VADDR
    )
    (context,) = plan.contexts
    assert context.operations == "vaddr"
    assert [(t.pid, t.pod) for t in context.targets] == [
        (100, "shop/a"),
        (200, "bank/b"),
        (300, "shop/a"),
    ]
    indexes = {
        s.source: [f.target_index for f in s.scheme.filters if f.type == "target"]
        for s in context.schemes
    }
    assert indexes == {"DamonScheme/shop/x": [0, 2], "DamonScheme/bank/y": [1]}


def test_auto_monitors_pods_with_many_processes_by_memcg_on_paddr() -> None:
    many = tuple(range(1000, 1000 + planning.VADDR_MAX_TARGETS))
    pods = [_pod("shop", "a", pids=many), _pod("shop", "b", pids=(5,))]
    plan = planning.plan([_namespaced("shop", name="x")], pods, WITH_VADDR)
    (context,) = plan.contexts
    assert context.operations == "paddr"
    (scheme,) = context.schemes
    assert sorted(f.memcg_path for f in scheme.scheme.filters if f.type == "memcg") == [
        "/kubepods/burstable/pod-shop-a",
        "/kubepods/burstable/pod-shop-b",
    ]
    ((severity, reason, message),) = [(p.severity, p.reason, p.message) for p in plan.problems]
    assert (severity, reason) == ("warning", planning.REASON_MANY_PROCESSES)
    assert f"run {planning.VADDR_MAX_TARGETS + 1} processes" in message
    # At the limit, and with an explicit vaddr, each process stays a target.
    at_limit = [_pod("shop", "a", pids=many)]
    assert planning.plan([_namespaced("shop")], at_limit, WITH_VADDR).contexts[0].operations == (
        "vaddr"
    )
    vaddr = api.MonitoringSpec(mode="vaddr")
    explicit = planning.plan([_namespaced("shop", monitoring=vaddr)], pods, WITH_VADDR)
    assert explicit.contexts[0].operations == "vaddr" and not explicit.problems


def test_explicit_vaddr_degrades_to_paddr_with_a_warning() -> None:
    vaddr = api.MonitoringSpec(mode="vaddr")
    plan = planning.plan([_namespaced("shop", monitoring=vaddr)], [_pod("shop", "a")], PADDR_ONLY)
    assert plan.contexts[0].operations == "paddr"
    assert [(p.severity, p.reason) for p in plan.problems] == [("warning", "VaddrUnavailable")]


def test_whole_node_cluster_scheme_has_no_pod_filters() -> None:
    assigned = _cluster(
        "node-cold", _scheme(filters=[{"type": "anon", "allow": True}]), wholeNode=True
    )
    plan = planning.plan([assigned], [_pod("shop", "a")], WITH_VADDR)
    (context,) = plan.contexts
    assert context.operations == "paddr"
    (scheme,) = context.schemes
    assert scheme.pods == ()
    assert [(f.type, f.allow) for f in scheme.scheme.filters] == [("anon", True)]


def test_cluster_scheme_selects_in_the_resolved_namespaces() -> None:
    assigned = _cluster("c", podSelector=selectors.LabelSelector(), namespaces=["bank"])
    pods = [_pod("shop", "a"), _pod("bank", "b"), _pod("bank", "done", phase="Succeeded")]
    plan = planning.plan([assigned], pods, PADDR_ONLY)
    assert next(iter(plan.schemes())).pods == ("bank/b",)


def test_a_pod_being_deleted_leaves_the_plan_before_its_cgroups_go() -> None:
    # kubectl delete (graceful): deletionTimestamp set, still Running, cgroups still there.
    assigned = _namespaced("shop", _scheme())
    going = replace(_pod("shop", "going", pids=(7,)), deleting=True)
    plan = planning.plan([assigned], [_pod("shop", "a", pids=(5,)), going], WITH_VADDR)
    (scheme,) = plan.schemes()
    assert scheme.pods == ("shop/a",)
    (context,) = plan.contexts
    assert [t.pid for t in context.targets] == [5]


def test_unsupported_action_is_a_problem_not_an_exception() -> None:
    plan = planning.plan(
        [_namespaced("shop", _scheme(action="hugepage"))], [_pod("shop", "a")], PADDR_ONLY
    )
    assert plan.contexts == ()
    assert plan.problems[0].reason == "ActionUnsupported"
    assert "hugepage" in plan.problems[0].message


def test_dry_run_runs_stat_and_tier_resolves_to_the_nodes_nid() -> None:
    specs = (
        _scheme("dry", dryRun=True),
        _scheme("demote", action="migrate_cold", tier="cxl"),
        _scheme("demote-dry", action="migrate_cold", tier="cxl", dryRun=True),
    )
    plan = planning.plan([_namespaced("shop", *specs)], [_pod("shop", "a")], PADDR_ONLY)
    by_name = {s.name: s.scheme for s in plan.schemes()}
    assert by_name["dry"].action == "stat"
    assert (by_name["demote"].target_nid, by_name["demote"].tier) == (1, None)
    # A dry run has no destination: nothing migrates.
    dry = by_name["demote-dry"]
    assert (dry.action, dry.target_nid, dry.tier) == ("stat", None, None)
    assert {s.name: s.action for s in plan.schemes()}["demote-dry"] == "stat"


def test_paddr_migrations_monitor_only_the_memory_outside_their_destination_tier() -> None:
    # Two CXL nodes: a demotion watches the DRAM node only; a promotion each CXL node in
    # a context of its own; the rest of the schemes keep all of the memory.
    caps = replace(
        PADDR_ONLY,
        tiers={"dram": (0,), "cxl": (2, 1)},
        node_spans={0: (0x1000, 1 << 30), 1: (1 << 30, 2 << 30), 2: (2 << 30, 3 << 30)},
    )
    specs = (
        _scheme("demote", action="migrate_cold", tier="cxl", filters=[{"type": "young"}]),
        _scheme("promote", action="migrate_hot", tier="dram"),
        _scheme("reclaim"),
        _scheme("demote-dry", action="migrate_cold", tier="cxl", dryRun=True),
    )
    plan = planning.plan([_cluster("c", *specs, wholeNode=True)], [], caps)
    by_ranges = {c.ranges: sorted(s.name for s in c.schemes) for c in plan.contexts}
    assert by_ranges == {
        ((0x1000, 1 << 30),): ["demote"],
        ((1 << 30, 2 << 30),): ["promote"],
        ((2 << 30, 3 << 30),): ["promote"],
        (): ["demote-dry", "reclaim"],
    }
    assert len({c.key for c in plan.contexts}) == 4
    # The destination is out of the context, so no filter is spent on it.
    filters = {s.name: s.scheme.filters for s in plan.schemes()}
    assert filters["demote"] == (model.Filter("young"),)
    assert filters["promote"] == ()


def test_paddr_migrations_filter_out_the_destination_where_spans_interleave() -> None:
    caps = replace(
        PADDR_ONLY,
        tiers={"dram": (0,), "cxl": (1,)},
        node_spans={0: (0, 4 << 30), 1: (2 << 30, 3 << 30)},  # node 1 inside node 0's span
    )
    spec = _scheme("demote", action="migrate_cold", tier="cxl")
    plan = planning.plan([_cluster("c", spec, wholeNode=True)], [], caps)
    (context,) = plan.contexts
    assert context.ranges == ()
    (scheme,) = plan.schemes()
    assert scheme.scheme.filters == (model.Filter("addr", addr_start=2 << 30, addr_end=3 << 30),)
    # Spans unknown: all of the memory, the migration as written.
    plan = planning.plan([_cluster("c", spec, wholeNode=True)], [], PADDR_ONLY)
    (context,) = plan.contexts
    assert context.ranges == () and next(iter(plan.schemes())).scheme.filters == ()


def test_schemes_reach_the_plan_in_canonical_integers() -> None:
    spec = _scheme(
        applyInterval="2s",
        accessPattern={"size": {"min": "4Ki"}, "accessRate": {"max": "5%"}, "age": {"min": "1m"}},
        quota={"time": "10ms", "size": "1Gi", "resetInterval": "2s"},
        filters=[{"type": "addr", "addrStart": "0x1000", "addrEnd": "max"}],
    )
    plan = planning.plan([_cluster("c", spec, wholeNode=True)], [], PADDR_ONLY)
    (scheme,) = plan.schemes()
    assert scheme.scheme == model.Scheme(
        name="cold",
        action="pageout",
        pattern=model.AccessPattern(min_size=4096, max_rate_bp=500, min_age_us=60_000_000),
        apply_interval_us=2_000_000,
        quota=model.Quota(time_us=10_000, size_bytes=1 << 30, reset_interval_us=2_000_000),
        filters=(model.Filter("addr", addr_start=0x1000, addr_end=model.UNBOUNDED),),
    )
    (context,) = plan.contexts
    # The spec's defaults: 200 ms aggregations, regions of at most 32 MiB (api.schemes).
    assert context.monitoring == attrs.MonitoringAttrs(aggr_us=200_000, max_region_bytes=32 << 20)


def test_pod_psi_goal_becomes_user_input_fed_from_the_pods_cgroups() -> None:
    spec = _scheme(
        quota={
            "size": "1Gi",
            "goals": [
                {"metric": "pod_mem_psi_us", "target": "10ms", "path": "pods"},
                {"metric": "some_mem_psi_us", "target": "50ms"},
            ],
        }
    )
    plan = planning.plan([_namespaced("shop", spec)], [_pod("shop", "a")], PADDR_ONLY)
    (scheme,) = plan.schemes()
    assert scheme.scheme.quota is not None
    assert scheme.scheme.quota.goals == (
        model.QuotaGoal("user_input", 10_000),
        model.QuotaGoal("some_mem_psi_us", 50_000),
    )
    assert scheme.psi_goal_indexes == (0,)
    assert scheme.psi_cgroups == ("/kubepods/burstable/pod-shop-a",)


def test_a_whole_node_pod_psi_goal_follows_the_cgroup_it_names() -> None:
    spec = _scheme(
        quota={
            "goals": [
                {"metric": "node_memcg_used_bp", "target": "50%", "nid": 0, "path": "/other"},
                {"metric": "pod_mem_psi_us", "target": "10ms", "path": "/kubepods/x"},
            ],
        }
    )
    caps = replace(PADDR_ONLY, goal_metrics=PADDR_ONLY.goal_metrics | {"node_memcg_used_bp"})
    plan = planning.plan([_cluster("c", spec, wholeNode=True)], [], caps)
    (scheme,) = plan.schemes()
    assert scheme.psi_goal_indexes == (1,)
    # Only the PSI goal's cgroup: the memcg goal's path is no pressure to read.
    assert scheme.psi_cgroups == ("/kubepods/x",)


def test_plan_is_deterministic_whatever_the_input_order() -> None:
    pods = [_pod("shop", "a"), _pod("shop", "b"), _pod("bank", "c")]
    assigned = [_namespaced("shop", name="x"), _namespaced("bank", name="y")]
    first = planning.plan(assigned, pods, PADDR_ONLY)
    second = planning.plan(list(reversed(assigned)), list(reversed(pods)), PADDR_ONLY)
    assert first == second


@pytest.mark.parametrize(
    ("filters", "warned"),
    [
        ([], True),
        ([{"type": "anon", "allow": False}], False),  # file-only: a reject of anon
        ([{"type": "anon", "allow": True, "matching": False}], False),  # allow not-anon
        ([{"type": "anon", "allow": True}], True),  # anon only: needs swap all the more
    ],
)
def test_pageout_on_a_node_without_swap_is_warned_unless_file_only(
    filters: list[dict[str, object]], warned: bool
) -> None:
    source = resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": "reclaim",
            "uid": "u",
            "generation": 1,
            "wholeNode": True,
            "spec": {"schemes": [{"name": "cold", "action": "pageout", "filters": filters}]},
        }
    )
    caps = planning.Capabilities(
        operations=frozenset({"paddr"}),
        actions={"paddr": frozenset({"pageout"})},
        filter_types=frozenset({"anon"}),
        goal_metrics=frozenset(),
    )
    without = planning.plan([source], [], caps, planning.NodeFacts(swap_bytes=0))
    reasons = [p.reason for p in without.problems]
    assert reasons == (["NoSwap"] if warned else [])
    assert len(list(without.schemes())) == 1  # planned all the same: file pages can go
    with_swap = planning.plan([source], [], caps, planning.NodeFacts(swap_bytes=1 << 30))
    assert with_swap.problems == ()
    assert planning.plan([source], [], caps).problems == ()  # facts unknown (the sim)
