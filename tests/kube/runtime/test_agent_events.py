"""The agent's Events against the real apiserver: a backend refusing plans, again and
again, makes one Warning Event on the agent's DamonNode whose ``count`` is the number of
refusals, written a bounded number of times; the plan applying at last says so.

The agent runs in this process (its loop, informers and Event recorder, with a real
client against the real apiserver) on the sim backend, wrapped so that ``apply`` fails
while the test says so: a refusal cannot be provoked from outside the sim. Its DamonNode
is written by the test, as the operator would (no operator runs).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from damon_agent.cli import daemon as cli_daemon
from damon_agent.runtime import daemon, errors, kube, planning

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[3]
SIM_WORKLOAD = REPO / "examples" / "workloads" / "hot-cold.yaml"
INTERVAL_S = 3.0
BURST_S = 8.0


class RefusingBackend:
    """The sim backend, except that ``apply`` fails while ``refuse`` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.refuse = True

    def apply(self, plan: planning.Plan) -> None:
        if self.refuse:
            raise errors.ApplyError("SysfsInvalidError: injected by the test")
        self.inner.apply(plan)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def damon_node(name: str, instance: str) -> dict[str, Any]:
    return {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "DamonNode",
        "metadata": {"name": name, "labels": {"damon.io/instance": instance}},
        "spec": {
            "schemes": [
                {
                    "kind": "ClusterDamonScheme",
                    "name": f"{instance}-watch",
                    "uid": "5c1d7c7e-0000-4000-8000-000000000001",
                    "generation": 1,
                    "wholeNode": True,
                    "spec": {"schemes": [{"name": "watch", "action": "stat"}]},
                }
            ]
        },
    }


def node_events(kubectl: Any, node: str) -> list[dict[str, Any]]:
    found = kubectl.json(
        "events", "-n", "default", "--field-selector", f"involvedObject.name={node}"
    )
    items: list[dict[str, Any]] = found.get("items", [])
    return items


async def test_refused_plans_make_one_warning_event_with_their_count(
    kubectl: Any,
    kubeconfig: Path,
    make_node: Callable[..., str],
    instance: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    node = make_node()
    kubectl("apply", "-f", "-", input=json.dumps(damon_node(node, instance)))
    # Retry the refused plan at every tick instead of every 10 s: a burst of failures.
    monkeypatch.setattr(daemon, "APPLY_RETRY_S", 0.0)
    config = cli_daemon.parse_args(
        [
            "--node-name", node, "--kubeconfig", str(kubeconfig),
            "--backend", "sim", "--sim-workload", str(SIM_WORKLOAD),
            "--state-dir", str(tmp_path), "--tick", "0.3",
            "--event-interval", str(INTERVAL_S),
        ]
    )  # fmt: skip
    client = kube.Client.from_kubeconfig(str(kubeconfig))
    agent = daemon.Agent(config, client)
    backend = RefusingBackend(daemon.open_backend(config))
    agent.node_backend = backend
    stop = asyncio.Event()
    loop = asyncio.create_task(agent.run(stop))
    try:
        started = time.monotonic()
        while time.monotonic() - started < BURST_S:
            await asyncio.sleep(0.2)
            assert not loop.done(), loop
        refusals = agent.counters.apply_errors
        backend.refuse = False
        deadline = time.monotonic() + 3 * INTERVAL_S + 15
        while True:
            found = await asyncio.to_thread(node_events, kubectl, node)
            warnings = [e for e in found if e["reason"] == "ApplyFailed"]
            applied = [e for e in found if e["reason"] == "Applied"]
            if warnings and warnings[0].get("count") == refusals and applied:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{refusals} refusals; Events on {node}: "
                    + json.dumps([(e["reason"], e.get("count")) for e in found])
                )
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.wait_for(loop, timeout=10)
        await agent.shutdown()
        await client.close()
    assert refusals >= 10, f"only {refusals} refusals in {BURST_S:.0f} s"
    (warning,) = warnings  # one Event object for the whole burst
    assert warning["type"] == "Warning"
    assert warning["involvedObject"]["kind"] == "DamonNode"
    assert warning["involvedObject"]["uid"] == kubectl.json("damonnode", node)["metadata"]["uid"]
    assert "SysfsInvalidError: injected by the test" in warning["message"]
    assert warning["source"] == {"component": "damon-agent", "host": node}
    assert applied[0]["type"] == "Normal"
    # Rate-limited: the first at once, then at most one write per interval, not one per
    # refusal (the burst, and the last count after it).
    assert agent.events.posted <= BURST_S / INTERVAL_S + 4, agent.events.posted
    assert agent.events.post_errors == 0
    record_property(
        "figures",
        f"{refusals} refusals in {BURST_S:.0f} s: one Event (count {warning['count']}), "
        f"{agent.events.posted} writes in all",
    )
