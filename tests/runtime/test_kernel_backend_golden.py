"""Plans -> the sysfs writes the kernel backend makes, compared with golden logs.

Each case plans a set of assigned schemes that between them use every rewrite the
planner does (dry run, tier, pod isolation on paddr and vaddr, user filters turned into
rejects, per-memcg copies with their quota shares, pod PSI goals, intervals goal,
DAMON_STAT's context) and applies the plan to a fake sysfs tree: a 6.18 one with allow
filters and a 6.12 one without. The log holds every write, probing and state commands
included, through three generations of the plan: started, restarted with other
monitoring, committed online.

Regenerate after an intended change with ``DAMON_UPDATE_GOLDEN=1 pytest tests/runtime``
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from damon_agent.api import resources
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.runtime import planning
from damon_agent.runtime.backends import kernel as kernel_backend

GOLDEN = Path(__file__).with_name("golden")
RAM = "100000000-13fffffff : System RAM\n"
NEWER_THAN_6_12 = fake_sysfs.NEWER_THAN_6_12

PODS = [
    planning.PodFacts(
        "shop",
        "a",
        "uid-a",
        labels=(("app", "web"),),
        cgroup_path="/kubepods/pod-a",
        memcg_paths=("/kubepods/pod-a", "/kubepods/pod-a/app", "/kubepods/pod-a/sidecar"),
        pids=(101, 102),
    ),
    planning.PodFacts(
        "shop",
        "b",
        "uid-b",
        labels=(("app", "web"),),
        cgroup_path="/kubepods/pod-b",
        memcg_paths=("/kubepods/pod-b",),
        pids=(201,),
    ),
    planning.PodFacts(
        "bank",
        "c",
        "uid-c",
        labels=(("app", "db"),),
        cgroup_path="/kubepods/pod-c",
        memcg_paths=("/kubepods/pod-c",),
        pids=(301,),
    ),
]

NODE_SCHEMES: list[dict[str, Any]] = [
    {
        "name": "reclaim-dry",
        "action": "pageout",
        "dryRun": True,
        "applyInterval": "2s",
        "accessPattern": {
            "size": {"min": "4Ki", "max": "1Gi"},
            "accessRate": {"min": "0%", "max": "5%"},
            "age": {"min": "30s", "max": "max"},
        },
        "quota": {
            "time": "10ms",
            "size": "128Mi",
            "resetInterval": "2s",
            "weights": {"size": 1, "accessRate": 300, "age": 700},
            "goals": [
                {"metric": "some_mem_psi_us", "target": "5ms"},
                {"metric": "user_input", "target": "50", "current": 5},
            ],
        },
        "watermarks": {"interval": "5s", "high": "50%", "mid": "40%", "low": "5%"},
        "filters": [
            {"type": "anon", "matching": False},
            {"type": "hugepage_size", "minSize": "2Mi", "maxSize": "2Mi"},
            {"type": "addr", "addrStart": "0x100000000", "addrEnd": "0x120000000", "allow": True},
        ],
    },
    {"name": "demote-dry", "action": "migrate_cold", "tier": "cxl", "dryRun": True},
    {
        "name": "promote",
        "action": "migrate_hot",
        "tier": "dram",
        "accessPattern": {"accessRate": {"min": "5%"}},
        "filters": [{"type": "memcg", "memcgPath": "/system", "allow": True}],
    },
    {"name": "all", "action": "stat"},
]

POD_RECLAIM: dict[str, Any] = {
    "name": "reclaim",
    "action": "pageout",
    "accessPattern": {"accessRate": {"max": "0%"}, "age": {"min": "0"}},
    "quota": {
        "time": "9ms",
        "size": "1Mi",
        "goals": [
            {"metric": "pod_mem_psi_us", "target": "2ms", "path": "/kubepods"},
            {"metric": "user_input", "target": "10", "current": 3},
        ],
    },
    "filters": [
        {"type": "young"},
        {"type": "addr", "addrStart": "0x110000000", "addrEnd": "0x120000000", "allow": True},
    ],
}

DEMOTE: dict[str, Any] = {
    "action": "migrate_cold",
    "tier": "cxl",
    "accessPattern": {"accessRate": {"max": "0%"}, "age": {"min": "10s"}},
}

VADDR_COLD: dict[str, Any] = {
    "name": "cold",
    "action": "cold",
    "accessPattern": {"accessRate": {"max": "1%"}, "age": {"min": "5s"}},
    "filters": [{"type": "addr", "addrStart": "0x1000", "addrEnd": "4Gi"}],
}


def _node(generation: int, monitoring: dict[str, Any]) -> resources.AssignedScheme:
    # Generation 3 drops a scheme and keeps the monitoring: committed online.
    schemes = NODE_SCHEMES if generation < 3 else NODE_SCHEMES[:-1]
    return resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": "node",
            "uid": "uid-node",
            "generation": generation,
            "wholeNode": True,
            "spec": {"monitoring": monitoring, "schemes": schemes},
        }
    )


def _pods(
    name: str, ns: str, app: str, mode: str, scheme: dict[str, Any]
) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "DamonScheme",
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "generation": 1,
            "namespaces": [ns],
            "podSelector": {"matchLabels": {"app": app}},
            "spec": {
                "monitoring": {
                    "mode": mode,
                    "intervals": {"sample": "10ms", "aggregation": "200ms", "update": "1s"},
                    "regions": {"min": 20, "max": 500},
                },
                "schemes": [scheme],
            },
        }
    )


def _assigned(generation: int) -> list[resources.AssignedScheme]:
    monitoring: dict[str, Any] = {
        "intervals": {"sample": "5ms", "aggregation": "100ms", "update": "60s"},
        "intervalsGoal": {"access": "4%", "aggrs": 3, "minSample": "5ms", "maxSample": "10s"},
    }
    if generation > 1:  # another context: the kdamonds restart
        monitoring["regions"] = {"min": 10, "max": 2000}
    return [
        _node(generation, monitoring),
        _pods("pods", "shop", "web", "paddr", POD_RECLAIM),
        _pods("procs", "bank", "db", "vaddr", VADDR_COLD),
        _pods("procs", "shop", "web", "vaddr", VADDR_COLD),
    ]


@pytest.mark.parametrize(
    ("name", "release", "omit"),
    [("plans_6_18", "6.18.4", frozenset()), ("plans_6_12", "6.12.117", NEWER_THAN_6_12)],
)
def test_plans_write_what_the_golden_log_says(
    tmp_path: Path, name: str, release: str, omit: frozenset[str]
) -> None:
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
    )
    adapter = kernel_backend.KernelBackend(damon, tiers={"dram": (0,), "cxl": (1,)})
    caps = adapter.info.capabilities
    problems = []
    try:
        for generation in (1, 2, 3):
            plan = planning.plan(_assigned(generation), PODS, caps)
            plan, _ = planning.with_node_stat(plan, caps)
            problems.append([(p.severity, p.reason) for p in plan.problems])
            adapter.apply(plan)
    finally:
        adapter.stop()
    text = "".join(f"{path} {value}\n" for path, value in fake.log)
    path = GOLDEN / f"{name}.log"
    if os.environ.get("DAMON_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden log {path} is missing (DAMON_UPDATE_GOLDEN=1 makes it)"
    assert text == path.read_text(), f"writes differ from {path}"
    assert problems[0] == problems[1] == problems[2]
    assert all(severity == "warning" for severity, _ in problems[0])


def test_tier_migrations_run_one_kdamond_per_source_tier_over_its_ram(tmp_path: Path) -> None:
    # DRAM (node 0) spans below 4.5 GiB, with a hole under 4 GiB; CXL (node 1) above.
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "iomem").write_text(RAM)
    fake = fake_sysfs.FakeDamonSysfs(tmp_path / "admin", avail_operations=("vaddr", "paddr"))
    damon = kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(fake, tmp_path / "state", boot_id="b", sleep=lambda _: None),
        kernel_release="6.18.4",
        proc_root=proc,
    )
    spans = {0: (0, 0x120000000), 1: (0x120000000, 0x140000000)}
    adapter = kernel_backend.KernelBackend(damon, {"dram": (0,), "cxl": (1,)}, spans)
    tiering = resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": "tiering",
            "uid": "uid-tiering",
            "generation": 1,
            "wholeNode": True,
            "spec": {
                "schemes": [
                    {"name": "promote", "action": "migrate_hot", "tier": "dram"},
                    {"name": "demote", "action": "migrate_cold", "tier": "cxl"},
                ]
            },
        }
    )
    try:
        adapter.apply(planning.plan([tiering], [], adapter.info.capabilities))
    finally:
        adapter.stop()
    written = dict(fake.log)
    regions = {
        written[f"kdamonds/{k}/contexts/0/schemes/0/action"]: (
            int(written[f"kdamonds/{k}/contexts/0/targets/0/regions/0/start"]),
            int(written[f"kdamonds/{k}/contexts/0/targets/0/regions/0/end"]),
        )
        for k in (0, 1)
    }
    assert regions == {
        "migrate_cold": (0x100000000, 0x120000000),  # DRAM's RAM only
        "migrate_hot": (0x120000000, 0x140000000),  # CXL's only
    }


def _fake_kernel(
    tmp_path: Path, omit: frozenset[str] = frozenset()
) -> tuple[kernel_damon.KernelDamon, fake_sysfs.FakeDamonSysfs]:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "iomem").write_text(RAM)
    fake = fake_sysfs.FakeDamonSysfs(
        tmp_path / "admin", avail_operations=("vaddr", "paddr"), omit=omit
    )
    damon = kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(fake, tmp_path / "state", boot_id="b", sleep=lambda _: None),
        kernel_release="6.18.4",
        proc_root=proc,
    )
    return damon, fake


def test_two_sockets_run_one_kdamond_per_node_with_its_fill_goal(tmp_path: Path) -> None:
    # Socket A: DRAM 0 and CXL 2; socket B: DRAM 1 and CXL 3; a quarter of the RAM each.
    damon, fake = _fake_kernel(tmp_path)
    spans = {n: (0x100000000 + n * 0x10000000, 0x110000000 + n * 0x10000000) for n in range(4)}
    distances = {0: {2: 14, 3: 24}, 1: {2: 24, 3: 14}, 2: {0: 14, 1: 24}, 3: {0: 24, 1: 14}}
    tiers = {"dram": (0, 1), "cxl": (2, 3)}
    adapter = kernel_backend.KernelBackend(damon, tiers, spans, node_distances=distances)
    tiering = resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": "tiering",
            "uid": "uid-tiering",
            "generation": 1,
            "wholeNode": True,
            "spec": {
                "schemes": [
                    {
                        "name": "promote",
                        "action": "migrate_hot",
                        "tier": "dram",
                        "fill": {"dram": "99.7%"},
                        "quota": {"size": "128Mi"},
                    },
                    {
                        "name": "demote",
                        "action": "migrate_cold",
                        "tier": "cxl",
                        "fill": {"dram": "99.5%"},
                    },
                ]
            },
        }
    )
    plan = planning.plan([tiering], [], adapter.info.capabilities)
    assert plan.problems == ()
    try:
        adapter.apply(plan)
    finally:
        adapter.stop()
    written = dict(fake.log)
    kdamonds = {}
    for k in range(4):
        scheme = f"kdamonds/{k}/contexts/0/schemes/0"
        goal = f"{scheme}/quotas/goals/0"
        region = f"kdamonds/{k}/contexts/0/targets/0/regions/0"
        kdamonds[int(written[f"{region}/start"])] = (
            written[f"{scheme}/action"],
            int(written[f"{scheme}/target_nid"]),
            written[f"{goal}/target_metric"],
            int(written[f"{goal}/target_value"]),
            int(written[f"{goal}/nid"]),
            int(written.get(f"{scheme}/quotas/bytes", "0")),  # 0 (no limit) is not written
        )
    assert kdamonds == {
        spans[0][0]: ("migrate_cold", 2, "node_mem_free_bp", 50, 0, 0),
        spans[1][0]: ("migrate_cold", 3, "node_mem_free_bp", 50, 1, 0),
        # Each copy has half the 128 MiB, started at a tenth per 100 ms reset while its
        # goal-tuned quota warms up (ops.kernel.warm_up): 64 MiB / 10, rounded up.
        spans[2][0]: ("migrate_hot", 0, "node_mem_used_bp", 9970, 0, 6710887),
        spans[3][0]: ("migrate_hot", 1, "node_mem_used_bp", 9970, 1, 6710887),
    }


@pytest.mark.parametrize(("omit", "dests"), [(frozenset(), ["2", "3"]), ({"dests"}, None)])
def test_vaddr_writes_every_node_of_the_tier_as_dests_where_the_kernel_has_them(
    tmp_path: Path, omit: frozenset[str], dests: list[str] | None
) -> None:
    damon, fake = _fake_kernel(tmp_path, frozenset(omit))
    adapter = kernel_backend.KernelBackend(damon, {"dram": (0, 1), "cxl": (2, 3)})
    pods = _pods("procs", "bank", "db", "vaddr", {**DEMOTE, "name": "demote"})
    plan = planning.plan([pods], PODS, adapter.info.capabilities)
    assert [p.reason for p in plan.problems] == ([] if dests else ["TierNodesUnused"])
    try:
        adapter.apply(plan)
    finally:
        adapter.stop()
    written = dict(fake.log)
    scheme = "kdamonds/0/contexts/0/schemes/0"
    assert written[f"{scheme}/target_nid"] == "2"
    if dests is None:
        assert f"{scheme}/dests/nr_dests" not in written
        return
    assert written[f"{scheme}/dests/nr_dests"] == "2"
    assert [written[f"{scheme}/dests/{i}/id"] for i in (0, 1)] == dests
    assert [written[f"{scheme}/dests/{i}/weight"] for i in (0, 1)] == ["1", "1"]
