"""The sim backend in the daemon: the real monitor and DAMOS engine over a simulated workload,
paced to the wall clock."""

from __future__ import annotations

import time
from pathlib import Path

from damon_agent.api import resources
from damon_agent.runtime import planning
from damon_agent.runtime.backends import inprocess, sim

WORKLOAD = Path(__file__).resolve().parents[2] / "examples" / "workloads" / "hot-cold.yaml"
POD = planning.PodFacts(namespace="shop", name="a", uid="ua", memcg_paths=("/sim/poda",))


def _assigned(*schemes: dict[str, object]) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "DamonScheme",
            "namespace": "shop",
            "name": "s",
            "uid": "u",
            "generation": 1,
            "namespaces": ["shop"],
            "podSelector": {},
            "spec": {
                "monitoring": {"intervals": {"sample": "5ms", "aggregation": "50ms"}},
                "schemes": list(schemes),
            },
        }
    )


def _wait(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached within {timeout_s}s")


def test_sim_runs_the_plan_and_changes_schemes_without_restarting_monitoring() -> None:
    adapter = sim.open_sim(WORKLOAD, pacing=inprocess.Pacing.WALL_PACED, seed=1)
    try:
        stat = {"name": "all", "action": "stat"}
        plan = planning.plan([_assigned(stat)], [POD], adapter.info.capabilities)
        adapter.apply(plan)
        _wait(lambda: adapter.snapshots() and adapter.stats().get("DamonScheme/shop/s/all"))
        (entry,) = adapter.snapshots()
        assert entry.scheme == "DamonScheme/shop/s/all" and entry.pods == ("shop/a",)
        total = sum(int(t.sizes.sum()) for t in entry.snapshot.targets)
        assert total == 1 << 30  # the whole simulated workload is monitored
        (context,) = adapter._contexts.values()
        monitor_before = context.monitor
        tried_before = adapter.stats()["DamonScheme/shop/s/all"].sz_tried

        cold = {
            "name": "cold",
            "action": "pageout",
            "accessPattern": {"accessRate": {"max": "0%"}, "age": {"min": "200ms"}},
        }
        plan2 = planning.plan([_assigned(stat, cold)], [POD], adapter.info.capabilities)
        adapter.apply(plan2)
        (context2,) = adapter._contexts.values()
        assert context2.monitor is monitor_before  # same monitoring context, online change
        _wait(
            lambda: (
                adapter.stats().get("DamonScheme/shop/s/cold", None) is not None
                and adapter.stats()["DamonScheme/shop/s/cold"].sz_applied > 0
            )
        )
        assert adapter.stats()["DamonScheme/shop/s/all"].sz_tried >= tried_before  # carried
        assert adapter.failures() == []
    finally:
        adapter.stop()
    assert adapter.snapshots() == []


TIERING = WORKLOAD.with_name("tiering.yaml")


def _promote(fill: str | None, seconds: int) -> list[tuple[int | None, int, int]]:
    """Each second of a promotion over the tiering workload (its hot set on CXL, 75% of
    DRAM used by its cold bulk): (effective quota, DRAM node 0's used share, promoted)."""
    adapter = sim.open_sim(TIERING, pacing=inprocess.Pacing.STEPPED, seed=1)
    promote: dict[str, object] = {
        "name": "promote",
        "action": "migrate_hot",
        "tier": "dram",
        "accessPattern": {"accessRate": {"min": "5%"}},
        "quota": {"size": "16Mi", "resetInterval": "50ms"},
    }
    if fill is not None:
        promote["fill"] = {"dram": fill}
    assigned = resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": "tiering",
            "uid": "u",
            "generation": 1,
            "wholeNode": True,
            "spec": {
                "monitoring": {"intervals": {"sample": "5ms", "aggregation": "50ms"}},
                "schemes": [promote],
            },
        }
    )
    plan = planning.plan([assigned], [], adapter.info.capabilities)
    assert plan.problems == ()
    key = "ClusterDamonScheme/tiering/promote"
    seen = []
    try:
        adapter.apply(plan)
        for _ in range(seconds):
            adapter.clock.sleep_us(1_000_000)
            tuning = adapter.tuning()[key]
            used = tuning.goals[0].current if tuning.goals else None
            seen.append((tuning.effective_quota_bytes, used or 0, adapter.stats()[key].sz_applied))
    finally:
        adapter.stop()
    return seen


def test_a_fill_goal_steers_promotion_to_stop_near_the_dram_fill() -> None:
    mi = 1 << 20
    unsteered = _promote(None, 12)
    # Without a fill, the whole hot set and part of the warm one move: 75% -> ~93%.
    assert unsteered[-1][2] >= 180 * mi
    steered = _promote("85%", 12)
    quotas = [quota or 0 for quota, _, _ in steered]
    # The quota grows while DRAM is under 85% used, then shrinks to nothing once it
    # is above: promotion stops a little past the fill (one quota's overshoot).
    peak = quotas.index(max(quotas))
    assert steered[0][1] == 7_500
    assert 8_500 < steered[-1][1] <= 9_200
    assert quotas[-1] < mi <= quotas[peak]
    assert quotas[peak:] == sorted(quotas[peak:], reverse=True)
    assert steered[-1][2] - steered[-3][2] < 8 * mi  # it has all but stopped
    assert steered[-1][2] < unsteered[-1][2] - 32 * mi
