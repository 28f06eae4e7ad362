"""Living beside other DAMON users, in the runtime: status, plan, adapter and the daemon.

Against the fake sysfs tree and a fake /sys/module under tmp_path: a running module or a
foreign kdamond becomes the ``DamonAvailable`` condition and a ``DamonHeld`` reason on
the schemes; the opt-in DAMON_STAT takeover turns it off at start, adds DAMON_STAT's
stand-in context to the plan, exports its figures, and turns DAMON_STAT back on at stop.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from damon_agent.api import resources
from damon_agent.cli import daemon as cli_daemon
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver, holders, model
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.runtime import backend, daemon, errors, metrics, planning, status
from damon_agent.runtime.backends import kernel as kernel_backend

RAM = "00001000-0009ffff : System RAM\n100000000-13fffffff : System RAM\n"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
CAPS = planning.Capabilities(
    operations=frozenset({"paddr"}),
    actions={"paddr": frozenset({"stat", "pageout"})},
    filter_types=frozenset({"memcg"}),
    goal_metrics=frozenset(),
)


def _whole_node(generation: int = 1) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "ClusterDamonScheme",
            "name": "node",
            "uid": "u",
            "generation": generation,
            "wholeNode": True,
            "spec": {"schemes": [{"name": "cold", "action": "pageout"}]},
        }
    )


def _module(sys_root: Path, module: str, enabled: str) -> Path:
    parameters = sys_root / "module" / module / "parameters"
    parameters.mkdir(parents=True, exist_ok=True)
    (parameters / "enabled").write_text(enabled + "\n")
    return parameters / "enabled"


def _adapter(tmp_path: Path, fake: fake_sysfs.FakeDamonSysfs) -> kernel_backend.KernelBackend:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "iomem").write_text(RAM)
    kernel = kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(fake, tmp_path / "state", boot_id="b", sleep=lambda _: None),
        kernel_release="6.18.0",
        proc_root=proc,
        module_root=tmp_path / "sys" / "module",
    )
    return kernel_backend.KernelBackend(kernel, tiers={})


# ---- status -------------------------------------------------------------------------


def _build(
    outcome: status.ApplyOutcome, damon: status.DamonAccess | None
) -> resources.DamonNodeStatus:
    assigned = [_whole_node()]
    return status.build(
        assigned=assigned,
        plan=planning.plan(assigned, [], CAPS),
        outcome=outcome,
        info=backend.BackendInfo(backend="kernel", capabilities=CAPS),
        stats={},
        numa=[],
        psi=resources.Psi(),
        node_generation=1,
        previous=None,
        now=T0,
        damon=damon,
    )


def _condition(conditions: list[Any], kind: str) -> tuple[str, str, str]:
    c = next(c for c in conditions if c.type == kind)
    return c.status, c.reason, c.message


def test_a_held_damon_is_a_node_condition_and_the_schemes_reason() -> None:
    held = holders.Holders(modules=holders.module_holders({"damon_stat": "Y"}))
    outcome = status.ApplyOutcome(error=held.summary(), reason=resources.REASON_DAMON_HELD)
    built = _build(outcome, status.DamonAccess(holders=held))
    state, reason, message = _condition(built.conditions, "DamonAvailable")
    assert (state, reason) == ("False", "DamonHeld")
    assert "DAMON_STAT" in message and "echo N > /sys/module/damon_stat" in message
    assert _condition(built.conditions, "Ready")[:2] == ("False", "DamonHeld")
    (scheme,) = built.schemes
    ready = _condition(scheme.conditions, "Ready")
    assert ready[:2] == ("False", "DamonHeld") and ready[2] == held.summary()
    assert _condition(scheme.conditions, "Degraded")[:2] == ("True", "DamonHeld")


def test_free_and_taken_over_damon_are_available() -> None:
    free = _build(status.ApplyOutcome(), status.DamonAccess())
    assert _condition(free.conditions, "DamonAvailable")[:2] == ("True", "Free")
    taken = _build(status.ApplyOutcome(), status.DamonAccess(taken_over=True))
    state, reason, message = _condition(taken.conditions, "DamonAvailable")
    assert (state, reason) == ("True", "TakenOver") and "back on when it stops" in message
    problem = _build(status.ApplyOutcome(), status.DamonAccess(problem="could not: EBUSY"))
    assert _condition(problem.conditions, "DamonAvailable")[2].endswith("(could not: EBUSY)")
    # Backends other than the kernel's have no such condition.
    sim = _build(status.ApplyOutcome(), None)
    assert all(c.type != "DamonAvailable" for c in sim.conditions)


def test_other_failures_keep_the_apply_failed_reason() -> None:
    built = _build(status.ApplyOutcome(error="SysfsInvalidError: no"), None)
    assert _condition(built.schemes[0].conditions, "Ready")[:2] == ("False", "ApplyFailed")


# ---- plan ---------------------------------------------------------------------------


def test_damon_stats_stand_in_is_one_whole_node_context_with_its_monitoring() -> None:
    plan = planning.plan([_whole_node()], [], CAPS)
    with_stat, key = planning.with_node_stat(plan, CAPS)
    assert len(with_stat.contexts) == len(plan.contexts) + 1
    stand_in = with_stat.contexts[-1]
    assert stand_in.key == key and stand_in.operations == "paddr" and not stand_in.schemes
    goal = stand_in.monitoring.intervals_goal
    assert goal is not None and goal.access_bp == 400
    assert (goal.min_sample_us, goal.max_sample_us) == (5_000, 10_000_000)
    assert planning.with_node_stat(with_stat, CAPS) == (with_stat, key)  # once only
    old = planning.Capabilities(**{**vars(CAPS), "intervals_goal": False})
    assert planning.node_stat_context(old).monitoring.intervals_goal is None


# ---- the kernel adapter -----------------------------------------------------------------


def test_the_adapter_names_the_holder_in_a_damon_held_apply_error(tmp_path: Path) -> None:
    fake = fake_sysfs.FakeDamonSysfs(tmp_path / "admin")
    adapter = _adapter(tmp_path, fake)
    _module(tmp_path / "sys", "damon_reclaim", "Y")
    plan = planning.plan([_whole_node()], [], adapter.info.capabilities)
    with pytest.raises(errors.ApplyError) as refused:
        adapter.apply(plan)
    assert refused.value.reason == "DamonHeld"
    assert str(refused.value).startswith("DAMON is held by DAMON_RECLAIM:")
    assert adapter.holders().names() == ("DAMON_RECLAIM",)
    assert fake.read("kdamonds/nr_kdamonds") == "0"


# ---- the daemon ---------------------------------------------------------------------------


@pytest.fixture
async def kernel_agent(tmp_path: Path) -> AsyncIterator[Any]:
    sys_root = tmp_path / "sys"
    proc = tmp_path / "proc"
    (proc / "sys/kernel/random").mkdir(parents=True)
    (proc / "sys/kernel/random/boot_id").write_text("boot-1\n")

    def make(*extra: str) -> daemon.Agent:
        config = cli_daemon.parse_args(
            ["--node-name", "n1", "--backend", "kernel", "--state-dir", str(tmp_path / "state"),
             "--sys-root", str(sys_root), "--proc-root", str(proc), *extra]
        )  # fmt: skip
        cfg = kubernetes.client.Configuration()
        cfg.host = "http://127.0.0.1:1"
        agent = daemon.Agent(config, daemon.kube.Client(cfg))
        fake = fake_sysfs.FakeDamonSysfs(tmp_path / "admin")
        agent.node_backend = _adapter(tmp_path, fake)
        agent.fake = fake  # type: ignore[attr-defined]
        agent.dnodes.synced.set()
        agent.pods.synced.set()
        written: list[resources.DamonNodeStatus] = []

        async def capture(built: resources.DamonNodeStatus) -> None:
            written.append(built)
            agent.state.last_status = built

        agent.write_status = capture  # type: ignore[method-assign]
        agent.written = written  # type: ignore[attr-defined]
        made.append(agent)
        return agent

    made: list[daemon.Agent] = []
    yield make
    for agent in made:
        await agent.client.close()


def _dnode() -> dict[str, Any]:
    return {
        "metadata": {"name": "n1", "generation": 1},
        "spec": {"schemes": [resources.to_api(_whole_node())]},
    }


async def test_without_the_opt_in_damon_stat_is_reported_and_never_touched(
    kernel_agent: Any, tmp_path: Path
) -> None:
    enabled = _module(tmp_path / "sys", "damon_stat", "Y")
    agent = kernel_agent()
    agent._settle_damon_stat()
    agent.dnodes.items = {"n1": _dnode()}
    await agent.tick()
    await agent.flush_status()
    assert enabled.read_text() == "Y\n"
    last = agent.written[-1]
    assert _condition(last.conditions, "DamonAvailable")[:2] == ("False", "DamonHeld")
    (scheme,) = last.schemes
    assert _condition(scheme.conditions, "Ready")[:2] == ("False", "DamonHeld")
    assert agent.fake.read("kdamonds/nr_kdamonds") == "0"
    await agent.shutdown()
    assert enabled.read_text() == "Y\n"


async def test_takeover_turns_it_off_stands_in_for_it_and_gives_it_back(
    kernel_agent: Any, tmp_path: Path
) -> None:
    enabled = _module(tmp_path / "sys", "damon_stat", "Y")
    agent = kernel_agent("--take-over-damon-stat")
    agent._settle_damon_stat()
    assert enabled.read_text().strip() == "N"
    assert (tmp_path / "state" / "damon_stat.json").exists()
    # No DamonNode at all: DAMON_STAT's stand-in runs all the same.
    await agent.tick()
    await agent.flush_status()
    (context,) = agent.state.outcome.plan.contexts
    assert context.key == agent.state.node_stat_key and not context.schemes
    fake = agent.fake
    assert fake.read("kdamonds/0/state") == "on"
    scheme = int(fake.read("kdamonds/0/contexts/0/schemes/nr_schemes")) - 1
    fake.tried[(0, scheme)] = [
        model.TriedRegion(0x100000000, 0x110000000, 5, 30),  # accessed, for 3 s
        model.TriedRegion(0x110000000, 0x140000000, 0, 600),  # idle for 60 s
    ]
    stat = agent.node_stat()
    assert stat is not None
    assert stat.idle_ms_percentiles[0] == -3000 and stat.idle_ms_percentiles[100] == 60_000
    assert stat.estimated_bandwidth == 0x10000000 * 5 * 10
    scraped = metrics.registry_for(agent).get_sample_value(
        "damon_node_memory_idle_seconds", {"percentile": "100"}
    )
    assert scraped == 60.0
    # With a scheme assigned, the stand-in runs beside it.
    agent.dnodes.items = {"n1": _dnode()}
    await agent.tick()
    await agent.flush_status()
    assert len(agent.state.outcome.plan.contexts) == 2
    last = agent.written[-1]
    assert _condition(last.conditions, "DamonAvailable")[:2] == ("True", "TakenOver")
    await agent.shutdown()
    assert fake.read("kdamonds/nr_kdamonds") == "0"
    assert enabled.read_text().strip() == "Y"
    assert not (tmp_path / "state" / "damon_stat.json").exists()


async def test_a_restart_without_the_opt_in_gives_back_what_a_dead_run_took(
    kernel_agent: Any, tmp_path: Path
) -> None:
    enabled = _module(tmp_path / "sys", "damon_stat", "Y")
    first = kernel_agent("--take-over-damon-stat")
    first._settle_damon_stat()
    assert enabled.read_text().strip() == "N"
    # It dies without stopping; the chart value is turned off and the agent restarts.
    second = kernel_agent()
    second._settle_damon_stat()
    assert enabled.read_text().strip() == "Y"
    assert not second.state.holding_damon_stat


async def test_a_crash_restarted_opted_in_agent_still_holds_it(
    kernel_agent: Any, tmp_path: Path
) -> None:
    enabled = _module(tmp_path / "sys", "damon_stat", "Y")
    kernel_agent("--take-over-damon-stat")._settle_damon_stat()
    again = kernel_agent("--take-over-damon-stat")
    again._settle_damon_stat()
    assert again.state.holding_damon_stat and enabled.read_text().strip() == "N"
    await again.shutdown()
    assert enabled.read_text().strip() == "Y"


async def test_the_opt_in_never_touches_the_other_modules(
    kernel_agent: Any, tmp_path: Path
) -> None:
    reclaim = _module(tmp_path / "sys", "damon_reclaim", "Y")
    agent = kernel_agent("--take-over-damon-stat")
    agent._settle_damon_stat()
    assert reclaim.read_text() == "Y\n" and not agent.state.holding_damon_stat
    agent.dnodes.items = {"n1": _dnode()}
    await agent.tick()
    await agent.flush_status()
    state, reason, message = _condition(agent.written[-1].conditions, "DamonAvailable")
    assert (state, reason) == ("False", "DamonHeld") and "DAMON_RECLAIM" in message
    await agent.shutdown()
    assert reclaim.read_text() == "Y\n"
