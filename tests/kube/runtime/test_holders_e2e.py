"""End to end beside another DAMON user: the operator and a kernel agent, the real
kube-apiserver, and a DAMON module the test turns on (DAMON_STAT where the kernel has
it, else DAMON_RECLAIM: ``damon_modules.pick``).

Without the opt-in, the agent reports the holder (DamonNode condition ``DamonAvailable``)
and the operator fails the scheme on that node with reason ``DamonHeld`` and the remedy;
the module is never touched. With ``--take-over-damon-stat`` on a kernel with DAMON_STAT,
the agent turns it off, runs the scheme, exports DAMON_STAT's figures, and turns it back
on at SIGTERM; on a kernel without it the opt-in leaves the other module alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import damon_modules
import pytest


def _condition(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next((c for c in conditions if c.get("type") == kind), {})


def _node_condition(kubectl: Any, node: str, kind: str) -> dict[str, Any]:
    found = kubectl("get", "damonnode", node, "-o", "json", check=False)
    if found.returncode != 0:
        return {}
    status = json.loads(found.stdout).get("status") or {}
    return _condition(status.get("conditions", []), kind)


def _scheme_status(kubectl: Any, name: str) -> dict[str, Any]:
    found = kubectl("get", "clusterdamonscheme", name, "-o", "json", check=False)
    if found.returncode != 0:
        return {}
    return dict(json.loads(found.stdout).get("status") or {})


def _nr_kdamonds(admin: Path) -> int:
    return int((admin / "kdamonds" / "nr_kdamonds").read_text().strip())


@pytest.mark.kube
@pytest.mark.kernel
@pytest.mark.slow
def test_holders_reported_through_the_operator_and_damon_stat_taken_over_and_given_back(
    kernel_damon: Path,
    kubectl: Any,
    unique: str,
    make_node: Any,
    run_operator: Any,
    run_agent: Any,
    apply: Any,
    wait_for: Any,
) -> None:
    module = damon_modules.pick()
    name = damon_modules.NAMES[module]
    node = make_node(labels={"damon.io/e2e-holders": unique})
    scheme = f"holders-{unique}"
    run_operator()
    apply(
        {
            "apiVersion": "damon.io/v1alpha1",
            "kind": "ClusterDamonScheme",
            "metadata": {"name": scheme},
            "spec": {
                "wholeNode": True,
                "nodeSelector": {"matchLabels": {"damon.io/e2e-holders": unique}},
                "monitoring": {"intervals": {"sample": "5ms", "aggregation": "100ms"}},
                "schemes": [{"name": "watch", "action": "stat"}],
            },
        }
    )
    with damon_modules.running(module):
        # ---- without the opt-in: reported, never touched ---------------------------------
        agent = run_agent(node, "kernel")
        held = wait_for(
            lambda: (
                (c := _node_condition(kubectl, node, "DamonAvailable")).get("reason") == "DamonHeld"
                and c
            ),
            timeout=60,
            what="DamonAvailable=False naming the holder",
        )
        assert held["status"] == "False"
        assert f"DAMON is held by {name}" in held["message"]
        assert f"echo N > /sys/module/{module}/parameters/enabled" in held["message"]

        def failing_here() -> Any:
            status = _scheme_status(kubectl, scheme)
            failures = {f["node"]: f for f in status.get("failingNodes", [])}
            return failures.get(node) if failures.get(node, {}).get("reason") else None

        failure = wait_for(failing_here, timeout=60, what="the scheme failing on the node")
        assert failure["reason"] == "DamonHeld", failure
        assert f"echo N > /sys/module/{module}/parameters/enabled" in failure["message"]
        degraded = _condition(_scheme_status(kubectl, scheme)["conditions"], "Degraded")
        assert f"{node}: DamonHeld (DAMON is held by {name}" in degraded["message"]
        assert _nr_kdamonds(kernel_damon) == 0
        assert agent.stop() == 0, agent.log()[-2000:]
        assert damon_modules.is_on(module), "an agent without the opt-in touched the module"

        # ---- with the opt-in ---------------------------------------------------------------
        agent = run_agent(node, "kernel", "--take-over-damon-stat")
        if module != "damon_stat":
            # No DAMON_STAT on this kernel: the other module stays, still reported.
            wait_for(lambda: "--take-over-damon-stat" in agent.log(), timeout=30, what="the opt-in")
            wait_for(
                lambda: (
                    _node_condition(kubectl, node, "DamonAvailable").get("reason") == "DamonHeld"
                ),
                timeout=60,
                what="still DamonHeld",
            )
            assert damon_modules.is_on(module)
            assert agent.stop() == 0, agent.log()[-2000:]
            assert damon_modules.is_on(module) and _nr_kdamonds(kernel_damon) == 0
            return
        taken = wait_for(
            lambda: (
                (c := _node_condition(kubectl, node, "DamonAvailable")).get("reason") == "TakenOver"
                and c
            ),
            timeout=60,
            what="DamonAvailable=True, TakenOver",
        )
        assert taken["status"] == "True"
        assert not damon_modules.is_on("damon_stat")
        wait_for(
            lambda: (
                _condition(_scheme_status(kubectl, scheme).get("conditions", []), "Ready").get(
                    "status"
                )
                == "True"
            ),
            timeout=60,
            what="the scheme Ready on the node once DAMON_STAT is off",
        )
        assert _nr_kdamonds(kernel_damon) == 2  # the scheme's and DAMON_STAT's stand-in

        def figures() -> Any:
            code, text = agent.get("/metrics")
            lines = [line for line in text.splitlines() if line.startswith("damon_node_")]
            idle = [line for line in lines if line.startswith("damon_node_memory_idle_seconds{")]
            bandwidth = [line for line in lines if "estimated_memory_bandwidth" in line]
            return (idle, bandwidth) if code == 200 and len(idle) == 101 and bandwidth else None

        idle, bandwidth = wait_for(figures, timeout=60, what="DAMON_STAT's figures as metrics")
        assert any('percentile="100"' in line for line in idle)
        assert float(bandwidth[0].split()[-1]) >= 0
        assert agent.stop() == 0, agent.log()[-2000:]
        assert damon_modules.is_on("damon_stat"), "DAMON_STAT was not turned back on at stop"
        assert _nr_kdamonds(kernel_damon) == 0
