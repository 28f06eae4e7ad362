"""A pod's memory cgroup goes away between the plan and the write (``ops.kernel.gone``).

The kernel refuses a whole start or commit whose staged memcg path names no memory
cgroup (ENOMEM; before 6.15 the kdamond stops instead). The fake tree refuses the same
(``FakeDamonSysfs.gone_memcgs``). The engine leaves gone memcgs out, never letting a
scheme kept to its pods by memcg filters act beyond them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from damon_agent.core import attrs, clock
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver, errors, gone
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.schemes import model as schemes

GONE = {"/kubepods/pod-b"}


def _allow(path: str) -> schemes.Filter:
    return schemes.Filter(type="memcg", allow=True, memcg_path=path)


def _not_in(path: str) -> schemes.Filter:
    return schemes.Filter(type="memcg", allow=False, matching=False, memcg_path=path)


ANON_REJECT = schemes.Filter(type="anon", allow=False, matching=False)
PAGEOUT = schemes.Scheme(
    "cold", "pageout", filters=(ANON_REJECT, _allow("/kubepods/pod-a"), _allow("/kubepods/pod-b"))
)


# ---- the rewrite, pure ---------------------------------------------------------------


def test_a_gone_allow_filter_is_left_out_and_the_others_keep_the_scheme_to_its_pods() -> None:
    written = gone.without_gone_memcgs(PAGEOUT, GONE, addr_filters=True)
    assert written.action == "pageout"
    assert written.filters == (ANON_REJECT, _allow("/kubepods/pod-a"))


def test_a_scheme_whose_every_pod_is_gone_is_made_inert_not_node_wide() -> None:
    only_b = schemes.Scheme("cold", "pageout", filters=(ANON_REJECT, _allow("/kubepods/pod-b")))
    written = gone.without_gone_memcgs(only_b, GONE, addr_filters=True)
    # Without its last allow filter the scheme would page out the whole node.
    assert written.action == "stat"
    assert written.filters == (gone.REJECT_EVERY_ADDRESS,)
    assert gone.without_gone_memcgs(only_b, GONE, addr_filters=False).filters == ()


def test_a_per_memcg_copy_of_a_gone_memcg_is_made_inert() -> None:
    copy = schemes.Scheme("cold", "pageout", filters=(_not_in("/kubepods/pod-b"), ANON_REJECT))
    written = gone.without_gone_memcgs(copy, GONE, addr_filters=True)
    assert (written.action, written.filters) == ("stat", (gone.REJECT_EVERY_ADDRESS,))
    other = schemes.Scheme("cold", "pageout", filters=(_not_in("/kubepods/pod-a"), ANON_REJECT))
    assert gone.without_gone_memcgs(other, GONE, addr_filters=True) == other


def test_a_reject_filter_on_a_gone_memcg_is_left_out_and_a_goal_on_one_too() -> None:
    node_goal = schemes.QuotaGoal("node_mem_used_bp", 9970, nid=0)
    pod_goal = schemes.QuotaGoal("node_memcg_used_bp", 5000, nid=0, path="/kubepods/pod-b")
    scheme = schemes.Scheme(
        "promote",
        "migrate_hot",
        target_nid=0,
        quota=schemes.Quota(goals=(node_goal, pod_goal)),
        filters=(schemes.Filter(type="memcg", memcg_path="/kubepods/pod-b"),),
    )
    assert gone.gone_memcgs(scheme, lambda path: path not in GONE) == GONE
    written = gone.without_gone_memcgs(scheme, GONE, addr_filters=True)
    assert written.action == "migrate_hot" and written.filters == ()
    assert written.quota is not None and written.quota.goals == (node_goal,)


# ---- the engine, on the fake tree -----------------------------------------------------


def _engine(
    tmp_path: Path, present: set[str]
) -> tuple[kernel_damon.KernelDamon, fake_sysfs.FakeDamonSysfs]:
    fake = fake_sysfs.FakeDamonSysfs(tmp_path / "admin", avail_operations=("vaddr", "paddr"))
    kdriver = driver.KdamondDriver(fake, tmp_path / "state", boot_id="boot-1", sleep=lambda s: None)
    engine = kernel_damon.KernelDamon(
        driver=kdriver,
        kernel_release="6.18.0",
        clock=clock.SimClock(start_us=5_000_000),
        memcg_exists=lambda path: path in present,
    )
    return engine, fake


def _context(*planned: schemes.Scheme) -> kernel_damon.KdamondContext:
    return kernel_damon.KdamondContext(
        key="pods",
        monitoring=attrs.MonitoringAttrs(),
        schemes=tuple(kernel_damon.KdamondScheme("src/cold", s) for s in planned),
        operations="paddr",
        ranges=((1 << 32, 2 << 32),),
    )


def _staged_memcgs(fake: fake_sysfs.FakeDamonSysfs) -> list[str]:
    """The memcg paths of the first scheme's filters, in whichever layer they are."""
    scheme = "kdamonds/0/contexts/0/schemes/0"
    paths = []
    for layer in ("filters", "core_filters", "ops_filters"):
        if not fake.exists(f"{scheme}/{layer}"):
            continue
        for i in range(int(fake.read(f"{scheme}/{layer}/nr_filters"))):
            if fake.read(f"{scheme}/{layer}/{i}/type") == "memcg":
                paths.append(fake.read(f"{scheme}/{layer}/{i}/memcg_path"))
    return paths


def test_a_pod_deleted_before_the_commit_leaves_the_kdamond_running_on_the_rest(
    tmp_path: Path,
) -> None:
    present = {"/kubepods/pod-a", "/kubepods/pod-b"}
    engine, fake = _engine(tmp_path, present)
    engine.apply([_context(PAGEOUT)])
    kdamond = engine.kdamond_pids()["pods"]
    present.discard("/kubepods/pod-b")
    fake.gone_memcgs |= GONE
    # The plan still names pod-b: it was made before kubelet removed the cgroup.
    engine.apply([_context(PAGEOUT, schemes.Scheme("watch", "stat"))])
    assert engine.kdamond_pids()["pods"] == kdamond, "the kdamond was restarted"
    assert _staged_memcgs(fake) == ["/kubepods/pod-a"]


def test_a_pod_deleted_between_the_check_and_the_commit_is_retried_without_it(
    tmp_path: Path,
) -> None:
    present = {"/kubepods/pod-a", "/kubepods/pod-b"}
    engine, fake = _engine(tmp_path, present)
    engine.apply([_context(PAGEOUT)])
    kdamond = engine.kdamond_pids()["pods"]
    # Gone for the kernel, still there for the engine's first look.
    fake.gone_memcgs |= GONE
    checks = iter([True])

    def racing(path: str) -> bool:
        return path != "/kubepods/pod-b" or next(checks, False)

    engine.memcg_exists = racing
    engine.apply([_context(PAGEOUT, schemes.Scheme("watch", "stat"))])
    assert engine.kdamond_pids()["pods"] == kdamond
    assert _staged_memcgs(fake) == ["/kubepods/pod-a"]


def test_a_refused_commit_leaves_the_kdamond_the_engines_to_stop(tmp_path: Path) -> None:
    present = {"/kubepods/pod-a", "/kubepods/pod-b"}
    engine, fake = _engine(tmp_path, present)
    engine.apply([_context(PAGEOUT)])
    # Unchecked, a plan naming a gone memcg is refused; its staging (one more scheme)
    # stays in the tree, which no longer reads as the last accepted configuration.
    engine.memcg_exists = None
    fake.gone_memcgs |= GONE
    more = schemes.Scheme("more", "pageout", filters=(_allow("/kubepods/pod-a"),))
    with pytest.raises(errors.SysfsInvalidError):
        engine.apply([_context(PAGEOUT, more, schemes.Scheme("watch", "stat"))])
    assert fake.read("kdamonds/0/state") == "on"
    engine.stop()
    assert fake.read("kdamonds/nr_kdamonds") == "0", "the kdamond was left as foreign"


def test_pods_going_one_after_another_during_the_writes_are_all_left_out(
    tmp_path: Path,
) -> None:
    paths = ["/kubepods/pod-a", "/kubepods/pod-b", "/kubepods/pod-c"]
    three = schemes.Scheme("cold", "pageout", filters=tuple(_allow(p) for p in paths))
    engine, fake = _engine(tmp_path, set(paths))
    engine.apply([_context(three)])
    kdamond = engine.kdamond_pids()["pods"]
    fake.gone_memcgs |= {"/kubepods/pod-b", "/kubepods/pod-c"}
    # pod-b is still there at the first look, pod-c at the first two: each write is
    # refused for a pod that went while it was written.
    looks = {"/kubepods/pod-b": iter([True]), "/kubepods/pod-c": iter([True, True])}
    engine.memcg_exists = lambda path: path not in looks or next(looks[path], False)
    engine.apply([_context(three, schemes.Scheme("watch", "stat"))])
    assert engine.kdamond_pids()["pods"] == kdamond
    assert _staged_memcgs(fake) == ["/kubepods/pod-a"]


def test_a_pod_gone_while_the_commit_is_staged_is_caught_before_the_kernel_sees_it(
    tmp_path: Path,
) -> None:
    """The last look comes right before ``commit``: the kernel never refuses it (a
    refused commit also stopped the kdamond on the 7.3 guest); the engine writes again
    without the pod."""
    present = {"/kubepods/pod-a", "/kubepods/pod-b"}
    engine, fake = _engine(tmp_path, present)
    engine.apply([_context(PAGEOUT)])
    kdamond = engine.kdamond_pids()["pods"]
    looks = iter([True])  # there when planned, gone by the time the staging is done

    engine.memcg_exists = lambda path: path != "/kubepods/pod-b" or next(looks, False)
    engine.apply([_context(PAGEOUT, schemes.Scheme("watch", "stat"))])
    assert engine.kdamond_pids()["pods"] == kdamond
    assert _staged_memcgs(fake) == ["/kubepods/pod-a"]
    commits = [value for path, value in fake.log if path.endswith("/state")]
    assert commits.count("commit") == 1, commits  # the stale staging was never committed
