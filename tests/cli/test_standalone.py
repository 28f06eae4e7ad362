"""The sim run loop behind `damon-agent run`, and the node metrics it simulates."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from damon_agent.core import clock as core_clock
from damon_agent.ops import sim, workloads
from damon_agent.runtime import standalone
from damon_agent.schemes import errors as schemes_errors

MiB = 1 << 20


def test_progress_reports_every_snapshot(repo: pathlib.Path) -> None:
    seen: list[standalone.Progress] = []
    result = standalone.run_sim(
        repo / "examples/workloads/hot-cold.yaml", duration_us=1_000_000, on_progress=seen.append
    )
    assert [p.nr_snapshots for p in seen] == list(range(1, 11))
    assert [p.elapsed_us for p in seen] == [i * 100_000 for i in range(1, 11)]
    assert all(p.duration_us == 1_000_000 for p in seen)
    assert seen[-1].nr_regions == sum(len(t) for t in result.final.targets)  # type: ignore[union-attr]
    assert result.nr_snapshots == 10
    assert (result.start_us, result.end_us) == (0, 1_000_000)
    assert result.target_names == {0: "app"}
    assert result.scheme_stats == []


def test_too_short_a_run_has_no_snapshot(repo: pathlib.Path) -> None:
    result = standalone.run_sim(repo / "examples/workloads/hot-cold.yaml", duration_us=50_000)
    assert result.final is None
    assert result.nr_snapshots == 0


def _metrics_after_pageout(repo: pathlib.Path) -> tuple[sim.SimOperations, standalone.SimMetrics]:
    clock = core_clock.SimClock()
    workload = workloads.load_workload(repo / "examples/workloads/hot-cold.yaml")
    ops = sim.SimOperations(workload, clock=clock, rng=np.random.default_rng(1))
    metrics = standalone.SimMetrics(ops)
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


def test_scheme_run_acts_on_the_sim(repo: pathlib.Path, tmp_path: pathlib.Path) -> None:
    scheme = tmp_path / "reclaim.yaml"
    scheme.write_text(
        "schemes:\n"
        "  - name: reclaim\n"
        "    action: pageout\n"
        "    accessPattern:\n"
        "      accessRate: {min: 0%, max: 0%}\n"
        "      age: {min: 1s, max: max}\n"
    )
    result = standalone.run_sim(
        repo / "examples/workloads/hot-cold.yaml", duration_us=3_000_000, scheme_path=scheme
    )
    (stats,) = result.scheme_stats
    assert stats["name"] == "reclaim"
    # The 896 MiB cold range is never accessed: once 1 s old it is paged out, all of it.
    assert stats["sz_applied"] == 896 * MiB
