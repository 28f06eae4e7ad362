"""One tick of the agent's loop at a time, with a fake engine and no API server.

The informers' caches are filled by hand and status writes are captured, so each rule of
the loop is checked alone: plan and apply, status, readiness, a refused plan retried
with backoff, a bad DamonNode spec, and teardown when the DamonNode goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from node_support import TREES

from damon_agent.api import resources
from damon_agent.cli import daemon as cli_daemon
from damon_agent.runtime import backend, daemon, errors, planning, wire
from damon_agent.runtime import status as status_mod
from damon_agent.schemes.stats import SchemeCounters

CAPS = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": frozenset({"stat", "pageout"})},
    filter_types=frozenset({"memcg"}),
    goal_metrics=frozenset({"user_input"}),
)


class FakeEngine:
    def __init__(self) -> None:
        self.applied: list[planning.Plan] = []
        self.refuse = False
        self.crash = False
        self.crash_stats = False
        self.stopped = False

    @property
    def info(self) -> backend.BackendInfo:
        return backend.BackendInfo(backend="sim", capabilities=CAPS)

    def apply(self, plan: planning.Plan) -> None:
        if self.refuse:
            raise errors.ApplyError("SysfsInvalidError: the kernel said no")
        if self.crash:
            raise KeyError(18)  # a bug of the engine's (one such was found under pod churn)
        self.applied.append(plan)

    def feed_goals(self, inputs: Mapping[str, Mapping[int, int]]) -> None:
        pass

    def follow_tuned_intervals(self) -> list[str]:
        return []

    def end_warm_ups(self) -> list[str]:
        return []

    def stats(self) -> dict[str, SchemeCounters]:
        if self.crash_stats:
            raise OSError(19, "No such device")  # as a dying cgroup's file answered once
        return {
            s.key: SchemeCounters(sz_applied=4096) for p in self.applied[-1:] for s in p.schemes()
        }

    def snapshots(self) -> list[wire.SnapshotEntry]:
        return []

    def tuning(self) -> dict[str, backend.SchemeTuning]:
        goal = backend.GoalTuning("pod_mem_psi_us", 10_000, 2_500)
        return {
            s.key: backend.SchemeTuning(1 << 20, (goal,))
            for p in self.applied[-1:]
            for s in p.schemes()
        }

    def snapshot_ages(self) -> dict[str, float]:
        return {c.key: 1.5 for p in self.applied[-1:] for c in p.contexts}

    def stop(self) -> None:
        self.stopped = True


def _dnode(generation: int = 1, action: str = "stat") -> dict[str, Any]:
    return {
        "metadata": {"name": "n1", "generation": generation},
        "spec": {
            "schemes": [
                {
                    "kind": "DamonScheme",
                    "namespace": "shop",
                    "name": "s",
                    "uid": "u1",
                    "generation": generation,
                    "namespaces": ["shop"],
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "spec": {"schemes": [{"name": "watch", "action": action}]},
                }
            ]
        },
    }


POD = {
    "metadata": {"namespace": "shop", "name": "web-0", "uid": "p1", "labels": {"app": "web"}},
    "status": {"phase": "Running"},
}


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Any]:
    config = cli_daemon.parse_args(
        ["--node-name", "n1", "--backend", "sim", "--sim-workload", "unused.yaml",
         "--state-dir", str(tmp_path), "--sys-root", str(tmp_path), "--proc-root", str(tmp_path)]
    )  # fmt: skip
    cfg = kubernetes.client.Configuration()
    cfg.host = "http://127.0.0.1:1"
    the_agent = daemon.Agent(config, daemon.kube.Client(cfg))
    the_agent.node_backend = FakeEngine()
    the_agent.pods.synced.set()  # as after the first list
    written: list[resources.DamonNodeStatus] = []

    async def capture(built: resources.DamonNodeStatus) -> bool:
        written.append(built)
        the_agent.state.last_status = built
        return True

    the_agent.write_status = capture  # type: ignore[method-assign]
    the_agent.written = written
    yield the_agent
    await the_agent.client.close()


async def test_tick_plans_applies_and_reports(agent: Any) -> None:
    assert agent.readiness() == (False, "waiting for DamonNode n1")
    agent.dnodes.items = {"n1": _dnode()}
    agent.pods.synced.clear()
    await agent.tick()
    await agent.flush_status()
    assert agent.node_backend.applied == []  # pods not listed yet: nothing is planned
    assert len(agent.written) == 1  # a status saying so
    agent.throttle.forget()  # as if the burst window passed
    agent.pods.items = {"p1": POD}
    agent.pods.synced.set()
    await agent.tick()
    await agent.flush_status()
    (plan,) = agent.node_backend.applied
    (scheme,) = plan.schemes()
    assert scheme.pods == ("shop/web-0",)
    assert agent.readiness() == (True, "ok")
    built = agent.written[-1]
    (node_scheme,) = built.schemes
    assert node_scheme.stats[0].applied_bytes == 4096  # stats read when the write was due
    assert node_scheme.stats[0].effective_quota_bytes == 1 << 20  # so were the quotas
    assert [(g.metric, g.target, g.current) for g in node_scheme.stats[0].goals] == [
        ("pod_mem_psi_us", 10_000, 2_500)
    ]
    (context,) = built.contexts
    assert context.snapshot_age_seconds == 1.5 and context.kdamond_pid is None  # not kernel
    assert [c.status for c in node_scheme.conditions if c.type == "Ready"] == ["True"]
    await agent.tick()
    await agent.flush_status()  # nothing changed: no second apply, no write within 10 s
    assert len(agent.node_backend.applied) == 1 and len(agent.written) == 2


async def test_refused_plan_is_reported_and_retried_with_backoff(agent: Any) -> None:
    agent.node_backend.refuse = True
    agent.dnodes.items = {"n1": _dnode()}
    agent.pods.items = {"p1": POD}
    await agent.tick()
    await agent.flush_status()
    assert agent.counters.apply_errors == 1
    ready, why = agent.readiness()
    assert not ready and "the kernel said no" in why
    (node_scheme,) = agent.written[-1].schemes
    ready_condition = next(c for c in node_scheme.conditions if c.type == "Ready")
    assert (ready_condition.status, ready_condition.reason) == ("False", "ApplyFailed")
    await agent.tick()
    await agent.flush_status()
    assert agent.counters.apply_errors == 1  # not retried within APPLY_RETRY_S
    agent.state.failed_at -= daemon.APPLY_RETRY_S
    agent.node_backend.refuse = False
    await agent.tick()
    await agent.flush_status()
    assert agent.readiness() == (True, "ok")


async def test_a_bug_in_apply_is_a_condition_not_the_agents_end(agent: Any) -> None:
    agent.node_backend.crash = True
    agent.dnodes.items = {"n1": _dnode()}
    agent.pods.items = {"p1": POD}
    await agent.tick()  # raised out of the loop before: the agent died
    await agent.flush_status()
    assert agent.counters.apply_errors == 1
    (node_scheme,) = agent.written[-1].schemes
    ready_condition = next(c for c in node_scheme.conditions if c.type == "Ready")
    assert (ready_condition.status, ready_condition.reason) == ("False", "InternalError")
    assert "KeyError" in ready_condition.message
    agent.state.failed_at -= daemon.APPLY_RETRY_S
    agent.node_backend.crash = False
    await agent.tick()
    await agent.flush_status()
    assert agent.readiness() == (True, "ok")


async def test_a_bug_while_reading_the_outcome_still_writes_the_status(agent: Any) -> None:
    agent.dnodes.items = {"n1": _dnode()}
    agent.pods.items = {"p1": POD}
    agent.node_backend.crash_stats = True
    await agent.tick()
    await agent.flush_status()  # raised out of the status loop before: the agent died
    assert agent.written and agent.readiness() == (True, "ok")


async def test_bad_spec_keeps_what_runs_and_says_why(agent: Any) -> None:
    agent.dnodes.items = {"n1": _dnode()}
    agent.pods.items = {"p1": POD}
    await agent.tick()
    await agent.flush_status()
    broken = _dnode(generation=2)
    broken["spec"]["schemes"][0]["namespaces"] = ["shop", "bank"]  # widening is refused
    agent.dnodes.items = {"n1": broken}
    await agent.tick()
    await agent.flush_status()
    ready, why = agent.readiness()
    assert not ready and "spec invalid" in why
    assert len(agent.node_backend.applied) == 1  # the last good plan keeps running


async def test_deleted_damonnode_tears_everything_down(agent: Any) -> None:
    agent.dnodes.items = {"n1": _dnode()}
    agent.pods.items = {"p1": POD}
    await agent.tick()
    await agent.flush_status()
    agent.dnodes.items = {}
    agent.dnodes.synced.set()
    await agent.tick()
    await agent.flush_status()
    fake = agent.node_backend
    assert fake.applied[-1] == planning.Plan()
    writes = len(agent.written)
    await agent.shutdown()
    assert agent.node_backend is None and fake.stopped
    assert len(agent.written) == writes  # no DamonNode left to write to


async def test_shutdown_says_so_in_the_status(agent: Any) -> None:
    agent.dnodes.items = {"n1": _dnode()}
    agent.pods.items = {"p1": POD}
    await agent.tick()
    await agent.flush_status()
    await agent.shutdown()
    last = agent.written[-1]
    backend = next(c for c in last.conditions if c.type == "BackendAvailable")
    assert (backend.status, backend.message) == ("False", "agent stopped")


async def test_an_idle_tick_neither_plans_nor_reads_the_node_for_a_status(
    agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent.dnodes.items = {"n1": _dnode()}
    agent.pods.items = {"p1": POD}
    await agent.tick()
    await agent.flush_status()
    plans: list[object] = []
    reads: list[object] = []
    real_plan, real_read = daemon.planning.plan, agent._read_status_facts
    monkeypatch.setattr(daemon.planning, "plan", lambda *a: plans.append(a) or real_plan(*a))
    monkeypatch.setattr(agent, "_read_status_facts", lambda: reads.append(1) or real_read())
    for _ in range(3):
        await agent.tick()
    assert plans == [] and reads == []  # the same spec and pods, within the steady slot
    agent.throttle.steady_interval_s = 0.0  # the steady slot came
    await agent.tick()
    await agent.flush_status()
    assert plans == [] and len(reads) == 1 and len(agent.written) == 2
    agent.throttle.steady_interval_s = 10.0
    agent.throttle.burst_interval_s = 0.0
    agent.dnodes.items = {"n1": _dnode(generation=2)}  # a new spec: planned and reported
    await agent.tick()
    await agent.flush_status()
    assert len(plans) == 1 and len(agent.node_backend.applied) == 2
    assert agent.written[-1].observed_generation == 2


async def test_a_damonnode_made_again_with_the_same_spec_is_planned_again(agent: Any) -> None:
    agent.dnodes.items = {"n1": _dnode()}
    agent.pods.items = {"p1": POD}
    await agent.tick()
    agent.dnodes.items = {}
    agent.dnodes.synced.set()
    await agent.tick()
    assert agent.node_backend.applied[-1] == planning.Plan()
    agent.dnodes.items = {"n1": _dnode()}
    await agent.tick()
    (scheme,) = agent.node_backend.applied[-1].schemes()
    assert scheme.pods == ("shop/web-0",)


async def test_feedback_without_a_pod_psi_goal_reads_nothing(
    agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent.dnodes.items = {"n1": _dnode()}
    agent.pods.items = {"p1": POD}
    await agent.tick()
    hops: list[object] = []

    async def counted(func: Any, /, *args: Any) -> Any:
        hops.append(func)
        return func(*args)

    monkeypatch.setattr(daemon.asyncio, "to_thread", counted)
    agent.state.feedback_problems = (planning.Problem("x", "warning", "Old", "gone"),)
    await agent._feed(agent.node_backend)
    assert hops == [] and agent.state.feedback_problems == ()


def test_outcome_defaults() -> None:
    assert status_mod.ApplyOutcome() == status_mod.ApplyOutcome(applied=False, error="", plan=None)


async def test_status_writer_retries_the_newest_status_while_the_apiserver_fails(
    agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "STATUS_RETRY_FIRST_S", 0.01)
    answers = [False, False, True]
    attempts: list[resources.DamonNodeStatus] = []

    async def flaky(built: resources.DamonNodeStatus) -> bool:
        attempts.append(built)
        return answers.pop(0)

    agent.write_status = flaky
    older, newer = resources.DamonNodeStatus(), resources.DamonNodeStatus(backend="sim")
    writer = asyncio.create_task(agent._status_writer())
    try:
        agent._unwritten = older
        agent._status_ready.set()
        while not attempts:
            await asyncio.sleep(0.001)
        agent._unwritten = newer  # a tick offered a newer one while the first failed
        while answers:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
    finally:
        writer.cancel()
    # The failed status was not retried once a newer one came; the newest got written.
    assert attempts == [older, newer, newer]
    assert agent._unwritten is None


async def test_feedback_runs_every_second_without_a_tick(
    agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "FEEDBACK_PERIOD_S", 0.02)
    rounds = asyncio.create_task(agent._feedback_loop())
    try:
        await asyncio.sleep(0.2)
    finally:
        rounds.cancel()
    assert 5 <= agent.counters.feedback_rounds <= 11


# -- Events ---------------------------------------------------------------------------------


def _pending_events(agent: Any) -> list[tuple[str, str, int]]:
    """What the agent's recorder holds to post (no apiserver here: nothing goes out)."""
    due = agent.events.correlator.due(float("inf"))
    return [(p.occurrence.type, p.occurrence.reason, p.count) for p in due]


async def test_a_refused_plan_is_a_warning_event_counted_per_attempt(agent: Any) -> None:
    agent.node_backend.refuse = True
    agent.dnodes.items = {"n1": {**_dnode(), "metadata": {**_dnode()["metadata"], "uid": "d1"}}}
    agent.pods.items = {"p1": POD}
    await agent.tick()
    await agent.tick()  # within APPLY_RETRY_S: not attempted, not counted
    assert _pending_events(agent) == [("Warning", "ApplyFailed", 1)]
    (posting,) = agent.events.correlator.due(float("inf"))
    assert posting.occurrence.about.to_api() == {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "DamonNode",
        "name": "n1",
        "uid": "d1",
    }
    assert "the kernel said no" in posting.occurrence.message
    agent.state.failed_at -= daemon.APPLY_RETRY_S
    await agent.tick()  # retried, refused again: the same series
    assert _pending_events(agent) == [("Warning", "ApplyFailed", 2)]
    agent.state.failed_at -= daemon.APPLY_RETRY_S
    agent.node_backend.refuse = False
    await agent.tick()
    assert _pending_events(agent)[-1] == ("Normal", "Applied", 1)


async def test_a_scheme_the_planner_refuses_is_said_once_related_to_the_scheme(
    agent: Any,
) -> None:
    agent.dnodes.items = {"n1": _dnode(action="lru_prio")}  # this node cannot
    agent.dnodes.synced.set()
    agent.pods.items = {"p1": POD}
    for _ in range(3):
        await agent.tick()
    ((kind, reason, count),) = _pending_events(agent)
    assert (kind, count) == ("Warning", 1)
    (posting,) = agent.events.correlator.due(float("inf"))
    assert posting.occurrence.related is not None
    assert posting.occurrence.related.to_api() == {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "DamonScheme",
        "name": "s",
        "namespace": "shop",
        "uid": "u1",
    }
    assert posting.occurrence.message.startswith("DamonScheme/shop/s: ")
    assert reason == next(p.reason for p in agent.state.plan.problems)


async def test_an_unreadable_spec_is_said_once_while_it_stays(agent: Any) -> None:
    broken = _dnode()
    broken["spec"]["schemes"][0]["namespaces"] = ["shop", "bank"]
    agent.dnodes.items = {"n1": broken}
    agent.dnodes.synced.set()
    agent.pods.items = {"p1": POD}
    for _ in range(3):
        await agent.tick()
    assert _pending_events(agent) == [("Warning", "InvalidSpec", 1)]


async def test_events_before_the_damonnode_is_listed_wait_for_its_uid(agent: Any) -> None:
    agent.node_backend = None
    agent._backend_tried_at = -daemon.BACKEND_RETRY_S
    agent.config = dataclasses.replace(agent.config, sim_workload=Path("/nonexistent.yaml"))
    await agent.tick()  # the backend fails to start before the DamonNode is listed
    assert _pending_events(agent) == []
    agent.dnodes.items = {"n1": {**_dnode(), "metadata": {"name": "n1", "uid": "d1"}}}
    agent.dnodes.synced.set()
    await agent.tick()
    (posting,) = agent.events.correlator.due(float("inf"))
    assert (posting.occurrence.reason, posting.occurrence.about.uid) == ("BackendFailed", "d1")
    assert "/nonexistent.yaml" in posting.occurrence.message


async def test_events_never_hold_the_loop_while_the_apiserver_is_unreachable(
    agent: Any,
) -> None:
    # The fixture's client points at a closed port: every posting fails.
    agent.node_backend.refuse = True
    agent.dnodes.items = {"n1": _dnode()}
    agent.dnodes.synced.set()
    agent.pods.items = {"p1": POD}
    poster = asyncio.create_task(agent.events.run())
    try:
        for _ in range(5):
            agent.state.failed_at -= daemon.APPLY_RETRY_S
            await asyncio.wait_for(agent.tick(), timeout=2)
        for _ in range(100):
            if agent.events.post_errors:
                break
            await asyncio.sleep(0.02)
    finally:
        poster.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poster
    assert agent.events.post_errors >= 1 and agent.events.posted == 0
    assert _pending_events(agent) == [("Warning", "ApplyFailed", 5)]  # held, counted


class TieringEngine(FakeEngine):
    """A node's engine that migrates between a DRAM and a CXL tier (not the sim's)."""

    @property
    def info(self) -> backend.BackendInfo:
        caps = dataclasses.replace(
            CAPS,
            actions={"paddr": frozenset({"pageout", "migrate_hot"})},
            tiers={"dram": (0,), "cxl": (1,)},
        )
        return backend.BackendInfo(backend="userspace", capabilities=caps)


async def test_a_node_whose_kernel_promotes_leaves_out_what_refuses_to_meet_it(
    tmp_path: Path,
) -> None:
    tree = Path(__file__).resolve().parents[1] / "node" / "trees" / "numa-cxl"  # tiering=2
    config = cli_daemon.parse_args(
        ["--node-name", "n1", "--backend", "userspace", "--state-dir", str(tmp_path),
         "--sys-root", str(tree / "sys"), "--proc-root", str(tree / "proc")]
    )  # fmt: skip
    cfg = kubernetes.client.Configuration()
    cfg.host = "http://127.0.0.1:1"
    agent = daemon.Agent(config, daemon.kube.Client(cfg))
    try:
        agent.node_backend = TieringEngine()
        agent.pods.synced.set()
        agent.dnodes.synced.set()
        written: list[resources.DamonNodeStatus] = []

        async def capture(built: resources.DamonNodeStatus) -> bool:
            written.append(built)
            return True

        agent.write_status = capture  # type: ignore[method-assign]
        schemes = [
            {"name": "up", "action": "migrate_hot", "tier": "dram", "kernelTiering": "Refuse"},
            {"name": "cold", "action": "pageout"},
        ]
        assigned = {
            "kind": "ClusterDamonScheme",
            "name": "tiering",
            "uid": "u1",
            "generation": 1,
            "wholeNode": True,
            "spec": {"monitoring": {"mode": "paddr"}, "schemes": schemes},
        }
        agent.dnodes.items = {
            "n1": {"metadata": {"name": "n1", "generation": 1}, "spec": {"schemes": [assigned]}}
        }
        await agent.tick()
        await agent.flush_status()
        (plan,) = agent.node_backend.applied
        assert [s.name for s in plan.schemes()] == ["cold"]  # the pageout runs
        built = written[-1]
        assert built.kernel_tiering == resources.KernelTiering(
            numa_balancing=2, demotion_enabled=True
        )
        (scheme,) = built.schemes
        ready = next(c for c in scheme.conditions if c.type == "Ready")
        assert (ready.status, ready.reason) == ("False", "KernelTiering")
        assert _pending_events(agent) == [("Warning", "KernelTiering", 1)]
        tiering = agent.current_kernel_tiering()  # what /metrics reads on a scrape
        assert tiering is not None and tiering.promotes
    finally:
        await agent.client.close()


class KernelLikeEngine(FakeEngine):
    """A fake engine that is no sim: the agent resolves pods through the node's cgroups."""

    @property
    def info(self) -> backend.BackendInfo:
        return backend.BackendInfo(backend="kernel", capabilities=CAPS)


async def test_a_pod_at_its_floor_is_left_out_of_pageout_until_it_grows(tmp_path: Path) -> None:
    # The checked-in kubelet tree: a Burstable pod whose memory.current is 48 MiB.
    root = tmp_path / "node"
    shutil.copytree(TREES / "systemd-v2", root)
    pod_cgroup = (
        "kubepods.slice/kubepods-burstable.slice/"
        "kubepods-burstable-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice"
    )
    current = root / "sys" / "fs" / "cgroup" / pod_cgroup / "memory.current"
    config = cli_daemon.parse_args(
        ["--node-name", "n1", "--backend", "kernel", "--state-dir", str(tmp_path),
         "--sys-root", str(root / "sys"), "--proc-root", str(root / "proc")]
    )  # fmt: skip
    cfg = kubernetes.client.Configuration()
    cfg.host = "http://127.0.0.1:1"
    agent = daemon.Agent(config, daemon.kube.Client(cfg))
    engine = KernelLikeEngine()
    agent.node_backend = engine
    agent.pods.synced.set()
    dnode = _dnode(action="pageout")
    dnode["spec"]["schemes"][0]["protection"] = {"floor": "none", "minimum": "64Mi"}
    agent.dnodes.items = {"n1": dnode}
    pod = {
        "metadata": {
            "namespace": "shop",
            "name": "web-0",
            "uid": "0f6e1a9c-3b2d-4c5e-8f7a-1b2c3d4e5f60",
            "labels": {"app": "web"},
        },
        "status": {"phase": "Running", "qosClass": "Burstable"},
    }
    agent.pods.items = {"p1": pod}
    try:
        await agent.tick()
        assert [list(p.schemes()) for p in engine.applied] == [[]]  # held at its floor
        (summary,) = agent.state.plan.sources
        assert summary.protected == ("shop/web-0",)
        (reported,) = agent.current_pods()
        assert reported.floor == daemon.protection.PodFloor(protected=True, floor_bytes=64 << 20)

        current.write_text(f"{(64 << 20) + (1 << 20)}\n")  # grew, but within the 5% margin
        await agent.tick()
        assert len(engine.applied) == 1
        current.write_text(f"{80 << 20}\n")  # above it: reclaimed from again
        await agent.tick()
        (scheme,) = engine.applied[-1].schemes()
        assert scheme.pods == ("shop/web-0",)
        assert f"/{pod_cgroup}" in [f.memcg_path for f in scheme.scheme.filters]

        pod["metadata"]["annotations"] = {resources.ANNOTATION_EXCLUDE: "true"}
        await agent.tick()  # opted out: no pageout for it whatever its memory
        assert list(engine.applied[-1].schemes()) == []
        assert agent.state.plan.sources[0].pods == ()
    finally:
        await agent.client.close()


def _with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    dnode = _dnode()
    here: Any = dnode
    for part in path[:-1]:
        here = here[part]
    here[path[-1]] = value
    return dnode


@pytest.mark.parametrize(
    ("dnode", "field"),
    [
        pytest.param(_with(("spec",), "garbage"), "(top level)", id="spec-a-string"),
        pytest.param(_with(("spec",), [1, 2]), "(top level)", id="spec-a-list"),
        pytest.param(_with(("spec", "schemes"), "x"), "schemes", id="schemes-a-string"),
        pytest.param(_with(("spec", "schemes"), [None]), "schemes[0]", id="scheme-null"),
        pytest.param(_with(("spec", "schemes", 0), {}), "schemes[0].kind", id="scheme-empty"),
        pytest.param(_with(("spec", "schemes", 0, "generation"), -1), "schemes[0].generation",
                     id="negative-generation"),
        pytest.param(_with(("spec", "schemes", 0, "spec", "schemes", 0, "action"), "explode"),
                     "schemes[0].spec.schemes[0].action", id="unknown-action"),
        pytest.param(_with(("spec", "schemes", 0, "spec", "monitoring"), {"regions": {"min": 9,
                     "max": 3}}), "schemes[0].spec.monitoring.regions", id="cross-field"),
        pytest.param(_with(("spec", "bogus"), 1), "bogus", id="unknown-field"),
    ],
)  # fmt: skip
async def test_a_garbage_spec_is_named_and_the_loop_goes_on(
    agent: Any, dnode: dict[str, Any], field: str
) -> None:
    agent.dnodes.items = {"n1": dnode}
    agent.dnodes.synced.set()
    agent.pods.items = {"p1": POD}
    for _ in range(2):
        await agent.tick()
    ready, why = agent.readiness()
    assert not ready and why.startswith(f"DamonNode spec invalid: {field}: "), why
    assert agent.node_backend.applied == []
    ((kind, reason, count),) = _pending_events(agent)
    assert (kind, reason, count) == ("Warning", "InvalidSpec", 1)
    agent.dnodes.items = {"n1": _dnode()}  # fixed: the loop takes it at the next tick
    await agent.tick()
    assert agent.readiness() == (True, "ok") and len(agent.node_backend.applied) == 1
