"""A pod's memory cgroup is removed under a running paddr kdamond of the real kernel.

On paddr (mode auto takes it for pods with many processes) a pod-targeted scheme is kept
to its pods by memcg filters. Kubelet removes a deleted pod's cgroup, maybe between the
agent's plan and its commit. The kernel looks every staged memcg path up and refuses the
whole commit when one names no cgroup (before 6.15 it stops the kdamond instead). The
engine leaves the gone memcg out (``ops.kernel.gone``): the kdamond runs on, on the other
pod. (Runs in the VM's kernel matrix; test_memcg_churn_fake.py has the engine's side.)

The filters are the per-memcg copies' "reject what is not in this memcg", the shape every
kernel with memcg filters takes; the action is ``stat``, so no memory is touched.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import memcg_support
import pytest

from damon_agent.core import attrs
from damon_agent.ops.kernel import damon as damon_ops
from damon_agent.ops.kernel import errors
from damon_agent.runtime import observing
from damon_agent.schemes import model as schemes

pytestmark = pytest.mark.kernel


def _context(memcg_paths: list[str], *, extra: bool = False) -> damon_ops.KdamondContext:
    copies = [
        damon_ops.KdamondScheme(
            "pods/watch",
            schemes.Scheme(
                "watch",
                "stat",
                filters=(schemes.Filter(type="memcg", matching=False, memcg_path=path),),
            ),
        )
        for path in memcg_paths
    ]
    if extra:  # a change, so that the engine commits
        copies.append(damon_ops.KdamondScheme("pods/more", schemes.Scheme("more", "stat")))
    return damon_ops.KdamondContext(
        key="pods",
        monitoring=attrs.MonitoringAttrs(sample_us=5_000, aggr_us=100_000, update_us=1_000_000),
        operations="paddr",
        schemes=tuple(copies),
    )


def _staged_memcgs(admin: Path) -> set[str]:
    return {f.read_text().strip() for f in (admin / "kdamonds").rglob("memcg_path")} - {""}


def _state(admin: Path) -> str:
    return (admin / "kdamonds" / "0" / "state").read_text().strip()


def test_a_removed_pod_cgroup_leaves_the_kdamond_running_on_the_others(
    kernel_damon: Path, host_state_dir: Path
) -> None:
    with memcg_support.memcgs() as made:
        base = f"/damon-k8s-churn-{os.getpid()}"
        made.make(f"{base}/pod-a")
        made.make(f"{base}/pod-b")
        paths = [made.memcg_path(f"{base}/pod-a"), made.memcg_path(f"{base}/pod-b")]
        engine = damon_ops.KernelDamon.on_host(
            host_state_dir,
            admin=kernel_damon,
            memcg_exists=observing.MemcgChecker(observing.NodeRoots()),
        )
        before_stop: dict[str, object] = {}
        try:
            if "memcg" not in engine.capabilities.filter_types:
                pytest.fail(f"the kernel under test has no memcg filter: {engine.capabilities}")
            engine.apply([_context(paths)])
            kdamond = engine.kdamond_pids()["pods"]
            assert _staged_memcgs(kernel_damon) == set(paths)
            made.memory.directory(f"{base}/pod-b").rmdir()
            # The plan still names pod-b: made before its cgroup went.
            engine.apply([_context(paths, extra=True)])
            time.sleep(0.5)  # before 6.15 a refused commit stops the kdamond a moment later
            assert engine.kdamond_pids().get("pods") == kdamond, "the kdamond was restarted"
            assert _state(kernel_damon) == "on", "the commit stopped the kdamond"
            assert _staged_memcgs(kernel_damon) == {paths[0]}
            # Without the check the kernel refuses such a commit: what the engine avoids.
            engine.memcg_exists = None
            stale = [_context([*paths, paths[1]])]
            try:
                engine.apply(stale)
                time.sleep(0.5)
                refused = _state(kernel_damon) != "on"
            except errors.SysfsInvalidError:
                refused = True
            assert refused, "the kernel took a memcg path that names no cgroup"
            # Ours still, after a refused commit: the engine's stop must take it away.
            before_stop = {
                "state": _state(kernel_damon),
                "pid": (kernel_damon / "kdamonds" / "0" / "pid").read_text().strip(),
                "record": (host_state_dir / "kdamonds.json").read_text(),
                "staged": {
                    str(f.relative_to(kernel_damon)): f.read_text().strip()
                    for f in (kernel_damon / "kdamonds" / "0").rglob("*")
                    if f.is_file()
                    and f.name in ("action", "nr_schemes", "start", "end")
                    and "tried_regions" not in str(f)
                },
            }
        finally:
            engine.stop()
        left = int((kernel_damon / "kdamonds" / "nr_kdamonds").read_text())
        assert left == 0, f"the engine's stop left {left} kdamond(s); before it: {before_stop}"
