"""A replaced agent hands its kdamonds to its successor: the real kube-apiserver, the
operator, the kernel's DAMON, two agents one after the other on the same state directory.

The agents run as a DaemonSet's pods would (``--owner-daemonset``). The DaemonSet is a
real object in the apiserver; the test node carries a taint none of its pods tolerates,
so the DaemonSet controller never puts a pod on it, while its nodeSelector still selects
the node (the handover checks the selector, not the taints).

- the first agent, stopped while its DaemonSet still selects the node, leaves its kdamond
  running (same pid, still on);
- the second adopts it: the same kdamond thread runs the scheme (no new kdamond, no gap),
  and the scheme is Ready on the node again;
- once the node no longer matches the DaemonSet's nodeSelector, a stop turns it off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

LABEL = "damon.io/e2e-handover"


def _kdamond(admin: Path) -> tuple[int, str, int]:
    """(nr_kdamonds, state of kdamond 0, its pid)."""
    base = admin / "kdamonds"
    count = int((base / "nr_kdamonds").read_text())
    if count == 0:
        return 0, "", -1
    return count, (base / "0" / "state").read_text().strip(), int((base / "0" / "pid").read_text())


def _ready_on(kubectl: Any, scheme: str, node: str, after: str = "") -> bool:
    found = kubectl("get", "clusterdamonscheme", scheme, "-o", "json", check=False)
    if found.returncode != 0:
        return False
    status = json.loads(found.stdout).get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
    dnode = kubectl("get", "damonnode", node, "-o", "json", check=False)
    beat = (
        (json.loads(dnode.stdout).get("status") or {}).get("heartbeat", "") if dnode.stdout else ""
    )
    return ready.get("status") == "True" and str(beat) > after


@pytest.mark.kube
@pytest.mark.kernel
@pytest.mark.slow
def test_a_replaced_agent_hands_its_kdamonds_to_its_successor(
    kernel_damon: Path,
    kubectl: Any,
    namespace: str,
    unique: str,
    make_node: Any,
    run_operator: Any,
    run_agent: Any,
    apply: Any,
    wait_for: Any,
) -> None:
    node = make_node(labels={LABEL: unique})
    kubectl("taint", "node", node, "damon.io/e2e=no-pods:NoSchedule")
    daemonset = f"agent-{unique}"
    kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=json.dumps({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": daemonset},
            "spec": {
                "selector": {"matchLabels": {"app": daemonset}},
                "template": {
                    "metadata": {"labels": {"app": daemonset}},
                    "spec": {
                        "nodeSelector": {LABEL: unique},
                        "containers": [{"name": "agent", "image": "damon-k8s:none"}],
                    },
                },
            },
        }),
    )  # fmt: skip
    owner = ("--owner-daemonset", f"{namespace}/{daemonset}")
    scheme = f"handover-{unique}"
    run_operator()
    apply(
        {
            "apiVersion": "damon.io/v1alpha1",
            "kind": "ClusterDamonScheme",
            "metadata": {"name": scheme},
            "spec": {
                "wholeNode": True,
                "nodeSelector": {"matchLabels": {LABEL: unique}},
                "monitoring": {"intervals": {"sample": "5ms", "aggregation": "100ms"}},
                "schemes": [{"name": "watch", "action": "stat"}],
            },
        }
    )

    first = run_agent(node, "kernel", *owner)
    wait_for(lambda: _ready_on(kubectl, scheme, node), timeout=90, what="the scheme Ready")
    count, state, pid = _kdamond(kernel_damon)
    assert (count, state) == (1, "on") and pid > 0
    assert first.stop() == 0, first.log()[-2000:]
    assert "handing the kdamonds over" in first.log(), first.log()[-2000:]
    assert _kdamond(kernel_damon) == (1, "on", pid), "the handed-over kdamond did not stay on"

    second = run_agent(node, "kernel", *owner)
    wait_for(
        lambda: "adopted 1 running kdamond(s)" in second.log(),
        timeout=60,
        what="the successor adopting the kdamond",
    )
    dnode = json.loads(kubectl("get", "damonnode", node, "-o", "json").stdout)
    handed_over_at = str((dnode.get("status") or {}).get("heartbeat", ""))
    wait_for(
        lambda: _ready_on(kubectl, scheme, node, after=handed_over_at),
        timeout=90,
        what="the scheme Ready again under the successor",
    )
    assert _kdamond(kernel_damon) == (1, "on", pid), "the successor did not keep the kdamond"

    # The DaemonSet no longer selects the node: no successor comes, so a stop turns it off.
    kubectl("label", "node", node, f"{LABEL}-")
    assert second.stop() == 0, second.log()[-2000:]
    assert "no longer selects this node" in second.log(), second.log()[-2000:]
    assert _kdamond(kernel_damon)[0] == 0
