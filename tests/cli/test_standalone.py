"""`damon-agent run`'s path: a scheme file planned and applied to a backend, then sampled.

On the sim backend, stepped in virtual time, so every figure below is exact.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from damon_agent.api import schemes as api_schemes
from damon_agent.core import clock as core_clock
from damon_agent.ops import sim, workloads
from damon_agent.runtime import backend, errors, feedback, planning, standalone
from damon_agent.runtime.backends import inprocess
from damon_agent.runtime.backends import sim as sim_backend
from damon_agent.schemes import errors as schemes_errors

MiB = 1 << 20
RECLAIM = """\
schemes:
  - name: reclaim
    action: pageout
    accessPattern:
      accessRate: {min: 0%, max: 0%}
      age: {min: 1s, max: max}
"""


def _run(
    repo: pathlib.Path,
    duration_us: int,
    scheme_file: api_schemes.SchemeFile | None = None,
    **kwargs: object,
) -> standalone.RunResult:
    node = sim_backend.open_sim(
        repo / "examples/workloads/hot-cold.yaml", pacing=inprocess.Pacing.STEPPED
    )
    scheme = standalone.assigned(scheme_file or api_schemes.SchemeFile(), "test", None)
    plan = standalone.plan_run(scheme, [], node.info.capabilities)
    try:
        return standalone.run(node, plan, duration_us=duration_us, **kwargs)  # type: ignore[arg-type]
    finally:
        node.stop()


def test_progress_reports_every_aggregation(repo: pathlib.Path) -> None:
    seen: list[standalone.Progress] = []
    result = _run(repo, 1_000_000, on_progress=seen.append)
    # One per aggregation: 200 ms by default (api.schemes.Intervals).
    assert [p.nr_snapshots for p in seen] == list(range(1, 6))
    assert [p.elapsed_us for p in seen] == [i * 200_000 for i in range(1, 6)]
    assert all(p.duration_us == 1_000_000 for p in seen)
    assert result.final is not None
    assert seen[-1].nr_regions == sum(len(t) for t in result.final.targets)
    assert result.nr_snapshots == 5
    assert (result.start_us, result.end_us) == (0, 1_000_000)
    assert result.target_names == {0: "app"}
    assert result.schemes == ()


def test_too_short_a_run_has_no_snapshot(repo: pathlib.Path) -> None:
    result = _run(repo, 50_000)
    assert result.final is None
    assert result.nr_snapshots == 0


def test_a_seed_reproduces_a_run(repo: pathlib.Path) -> None:
    first, second = _run(repo, 2_000_000), _run(repo, 2_000_000)
    assert first.final is not None and second.final is not None
    for a, b in zip(first.final.targets, second.final.targets, strict=True):
        assert a.start.tolist() == b.start.tolist()
        assert a.nr_accesses.tolist() == b.nr_accesses.tolist()


def test_scheme_run_acts_on_the_sim(repo: pathlib.Path, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "reclaim.yaml"
    path.write_text(RECLAIM)
    result = _run(repo, 3_000_000, api_schemes.load_scheme_file(path))
    (totals,) = result.schemes
    assert (totals.name, totals.action) == ("reclaim", "pageout")
    # The 896 MiB cold range is never accessed: once 1 s old it is paged out, all of it.
    assert totals.counters.sz_applied == 896 * MiB


def test_dry_run_is_planned_as_stat(repo: pathlib.Path, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "reclaim.yaml"
    path.write_text(RECLAIM + "    dryRun: true\n")
    result = _run(repo, 3_000_000, api_schemes.load_scheme_file(path))
    (totals,) = result.schemes
    assert totals.action == "stat"
    assert totals.counters.sz_tried >= 896 * MiB
    assert totals.counters.sz_applied == 0


def test_a_scheme_the_node_cannot_run_is_refused_naming_it(
    repo: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "thp.yaml"
    path.write_text("schemes:\n  - {name: thp, action: hugepage}\n")
    node = sim_backend.open_sim(
        repo / "examples/workloads/hot-cold.yaml", pacing=inprocess.Pacing.STEPPED
    )
    scheme = standalone.assigned(api_schemes.load_scheme_file(path), "t", None)
    with pytest.raises(errors.RunError, match="scheme thp: action hugepage is not available"):
        standalone.plan_run(scheme, [], node.info.capabilities)


def test_a_process_target_becomes_a_pod_the_scheme_selects() -> None:
    scheme = standalone.assigned(
        api_schemes.SchemeFile.model_validate({"schemes": [{"name": "s", "action": "stat"}]}),
        "t",
        standalone.ProcessTarget(pid=1234),
    )
    assert not scheme.whole_node
    assert scheme.selects_pod("", dict([standalone.RUN_LABEL]))
    assert not scheme.selects_pod("", {})


def _metrics_after_pageout(
    repo: pathlib.Path,
) -> tuple[sim.SimOperations, sim_backend.SimMetrics]:
    clock = core_clock.SimClock()
    workload = workloads.load_workload(repo / "examples/workloads/hot-cold.yaml")
    ops = sim.SimOperations(workload, clock=clock, rng=np.random.default_rng(1))
    metrics = sim_backend.SimMetrics(ops)
    before = metrics.read("free_mem_rate")
    # Capacity is twice the mapped 1 GiB, all resident: half the node is free.
    assert before == 500
    cold = next(r for r in ops.ranges(0) if r.name == "cold")
    ops.apply_action(0, cold.start, cold.start + 512 * MiB, "pageout", None)
    return ops, metrics


def test_sim_metrics_follow_residency(repo: pathlib.Path) -> None:
    _, metrics = _metrics_after_pageout(repo)
    # 512 MiB of 1 GiB paged out: 512 MiB resident of a 2 GiB node -> 750 permil free.
    assert metrics.read("free_mem_rate") == 750
    # Node 0 holds the whole workload (1 GiB node capacity); half of it resident.
    assert metrics.read("node_mem_used_bp", nid=0) == 5_000
    assert metrics.read("node_mem_free_bp", nid=0) == 5_000
    assert metrics.read("node_mem_used_bp", nid=1) == 0
    assert metrics.read("some_mem_psi_us") == 0  # nothing refaulted yet


def test_sim_metrics_refuse_what_is_not_simulated(repo: pathlib.Path) -> None:
    _, metrics = _metrics_after_pageout(repo)
    with pytest.raises(schemes_errors.MetricUnavailableError, match="not simulated"):
        metrics.read("pod_mem_psi_us", path="/kubepods")
    with pytest.raises(schemes_errors.MetricUnavailableError, match="nodes 0 and 1, not 3"):
        metrics.read("node_mem_used_bp", nid=3)


class _FeedRecorder:
    """A node backend that only records what ``run`` feeds it (no snapshot ever comes)."""

    def __init__(self, capabilities: planning.Capabilities) -> None:
        self.info = backend.BackendInfo("kernel", capabilities)
        self.clock = core_clock.SimClock(start_us=1_000_000)
        self.fed: list[dict[str, dict[int, int]]] = []
        self.warm_up_checks = 0

    def apply(self, plan: planning.Plan) -> None:
        pass

    def feed_goals(self, inputs: dict[str, dict[int, int]]) -> None:
        self.fed.append(inputs)

    def end_warm_ups(self) -> list[str]:
        self.warm_up_checks += 1
        return []

    def follow_tuned_intervals(self) -> list[str]:
        return []

    def snapshots(self) -> list[object]:
        return []

    def stats(self) -> dict[str, object]:
        return {}

    def failures(self) -> list[str]:
        return []


def _pod_psi_goal_run(repo: pathlib.Path) -> tuple[planning.Plan, _FeedRecorder]:
    """A run plan of one pageout with a pod PSI goal on /pod-a, and a node recording feeds."""
    spec = api_schemes.SchemeFile.model_validate(
        {
            "schemes": [
                {
                    "name": "reclaim",
                    "action": "pageout",
                    "quota": {
                        "goals": [{"metric": "pod_mem_psi_us", "target": "1ms", "path": "/pod-a"}]
                    },
                }
            ]
        }
    )
    sim_node = sim_backend.open_sim(
        repo / "examples/workloads/hot-cold.yaml", pacing=inprocess.Pacing.STEPPED
    )
    capabilities = sim_node.info.capabilities
    sim_node.stop()
    target = standalone.ProcessTarget(cgroup="/pod-a")
    pod = planning.PodFacts(
        "run",
        "target",
        "uid",
        labels=(standalone.RUN_LABEL,),
        cgroup_path="/pod-a",
        memcg_paths=("/pod-a",),
        pids=(4321,),
    )
    plan = standalone.plan_run(standalone.assigned(spec, "t", target), [pod], capabilities)
    return plan, _FeedRecorder(capabilities)


def test_pod_psi_goals_are_fed_from_the_targets_cgroup(repo: pathlib.Path) -> None:
    # As the daemon's feedback loop does: the stall of the target's cgroup since the last
    # sample, per quota reset interval, into the goal the planner made of pod_mem_psi_us.
    plan, node = _pod_psi_goal_run(repo)
    (scheme,) = plan.user_schemes()
    assert scheme.psi_goal_indexes == (0,)
    stalls = iter(range(0, 100_000, 3_000))  # 3 ms more stall at each reading
    heard: list[planning.Problem] = []
    standalone.run(
        node,  # type: ignore[arg-type]
        plan,
        duration_us=3_000_000,
        pressure=feedback.PsiFeedback(lambda cgroup: next(stalls)),
        on_problem=heard.append,
    )
    # One reading a second (the period on a real node): the first only starts the count.
    assert node.fed == [{scheme.key: {0: 0}}, {scheme.key: {0: 3000}}, {scheme.key: {0: 3000}}]
    assert node.warm_up_checks == 3
    assert heard == []


def test_an_unreadable_pod_pressure_is_told_once_and_its_goal_sees_zero(
    repo: pathlib.Path,
) -> None:
    plan, node = _pod_psi_goal_run(repo)
    (scheme,) = plan.user_schemes()

    def no_psi(cgroup: str) -> int:
        raise OSError(f"{cgroup}/memory.pressure: no such file")

    heard: list[planning.Problem] = []
    standalone.run(
        node,  # type: ignore[arg-type]
        plan,
        duration_us=3_000_000,
        pressure=feedback.PsiFeedback(no_psi),
        on_problem=heard.append,
    )
    assert node.fed == [{scheme.key: {0: 0}}] * 3
    assert [(p.reason, p.severity) for p in heard] == [("PodPressureUnavailable", "warning")]
    assert "/pod-a" in heard[0].message
