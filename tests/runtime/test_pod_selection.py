"""Which pods a scheme selects, and which of their memory: opt-out annotations, QoS
classes and containers, from the Pod object (``observing``, on the checked-in kubelet
tree tests/node/trees/systemd-v2) through the planner (pure)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from damon_agent.api import resources
from damon_agent.runtime import daemon, observing, planning

TREE = Path(__file__).resolve().parents[1] / "node" / "trees" / "systemd-v2"
ROOTS = observing.NodeRoots(proc=TREE / "proc", sys=TREE / "sys")
UID = "0f6e1a9c-3b2d-4c5e-8f7a-1b2c3d4e5f60"
POD_CGROUP = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice"
)
APP, LOG, SANDBOX = "a1" * 32, "b2" * 32, "5a" * 32
APP_CGROUP = f"{POD_CGROUP}/cri-containerd-{APP}.scope"
LOG_CGROUP = f"{POD_CGROUP}/cri-containerd-{LOG}.scope"

PADDR = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": frozenset({"pageout", "stat"})},
    filter_types=frozenset({"memcg", "anon"}),
    goal_metrics=frozenset(),
)
VADDR = planning.Capabilities(
    operations=frozenset({"paddr", "vaddr"}),
    actions={"paddr": frozenset({"pageout", "stat"}), "vaddr": frozenset({"pageout", "stat"})},
    filter_types=frozenset({"memcg", "anon", "target"}),
    goal_metrics=frozenset(),
)


def pod_object(
    annotations: dict[str, str] | None = None,
    *,
    qos: str = "Burstable",
    requests: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The tree's Burstable pod, with containers ``app`` (a1...) and ``log`` (b2...)."""
    requests = requests or {}
    return {
        "metadata": {
            "namespace": "shop",
            "name": "cart-0",
            "uid": UID,
            "labels": {"app": "cart"},
            "annotations": annotations or {},
        },
        "spec": {
            "containers": [
                {"name": name, "resources": {"requests": {"memory": requests[name]}}}
                if name in requests
                else {"name": name}
                for name in ("app", "log")
            ]
        },
        "status": {
            "phase": "Running",
            "qosClass": qos,
            "containerStatuses": [
                {"name": "app", "containerID": f"containerd://{APP}"},
                {"name": "log", "containerID": f"containerd://{LOG}"},
            ],
        },
    }


def resolve(obj: dict[str, Any]) -> planning.PodFacts:
    return observing.PodResolver(ROOTS).resolve(obj)


# -- what the Pod object and the node say -----------------------------------------------


def test_a_pod_without_opt_outs_keeps_all_its_memory_and_names_its_containers() -> None:
    facts = resolve(pod_object())
    assert (facts.excluded, facts.annotation_problem, facts.qos_class) == (False, "", "Burstable")
    assert facts.pids == (1001, 1002, 1003, 1004)
    assert facts.memcg_paths[0] == POD_CGROUP
    assert {APP_CGROUP, LOG_CGROUP, f"{POD_CGROUP}/cri-containerd-{SANDBOX}.scope"} <= set(
        facts.memcg_paths
    )
    app, log = facts.containers
    assert (app.name, app.memcg_path, app.pids) == ("app", APP_CGROUP, (1001, 1002, 1004))
    assert (log.name, log.memcg_path, log.pids) == ("log", LOG_CGROUP, (1003,))


def test_excluded_containers_leave_the_pods_facts() -> None:
    facts = resolve(pod_object({resources.ANNOTATION_EXCLUDE_CONTAINERS: " log , "}))
    assert not facts.excluded
    assert [c.name for c in facts.containers] == ["app"]
    assert facts.pids == (1001, 1002, 1004)  # not log's 1003
    # Only the kept container's memcg: not log's, and not the pod-level one, which holds
    # what exited containers (log's too) left behind.
    assert facts.memcg_paths == (APP_CGROUP,)
    assert facts.cgroup_path == POD_CGROUP  # still the pod's, for its memory and PSI


def test_excluded_containers_without_known_ids_leave_nothing_to_target() -> None:
    obj = pod_object({resources.ANNOTATION_EXCLUDE_CONTAINERS: "log"})
    obj["status"]["containerStatuses"] = []  # the kubelet has not reported them yet
    facts = resolve(obj)
    assert (facts.pids, facts.memcg_paths) == ((), ())
    assert [(c.name, c.memcg_path) for c in facts.containers] == [("app", None)]


@pytest.mark.parametrize("value", ["true", "True", " TRUE "])
def test_an_excluded_pod_resolves_to_no_memory(value: str) -> None:
    facts = resolve(pod_object({resources.ANNOTATION_EXCLUDE: value}))
    assert facts.excluded and facts.annotation_problem == ""
    assert (facts.pids, facts.memcg_paths, facts.cgroup_path) == ((), (), None)
    assert not resolve(pod_object({resources.ANNOTATION_EXCLUDE: "false"})).excluded


@pytest.mark.parametrize(
    ("annotations", "words"),
    [
        ({resources.ANNOTATION_EXCLUDE: "maybe"}, "annotation damon.io/exclude: 'maybe' is not"),
        (
            {resources.ANNOTATION_EXCLUDE_CONTAINERS: "app;log"},
            "annotation damon.io/exclude-containers: 'app;log' is not a container name",
        ),
    ],
)
def test_an_unreadable_opt_out_excludes_the_pod_and_warns_once(
    annotations: dict[str, str], words: str, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = observing.PodResolver(ROOTS)
    with caplog.at_level(logging.WARNING, logger="damon_agent.runtime.observing"):
        facts = resolver.resolve(pod_object(annotations))
        resolver.resolve(pod_object(annotations))  # the next tick: no second warning
    assert facts.excluded and words in facts.annotation_problem
    assert facts.pids == () and facts.memcg_paths == ()
    (record,) = caplog.records
    assert "pod shop/cart-0" in record.getMessage() and words in record.getMessage()


def test_memory_requests_are_summed_and_an_unreadable_one_is_unknown() -> None:
    both = observing.pod_basics(pod_object(requests={"app": "256Mi", "log": "64M"}))
    assert both.memory_request_bytes == (256 << 20) + 64 * 10**6
    assert observing.pod_basics(pod_object()).memory_request_bytes == 0
    broken = observing.pod_basics(pod_object(requests={"app": "lots"}))
    assert broken.memory_request_bytes is None


def test_the_sims_pods_read_the_same_opt_outs() -> None:
    sim = daemon._sim_pod(pod_object())
    assert sim.memcg_paths == (f"/sim/pod{UID}",) and sim.qos_class == "Burstable"
    excluded = daemon._sim_pod(pod_object({resources.ANNOTATION_EXCLUDE: "maybe"}))
    assert excluded.excluded and excluded.memcg_paths == ()


# -- what the planner selects -----------------------------------------------------------


def assigned(name: str = "s", **scope: Any) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "DamonScheme",
            "namespace": "shop",
            "name": name,
            "uid": f"u-{name}",
            "generation": 1,
            "namespaces": ["shop"],
            "podSelector": {"matchLabels": {"app": "cart"}},
            "spec": {"schemes": [{"name": "cold", "action": "pageout"}]},
            **scope,
        }
    )


def fake_pod(name: str, qos: str | None = "Burstable", **fields: Any) -> planning.PodFacts:
    """A pod with containers ``app`` and ``log``, each with its memcg and one process."""
    base = f"/kubepods/{name}"
    defaults: dict[str, Any] = {
        "cgroup_path": base,
        "memcg_paths": (base, f"{base}/app", f"{base}/log"),
        "pids": (10, 20),
        "containers": (
            planning.ContainerFacts("app", f"{base}/app", (10,)),
            planning.ContainerFacts("log", f"{base}/log", (20,)),
        ),
    }
    return planning.PodFacts(
        namespace="shop",
        name=name,
        uid=f"uid-{name}",
        labels=(("app", "cart"),),
        qos_class=qos,
        **(defaults | fields),
    )


def memcgs(plan: planning.Plan) -> list[str | None]:
    return [f.memcg_path for s in plan.schemes() for f in s.scheme.filters if f.type == "memcg"]


def test_an_excluded_pod_is_never_selected_and_an_unreadable_one_is_warned_about() -> None:
    pods = [
        fake_pod("kept"),
        fake_pod("out", excluded=True, memcg_paths=(), pids=()),
        fake_pod(
            "odd",
            excluded=True,
            annotation_problem='annotation damon.io/exclude: \'maybe\' is not "true" or "false"',
        ),
    ]
    plan = planning.plan([assigned()], pods, PADDR)
    (summary,) = plan.sources
    assert summary.pods == ("shop/kept",)
    assert memcgs(plan) == ["/kubepods/kept", "/kubepods/kept/app", "/kubepods/kept/log"]
    (problem,) = plan.problems
    assert (problem.severity, problem.reason) == ("warning", "PodAnnotationInvalid")
    assert problem.message.startswith("pod shop/odd is left out: annotation damon.io/exclude")
    # A scheme whose selector does not take the pod says nothing of it.
    other = assigned("db", podSelector={"matchLabels": {"app": "db"}})
    assert planning.plan([other], pods, PADDR).problems == ()


def test_qos_classes_keep_the_pods_of_those_classes_only() -> None:
    pods = [
        fake_pod("g", "Guaranteed"),
        fake_pod("b", "Burstable"),
        fake_pod("e", "BestEffort"),
        fake_pod("unknown", None),
    ]
    picked = planning.select_pods(assigned(qosClasses=["Guaranteed", "BestEffort"]), pods)
    assert [p.name for p in picked] == ["e", "g"]
    assert len(planning.select_pods(assigned(), pods)) == 4  # no qosClasses: every class


def test_containers_narrow_each_pod_on_paddr_and_drop_pods_without_them() -> None:
    pods = [
        fake_pod("both"),
        fake_pod(
            "logless", containers=(planning.ContainerFacts("app", "/kubepods/logless/app", (30,)),)
        ),
        fake_pod("other", containers=(planning.ContainerFacts("db", "/kubepods/other/db", (40,)),)),
    ]
    plan = planning.plan([assigned(containers=["log"])], pods, PADDR)
    (summary,) = plan.sources
    assert summary.pods == ("shop/both",)  # the others have no container named log
    assert memcgs(plan) == ["/kubepods/both/log"]  # not the pod-level memcg, not app's


def test_containers_narrow_each_pod_on_vaddr_to_its_processes() -> None:
    plan = planning.plan([assigned(containers=["app"])], [fake_pod("a")], VADDR)
    (context,) = plan.contexts
    assert context.operations == "vaddr"
    assert [t.pid for t in context.targets] == [10]  # app's process, not log's 20


def test_a_named_container_not_started_yet_is_a_pod_not_found() -> None:
    waiting = fake_pod("w", containers=(planning.ContainerFacts("app"),))
    plan = planning.plan([assigned(containers=["app"])], [waiting], PADDR)
    assert plan.contexts == ()  # never a paddr scheme without memcg filters
    (problem,) = plan.problems
    assert problem.reason == "PodsNotFound" and "shop/w" in problem.message
