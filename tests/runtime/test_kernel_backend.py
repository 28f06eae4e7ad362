"""The kernel adapter on the host's real DAMON: apply, commit online, observe, stop."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from damon_agent.api import resources
from damon_agent.node import procfs
from damon_agent.runtime import outcome, planning
from damon_agent.runtime.backends import kernel as kernel_backend


def _node_wide(*schemes: dict[str, object], generation: int = 1) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": "node",
            "uid": "u",
            "generation": generation,
            "wholeNode": True,
            "spec": {
                "monitoring": {"intervals": {"sample": "5ms", "aggregation": "100ms"}},
                "schemes": list(schemes),
            },
        }
    )


@pytest.mark.kernel
def test_kernel_adapter_commits_online_and_stops_everything(
    kernel_damon: Path, tmp_path: Path
) -> None:
    adapter = kernel_backend.KernelBackend.on_host(
        tmp_path / "state", sys_root=Path("/sys"), proc_root=Path("/proc"), tiers={}
    )
    caps = adapter.info.capabilities
    assert "paddr" in caps.operations and "memcg" in caps.filter_types
    try:
        plan = planning.plan([_node_wide({"name": "all", "action": "stat"})], [], caps)
        adapter.apply(plan)
        (pid,) = adapter.kdamond_pids().values()
        assert pid > 0 and Path(f"/proc/{pid}").exists()
        deadline = time.monotonic() + 15
        entries = []
        while time.monotonic() < deadline:
            entries = adapter.snapshots()
            if entries and len(entries[0].snapshot.targets[0]):
                break
            time.sleep(0.5)
        assert entries and len(entries[0].snapshot.targets[0]) > 0
        assert entries[0].operations == "paddr"

        changed = planning.plan(
            [
                _node_wide(
                    {"name": "all", "action": "stat"},
                    {
                        "name": "cold",
                        "action": "stat",
                        "accessPattern": {"accessRate": {"max": "0%"}},
                    },
                    generation=2,
                )
            ],
            [],
            caps,
        )
        adapter.apply(changed)
        assert adapter.kdamond_pids() == {plan.contexts[0].key: pid}  # same kdamond: commit
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            stats = adapter.stats()
            if (
                stats.get("ClusterDamonScheme/node/cold")
                and stats["ClusterDamonScheme/node/cold"].sz_tried
            ):
                break
            time.sleep(0.5)
        assert adapter.stats()["ClusterDamonScheme/node/cold"].sz_tried > 0
    finally:
        adapter.stop()
    nr = int((kernel_damon / "kdamonds" / "nr_kdamonds").read_text())
    assert nr == 0


@pytest.mark.kernel
def test_kernel_adapter_reads_the_quota_the_kernel_tuned(
    kernel_damon: Path, tmp_path: Path
) -> None:
    adapter = kernel_backend.KernelBackend.on_host(
        tmp_path / "state", sys_root=Path("/sys"), proc_root=Path("/proc"), tiers={}
    )
    quota = {
        "size": "64Mi",
        "resetInterval": "100ms",
        "goals": [{"metric": "user_input", "target": "100"}],
    }
    key = "ClusterDamonScheme/node/tuned"
    try:
        plan = planning.plan(
            [_node_wide({"name": "tuned", "action": "stat", "quota": quota})],
            [],
            adapter.info.capabilities,
        )
        adapter.apply(plan)
        adapter.feed_goals({key: {0: 10}})  # far below the target: the quota grows
        deadline = time.monotonic() + 15
        effective = None
        while time.monotonic() < deadline:
            effective = adapter.tuning()[key].effective_quota_bytes
            if effective:
                break
            time.sleep(0.5)
        assert effective is not None and 0 < effective <= 64 << 20
        (goal,) = adapter.tuning()[key].goals
        assert (goal.metric, goal.target, goal.current) == ("user_input", 100, 10)
        assert adapter.snapshot_ages() == {}
        adapter.snapshots()
        assert list(adapter.snapshot_ages()) == [plan.contexts[0].key]
        # The kdamond's CPU time, as the status and /metrics read it.
        (pid,) = adapter.kdamond_pids().values()
        sampler = outcome.CpuSampler(procfs.cpu_seconds)
        first = sampler.sample({"c": pid}, time.monotonic())["c"]
        time.sleep(1.0)
        later = sampler.sample({"c": pid}, time.monotonic())["c"]
        assert later.seconds >= first.seconds >= 0 and later.percent is not None
    finally:
        adapter.stop()
