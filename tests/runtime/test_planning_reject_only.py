"""The planner on kernels without DAMOS allow filters (6.12-class), one rule per test.

Pure: no I/O. Each rule is checked on the filters the plan holds; the allow-capable
plans are pinned down to the filter so that the reject-only rules cannot leak into them.
"""

from __future__ import annotations

from collections.abc import Sequence

from damon_agent.api import resources, selectors
from damon_agent.api import schemes as api
from damon_agent.ops.kernel import capabilities as kernel_caps
from damon_agent.runtime import planning
from damon_agent.runtime.backends import kernel as kernel_backend
from damon_agent.schemes import model

_FILTERS = frozenset({"anon", "memcg", "young", "addr", "target"})
_PADDR_ACTIONS = frozenset({"pageout", "stat", "migrate_hot", "migrate_cold"})
_VADDR_ACTIONS = frozenset({"pageout", "stat", "cold"})

ALLOW_PADDR = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": _PADDR_ACTIONS},
    filter_types=_FILTERS,
    goal_metrics=frozenset({"user_input"}),
    tiers={"dram": (0,), "cxl": (1,)},
)
ALLOW_VADDR = planning.Capabilities(
    operations=frozenset({"paddr", "vaddr"}),
    actions={"paddr": _PADDR_ACTIONS, "vaddr": _VADDR_ACTIONS},
    filter_types=_FILTERS,
    goal_metrics=frozenset({"user_input"}),
)
# What ``kernel_capabilities`` says of a 6.12 kernel (tested below, from a report).
REJECT_ONLY = planning.Capabilities(
    operations=frozenset({"paddr", "vaddr"}),
    actions={"paddr": _PADDR_ACTIONS, "vaddr": _VADDR_ACTIONS},
    filter_types=_FILTERS,
    goal_metrics=frozenset({"user_input"}),
    tiers={"dram": (0,), "cxl": (1,)},
    allow_filters=False,
    filter_types_by_ops={"paddr": _FILTERS, "vaddr": frozenset({"addr", "target"})},
)
PADDR = api.MonitoringSpec(mode="paddr")


def _pod(
    ns: str, name: str, *, memcgs: tuple[str, ...] | None = None, pids: tuple[int, ...] = ()
) -> planning.PodFacts:
    pod_cgroup = f"/kubepods/pod-{ns}-{name}"
    return planning.PodFacts(
        namespace=ns,
        name=name,
        uid=f"uid-{ns}-{name}",
        labels=(("app", "web"),),
        cgroup_path=pod_cgroup,
        memcg_paths=(pod_cgroup,) if memcgs is None else memcgs,
        pids=pids,
    )


def _scheme(name: str = "cold", **fields: object) -> api.SchemeSpec:
    return api.SchemeSpec.model_validate({"name": name, "action": "pageout", **fields})


def _namespaced(
    ns: str,
    *specs: api.SchemeSpec,
    monitoring: api.MonitoringSpec | None = None,
    name: str = "s",
) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "DamonScheme",
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "generation": 2,
            "namespaces": [ns],
            "podSelector": selectors.LabelSelector(match_labels={"app": "web"}),
            "spec": api.SchemeFile(
                monitoring=monitoring or api.MonitoringSpec(), schemes=list(specs or (_scheme(),))
            ),
        }
    )


def _whole_node(*specs: api.SchemeSpec) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": "node",
            "uid": "u",
            "generation": 1,
            "wholeNode": True,
            "spec": api.SchemeFile(schemes=list(specs)),
        }
    )


def _shape(filters: Sequence[model.Filter]) -> list[tuple[object, ...]]:
    """Each filter as (type, allow, matching, its operand)."""
    shapes: list[tuple[object, ...]] = []
    for f in filters:
        operand: object = None
        if f.type == "memcg":
            operand = f.memcg_path
        elif f.type == "addr":
            operand = (f.addr_start, f.addr_end)
        elif f.type == "target":
            operand = f.target_index
        shapes.append((f.type, f.allow, f.matching, operand))
    return shapes


def _all_filters(plan: planning.Plan) -> list[model.Filter]:
    return [f for s in plan.schemes() for one in s.runs_as() for f in one.filters]


ALLOW_ADDR = {"type": "addr", "addrStart": "0x1000", "addrEnd": "0x9000", "allow": True}
REJECT_OUTSIDE = {"type": "addr", "addrStart": "0x1000", "addrEnd": "0x9000", "matching": False}


# ---- allow-capable kernels: the plan is what it was ------------------------------------


def test_on_allow_capable_kernels_pod_filters_are_allows_placed_last_as_before() -> None:
    user = [{"type": "young"}, {"type": "anon", "allow": True}, ALLOW_ADDR, REJECT_OUTSIDE]
    pods = [_pod("shop", "a", memcgs=("/pa", "/pa/c1")), _pod("shop", "b", memcgs=("/pb",))]
    quota = {"size": "1Gi", "time": "10ms"}
    plan = planning.plan(
        [_namespaced("shop", _scheme(filters=user, quota=quota), monitoring=PADDR)],
        pods,
        ALLOW_PADDR,
    )
    (scheme,) = plan.schemes()
    assert scheme.kernel_schemes == () and scheme.runs_as() == (scheme.scheme,)
    assert _shape(scheme.scheme.filters) == [
        ("young", False, True, None),
        ("anon", False, False, None),
        ("addr", False, False, (0x1000, 0x9000)),
        ("addr", False, False, (0x1000, 0x9000)),
        ("memcg", True, True, "/pa"),
        ("memcg", True, True, "/pa/c1"),
        ("memcg", True, True, "/pb"),
    ]
    assert scheme.scheme.quota is not None
    assert (scheme.scheme.quota.size_bytes, scheme.scheme.quota.time_us) == (2**30, 10_000)


def test_on_allow_capable_kernels_vaddr_and_whole_node_plans_are_as_before() -> None:
    pods = [_pod("shop", "a", pids=(30, 10)), _pod("bank", "b", pids=(20,))]
    plan = planning.plan(
        [
            _namespaced("shop", name="x"),
            _namespaced("bank", name="y"),
            _whole_node(_scheme("n", filters=[{"type": "anon", "allow": True}, {"type": "young"}])),
        ],
        pods,
        ALLOW_VADDR,
    )
    by_key = {s.key: s for s in plan.schemes()}
    assert _shape(by_key["DamonScheme/shop/x/cold"].scheme.filters) == [
        ("target", True, True, 0),
        ("target", True, True, 2),
    ]
    assert _shape(by_key["DamonScheme/bank/y/cold"].scheme.filters) == [("target", True, True, 1)]
    # A whole-node scheme keeps the user's list, allow filters included.
    assert _shape(by_key["ClusterDamonScheme/node/n"].scheme.filters) == [
        ("anon", True, True, None),
        ("young", False, True, None),
    ]
    assert plan.problems == ()


# ---- reject-only kernels ---------------------------------------------------------------


def test_reject_only_plans_hold_no_allow_filter_at_all() -> None:
    user = [{"type": "young", "allow": True}, {"type": "anon"}, ALLOW_ADDR, REJECT_OUTSIDE]
    pods = [
        _pod("shop", "a", memcgs=("/pa", "/pa/c1"), pids=(10,)),
        _pod("shop", "b", pids=(20, 30)),
    ]
    plan = planning.plan(
        [
            _namespaced("shop", _scheme(filters=user), monitoring=PADDR, name="p"),
            _namespaced("shop", _scheme(filters=[ALLOW_ADDR]), name="v"),
            _whole_node(_scheme("n", filters=[{"type": "anon"}, ALLOW_ADDR])),
        ],
        pods,
        REJECT_ONLY,
    )
    assert plan.problems == ()
    assert len(list(plan.schemes())) == 3
    filters = _all_filters(plan)
    assert filters and not any(f.allow for f in filters)


def test_user_allow_filters_become_rejects_of_what_does_not_match() -> None:
    user = [{"type": "young", "allow": True}, {"type": "anon"}, {"type": "anon", "allow": True}]
    plan = planning.plan(
        [_namespaced("shop", _scheme(filters=user), monitoring=PADDR)],
        [_pod("shop", "a")],
        REJECT_ONLY,
    )
    (scheme,) = plan.schemes()
    assert _shape(scheme.scheme.filters)[1:] == [
        ("young", False, False, None),
        ("anon", False, True, None),
        ("anon", False, False, None),
    ]


def test_a_pod_with_one_memcg_is_one_scheme_rejecting_every_other_memcg_first() -> None:
    plan = planning.plan(
        [_namespaced("shop", _scheme(filters=[{"type": "young"}]), monitoring=PADDR)],
        [_pod("shop", "a", memcgs=("/kubepods/pod-a",))],
        REJECT_ONLY,
    )
    (scheme,) = plan.schemes()
    assert scheme.kernel_schemes == ()
    # The memcg reject comes first: the ops layer stops at the first filter that hits, so
    # the young filter (which clears the accessed bit) never looks at other pods' pages.
    assert _shape(scheme.scheme.filters) == [
        ("memcg", False, False, "/kubepods/pod-a"),
        ("young", False, True, None),
    ]


def test_several_memcgs_run_as_one_kernel_scheme_each_sharing_the_quota() -> None:
    pods = [
        _pod("shop", "a", memcgs=("/pa", "/pa/c1", "/pa/c2")),
        # A path twice (here: in two pods) is one copy.
        _pod("shop", "b", memcgs=("/pb", "/pb/c1", "/pa/c1")),
    ]
    quota = {
        "size": "100",
        "time": "10ms",
        "resetInterval": "2s",
        "goals": [{"metric": "user_input", "target": "50"}],
    }
    spec = _scheme(filters=[{"type": "anon", "allow": True}], quota=quota)
    plan = planning.plan([_namespaced("shop", spec, monitoring=PADDR)], pods, REJECT_ONLY)
    (scheme,) = plan.schemes()
    copies = scheme.runs_as()
    assert len(copies) == 3 and scheme.scheme == copies[0]
    assert [_shape(c.filters) for c in copies] == [
        [("memcg", False, False, path), ("anon", False, False, None)]
        # The pod-level memcgs (/pa, /pb) hold no process's memory: left out.
        for path in ("/pa/c1", "/pa/c2", "/pb/c1")
    ]
    for copy in copies:
        assert copy.name == "cold" and copy.action == "pageout"
        assert copy.quota is not None
        # 100 bytes / 3 rounds up to 34; 10 ms / 3 rounds up to 4 ms.
        assert (copy.quota.size_bytes, copy.quota.time_us) == (34, 4000)
        assert copy.quota.reset_interval_us == 2_000_000
        assert copy.quota.goals == (model.QuotaGoal("user_input", 50),)
    # One scheme for the status: one planned key, whatever the copies.
    assert plan.sources[0].planned == ("DamonScheme/shop/s/cold",)


def test_no_quota_limit_stays_no_limit_in_every_copy() -> None:
    pods = [_pod("shop", "a", memcgs=("/pa", "/pa/c1"))]
    spec = _scheme(
        quota={"size": "0", "time": "0", "goals": [{"metric": "user_input", "target": "5"}]}
    )
    plan = planning.plan([_namespaced("shop", spec, monitoring=PADDR)], pods, REJECT_ONLY)
    (scheme,) = plan.schemes()
    for copy in scheme.runs_as():
        assert copy.quota is not None
        assert (copy.quota.size_bytes, copy.quota.time_us) == (0, 0)
    unlimited = planning.plan([_namespaced("shop", _scheme(), monitoring=PADDR)], pods, REJECT_ONLY)
    assert all(c.quota is None for c in next(iter(unlimited.schemes())).runs_as())


def test_only_an_address_range_becomes_two_matching_rejects_on_paddr() -> None:
    end = model.UNBOUNDED  # "max": up to the end of the address space
    cases = {
        # user filter -> the addr rejects the plan holds for it
        "allow-inside": (ALLOW_ADDR, [(0, 0x1000), (0x9000, end)]),
        "reject-outside": (REJECT_OUTSIDE, [(0, 0x1000), (0x9000, end)]),
        "from-zero": (
            {"type": "addr", "addrStart": "0", "addrEnd": "0x9000", "allow": True},
            [(0x9000, end)],
        ),
        "to-the-end": (
            {"type": "addr", "addrStart": "0x1000", "addrEnd": "max", "matching": False},
            [(0, 0x1000)],
        ),
        "everything": (
            {"type": "addr", "addrStart": "0", "addrEnd": "max", "allow": True},
            [],
        ),
        "allow-outside": (
            {
                "type": "addr",
                "addrStart": "0x1000",
                "addrEnd": "0x9000",
                "allow": True,
                "matching": False,
            },
            [(0x1000, 0x9000)],
        ),
    }
    for name, (user, ranges) in cases.items():
        for assigned in (
            _namespaced("shop", _scheme(filters=[user]), monitoring=PADDR),
            _whole_node(_scheme(filters=[user])),
        ):
            plan = planning.plan([assigned], [_pod("shop", "a")], REJECT_ONLY)
            (scheme,) = plan.schemes()
            addr = [f for f in scheme.scheme.filters if f.type == "addr"]
            assert [(f.addr_start, f.addr_end) for f in addr] == ranges, name
            # Never a non-matching addr filter on paddr: the ops layer would reject all.
            assert all(f.matching and not f.allow for f in addr), name


def test_the_two_rejects_leave_exactly_the_allowed_range() -> None:
    user = {"type": "addr", "addrStart": "0x10000", "addrEnd": "0x20000", "allow": True}
    plan = planning.plan([_whole_node(_scheme(filters=[user]))], [], REJECT_ONLY)
    (scheme,) = plan.schemes()
    rejected = [(f.addr_start or 0, f.addr_end or 0) for f in scheme.scheme.filters]

    def passes(address: int) -> bool:
        return not any(start <= address < end for start, end in rejected)

    assert [passes(a) for a in (0, 0xFFFF, 0x10000, 0x1FFFF, 0x20000, 2**62)] == [
        False,
        False,
        True,
        True,
        False,
        False,
    ]


def test_vaddr_isolation_rejects_every_other_target() -> None:
    pods = [_pod("shop", "a", pids=(30, 10)), _pod("bank", "b", pids=(20,))]
    plan = planning.plan(
        [
            _namespaced("shop", _scheme(filters=[REJECT_OUTSIDE]), name="x"),
            _namespaced("bank", name="y"),
        ],
        pods,
        REJECT_ONLY,
    )
    (context,) = plan.contexts
    assert context.operations == "vaddr"
    assert [t.pid for t in context.targets] == [10, 20, 30]
    by_source = {s.source: s.scheme.filters for s in context.schemes}
    assert _shape(by_source["DamonScheme/shop/x"]) == [
        ("target", False, True, 1),
        # vaddr evaluates addr filters in the core only: "reject outside" is kept.
        ("addr", False, False, (0x1000, 0x9000)),
    ]
    assert _shape(by_source["DamonScheme/bank/y"]) == [
        ("target", False, True, 0),
        ("target", False, True, 2),
    ]


def test_a_vaddr_scheme_owning_every_target_needs_no_target_filter() -> None:
    plan = planning.plan([_namespaced("shop")], [_pod("shop", "a", pids=(5, 6))], REJECT_ONLY)
    (scheme,) = plan.schemes()
    assert scheme.scheme.filters == ()
    assert len(plan.contexts[0].targets) == 2


def test_a_page_filter_vaddr_does_not_apply_is_a_problem_naming_the_filter() -> None:
    spec = _scheme("reclaim", filters=[ALLOW_ADDR, {"type": "anon"}])
    plan = planning.plan([_namespaced("shop", spec)], [_pod("shop", "a", pids=(5,))], REJECT_ONLY)
    assert plan.contexts == ()
    (problem,) = plan.problems
    assert (problem.severity, problem.reason) == ("error", planning.REASON_FILTER_UNSUPPORTED)
    assert "scheme reclaim" in problem.message and "filters[1]" in problem.message
    assert "anon" in problem.message and "paddr does" in problem.message
    # The same scheme on paddr is planned, the anon filter kept as a reject.
    on_paddr = planning.plan(
        [_namespaced("shop", spec, monitoring=PADDR)], [_pod("shop", "a")], REJECT_ONLY
    )
    assert on_paddr.problems == ()
    assert ("anon", False, True, None) in _shape(next(iter(on_paddr.schemes())).scheme.filters)


def test_whole_node_with_one_allow_filter_last_is_its_reject_form() -> None:
    user = [{"type": "young"}, {"type": "memcg", "memcgPath": "/batch", "allow": True}]
    plan = planning.plan([_whole_node(_scheme(filters=user))], [], REJECT_ONLY)
    (scheme,) = plan.schemes()
    assert scheme.kernel_schemes == ()
    assert _shape(scheme.scheme.filters) == [
        ("young", False, True, None),
        ("memcg", False, False, "/batch"),
    ]


def test_whole_node_with_an_allow_filter_before_the_last_is_a_problem() -> None:
    # First match decides: "allow anon, then reject young" passes anon OR not-young, a
    # union that reject filters cannot express.
    user = [{"type": "young"}, {"type": "anon", "allow": True}, {"type": "young"}]
    plan = planning.plan([_whole_node(_scheme("n", filters=user))], [], REJECT_ONLY)
    assert plan.contexts == ()
    (problem,) = plan.problems
    assert (problem.severity, problem.reason) == ("error", planning.REASON_FILTER_NEEDS_ALLOW)
    assert "scheme n" in problem.message and "filters[1]" in problem.message
    assert "6.14" in problem.message
    # The same list is fine on an allow-capable kernel.
    assert planning.plan([_whole_node(_scheme("n", filters=user))], [], ALLOW_PADDR).problems == ()


def test_migrations_on_paddr_plan_on_a_reject_only_kernel() -> None:
    spec = _scheme("demote", action="migrate_cold", tier="cxl", filters=[{"type": "young"}])
    pods = [_pod("shop", "a", memcgs=("/pa", "/pa/app"))]
    plan = planning.plan([_namespaced("shop", spec, monitoring=PADDR)], pods, REJECT_ONLY)
    assert plan.problems == ()
    (scheme,) = plan.schemes()
    # One container: one scheme, kept to the container's memcg (the pod's holds none).
    (only,) = scheme.runs_as()
    assert (only.action, only.target_nid) == ("migrate_cold", 1)
    assert _shape(only.filters)[0] == ("memcg", False, False, "/pa/app")


def test_several_memcgs_with_a_minimum_age_are_refused_not_half_applied() -> None:
    # The kernel resets a region's age when a scheme acts on it: a second copy with a
    # minimum age would never act (seen on 6.12). So: a problem naming why, no plan.
    aged = _scheme(
        "demote", action="migrate_cold", tier="cxl", accessPattern={"age": {"min": "10s"}}
    )
    pods = [_pod("shop", "a", memcgs=("/pa", "/pa/app", "/pa/sidecar"))]
    plan = planning.plan([_namespaced("shop", aged, monitoring=PADDR)], pods, REJECT_ONLY)
    assert list(plan.schemes()) == []
    (problem,) = plan.problems
    assert problem.reason == planning.REASON_FILTER_NEEDS_ALLOW
    assert "2 memory cgroups" in problem.message and "minimum age of 0" in problem.message
    # One container, or an allow-capable kernel: planned.
    one = [_pod("shop", "a", memcgs=("/pa", "/pa/app"))]
    assert (
        planning.plan([_namespaced("shop", aged, monitoring=PADDR)], one, REJECT_ONLY).problems
        == ()
    )
    assert (
        planning.plan([_namespaced("shop", aged, monitoring=PADDR)], pods, ALLOW_PADDR).problems
        == ()
    )


def test_kernel_capabilities_of_a_reject_only_kernel() -> None:
    def report(*, allow: bool) -> kernel_caps.CapabilityReport:
        return kernel_caps.CapabilityReport(
            kernel_release="6.12.0" if not allow else "6.14.0",
            method="probed",
            operations=("vaddr", "paddr"),
            actions=("pageout", "stat", "migrate_cold"),
            filter_types=("anon", "memcg", "addr", "target", "young"),
            goal_metrics=("user_input",),
            features={"filters": True, "filter_allow": allow},
        )

    old = kernel_backend.kernel_capabilities(report(allow=False), {})
    assert not old.allow_filters
    # Migrations are paddr-only there.
    assert old.actions == {
        "vaddr": {"pageout", "stat"},
        "paddr": {"pageout", "stat", "migrate_cold"},
    }
    assert old.filters_on("vaddr") == {"addr", "target"}
    assert old.filters_on("paddr") == {"anon", "memcg", "addr", "target", "young"}
    assert old.filter_types == {"anon", "memcg", "addr", "target", "young"}
    new = kernel_backend.kernel_capabilities(report(allow=True), {})
    assert new.allow_filters and new.filter_types_by_ops == {}
    assert new.actions["vaddr"] == new.actions["paddr"] == {"pageout", "stat", "migrate_cold"}
    assert (
        new.filters_on("vaddr") == new.filter_types == {"anon", "memcg", "addr", "target", "young"}
    )


# ---- auto mode picks the operations that apply every action ---------------------------


def test_auto_mode_monitors_physical_memory_when_vaddr_cannot_migrate() -> None:
    # 6.12: migrate_hot exists only on paddr; auto must not plan it on vaddr (or refuse).
    promote = _scheme("promote", action="migrate_hot", tier="dram")
    pod = _pod("a", "web", memcgs=("/kubepods/pod-a/app",), pids=(41,))
    plan = planning.plan([_namespaced("a", promote)], [pod], REJECT_ONLY)
    assert [p.reason for p in plan.problems] == []
    (context,) = plan.contexts
    assert context.operations == "paddr"


def test_auto_mode_stays_on_vaddr_when_vaddr_applies_every_action() -> None:
    pod = _pod("a", "web", memcgs=("/kubepods/pod-a/app",), pids=(41,))
    plan = planning.plan([_namespaced("a", _scheme("cold"))], [pod], REJECT_ONLY)
    (context,) = plan.contexts
    assert context.operations == "vaddr"


def test_explicit_vaddr_mode_is_not_overridden_by_auto_rules() -> None:
    promote = _scheme("promote", action="migrate_hot", tier="dram")
    pod = _pod("a", "web", memcgs=("/kubepods/pod-a/app",), pids=(41,))
    vaddr = api.MonitoringSpec(mode="vaddr")
    plan = planning.plan([_namespaced("a", promote, monitoring=vaddr)], [pod], REJECT_ONLY)
    # The user asked for vaddr, where this kernel cannot migrate: a problem, not a switch.
    assert any(p.severity == "error" for p in plan.problems), plan.problems
