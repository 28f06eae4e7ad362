"""Backends report where each quota stands: effective size quota, goals' current vs target.

The kernel backend over the fake sysfs tree (6.18, and 6.12 whose per-memcg copies sum
their quotas), the sim backend stepped in virtual time, and the kernel readers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from damon_agent.api import resources
from damon_agent.core import clock
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver, reading
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.runtime import backend, planning
from damon_agent.runtime.backends import inprocess, sim
from damon_agent.runtime.backends import kernel as kernel_backend

RAM = "100000000-13fffffff : System RAM\n"
WORKLOAD = Path(__file__).resolve().parents[2] / "examples" / "workloads" / "hot-cold.yaml"
KEY = "DamonScheme/shop/s/cold"
POD_A = planning.PodFacts(
    "shop",
    "a",
    "uid-a",
    labels=(("app", "web"),),
    cgroup_path="/kubepods/pod-a",
    memcg_paths=("/kubepods/pod-a/app", "/kubepods/pod-a/sidecar"),
    pids=(101,),
)
COLD: dict[str, Any] = {
    "name": "cold",
    "action": "pageout",
    "accessPattern": {"accessRate": {"max": "0%"}},
    "quota": {
        "size": "128Mi",
        "resetInterval": "1s",
        "goals": [
            {"metric": "pod_mem_psi_us", "target": "10ms", "path": "pods"},
            {"metric": "some_mem_psi_us", "target": "50ms"},
        ],
    },
}


def _assigned(*schemes: dict[str, Any], mode: str = "paddr") -> resources.AssignedScheme:
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
                "monitoring": {
                    "mode": mode,
                    "intervals": {"sample": "5ms", "aggregation": "50ms"},
                },
                "schemes": list(schemes),
            },
        }
    )


def _kernel(
    tmp_path: Path, release: str, omit: frozenset[str] = frozenset()
) -> tuple[kernel_backend.KernelBackend, fake_sysfs.FakeDamonSysfs]:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "iomem").write_text(RAM)
    fake = fake_sysfs.FakeDamonSysfs(
        tmp_path / "admin", avail_operations=("vaddr", "paddr"), omit=omit
    )
    damon = kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(fake, tmp_path / "state", boot_id="b", sleep=lambda _: None),
        kernel_release=release,
        proc_root=proc,
        clock=clock.SimClock(start_us=7_000_000),
    )
    return kernel_backend.KernelBackend(damon, tiers={}), fake


def test_quota_tunings_reads_effective_bytes_and_goals(tmp_path: Path) -> None:
    adapter, fake = _kernel(tmp_path, "6.18.4")
    plan = planning.plan([_assigned(COLD)], [POD_A], adapter.info.capabilities)
    try:
        adapter.apply(plan)
        fake.effective_bytes[(0, 0)] = 3 << 20
        adapter.feed_goals({KEY: {0: 2500}})
        (first, *_) = reading.quota_tunings(fake, 0, lambda _: None)
        assert first.effective_bytes == 3 << 20
        assert first.goals == ((10_000, 2500), (50_000, 0))
        assert ("kdamonds/0/state", "update_schemes_effective_quotas") in fake.log
        before = len(fake.log)
        (only,) = reading.quota_tunings(fake, 0, lambda _: None, with_effective=False, nr_schemes=1)
        assert only.effective_bytes is None and len(fake.log) == before  # no command
    finally:
        adapter.stop()


def test_kernel_backend_names_goals_as_written_and_knows_only_fed_values(
    tmp_path: Path,
) -> None:
    adapter, fake = _kernel(tmp_path, "6.18.4")
    watch = {"name": "all", "action": "stat"}
    plan = planning.plan([_assigned(watch, COLD)], [POD_A], adapter.info.capabilities)
    try:
        adapter.apply(plan)
        fake.effective_bytes[(0, 1)] = 1 << 20
        adapter.feed_goals({KEY: {0: 4000}})
        tuning = adapter.tuning()
        assert set(tuning) == {KEY}  # the stat scheme has no quota
        assert tuning[KEY] == backend.SchemeTuning(
            1 << 20,
            (
                backend.GoalTuning("pod_mem_psi_us", 10_000, 4000),
                # The kernel computes its own metrics and does not show them.
                backend.GoalTuning("some_mem_psi_us", 50_000, None),
            ),
        )
        fake.effective_bytes[(0, 1)] = 2**64 - 1
        assert adapter.tuning()[KEY].effective_quota_bytes is None  # ULONG_MAX: no limit
    finally:
        adapter.stop()
    assert adapter.tuning() == {}


def test_per_memcg_copies_sum_their_effective_quotas(tmp_path: Path) -> None:
    # 6.12 has no allow filters: a scheme over two memcgs runs as two kernel schemes.
    old = frozenset({"allow", "core_filters", "ops_filters", "addr_unit", "goal_tuner", "nid"})
    adapter, fake = _kernel(tmp_path, "6.12.117", omit=old)
    plan = planning.plan([_assigned(COLD)], [POD_A], adapter.info.capabilities)
    (planned,) = plan.schemes()
    assert len(planned.runs_as()) == 2
    try:
        adapter.apply(plan)
        fake.effective_bytes[(0, 0)] = 5 << 20
        fake.effective_bytes[(0, 1)] = 7 << 20
        assert adapter.tuning()[KEY].effective_quota_bytes == 12 << 20
        fake.effective_bytes[(0, 1)] = 2**64 - 1
        assert adapter.tuning()[KEY].effective_quota_bytes is None  # one copy unlimited
    finally:
        adapter.stop()


def test_a_kernel_without_effective_quotas_still_reports_goals(tmp_path: Path) -> None:
    adapter, fake = _kernel(tmp_path, "6.18.4", omit=frozenset({"effective_bytes"}))
    plan = planning.plan([_assigned(COLD)], [POD_A], adapter.info.capabilities)
    try:
        adapter.apply(plan)
        adapter.feed_goals({KEY: {0: 7}})
        (goal, _) = adapter.tuning()[KEY].goals
        assert adapter.tuning()[KEY].effective_quota_bytes is None
        assert goal.current == 7
        assert all(v != "update_schemes_effective_quotas" for _, v in fake.log)
    finally:
        adapter.stop()


def test_kernel_snapshot_age_is_the_time_since_one_was_taken(tmp_path: Path) -> None:
    adapter, _ = _kernel(tmp_path, "6.18.4")
    plan = planning.plan([_assigned(COLD)], [POD_A], adapter.info.capabilities)
    try:
        adapter.apply(plan)
        assert adapter.snapshot_ages() == {}  # nobody asked for one yet
        adapter.snapshots()
        (context,) = plan.contexts
        assert adapter.snapshot_ages() == {context.key: 0.0}
    finally:
        adapter.stop()
    assert adapter.snapshot_ages() == {}


def test_sim_backend_reports_the_engines_quota_and_goals() -> None:
    adapter = sim.open_sim(WORKLOAD, pacing=inprocess.Pacing.STEPPED, seed=1)
    pod = planning.PodFacts("shop", "a", "ua", cgroup_path="/sim/poda", memcg_paths=("/sim/a",))
    quota = {"size": "64Mi", "resetInterval": "100ms"}
    goals = [{"metric": "pod_mem_psi_us", "target": "10ms", "path": "pods"}]
    cold = dict(COLD, quota=dict(quota, goals=goals))
    plan = planning.plan([_assigned(cold)], [pod], adapter.info.capabilities)
    try:
        adapter.apply(plan)
        adapter.feed_goals({KEY: {0: 20_000}})  # twice the target: the quota shrinks
        adapter.clock.sleep_us(2_000_000)
        tuning = adapter.tuning()[KEY]
        assert tuning.goals == (backend.GoalTuning("pod_mem_psi_us", 10_000, 20_000),)
        assert tuning.effective_quota_bytes is not None
        assert tuning.effective_quota_bytes < 64 << 20
        (context,) = plan.contexts
        ages = adapter.snapshot_ages()
        assert set(ages) == {context.key} and 0 <= ages[context.key] < 0.1
    finally:
        adapter.stop()
