"""The planner's tier rules: every node of a tier, and goal-driven tiering (``fill``).

Machines: one DRAM node and two CXL expanders; two sockets, each with a DRAM node and
a CXL expander nearer to it than to the other socket (distances as a SLIT gives them).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from damon_agent.api import resources, selectors
from damon_agent.api import schemes as api
from damon_agent.runtime import planning
from damon_agent.schemes import model

GI = 1 << 30
ONE_CXL_PAIR = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": frozenset({"pageout", "stat", "migrate_hot", "migrate_cold"})},
    filter_types=frozenset({"anon", "memcg", "young", "addr", "target"}),
    goal_metrics=frozenset(
        {"user_input", "some_mem_psi_us", "node_mem_used_bp", "node_mem_free_bp"}
    ),
    tiers={"dram": (0,), "cxl": (1, 2)},
    node_spans={0: (0, 4 * GI), 1: (4 * GI, 6 * GI), 2: (6 * GI, 8 * GI)},
    node_distances={
        0: {0: 10, 1: 20, 2: 30},
        1: {0: 20, 1: 10, 2: 40},
        2: {0: 30, 1: 40, 2: 10},
    },
)
# Socket A: DRAM 0 and CXL 2; socket B: DRAM 1 and CXL 3.
TWO_SOCKETS = replace(
    ONE_CXL_PAIR,
    tiers={"dram": (0, 1), "cxl": (2, 3)},
    node_spans={0: (0, 4 * GI), 1: (4 * GI, 8 * GI), 2: (8 * GI, 10 * GI), 3: (10 * GI, 12 * GI)},
    node_distances={
        0: {0: 10, 1: 21, 2: 14, 3: 24},
        1: {0: 21, 1: 10, 2: 24, 3: 14},
        2: {0: 14, 1: 24, 2: 10, 3: 26},
        3: {0: 24, 1: 14, 2: 26, 3: 10},
    },
)
VADDR_MIGRATES = planning.Capabilities(
    operations=frozenset({"paddr", "vaddr"}),
    actions={
        "paddr": frozenset({"stat", "migrate_hot", "migrate_cold"}),
        "vaddr": frozenset({"stat", "migrate_hot", "migrate_cold"}),
    },
    filter_types=frozenset({"memcg", "young", "addr", "target"}),
    goal_metrics=frozenset({"node_mem_used_bp", "node_mem_free_bp"}),
    tiers={"dram": (0, 1), "cxl": (2, 3)},
    migrate_dests=True,
)
PROMOTE: dict[str, Any] = {"name": "promote", "action": "migrate_hot", "tier": "dram"}
DEMOTE: dict[str, Any] = {"name": "demote", "action": "migrate_cold", "tier": "cxl"}


def _spec(fields: dict[str, Any], **more: Any) -> api.SchemeSpec:
    return api.SchemeSpec.model_validate({**fields, **more})


def _whole_node(*specs: api.SchemeSpec) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": "tiering",
            "uid": "u",
            "generation": 1,
            "wholeNode": True,
            "spec": api.SchemeFile(schemes=list(specs)),
        }
    )


def _pods(*specs: api.SchemeSpec, mode: str = "paddr") -> resources.AssignedScheme:
    return resources.AssignedScheme.model_construct(
        kind="DamonScheme",
        name="s",
        namespace="shop",
        uid="u",
        generation=1,
        whole_node=False,
        namespaces=["shop"],
        pod_selector=selectors.LabelSelector(match_labels={}),
        spec=api.SchemeFile(monitoring=api.MonitoringSpec(mode=mode), schemes=list(specs)),
    )


def _pod(name: str) -> planning.PodFacts:
    pod = f"/kubepods/pod-{name}"
    return planning.PodFacts(
        "shop",
        name,
        f"uid-{name}",
        cgroup_path=pod,
        memcg_paths=(pod, f"{pod}/app", f"{pod}/sidecar"),
        pids=(100 + len(name),),
    )


def _copies(plan: planning.Plan, name: str) -> dict[int | None, planning.PlannedScheme]:
    """The copies of scheme ``name``, by the node whose memory each monitors."""
    return {s.source_nid: s for s in plan.schemes() if s.name == name}


def _reasons(plan: planning.Plan) -> list[str]:
    return [p.reason for p in plan.problems]


# ---------------------------------------------------------------------------------------
# Every node of a tier, paddr


def test_one_dram_two_cxl_demotes_to_the_nearest_expander_and_promotes_from_each() -> None:
    quota = {"size": "256Mi", "time": "10ms"}
    plan = planning.plan(
        [_whole_node(_spec(DEMOTE), _spec(PROMOTE, quota=quota))], [], ONE_CXL_PAIR
    )
    assert plan.problems == ()
    demote = _copies(plan, "demote")
    assert set(demote) == {0}
    assert (demote[0].scheme.target_nid, demote[0].ranges) == (1, ((0, 4 * GI),))
    # One kdamond per CXL node, each over its own memory, both into DRAM node 0; the
    # user's quota shared between them.
    promote = _copies(plan, "promote")
    assert {nid: (s.scheme.target_nid, s.ranges) for nid, s in promote.items()} == {
        1: (0, ((4 * GI, 6 * GI),)),
        2: (0, ((6 * GI, 8 * GI),)),
    }
    assert {s.scheme.quota for s in promote.values()} == {
        model.Quota(size_bytes=128 << 20, time_us=5_000)
    }
    ranges = sorted(c.ranges for c in plan.contexts)
    assert ranges == [((0, 4 * GI),), ((4 * GI, 6 * GI),), ((6 * GI, 8 * GI),)]
    (summary,) = plan.sources
    assert summary.planned == (
        "ClusterDamonScheme/tiering/demote",
        "ClusterDamonScheme/tiering/promote",
    )
    assert summary.tiers == (
        "demote to cxl: node 1",
        "promote to dram: node 0 from node 1, node 0 from node 2",
    )


def test_two_sockets_migrate_within_each_socket() -> None:
    plan = planning.plan([_whole_node(_spec(DEMOTE), _spec(PROMOTE))], [], TWO_SOCKETS)
    assert plan.problems == ()
    where = {(s.name, s.source_nid): (s.scheme.target_nid, s.ranges) for s in plan.schemes()}
    assert where == {
        ("demote", 0): (2, ((0, 4 * GI),)),
        ("demote", 1): (3, ((4 * GI, 8 * GI),)),
        ("promote", 2): (0, ((8 * GI, 10 * GI),)),
        ("promote", 3): (1, ((10 * GI, 12 * GI),)),
    }
    assert len(plan.contexts) == 4
    assert plan.sources[0].tiers == (
        "demote to cxl: node 2 from node 0, node 3 from node 1",
        "promote to dram: node 0 from node 2, node 1 from node 3",
    )


def test_equally_near_nodes_go_to_the_lowest_id() -> None:
    caps = replace(
        ONE_CXL_PAIR,
        tiers={"dram": (0,), "cxl": (2, 1)},
        node_distances={0: {0: 10, 1: 20, 2: 20}},
    )
    plan = planning.plan([_whole_node(_spec(DEMOTE))], [], caps)
    ((_, demote),) = _copies(plan, "demote").items()
    assert demote.scheme.target_nid == 1
    assert plan.problems == ()


def test_unknown_distances_spread_the_sources_round_robin_and_say_so() -> None:
    caps = replace(TWO_SOCKETS, node_distances={})
    plan = planning.plan([_whole_node(_spec(DEMOTE))], [], caps)
    demote = _copies(plan, "demote")
    assert {nid: s.scheme.target_nid for nid, s in demote.items()} == {0: 2, 1: 3}
    (problem,) = plan.problems
    assert (problem.severity, problem.reason) == ("warning", "NodeDistancesUnknown")
    assert "node 0 to node 2, node 1 to node 3" in problem.message
    # One source with a one-node tier needs no distance.
    caps = replace(ONE_CXL_PAIR, tiers={"dram": (0,), "cxl": (1,)}, node_distances={})
    assert planning.plan([_whole_node(_spec(DEMOTE))], [], caps).problems == ()


def test_one_source_and_a_one_node_tier_plan_as_before() -> None:
    caps = replace(
        ONE_CXL_PAIR,
        tiers={"dram": (0,), "cxl": (1,)},
        node_spans={0: (0, 4 * GI), 1: (4 * GI, 6 * GI)},
    )
    quota = {"size": "256Mi"}
    plan = planning.plan([_whole_node(_spec(DEMOTE, quota=quota))], [], caps)
    (context,) = plan.contexts
    (scheme,) = context.schemes
    assert context.ranges == ((0, 4 * GI),)
    assert scheme.scheme.target_nid == 1 and scheme.scheme.filters == ()
    assert scheme.scheme.quota == model.Quota(size_bytes=256 << 20)  # not shared
    assert plan.problems == ()


def test_unknown_spans_cannot_split_the_nodes_and_say_which_nodes_go_unused() -> None:
    caps = replace(ONE_CXL_PAIR, node_spans={})
    plan = planning.plan([_whole_node(_spec(DEMOTE))], [], caps)
    (context,) = plan.contexts
    (scheme,) = context.schemes
    assert context.ranges == () and scheme.scheme.target_nid == 1
    (problem,) = plan.problems
    assert problem.reason == "TierNodesUnused"
    assert "node(s) 2 are not used" in problem.message


def test_sources_that_interleave_are_watched_together() -> None:
    caps = replace(
        TWO_SOCKETS,
        node_spans={
            0: (0, 6 * GI),
            1: (4 * GI, 8 * GI),
            2: (8 * GI, 10 * GI),
            3: (10 * GI, 12 * GI),
        },
    )
    plan = planning.plan([_whole_node(_spec(DEMOTE))], [], caps)
    (copy,) = plan.schemes()
    assert copy.ranges == ((0, 8 * GI),) and copy.scheme.target_nid == 2
    assert _reasons(plan) == ["TierNodesUnused"]


# ---------------------------------------------------------------------------------------
# Every node of a tier, vaddr


def test_vaddr_migrates_to_every_node_of_the_tier_with_equal_weights() -> None:
    pods = [_pod("a")]
    plan = planning.plan([_pods(_spec(DEMOTE), mode="vaddr")], pods, VADDR_MIGRATES)
    assert plan.problems == ()
    (scheme,) = plan.schemes()
    assert scheme.scheme.dests == (model.Dest(2, 1), model.Dest(3, 1))
    assert scheme.scheme.target_nid == 2
    assert plan.sources[0].tiers == ("demote to cxl: nodes 2, 3 (weights 1:1)",)


def test_vaddr_without_dests_uses_the_first_node_and_says_the_others_are_unused() -> None:
    caps = replace(VADDR_MIGRATES, migrate_dests=False)
    plan = planning.plan([_pods(_spec(DEMOTE), mode="vaddr")], [_pod("a")], caps)
    (scheme,) = plan.schemes()
    assert (scheme.scheme.target_nid, scheme.scheme.dests) == (2, ())
    (problem,) = plan.problems
    assert (problem.severity, problem.reason) == ("warning", "TierNodesUnused")
    assert "node(s) 3 are not used" in problem.message and "6.17" in problem.message
    # A one-node tier needs no dests.
    caps = replace(caps, tiers={"dram": (0,), "cxl": (2,)})
    plan = planning.plan([_pods(_spec(DEMOTE), mode="vaddr")], [_pod("a")], caps)
    assert plan.problems == () and next(iter(plan.schemes())).scheme.dests == ()


# ---------------------------------------------------------------------------------------
# Goal-driven tiering


def test_fill_becomes_goals_on_each_copys_dram_node() -> None:
    goal = {"metric": "some_mem_psi_us", "target": "5ms"}
    promote = _spec(PROMOTE, fill={"dram": "99.7%"}, quota={"size": "1Gi", "goals": [goal]})
    demote = _spec(DEMOTE, fill={"dram": "99.5%"})
    plan = planning.plan([_whole_node(promote, demote)], [], TWO_SOCKETS)
    assert plan.problems == ()
    goals = {(s.name, s.source_nid): s.scheme.quota for s in plan.schemes()}
    psi = model.QuotaGoal("some_mem_psi_us", 5_000)
    # A promotion fills the DRAM node it moves to, after the user's own goals.
    assert goals["promote", 2] == model.Quota(
        size_bytes=512 << 20, goals=(psi, model.QuotaGoal("node_mem_used_bp", 9_970, nid=0))
    )
    assert goals["promote", 3] == model.Quota(
        size_bytes=512 << 20, goals=(psi, model.QuotaGoal("node_mem_used_bp", 9_970, nid=1))
    )
    # A demotion keeps free the DRAM node it moves from; without a quota it gets one.
    assert goals["demote", 0] == model.Quota(
        goals=(model.QuotaGoal("node_mem_free_bp", 50, nid=0),)
    )
    assert goals["demote", 1] == model.Quota(
        goals=(model.QuotaGoal("node_mem_free_bp", 50, nid=1),)
    )
    assert all(s.scheme.fill is None for s in plan.schemes())


def test_fill_where_the_nodes_cannot_be_split_steers_every_dram_node() -> None:
    demote = _spec(DEMOTE, fill={"dram": "99%"})
    plan = planning.plan([_whole_node(demote)], [], replace(TWO_SOCKETS, node_spans={}))
    (scheme,) = plan.schemes()
    assert scheme.scheme.quota == model.Quota(
        goals=(
            model.QuotaGoal("node_mem_free_bp", 100, nid=0),
            model.QuotaGoal("node_mem_free_bp", 100, nid=1),
        )
    )
    # vaddr's dests: a promotion fills each of them.
    promote = _spec(PROMOTE, fill={"dram": "90%"})
    plan = planning.plan([_pods(promote, mode="vaddr")], [_pod("a")], VADDR_MIGRATES)
    (scheme,) = plan.schemes()
    assert scheme.scheme.quota is not None
    assert scheme.scheme.quota.goals == (
        model.QuotaGoal("node_mem_used_bp", 9_000, nid=0),
        model.QuotaGoal("node_mem_used_bp", 9_000, nid=1),
    )


def test_fill_on_a_kernel_without_node_goals_is_refused() -> None:
    caps = replace(ONE_CXL_PAIR, goal_metrics=frozenset({"user_input", "some_mem_psi_us"}))
    plan = planning.plan([_whole_node(_spec(PROMOTE, fill={"dram": "97%"}))], [], caps)
    assert plan.contexts == ()
    (problem,) = plan.problems
    assert (problem.severity, problem.reason) == ("error", "GoalMetricUnsupported")
    assert "fill needs the node_mem_used_bp quota goal (Linux 6.16)" in problem.message
    assert plan.sources[0].planned == ()


def test_a_dry_run_has_no_fill() -> None:
    spec = _spec(DEMOTE, fill={"dram": "99%"}, dryRun=True)
    plan = planning.plan([_whole_node(spec)], [], ONE_CXL_PAIR)
    (scheme,) = plan.schemes()
    assert (scheme.action, scheme.scheme.quota, scheme.scheme.fill) == ("stat", None, None)
    assert plan.sources[0].tiers == ()


MEMCG_GOALS = replace(
    ONE_CXL_PAIR,
    tiers={"dram": (0,), "cxl": (1,)},
    node_spans={0: (0, 4 * GI), 1: (4 * GI, 6 * GI)},
    goal_metrics=ONE_CXL_PAIR.goal_metrics | {"node_memcg_used_bp", "node_memcg_free_bp"},
)


def test_pod_share_is_a_memcg_goal_on_the_pods_own_cgroup() -> None:
    promote = _spec(PROMOTE, fill={"dram": "99.7%", "podShare": "25%"})
    demote = _spec(DEMOTE, fill={"dram": "99.5%", "podShare": "30%"})
    plan = planning.plan([_pods(promote, demote)], [_pod("a")], MEMCG_GOALS)
    assert plan.problems == ()
    goals = {s.name: s.scheme.quota.goals for s in plan.schemes() if s.scheme.quota}
    # The pod-level cgroup: the kernel counts its containers' pages in it.
    assert goals == {
        "promote": (
            model.QuotaGoal("node_mem_used_bp", 9_970, nid=0),
            model.QuotaGoal("node_memcg_used_bp", 2_500, nid=0, path="/kubepods/pod-a"),
        ),
        "demote": (
            model.QuotaGoal("node_mem_free_bp", 50, nid=0),
            model.QuotaGoal("node_memcg_free_bp", 7_000, nid=0, path="/kubepods/pod-a"),
        ),
    }


def test_pod_share_falls_back_to_the_node_wide_fill_and_says_why() -> None:
    promote = _spec(PROMOTE, fill={"dram": "99.7%", "podShare": "25%"})
    node_goal = (model.QuotaGoal("node_mem_used_bp", 9_970, nid=0),)
    before_6_19 = replace(MEMCG_GOALS, goal_metrics=ONE_CXL_PAIR.goal_metrics)
    cases = [
        (_pods(promote), [_pod("a")], before_6_19, "node_memcg_used_bp quota goal (Linux 6.19)"),
        (_pods(promote), [_pod("a"), _pod("b")], MEMCG_GOALS, "its 2 pods on this node"),
        (_whole_node(promote), [], MEMCG_GOALS, "a wholeNode scheme selects no pod"),
    ]
    for assigned, pods, caps, why in cases:
        plan = planning.plan([assigned], pods, caps)
        (scheme,) = plan.schemes()
        assert scheme.scheme.quota is not None and scheme.scheme.quota.goals == node_goal
        (problem,) = plan.problems
        assert (problem.severity, problem.reason) == ("warning", "TieringGoalNodeWide")
        assert why in problem.message and "only the node-wide fill" in problem.message
