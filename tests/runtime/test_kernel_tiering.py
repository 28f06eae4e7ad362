"""Migrations beside the kernel's own tiering: the node facts read through the injected
roots (fake trees), each ``kernelTiering`` policy in the plan, and what the status and
/metrics say of it."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from node_support import TREES

from damon_agent.api import conditions, resources
from damon_agent.runtime import backend, metrics, observing, planning, status
from damon_agent.schemes.stats import SchemeCounters

CAPS = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": frozenset({"pageout", "migrate_hot", "migrate_cold", "stat"})},
    filter_types=frozenset({"memcg", "young", "addr"}),
    goal_metrics=frozenset(),
    tiers={"dram": (0,), "cxl": (1,)},
)
INFO = backend.BackendInfo(backend="kernel", capabilities=CAPS, kernel_release="6.18.0")
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
TIERING = "ClusterDamonScheme/tiering"
RECLAIM = "ClusterDamonScheme/reclaim"


def _whole_node(name: str, *schemes: dict[str, Any]) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": name,
            "uid": f"u-{name}",
            "generation": 2,
            "wholeNode": True,
            "spec": {"monitoring": {"mode": "paddr"}, "schemes": list(schemes)},
        }
    )


def _tiering(
    up: str | None = None, down: str | None = None, dry_run: bool = False
) -> resources.AssignedScheme:
    """promote-hot (migrate_hot), demote-cold (migrate_cold) with the given policies, and
    a pageout beside them in the same object."""
    promote: dict[str, Any] = {"name": "promote-hot", "action": "migrate_hot", "tier": "dram"}
    demote: dict[str, Any] = {"name": "demote-cold", "action": "migrate_cold", "tier": "cxl"}
    for scheme, policy in ((promote, up), (demote, down)):
        if policy is not None:
            scheme["kernelTiering"] = policy
        scheme["dryRun"] = dry_run
    return _whole_node("tiering", promote, demote, {"name": "reclaim", "action": "pageout"})


ASSIGNED = [_tiering(), _whole_node("reclaim", {"name": "cold", "action": "pageout"})]


def _node(balancing: int | None, demotion: bool | None = True) -> planning.NodeFacts:
    found = resources.KernelTiering(numa_balancing=balancing, demotion_enabled=demotion)
    return planning.NodeFacts(swap_bytes=1 << 30, kernel_tiering=found)


def _planned(plan: planning.Plan) -> list[str]:
    return sorted(s.key for s in plan.schemes())


ALL = [
    f"{RECLAIM}/cold",
    f"{TIERING}/demote-cold",
    f"{TIERING}/promote-hot",
    f"{TIERING}/reclaim",
]


# ---------------------------------------------------------------------------------------
# The node facts, through the injected roots


def test_the_node_facts_carry_the_kernels_tiering_settings() -> None:
    tree = TREES / "numa-cxl"
    facts = observing.read_node_facts(observing.NodeRoots(proc=tree / "proc", sys=tree / "sys"))
    assert facts.swap_bytes == 0  # the tree's meminfo
    assert facts.kernel_tiering == resources.KernelTiering(numa_balancing=2, demotion_enabled=True)
    assert facts.kernel_tiering.promotes


def test_a_kernel_without_the_files_has_neither_setting(tmp_path: Path) -> None:
    facts = observing.read_node_facts(observing.NodeRoots(proc=tmp_path, sys=tmp_path))
    assert facts.swap_bytes is None  # no meminfo either: not known, never a crash
    assert facts.kernel_tiering == resources.KernelTiering()
    assert facts.kernel_tiering is not None and not facts.kernel_tiering.promotes


def test_a_garbled_setting_is_said_and_the_other_still_read(tmp_path: Path) -> None:
    (tmp_path / "proc" / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "proc" / "sys" / "kernel" / "numa_balancing").write_text("tiering\n")
    (tmp_path / "sys" / "kernel" / "mm" / "numa").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "mm" / "numa" / "demotion_enabled").write_text("false\n")
    roots = observing.NodeRoots(proc=tmp_path / "proc", sys=tmp_path / "sys")
    found = observing.read_kernel_tiering(roots)
    assert found.numa_balancing is None and found.demotion_enabled is False
    assert found.error == (
        f"{tmp_path}/proc/sys/kernel/numa_balancing: 'tiering' is not a non-negative integer"
    )
    assert not found.promotes  # unknown is not taken as promoting


# ---------------------------------------------------------------------------------------
# Planning, per policy


@pytest.mark.parametrize("balancing", [None, 0, 4])  # 4: a bit the agent does not know
@pytest.mark.parametrize("policy", [None, "Coexist", "Refuse"])
def test_a_kernel_that_does_not_promote_changes_nothing(
    balancing: int | None, policy: str | None
) -> None:
    # demotion_enabled alone changes nothing: reclaim demotes, as migrate_cold does.
    assigned = [_tiering(up=policy, down=policy), ASSIGNED[1]]
    plan = planning.plan(assigned, [], CAPS, _node(balancing, demotion=True))
    assert plan.problems == ()
    assert _planned(plan) == ALL


@pytest.mark.parametrize(
    ("balancing", "modes"), [(1, "normal"), (2, "tiering"), (3, "normal, tiering")]
)
def test_coexist_runs_each_migration_and_warns_of_the_kernels_tiering(
    balancing: int, modes: str
) -> None:
    assigned = [_tiering(up=None, down="Coexist"), ASSIGNED[1]]  # absent is Coexist
    plan = planning.plan(assigned, [], CAPS, _node(balancing))
    assert _planned(plan) == ALL
    assert [(p.source, p.severity, p.reason) for p in plan.problems] == [
        (TIERING, "warning", "KernelTiering"),
        (TIERING, "warning", "KernelTiering"),
    ]
    promote = plan.problems[0].message
    assert promote == (
        f"scheme promote-hot: kernel.numa_balancing={balancing} ({modes}) also "
        "promotes pages from the CXL tier; the kernel and this scheme may move the same "
        "pages (set kernelTiering: Refuse to stand aside)"
    )
    assert plan.problems[1].message.startswith("scheme demote-cold: ")


def test_refuse_leaves_the_migration_out_and_the_other_schemes_run() -> None:
    assigned = [_tiering(up="Refuse", down="Coexist"), ASSIGNED[1]]
    plan = planning.plan(assigned, [], CAPS, _node(2))
    assert f"{TIERING}/promote-hot" not in _planned(plan)
    assert _planned(plan) == [k for k in ALL if not k.endswith("/promote-hot")]
    refused = [p for p in plan.problems if p.severity == "error"]
    assert [(p.source, p.reason) for p in refused] == [(TIERING, "KernelTiering")]
    assert refused[0].message == (
        "scheme promote-hot: not applied on this node, as its kernelTiering: Refuse asks: "
        "kernel.numa_balancing=2 (tiering) promotes pages from the CXL tier itself"
    )
    # demote-cold coexists (warned); the other scheme object is untouched.
    warned = [p.message for p in plan.problems if p.severity == "warning"]
    assert len(warned) == 1 and warned[0].startswith("scheme demote-cold: ")
    assert plan.problems_of(RECLAIM) == []
    (summary,) = [s for s in plan.sources if s.key == TIERING]
    assert sorted(summary.planned) == [f"{TIERING}/demote-cold", f"{TIERING}/reclaim"]


def test_a_dry_run_is_judged_as_the_scheme_it_stands_for() -> None:
    plan = planning.plan([_tiering(up="Refuse", dry_run=True)], [], CAPS, _node(2))
    assert _planned(plan) == [f"{TIERING}/demote-cold", f"{TIERING}/reclaim"]
    assert [(p.severity, p.reason) for p in plan.problems] == [
        ("error", "KernelTiering"),
        ("warning", "KernelTiering"),
    ]


def test_unknown_facts_plan_every_scheme_without_a_word() -> None:
    assigned = [_tiering(up="Refuse", down="Refuse")]
    unknown = planning.NodeFacts(swap_bytes=1 << 30, kernel_tiering=None)
    for node in (None, unknown):  # the sim; settings that could not be read
        plan = planning.plan(assigned, [], CAPS, node)
        assert plan.problems == () and len(_planned(plan)) == 3


# ---------------------------------------------------------------------------------------
# Status and metrics


def _status(
    assigned: list[resources.AssignedScheme], plan: planning.Plan, found: resources.KernelTiering
) -> resources.DamonNodeStatus:
    return status.build(
        assigned=assigned,
        plan=plan,
        outcome=status.ApplyOutcome(applied=True, plan=plan),
        info=INFO,
        stats={},
        numa=[],
        psi=resources.Psi(),
        node_generation=1,
        previous=None,
        now=T0,
        kernel_tiering=found,
    )


def _condition(node: resources.DamonNodeStatus, key: str, kind: str) -> conditions.Condition:
    scheme = node.scheme(key)
    assert scheme is not None
    found = conditions.find(list(scheme.conditions), kind)
    assert found is not None
    return found


def test_the_status_reports_the_settings_and_each_policys_outcome() -> None:
    facts = _node(3, demotion=True)
    assert facts.kernel_tiering is not None
    refusing = [_tiering(up="Refuse"), ASSIGNED[1]]
    built = _status(refusing, planning.plan(refusing, [], CAPS, facts), facts.kernel_tiering)
    assert resources.to_api(built)["kernelTiering"] == {
        "numaBalancing": 3,
        "numaBalancingModes": ["normal", "tiering"],
        "demotionEnabled": True,
    }
    ready = _condition(built, TIERING, "Ready")
    assert (ready.status, ready.reason) == ("False", "KernelTiering")
    assert "scheme promote-hot: not applied on this node" in ready.message
    degraded = _condition(built, TIERING, "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "KernelTiering")
    other = _condition(built, RECLAIM, "Ready")
    assert (other.status, other.reason) == ("True", "Applied")

    coexisting = [_tiering(), ASSIGNED[1]]
    built = _status(coexisting, planning.plan(coexisting, [], CAPS, facts), facts.kernel_tiering)
    ready = _condition(built, TIERING, "Ready")
    assert (ready.status, ready.reason) == ("True", "Applied")
    assert "may move the same pages" in ready.message
    degraded = _condition(built, TIERING, "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "KernelTiering")


def test_a_change_of_the_settings_is_material() -> None:
    plan = planning.plan(ASSIGNED, [], CAPS)
    off = _status(ASSIGNED, plan, resources.KernelTiering(numa_balancing=0))
    on = _status(ASSIGNED, plan, resources.KernelTiering(numa_balancing=2))
    assert status.material_fingerprint(off) != status.material_fingerprint(on)


class Source:
    """A metrics.MetricsSource with nothing but the kernel's tiering settings (and a plan)."""

    node_name = "n1"
    backend = "kernel"

    def __init__(
        self, found: resources.KernelTiering | None, plan: planning.Plan, dying: int | None = None
    ) -> None:
        self.found = found
        self.plan = plan
        self.dying = dying

    def current_kernel_tiering(self) -> resources.KernelTiering | None:
        return self.found

    def current_dying_cgroups(self) -> int | None:
        return self.dying

    def current_plan(self) -> planning.Plan:
        return self.plan

    def readiness(self) -> tuple[bool, str]:
        return True, "ok"

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

    def current_pods(self) -> list[Any]:
        return []

    def current_kdamond_cpu(self) -> dict[str, Any]:
        return {}

    def current_snapshot_ages(self) -> dict[str, float]:
        return {}


def _scrape(
    found: resources.KernelTiering | None, plan: planning.Plan, dying: int | None = None
) -> dict[str, float]:
    source = Source(found, plan, dying)
    text = prometheus_client.generate_latest(metrics.registry_for(source)).decode()
    names = (
        "damon_node_numa_balancing",
        "damon_node_demotion_enabled",
        "damon_scheme_problems",
        "damon_node_cgroups_dying",
    )
    samples = {}
    for line in text.splitlines():
        if line.startswith(names):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def test_metrics_export_the_settings_and_the_warnings() -> None:
    facts = _node(2, demotion=False)
    plan = planning.plan([_tiering()], [], CAPS, facts)
    assert _scrape(facts.kernel_tiering, plan) == {
        "damon_node_numa_balancing": 2.0,
        'damon_node_numa_balancing_mode{mode="normal"}': 0.0,
        'damon_node_numa_balancing_mode{mode="tiering"}': 1.0,
        "damon_node_demotion_enabled": 0.0,
        f'damon_scheme_problems{{reason="KernelTiering",scheme="{TIERING}",severity="warning"}}': (
            2.0
        ),
    }


def test_metrics_leave_out_what_the_kernel_does_not_have() -> None:
    plan = planning.Plan()
    assert _scrape(resources.KernelTiering(), plan) == {}
    assert _scrape(None, plan) == {}  # not read: the sim
    only_demotion = resources.KernelTiering(demotion_enabled=True)
    assert _scrape(only_demotion, plan) == {"damon_node_demotion_enabled": 1.0}


def test_metrics_export_the_dying_cgroups_where_read() -> None:
    # Pod-targeted paddr schemes on kernels whose memcg filters pin memory cgroups make
    # it grow (docs/pod-selection.md); absent where cgroup v2 does not show it.
    assert _scrape(None, planning.Plan(), dying=12) == {"damon_node_cgroups_dying": 12.0}
    assert _scrape(None, planning.Plan()) == {}
