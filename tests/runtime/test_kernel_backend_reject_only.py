"""The kernel adapter on a fake 6.12-class tree (no DAMOS allow filters): what it writes.

The fake tree leaves out every file newer than 6.12 (``allow`` among them), so a write to
an ``allow`` file would fail there; the tests also check the write log and the filters'
``matching`` values the kernel would evaluate. A full (6.18) fake shows the allow-capable
writes are unchanged.
"""

from __future__ import annotations

from pathlib import Path

from damon_agent.api import resources, selectors
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver, model
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.runtime import planning
from damon_agent.runtime.backends import kernel as kernel_backend
from damon_agent.schemes import stats as scheme_stats

NEWER_THAN_6_12 = fake_sysfs.NEWER_THAN_6_12
RAM = "100000000-13fffffff : System RAM\n"
# Two containers of pod a (siblings: each holds memory of its own processes).
POD_MEMCGS = ("/kubepods/pod-a/app", "/kubepods/pod-a/sidecar")


def _adapter(
    tmp_path: Path, fake: fake_sysfs.FakeDamonSysfs, release: str
) -> tuple[kernel_backend.KernelBackend, kernel_damon.KernelDamon]:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "iomem").write_text(RAM)
    engine = kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(fake, tmp_path / "state", boot_id="b", sleep=lambda _: None),
        kernel_release=release,
        proc_root=proc,
    )
    return kernel_backend.KernelBackend(engine, tiers={"dram": (0,), "cxl": (1,)}), engine


def _assigned(ns: str, name: str, scheme: dict[str, object], mode: str) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "DamonScheme",
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "generation": 1,
            "namespaces": [ns],
            "podSelector": selectors.LabelSelector(),
            "spec": {"monitoring": {"mode": mode}, "schemes": [scheme]},
        }
    )


def _pods() -> list[planning.PodFacts]:
    return [
        planning.PodFacts("shop", "a", "uid-a", memcg_paths=POD_MEMCGS, pids=(101,)),
        planning.PodFacts("bank", "b", "uid-b", memcg_paths=("/kubepods/pod-b",), pids=(201,)),
        planning.PodFacts("bank", "c", "uid-c", memcg_paths=("/kubepods/pod-c",), pids=(301,)),
    ]


DEMOTE = {
    "name": "demote",
    "action": "migrate_cold",
    "tier": "cxl",
    "quota": {"size": "1Mi", "time": "9ms", "goals": [{"metric": "user_input", "target": "10"}]},
    "filters": [
        {"type": "young"},
        {"type": "addr", "addrStart": "0x110000000", "addrEnd": "0x120000000", "allow": True},
    ],
}
RECLAIM = {"name": "reclaim", "action": "pageout"}


def _filters(fake: fake_sysfs.FakeDamonSysfs, scheme: str) -> list[tuple[str, str, str]]:
    """Each filter of a scheme as (type, matching, its operand)."""
    base = f"{scheme}/filters"
    result = []
    for i in range(int(fake.read(f"{base}/nr_filters"))):
        one = f"{base}/{i}"
        kind = fake.read(f"{one}/type")
        if kind == "memcg":
            operand = fake.read(f"{one}/memcg_path")
        elif kind == "addr":
            operand = f"{fake.read(f'{one}/addr_start')}-{fake.read(f'{one}/addr_end')}"
        elif kind == "target":
            operand = fake.read(f"{one}/damon_target_idx")
        else:
            operand = ""
        result.append((kind, fake.read(f"{one}/matching"), operand))
    return result


def _warmed_up(engine: kernel_damon.KernelDamon, fake: fake_sysfs.FakeDamonSysfs) -> None:
    """The goal-tuned quotas' warm-up over (``ops.kernel.warm_up``): the user's quotas are
    written. The kernel's tuner is said to have grown every quota."""
    for running in engine.status():
        for scheme in range(8):
            fake.effective_bytes[(running.index, scheme)] = 1 << 40
    assert engine.end_warm_ups()


def _kdamond_of(engine: kernel_damon.KernelDamon, plan: planning.Plan, ops: str) -> str:
    (status,) = [s for s in engine.status() if s.operations == ops]
    assert status.key in {c.key for c in plan.contexts}
    return f"kdamonds/{status.index}/contexts/0"


def test_a_6_12_kernel_gets_reject_filters_only_with_the_right_matching(tmp_path: Path) -> None:
    fake = fake_sysfs.FakeDamonSysfs(
        tmp_path / "admin", avail_operations=("vaddr", "paddr"), omit=NEWER_THAN_6_12
    )
    adapter, engine = _adapter(tmp_path, fake, "6.12.117")
    caps = adapter.info.capabilities
    assert not caps.allow_filters
    assert caps.filters_on("vaddr") == {"addr", "target"}
    plan = planning.plan(
        [
            _assigned("shop", "tier", DEMOTE, "paddr"),
            _assigned("bank", "cold", RECLAIM, "vaddr"),
            _assigned("shop", "cold", RECLAIM, "vaddr"),
        ],
        _pods(),
        caps,
    )
    assert plan.problems == ()
    adapter.apply(plan)
    _warmed_up(engine, fake)
    try:
        assert not [path for path, _ in fake.log if path.endswith("/allow")]
        assert not list((tmp_path / "admin").rglob("allow"))

        paddr = _kdamond_of(engine, plan, "paddr")
        assert fake.read(f"{paddr}/operations") == "paddr"
        # Two copies of "demote" (one per memcg of pod a), then the hidden snapshot scheme.
        assert fake.read(f"{paddr}/schemes/nr_schemes") == "3"
        for index, memcg in enumerate(POD_MEMCGS):
            scheme = f"{paddr}/schemes/{index}"
            assert fake.read(f"{scheme}/action") == "migrate_cold"
            assert fake.read(f"{scheme}/target_nid") == "1"
            assert _filters(fake, scheme) == [
                ("memcg", "N", memcg),  # reject what is not in this memcg
                ("young", "Y", ""),
                # "only [0x110000000, 0x120000000)": two matching rejects around it.
                ("addr", "Y", f"0-{0x110000000}"),
                ("addr", "Y", f"{0x120000000}-{model.ULONG_MAX}"),
            ]
            # 1 MiB and 9 ms shared by two copies, rounded up.
            assert fake.read(f"{scheme}/quotas/bytes") == str(2**20 // 2)
            assert fake.read(f"{scheme}/quotas/ms") == "5"
        assert fake.read(f"{paddr}/schemes/2/filters/nr_filters") == "0"

        vaddr = _kdamond_of(engine, plan, "vaddr")
        # Targets: pod a's process, then pod b's and pod c's.
        assert fake.read(f"{vaddr}/targets/nr_targets") == "3"
        assert fake.read(f"{vaddr}/targets/0/pid_target") == "101"
        # Each scheme rejects the targets of pods it does not select (schemes by key:
        # bank's, then shop's).
        assert _filters(fake, f"{vaddr}/schemes/0") == [("target", "Y", "0")]
        assert _filters(fake, f"{vaddr}/schemes/1") == [("target", "Y", "1"), ("target", "Y", "2")]
        # Per-target snapshot schemes reject the other targets instead of allowing theirs.
        assert [_filters(fake, f"{vaddr}/schemes/{i}") for i in (2, 3, 4)] == [
            [("target", "Y", "1"), ("target", "Y", "2")],
            [("target", "Y", "0"), ("target", "Y", "2")],
            [("target", "Y", "0"), ("target", "Y", "1")],
        ]
    finally:
        adapter.stop()
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_copies_are_one_scheme_for_stats_goals_and_tried_regions(tmp_path: Path) -> None:
    fake = fake_sysfs.FakeDamonSysfs(tmp_path / "admin", omit=NEWER_THAN_6_12)
    adapter, engine = _adapter(tmp_path, fake, "6.12.117")
    plan = planning.plan(
        [_assigned("shop", "tier", DEMOTE, "paddr")], _pods(), adapter.info.capabilities
    )
    adapter.apply(plan)
    try:
        key = "DamonScheme/shop/tier/demote"
        paddr = _kdamond_of(engine, plan, "paddr")
        kdamond = int(paddr.split("/")[1])
        fake.stats[(kdamond, 0)] = scheme_stats.SchemeCounters(
            nr_tried=3, sz_tried=300, nr_applied=1, sz_applied=4096, qt_exceeds=1
        )
        fake.stats[(kdamond, 1)] = scheme_stats.SchemeCounters(
            nr_tried=2, sz_tried=200, nr_applied=2, sz_applied=8192
        )
        counters = adapter.stats()
        assert set(counters) == {key}
        assert (counters[key].nr_tried, counters[key].sz_tried) == (5, 500)
        assert (counters[key].nr_applied, counters[key].sz_applied) == (3, 12288)
        assert counters[key].qt_exceeds == 1

        adapter.feed_goals({key: {0: 7}})
        for index in (0, 1):
            goal = f"{paddr}/schemes/{index}/quotas/goals/0/current_value"
            assert fake.read(goal) == "7"

        shared = model.TriedRegion(0x100000000, 0x110000000, 0, 9, sz_filter_passed=4096)
        fake.tried[(kdamond, 0)] = [shared]
        fake.tried[(kdamond, 1)] = [
            model.TriedRegion(0x100000000, 0x110000000, 0, 9, sz_filter_passed=8192),
            model.TriedRegion(0x130000000, 0x140000000, 0, 2, sz_filter_passed=0),
        ]
        tried = engine.tried_regions(key)
        assert [(r.start, r.sz_filter_passed) for r in tried.regions] == [
            (0x100000000, 4096 + 8192),
            (0x130000000, 0),
        ]
        assert tried.total_bytes == 0x10000000 * 2
    finally:
        adapter.stop()


def test_a_6_18_kernel_still_gets_allow_filters_for_the_pods(tmp_path: Path) -> None:
    fake = fake_sysfs.FakeDamonSysfs(tmp_path / "admin")
    adapter, engine = _adapter(tmp_path, fake, "6.18.4")
    assert adapter.info.capabilities.allow_filters
    plan = planning.plan(
        [_assigned("shop", "tier", DEMOTE, "paddr")], _pods(), adapter.info.capabilities
    )
    adapter.apply(plan)
    _warmed_up(engine, fake)
    try:
        paddr = _kdamond_of(engine, plan, "paddr")
        # One scheme plus the snapshot scheme; the pods' memcgs are allow filters, last.
        assert fake.read(f"{paddr}/schemes/nr_schemes") == "2"
        ops = f"{paddr}/schemes/0/ops_filters"
        assert fake.read(f"{ops}/nr_filters") == "3"
        assert [fake.read(f"{ops}/{i}/allow") for i in range(3)] == ["N", "Y", "Y"]
        assert [fake.read(f"{ops}/{i}/memcg_path") for i in (1, 2)] == list(POD_MEMCGS)
        assert fake.read(f"{paddr}/schemes/0/quotas/bytes") == str(2**20)
    finally:
        adapter.stop()
