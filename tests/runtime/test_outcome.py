"""The loop's outcome, pure: pods' first sight and now, kdamond CPU, the status it builds
(bounded), the Prometheus text it renders, and the node readers behind it (fake trees)."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from node_support import TREES

from damon_agent.api import resources
from damon_agent.node import cgroups, procfs
from damon_agent.node import errors as node_errors
from damon_agent.runtime import backend, metrics, observing, outcome, planning, status
from damon_agent.schemes.stats import SchemeCounters

CAPS = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": frozenset({"pageout", "stat"})},
    filter_types=frozenset({"memcg"}),
    goal_metrics=frozenset({"user_input"}),
)
INFO = backend.BackendInfo(backend="kernel", capabilities=CAPS, kernel_release="6.18.0")
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)
BURSTABLE_POD = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice"
)


def _assigned(name: str, selector: dict[str, Any] | None = None) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "DamonScheme",
            "namespace": "shop",
            "name": name,
            "uid": f"u-{name}",
            "generation": 1,
            "namespaces": ["shop"],
            "podSelector": selector or {},
            "spec": {
                "schemes": [
                    {
                        "name": "cold",
                        "action": "pageout",
                        "quota": {
                            "size": "64Mi",
                            "goals": [
                                {"metric": "pod_mem_psi_us", "target": "10ms", "path": "pods"}
                            ],
                        },
                    }
                ]
            },
        }
    )


def _pod(name: str, app: str = "web") -> planning.PodFacts:
    return planning.PodFacts(
        namespace="shop",
        name=name,
        uid=f"uid-{name}",
        labels=(("app", app),),
        cgroup_path=f"/kubepods/pod-{name}",
        memcg_paths=(f"/kubepods/pod-{name}",),
    )


def _memory(used: int, swap: int = 0, refaults: int | None = 0, avg10: float = 0.0) -> Any:
    psi = resources.PodPsi(some_avg10=avg10, some_total_us=int(avg10 * 1e6))
    return observing.PodMemory(memory_bytes=used, swap_bytes=swap, refaults=refaults, psi=psi)


class Cgroups:
    """pod cgroup path -> its memory now, changed by the test."""

    def __init__(self) -> None:
        self.now: dict[str, observing.PodMemory | None] = {}

    def read(self, path: str) -> observing.PodMemory | None:
        return self.now.get(path)


def test_a_pod_is_judged_against_its_first_sight_and_forgotten_when_gone() -> None:
    web, db = _assigned("web", {"matchLabels": {"app": "web"}}), _assigned("all")
    pods = [_pod("a"), _pod("b", app="db")]
    plan = planning.plan([web, db], pods, CAPS)
    node = Cgroups()
    node.now = {"/kubepods/pod-a": _memory(100 << 20, 0, 10), "/kubepods/pod-b": None}
    tracker = outcome.PodTracker(node.read)
    (first,) = tracker.observe(plan, pods, T0)  # b's memory cannot be read: left out
    assert first.saved_bytes == 0 and first.since == T0
    assert first.schemes == ("DamonScheme/shop/all", "DamonScheme/shop/web")

    node.now["/kubepods/pod-a"] = _memory(60 << 20, 30 << 20, 25)
    node.now["/kubepods/pod-b"] = _memory(10 << 20)
    a, b = tracker.observe(plan, pods, T1)
    assert (a.key, a.saved_bytes, a.refaults, a.since) == ("shop/a", 40 << 20, 15, T0)
    assert a.first.swap_bytes == 0 and a.now.swap_bytes == 30 << 20
    assert (b.key, b.since) == ("shop/b", T1)

    node.now["/kubepods/pod-a"] = _memory(150 << 20, refaults=None)
    (grown, _) = tracker.observe(plan, pods, T1)
    assert grown.saved_bytes == 0 and grown.refaults == 0  # grew; refaults not counted

    node.now["/kubepods/pod-a"] = None  # one failed reading does not lose the baseline
    assert [o.key for o in tracker.observe(plan, pods, T1)] == ["shop/b"]
    node.now["/kubepods/pod-a"] = _memory(90 << 20)
    (kept, _) = tracker.observe(plan, pods, T1)
    assert kept.since == T0 and kept.saved_bytes == 10 << 20

    tracker.observe(plan, pods[1:], T1)  # a is gone: its baseline goes with it
    node.now["/kubepods/pod-a"] = _memory(5 << 20)
    (again, _) = tracker.observe(plan, pods, T1)
    assert again.since == T1 and again.saved_bytes == 0


def test_pods_of_a_scheme_that_does_not_run_are_not_read() -> None:
    plan = planning.plan([_assigned("web", {"matchLabels": {"app": "none"}})], [_pod("a")], CAPS)
    node = Cgroups()
    node.now = {"/kubepods/pod-a": _memory(1 << 20)}
    assert outcome.PodTracker(node.read).observe(plan, [_pod("a")], T0) == []


def test_cpu_sampler_gives_seconds_and_the_share_of_one_cpu_between_samples() -> None:
    seconds = {11: 2.0, 12: 0.5}

    def read(pid: int) -> float:
        if pid not in seconds:
            raise node_errors.ProcessGoneError(pid)
        return seconds[pid]

    sampler = outcome.CpuSampler(read)
    first = sampler.sample({"c0": 11, "c1": 99}, 100.0)
    assert first == {"c0": outcome.CpuUse(pid=11, seconds=2.0, percent=None)}  # 99 is gone
    seconds[11] = 2.3
    peek = sampler.sample({"c0": 11}, 105.0, record=False)
    assert peek["c0"].seconds == 2.3
    seconds[11] = 2.6
    later = sampler.sample({"c0": 11}, 110.0)
    assert later["c0"].percent == pytest.approx(6.0)  # 0.6 s over 10 s, from the recorded
    later = sampler.sample({"c0": 12}, 120.0)  # a new kdamond (restarted): no rate yet
    assert later["c0"].percent is None


def _built(
    pods: list[outcome.PodOutcome], plan: planning.Plan, assigned: list[Any]
) -> resources.DamonNodeStatus:
    key = "DamonScheme/shop/all/cold"
    (context,) = plan.contexts
    return status.build(
        assigned=assigned,
        plan=plan,
        outcome=status.ApplyOutcome(applied=True, plan=plan),
        info=INFO,
        stats={key: SchemeCounters(sz_applied=4096)},
        numa=[],
        psi=resources.Psi(),
        node_generation=1,
        previous=None,
        now=T1,
        tuning={
            key: backend.SchemeTuning(
                32 << 20,
                (
                    backend.GoalTuning("pod_mem_psi_us", 10_000, 4_000),
                    backend.GoalTuning("some_mem_psi_us", 50_000, None),
                ),
            )
        },
        pods=pods,
        cpu={context.key: outcome.CpuUse(pid=4242, seconds=12.345, percent=3.21)},
        snapshot_ages={context.key: 4.04},
    )


def test_status_carries_quota_goals_savings_and_contexts_and_caps_the_pods() -> None:
    nr = resources.MAX_POD_STATUSES + 6
    pods = [_pod(f"p{i:03d}") for i in range(nr)]
    assigned = [_assigned("all")]
    plan = planning.plan(assigned, pods, CAPS)
    node = Cgroups()
    node.now = {p.cgroup_path or "": _memory(100 << 20, refaults=0) for p in pods}
    tracker = outcome.PodTracker(node.read)
    tracker.observe(plan, pods, T0)
    for i, p in enumerate(pods):
        # p000 saves the most; p005 is the most pressed.
        node.now[p.cgroup_path or ""] = _memory(
            (100 << 20) - ((nr - i) << 20), refaults=i, avg10=9.5 if i == 5 else 0.0
        )
    built = _built(tracker.observe(plan, pods, T1), plan, assigned)

    (scheme,) = built.schemes
    (stats,) = scheme.stats
    assert stats.effective_quota_bytes == 32 << 20
    assert [(g.metric, g.target, g.current) for g in stats.goals] == [
        ("pod_mem_psi_us", 10_000, 4_000),
        ("some_mem_psi_us", 50_000, None),
    ]
    total = sum((nr - i) << 20 for i in range(nr))
    assert scheme.saved_bytes == total == built.saved_bytes  # every pod, listed or not
    assert scheme.refaults == sum(range(nr))
    assert len(built.pods) == resources.MAX_POD_STATUSES and built.pods_omitted == 6
    assert [p.name for p in built.pods[:3]] == ["p005", "p000", "p001"]
    first = built.pods[1]
    assert (first.first_memory_bytes, first.memory_bytes) == (100 << 20, (100 << 20) - (nr << 20))
    assert first.saved_bytes == nr << 20 and first.since == T0
    assert first.schemes == ["DamonScheme/shop/all"]
    (context,) = built.contexts
    assert context.operations == "paddr" and context.schemes == ["DamonScheme/shop/all/cold"]
    assert (context.kdamond_pid, context.cpu_seconds, context.cpu_percent) == (4242, 12.35, 3.21)
    assert context.snapshot_age_seconds == 4.0
    api = resources.to_api(built)
    assert api["kdamondCpu"] == "3.2%" and api["saved"] == resources.units.format_bytes(total)
    # The outcome moves all the time: it is not material, so it does not force writes.
    assert status.material_fingerprint(built) == status.material_fingerprint(
        _built([], plan, assigned)
    )
    resources.DamonNodeStatus.model_validate(api)  # round-trips through the API form


class Source:
    """A metrics.MetricsSource with the loop's outcome filled in."""

    node_name = "n1"
    backend = "kernel"

    def __init__(self, plan: planning.Plan, pods: list[outcome.PodOutcome]) -> None:
        self.plan = plan
        self.pods = pods

    def readiness(self) -> tuple[bool, str]:
        return True, "ok"

    def current_plan(self) -> planning.Plan:
        return self.plan

    def current_stats(self) -> dict[str, SchemeCounters]:
        return {}

    def current_psi(self) -> resources.Psi:
        return resources.Psi()

    def loop_counters(self) -> metrics.LoopCounters:
        return metrics.LoopCounters()

    def pod_placement(self) -> dict[str, dict[int, int]]:
        return {}

    def current_kernel_tiering(self) -> resources.KernelTiering | None:
        return None

    def current_dying_cgroups(self) -> int | None:
        return None

    def node_stat(self) -> None:
        return None

    def counts_filter_passed(self) -> bool:
        return False

    def current_tuning(self) -> dict[str, backend.SchemeTuning]:
        goals = (
            backend.GoalTuning("pod_mem_psi_us", 10_000, 4_000),
            backend.GoalTuning("some_mem_psi_us", 50_000, None),
        )
        return {s.key: backend.SchemeTuning(32 << 20, goals) for s in self.plan.schemes()}

    def current_pods(self) -> list[outcome.PodOutcome]:
        return self.pods

    def current_kdamond_cpu(self) -> dict[str, outcome.CpuUse]:
        return {c.key: outcome.CpuUse(4242, 12.5, None) for c in self.plan.contexts}

    def current_snapshot_ages(self) -> dict[str, float]:
        return {c.key: 3.0 for c in self.plan.contexts}


def _samples(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def test_metrics_render_the_outcome_with_bounded_pod_series() -> None:
    nr = resources.MAX_POD_STATUSES + 3
    pods = [_pod(f"p{i:03d}") for i in range(nr)]
    plan = planning.plan([_assigned("all")], pods, CAPS)
    outcomes = [
        outcome.PodOutcome(
            namespace="shop",
            name=p.name,
            uid=p.uid,
            schemes=("DamonScheme/shop/all",),
            now=_memory(10 << 20, swap=1 << 20, refaults=7, avg10=2.5),
            first=_memory(12 << 20, refaults=2),
            since=T0,
        )
        for p in pods
    ]
    text = prometheus_client.generate_latest(metrics.registry_for(Source(plan, outcomes))).decode()
    scheme = 'name="cold",scheme="DamonScheme/shop/all"'
    assert _samples(text, "damon_scheme_effective_quota_bytes") == {
        f"damon_scheme_effective_quota_bytes{{{scheme}}}": 32 << 20
    }
    assert _samples(text, "damon_scheme_goal_target") == {
        f'damon_scheme_goal_target{{goal="0",metric="pod_mem_psi_us",{scheme}}}': 10_000,
        f'damon_scheme_goal_target{{goal="1",metric="some_mem_psi_us",{scheme}}}': 50_000,
    }
    assert _samples(text, "damon_scheme_goal_current") == {
        f'damon_scheme_goal_current{{goal="0",metric="pod_mem_psi_us",{scheme}}}': 4_000
    }
    assert _samples(text, "damon_scheme_memory_saved_bytes") == {
        'damon_scheme_memory_saved_bytes{scheme="DamonScheme/shop/all"}': nr * (2 << 20)
    }
    # The node's total counts the pods left out of the per-pod series too.
    assert _samples(text, "damon_node_memory_saved_bytes") == {
        "damon_node_memory_saved_bytes": nr * (2 << 20)
    }
    saved = _samples(text, "damon_pod_memory_saved_bytes")
    assert len(saved) == resources.MAX_POD_STATUSES
    assert saved['damon_pod_memory_saved_bytes{pod="shop/p000"}'] == 2 << 20
    pressure = _samples(text, "damon_pod_memory_pressure_some_avg10_ratio")
    assert pressure['damon_pod_memory_pressure_some_avg10_ratio{pod="shop/p000"}'] == 0.025
    stalled = _samples(text, "damon_pod_memory_pressure_some_seconds_total")
    assert stalled['damon_pod_memory_pressure_some_seconds_total{pod="shop/p000"}'] == 2.5
    refaults = _samples(text, "damon_pod_memory_refaults_total")
    assert refaults['damon_pod_memory_refaults_total{pod="shop/p000"}'] == 5
    swap = _samples(text, "damon_pod_memory_swap_bytes")
    assert swap['damon_pod_memory_swap_bytes{pod="shop/p000"}'] == 1 << 20
    assert _samples(text, "damon_agent_pods_omitted") == {"damon_agent_pods_omitted": 3}
    assert _samples(text, "damon_kdamond_cpu_seconds_total") == {
        'damon_kdamond_cpu_seconds_total{context="0",operations="paddr"}': 12.5
    }
    assert _samples(text, "damon_snapshot_age_seconds") == {
        'damon_snapshot_age_seconds{context="0",operations="paddr"}': 3.0
    }


def test_metrics_count_the_plans_problems_by_scheme_severity_and_reason() -> None:
    key = "DamonScheme/shop/all"
    plan = planning.Plan(
        problems=(
            planning.Problem(key, "error", "UnsupportedAction", "scheme a: no"),
            planning.Problem(key, "error", "UnsupportedAction", "scheme b: no"),
            planning.Problem(key, "warning", planning.REASON_NO_SWAP, "scheme c: no swap"),
        )
    )
    text = prometheus_client.generate_latest(metrics.registry_for(Source(plan, []))).decode()
    assert _samples(text, "damon_scheme_problems") == {
        f'damon_scheme_problems{{reason="UnsupportedAction",scheme="{key}",severity="error"}}': 2,
        f'damon_scheme_problems{{reason="NoSwap",scheme="{key}",severity="warning"}}': 1,
    }
    # A plan without problems exports the family with no series: nothing to alert on.
    clean = prometheus_client.generate_latest(metrics.registry_for(Source(planning.Plan(), [])))
    assert "# TYPE damon_scheme_problems gauge" in clean.decode()
    assert _samples(clean.decode(), "damon_scheme_problems") == {}


def _tree(tmp_path: Path) -> tuple[observing.NodeRoots, Path]:
    root = tmp_path / "systemd-v2"
    shutil.copytree(TREES / "systemd-v2", root)
    pod_dir = root / "sys" / "fs" / "cgroup" / BURSTABLE_POD.lstrip("/")
    return observing.NodeRoots(proc=root / "proc", sys=root / "sys"), pod_dir


def test_pod_memory_reads_current_swap_refaults_and_pressure(tmp_path: Path) -> None:
    roots, pod_dir = _tree(tmp_path)
    (pod_dir / "memory.swap.current").write_text("8192\n")
    (pod_dir / "memory.stat").write_text(
        "anon 1000\nfile 2000\nworkingset_refault_anon 3\nworkingset_refault_file 4\n"
    )
    found = observing.PodResolver(roots).pod_memory(BURSTABLE_POD)
    assert found == observing.PodMemory(
        memory_bytes=50331648,
        swap_bytes=8192,
        refaults=7,
        psi=resources.PodPsi(some_avg10=1.5, some_total_us=123456),
    )


def test_pod_memory_without_swap_accounting_or_stat_says_what_it_can(tmp_path: Path) -> None:
    roots, pod_dir = _tree(tmp_path)
    (pod_dir / "memory.pressure").unlink()
    found = observing.PodResolver(roots).pod_memory(BURSTABLE_POD)
    assert found == observing.PodMemory(memory_bytes=50331648, swap_bytes=0, refaults=None)
    assert observing.PodResolver(roots).pod_memory("/kubepods.slice/gone") is None


def test_cgroup_memory_readers(tmp_path: Path) -> None:
    roots, pod_dir = _tree(tmp_path)
    layout = cgroups.discover(roots.proc, roots.sys)
    assert cgroups.memory_swap_bytes(layout, BURSTABLE_POD) is None  # not accounted
    with pytest.raises(node_errors.CgroupNotFoundError):
        cgroups.memory_swap_bytes(layout, "/kubepods.slice/gone")
    (pod_dir / "memory.swap.current").write_text("lots\n")
    with pytest.raises(node_errors.MalformedFileError):
        cgroups.memory_swap_bytes(layout, BURSTABLE_POD)
    (pod_dir / "memory.stat").write_text("workingset_refault 9\n\n")
    assert cgroups.refaults(cgroups.memory_stat(layout, BURSTABLE_POD)) == 9  # before 5.9
    assert cgroups.refaults({"anon": 1}) is None
    (pod_dir / "memory.stat").write_text("anon x\n")
    with pytest.raises(node_errors.MalformedFileError):
        cgroups.memory_stat(layout, BURSTABLE_POD)


def test_cpu_ticks_are_counted_from_the_last_parenthesis(tmp_path: Path) -> None:
    # A kernel thread whose name holds a space and a parenthesis.
    line = "4242 (kdamond.0 (x)) S 2 0 0 0 -1 2129984 0 0 0 0 150 50 0 0 20 0 1 0 99 0 0"
    assert procfs.parse_cpu_ticks(line, "stat") == 200
    with pytest.raises(node_errors.MalformedFileError):
        procfs.parse_cpu_ticks("4242 (short) S 1 2", "stat")
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "stat").write_text(line + "\n")
    ticks = procfs.os.sysconf("SC_CLK_TCK")
    assert procfs.cpu_seconds(4242, tmp_path) == pytest.approx(200 / ticks)
    with pytest.raises(node_errors.ProcessGoneError):
        procfs.cpu_seconds(4343, tmp_path)


class CountingSource(Source):
    """A source whose backend says whether it counts filter-passed bytes, with counters."""

    def __init__(self, plan: planning.Plan, *, counted: bool, passed: int) -> None:
        super().__init__(plan, [])
        self.counted = counted
        self.passed = passed

    def counts_filter_passed(self) -> bool:
        return self.counted

    def current_stats(self) -> dict[str, SchemeCounters]:
        return {
            s.key: SchemeCounters(sz_applied=4096, sz_ops_filter_passed=self.passed)
            for s in self.plan.schemes()
        }


def test_metrics_export_filter_passed_bytes_only_where_the_backend_counts_them() -> None:
    plan = planning.plan([_assigned("all")], [_pod("p000")], CAPS)
    series = 'damon_scheme_filter_passed_bytes_total{name="cold",scheme="DamonScheme/shop/all"}'

    def exported(source: metrics.MetricsSource) -> dict[str, float]:
        text = prometheus_client.generate_latest(metrics.registry_for(source)).decode()
        # The family is there whether or not it has series: a dashboard finds its name.
        assert "# TYPE damon_scheme_filter_passed_bytes_total counter" in text
        return _samples(text, "damon_scheme_filter_passed_bytes_total")

    assert exported(CountingSource(plan, counted=True, passed=8192)) == {series: 8192}
    # Counted and none passed is a 0, a series that exists.
    assert exported(CountingSource(plan, counted=True, passed=0)) == {series: 0}
    # Not counted (a kernel before 6.14, the in-process engines): no series at all, even
    # though the counters hold a number.
    assert exported(CountingSource(plan, counted=False, passed=8192)) == {}
    # A source that cannot tell claims nothing either.
    assert exported(Source(plan, [])) == {}


def test_metrics_export_a_scheme_run_on_several_nodes_memory_once() -> None:
    caps = planning.Capabilities(
        operations=frozenset({"paddr"}),
        actions={"paddr": frozenset({"migrate_hot"})},
        filter_types=frozenset({"memcg"}),
        goal_metrics=frozenset(),
        tiers={"dram": (0,), "cxl": (1, 2)},
        node_spans={n: (n << 30, (n + 1) << 30) for n in range(3)},
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
    assert len(list(plan.schemes())) == 2  # one copy per CXL node
    text = prometheus_client.generate_latest(metrics.registry_for(Source(plan, []))).decode()
    series = 'name="promote",scheme="ClusterDamonScheme/tiering"'
    for family in ("damon_scheme_applied_bytes_total", "damon_scheme_effective_quota_bytes"):
        assert text.count(f"{family}{{{series}}}") == 1, family
