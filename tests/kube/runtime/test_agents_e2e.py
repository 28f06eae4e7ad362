"""End to end: the operator and two agents (one on the kernel under test's DAMON, one on
sim) against the real kube-apiserver (from a VM guest: the kernel suites run it there).

One scenario, in the order a user lives it: apply a DamonScheme, see it Ready on both
nodes, change it (the kernel node's kdamond is updated online: same kdamond pid), read
metrics, health and snapshots from both agents, delete the scheme (torn down everywhere:
no kdamond left), stop the agents with SIGTERM. A pod of another namespace with the same
labels sits on the kernel node all along: the namespaced scheme must never reach it.
"""

from __future__ import annotations

import errno
import json
import platform
import time
from pathlib import Path
from typing import Any

import pytest

from damon_agent.ops.kernel import capabilities, sysfs
from damon_agent.runtime import snapshot_client


def _scheme(
    namespace: str, instance: str, node_label: str, mode: str, schemes: list[dict[str, Any]]
) -> str:
    return json.dumps(
        {
            "apiVersion": "damon.io/v1alpha1",
            "kind": "DamonScheme",
            "metadata": {
                "name": "e2e-cold",
                "namespace": namespace,
                "labels": {"damon.io/instance": instance},
            },
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "nodeSelector": {"matchLabels": {"damon.io/e2e": node_label}},
                "monitoring": {
                    "mode": mode,
                    "intervals": {"sample": "5ms", "aggregation": "100ms", "update": "1s"},
                },
                "schemes": schemes,
            },
        }
    )


def _condition(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next((c for c in conditions if c.get("type") == kind), {})


def _node_scheme(kubectl: Any, node: str, namespace: str) -> dict[str, Any]:
    found = kubectl("get", "damonnode", node, "-o", "json", check=False)
    if found.returncode != 0:
        return {}  # the operator has not made this node's DamonNode yet
    status = json.loads(found.stdout).get("status") or {}
    for scheme in status.get("schemes", []):
        if scheme.get("name") == "e2e-cold" and scheme.get("namespace") == namespace:
            return dict(scheme)
    return {}


def _kernel_mode(admin: Path) -> str:
    """Physical memory with per-pod memcg filters where the kernel has allow filters
    (6.14+); before that a pod's two memcgs with a minimum age need vaddr (the planner's
    reject-only rewrite says why), so the pods' processes are the targets."""
    report = capabilities.probe(sysfs.HostSysfs(admin), platform.release())
    return "paddr" if report.has("filter_allow") else "vaddr"


@pytest.mark.kube
@pytest.mark.kernel
@pytest.mark.slow
def test_two_agents_apply_change_observe_and_tear_down(
    kernel_damon: Path,
    kubectl: Any,
    namespace: str,
    instance: str,
    unique: str,
    make_node: Any,
    make_pod: Any,
    run_operator: Any,
    run_agent: Any,
    wait_for: Any,
) -> None:
    mode = _kernel_mode(kernel_damon)
    kernel_node = make_node(labels={"damon.io/e2e": unique})
    sim_node = make_node(labels={"damon.io/e2e": unique})
    other = f"{namespace}-x"
    kubectl("create", "namespace", other)
    try:
        web_k = make_pod(namespace, "web-k", kernel_node, {"app": "web"}, real=True)
        make_pod(namespace, "web-s", sim_node, {"app": "web"})
        intruder = make_pod(other, "web-x", kernel_node, {"app": "web"}, real=True)
        run_operator()
        kernel_agent = run_agent(kernel_node, "kernel")
        sim_agent = run_agent(sim_node, "sim")

        # ---- apply -------------------------------------------------------------------
        watch = {"name": "watch", "action": "stat"}
        kubectl("apply", "-f", "-", input=_scheme(namespace, instance, unique, mode, [watch]))

        def ready_everywhere(generation: int) -> Any:
            scheme = kubectl.json("damonscheme", "e2e-cold", "-n", namespace)
            status = scheme.get("status") or {}
            ready = _condition(status.get("conditions", []), "Ready")
            per_node = [_node_scheme(kubectl, n, namespace) for n in (kernel_node, sim_node)]
            ok = (
                ready.get("status") == "True"
                and ready.get("observedGeneration") == generation
                and all(
                    _condition(s.get("conditions", []), "Ready").get("status") == "True"
                    and s.get("observedGeneration") == generation
                    for s in per_node
                )
            )
            return (status, per_node) if ok else None

        status, per_node = wait_for(
            lambda: ready_everywhere(1), timeout=60, what="scheme Ready on both nodes"
        )
        assert "2/2" in _condition(status["conditions"], "Ready")["message"]
        assert [s["targets"] for s in per_node] == [1, 1]
        node_status = kubectl.json("damonnode", kernel_node)["status"]
        assert node_status["backend"] == "kernel"
        assert "paddr" in node_status["capabilities"]["operations"]
        assert kubectl.json("damonnode", sim_node)["status"]["backend"] == "sim"

        view = kdamond_view(kernel_damon)
        assert view["nr"] == 1
        (kdamond,) = view["kdamonds"]
        assert kdamond["state"] == "on" and kdamond["operations"] == mode
        pid = kdamond["pid"]
        # The user's scheme reaches the pod's own memory only; the other namespace's pod
        # (same labels, same node) is neither a target nor in any memcg filter.
        assert _reach(kdamond, 0) == _pods_reach(mode, web_k)
        assert not _pods_reach(mode, intruder) & _reach(kdamond, None)

        # ---- change: the kernel node's kdamond is updated online -----------------------
        cold = {
            "name": "cold",
            "action": "pageout",
            "dryRun": True,
            "accessPattern": {"accessRate": {"max": "0%"}, "age": {"min": "1s"}},
        }
        kubectl("apply", "-f", "-", input=_scheme(namespace, instance, unique, mode, [watch, cold]))
        wait_for(lambda: ready_everywhere(2), timeout=60, what="generation 2 Ready on both")
        view = kdamond_view(kernel_damon)
        (kdamond,) = view["kdamonds"]
        assert kdamond["pid"] == pid, "the scheme change restarted the kdamond"
        assert [s["action"] for s in kdamond["schemes"][:2]] == ["stat", "stat"]  # dry run
        assert _reach(kdamond, 0) == _reach(kdamond, 1) == _pods_reach(mode, web_k)

        # ---- a pod comes: its memory cgroups join the running kdamond's filters ---------
        web_k2 = make_pod(namespace, "web-k2", kernel_node, {"app": "web"}, real=True)
        wanted = _pods_reach(mode, web_k) | _pods_reach(mode, web_k2)
        wait_for(
            lambda: _settled_reach(kernel_damon, 0) == wanted,
            timeout=30,
            what="the new pod joining the running kdamond (memcg filters or targets)",
        )
        assert kdamond_view(kernel_damon)["kdamonds"][0]["pid"] == pid
        wait_for(
            lambda: _node_scheme(kubectl, kernel_node, namespace).get("targets") == 2,
            timeout=30,
            what="the kernel node's status counting 2 pods",
        )

        # ---- observe: health, metrics, snapshots --------------------------------------
        for agent in (kernel_agent, sim_agent):
            assert agent.get("/healthz")[0] == 200
            code, text = agent.get("/readyz")
            assert code == 200, text
            code, text = agent.get("/metrics")
            assert code == 200
            assert (
                f'damon_agent_info{{backend="{"kernel" if agent is kernel_agent else "sim"}"'
                in text
            )
            for name in ("watch", "cold"):
                assert (
                    f'damon_scheme_tried_bytes_total{{name="{name}",'
                    f'scheme="DamonScheme/{namespace}/e2e-cold"}}' in text
                )
        sim_snapshot = wait_for(
            lambda: _entries(sim_agent, f"{namespace}/web-s"),
            timeout=20,
            what="sim snapshot",
        )
        assert {e.scheme.rsplit("/", 1)[-1] for e in sim_snapshot} == {"watch", "cold"}
        snap = wait_for(
            lambda: _regions(kernel_agent, f"{namespace}/web-k"),
            timeout=30,
            what="kernel snapshot with regions",
        )
        assert snap.aggr_us == 100_000 and snap.sample_us == 5_000
        assert sum(len(t) for t in snap.targets) > 0
        code, body = kernel_agent.get(f"/v1/snapshot?pod={other}/web-x")
        assert code == 200 and json.loads(body)["schemes"] == []  # no scheme selects it

        # ---- delete: torn down everywhere --------------------------------------------
        kubectl("delete", "damonscheme", "e2e-cold", "-n", namespace, "--timeout=60s")
        wait_for(lambda: nr_kdamonds(kernel_damon) == 0, timeout=30, what="nr_kdamonds back to 0")
        wait_for(
            lambda: _entries(sim_agent) == [],
            timeout=30,
            what="sim agent running no scheme",
        )
        wait_for(
            lambda: _node_scheme(kubectl, kernel_node, namespace) == {},
            timeout=30,
            what="the kernel node's status without the scheme",
        )

        # ---- stop ---------------------------------------------------------------------
        assert kernel_agent.stop() == 0, kernel_agent.log()[-2000:]
        assert sim_agent.stop() == 0, sim_agent.log()[-2000:]
        assert nr_kdamonds(kernel_damon) == 0
    finally:
        kubectl("delete", "namespace", other, "--wait=false", check=False)


def _entries(agent: Any, pod: str | None = None) -> Any:
    try:
        return snapshot_client.fetch_entries(agent.url, pod=pod, token=agent.credentials)
    except snapshot_client.errors.SnapshotFetchError as err:
        _raise_if_refused(err)
        return None  # a slow answer on a loaded machine: ask again


def _regions(agent: Any, pod: str) -> Any:
    try:
        snap = snapshot_client.fetch_pod_snapshot(agent.url, pod, token=agent.credentials)
    except snapshot_client.errors.SnapshotFetchError as err:
        _raise_if_refused(err)
        return None
    return snap if any(len(t) for t in snap.targets) else None


def _raise_if_refused(err: Exception) -> None:
    """The admin token refused (401, 403): asking again would not help."""
    if isinstance(err, snapshot_client.errors.SnapshotAccessError) and err.code != 503:
        raise err


def _pods_reach(mode: str, pod: Any) -> set[str]:
    """What a scheme selecting ``pod`` must reach: its memcgs (paddr) or its pid (vaddr)."""
    if mode == "paddr":
        return {pod.cgroup, pod.container_cgroup}
    return {f"pid:{pod.process.pid}"}


def _reach(kdamond: dict[str, Any], scheme: int | None) -> set[str]:
    """Memcgs filtered by scheme ``scheme`` (every scheme if None), and the pid targets."""
    chosen = kdamond["schemes"] if scheme is None else [kdamond["schemes"][scheme]]
    memcgs = {m for s in chosen for m in s["memcgs"]}
    return memcgs | {f"pid:{p}" for p in kdamond["pids"]}


def _settled_reach(admin: Path, scheme: int) -> set[str] | None:
    """``_reach`` of the first kdamond, or None while the agent restages its schemes.

    A restaging agent writes ``nr_schemes`` afresh, so a reader in between sees fewer
    schemes than the kdamond runs (a guest of the kernel matrix once read none).
    """
    (kdamond, *_) = kdamond_view(admin)["kdamonds"]
    if scheme >= len(kdamond["schemes"]):
        return None
    return _reach(kdamond, scheme)


def read_sysfs(path: Path) -> str:
    # DAMON's sysfs answers EBUSY while another writer (the agent) holds its lock.
    for _ in range(100):
        try:
            return path.read_text().strip()
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            time.sleep(0.02)
    return path.read_text().strip()


def nr_kdamonds(admin: Path) -> int:
    return int(read_sysfs(admin / "kdamonds" / "nr_kdamonds"))


def kdamond_view(admin: Path) -> dict[str, Any]:
    """The kernel's kdamonds as the test checks them: pids, schemes and memcg filters.

    Read again when a directory vanishes under the reader (the agent restaging filters):
    ENOENT before the open, ENODEV when it went between the open and the read.
    """
    for _ in range(20):
        try:
            return _kdamond_view(admin)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENODEV):
                raise
            time.sleep(0.05)
    return _kdamond_view(admin)


def _kdamond_view(admin: Path) -> dict[str, Any]:
    kdamonds = admin / "kdamonds"
    view: dict[str, Any] = {"nr": int(read_sysfs(kdamonds / "nr_kdamonds")), "kdamonds": []}
    for index in range(view["nr"]):
        kd = kdamonds / str(index)
        ctx = kd / "contexts" / "0"
        schemes = []
        nr_schemes = int(read_sysfs(ctx / "schemes" / "nr_schemes"))
        for s in range(nr_schemes):
            scheme = ctx / "schemes" / str(s)
            memcgs = []
            for group in ("filters", "core_filters", "ops_filters"):
                base = scheme / group
                if not (base / "nr_filters").exists():
                    continue
                for f in range(int(read_sysfs(base / "nr_filters"))):
                    if read_sysfs(base / str(f) / "type") == "memcg":
                        memcgs.append(read_sysfs(base / str(f) / "memcg_path"))
            schemes.append({"action": read_sysfs(scheme / "action"), "memcgs": memcgs})
        pids = [
            int(read_sysfs(ctx / "targets" / str(t) / "pid_target"))
            for t in range(int(read_sysfs(ctx / "targets" / "nr_targets")))
        ]
        view["kdamonds"].append(
            {
                "pids": pids if read_sysfs(ctx / "operations") == "vaddr" else [],
                "state": read_sysfs(kd / "state"),
                "pid": int(read_sysfs(kd / "pid")),
                "operations": read_sysfs(ctx / "operations"),
                "schemes": schemes,
            }
        )
    return view
