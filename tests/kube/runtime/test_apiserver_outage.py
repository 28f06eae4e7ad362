"""The node-local loop goes on while the apiserver hangs, stops and restarts.

A sim agent runs a scheme assigned through the real operator and apiserver. Then the
apiserver is frozen (SIGSTOP: connections hang, as on an overloaded or partitioned
apiserver), later killed and started again by scripts/controlplane.sh (etcd keeps its
data). Throughout, the agent's own loop must go on: ``/healthz`` answers with a fresh
tick, PSI feedback keeps its one-second period (its rounds counter in /metrics), and the
plan keeps running; once the apiserver answers again, the DamonNode status catches up
(a heartbeat newer than the outage) within a few seconds.

The operator runs through it too: it tears nothing down for want of a watch (the node's
spec keeps its generation), the scheme's status converges within one resync, and an edit
made after the outage reaches the node.

The control plane is shared by the whole session: this test holds it for less than a
minute and always resumes or restarts it, even when it fails.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kube_support
import pytest

pytestmark = pytest.mark.kube

CONTROLPLANE_DIR = (
    Path(os.environ.get("DAMON_K8S_CACHE", str(Path.home() / ".cache" / "damon-k8s")))
    / "controlplane"
)
OUTAGE_S = 15.0
RESYNC_S = 10.0  # the operator's (its default)


def _apiserver_pid() -> int:
    return int((CONTROLPLANE_DIR / "apiserver.pid").read_text().strip())


def _feedback_rounds(agent: Any) -> int:
    code, text = agent.get("/metrics")
    assert code == 200, text
    found = re.search(r"^damon_agent_feedback_rounds_total (\d+(?:\.\d+)?)", text, re.M)
    assert found, "no damon_agent_feedback_rounds_total in /metrics"
    return int(float(found.group(1)))


def _nodes_ready(kubectl: Any, scheme: str) -> str | None:
    got = kubectl.get("clusterdamonscheme", scheme)
    ready: str | None = ((got or {}).get("status") or {}).get("nodesReady")
    return ready


def _generation(kubectl: Any, node: str) -> int:
    return int(kubectl.json("damonnode", node)["metadata"]["generation"])


def _heartbeat(kubectl: Any, node: str) -> datetime.datetime | None:
    got = kubectl.get("damonnode", node)
    beat = ((got or {}).get("status") or {}).get("heartbeat")
    return datetime.datetime.fromisoformat(beat.replace("Z", "+00:00")) if beat else None


def _assert_local_loop_alive(agent: Any, rounds_before: int, seconds: float) -> int:
    code, text = agent.get("/healthz")
    assert code == 200, f"/healthz during the outage: {code} {text}"
    age = float(re.search(r"last tick ([\d.]+)s ago", text).group(1))  # type: ignore[union-attr]
    assert age < 5, f"the local loop waited on the apiserver: {text}"
    rounds = _feedback_rounds(agent)
    # One a second; a loaded machine may lose a few.
    assert rounds - rounds_before >= 0.7 * seconds, (rounds_before, rounds, seconds)
    return rounds


@pytest.fixture
def apiserver_resumed() -> Iterator[None]:
    """Whatever the test does to the apiserver, it runs again afterwards."""
    yield
    with contextlib.suppress(OSError, ValueError):
        os.kill(_apiserver_pid(), signal.SIGCONT)
    kube_support.restart_apiserver()


def test_the_loop_goes_on_through_an_apiserver_freeze_stop_and_restart(
    kubectl: Any,
    unique: str,
    make_node: Callable[..., str],
    run_operator: Callable[..., Any],
    run_agent: Callable[..., Any],
    apply: Callable[..., Any],
    wait_for: Callable[..., Any],
    apiserver_resumed: None,
    record_property: Callable[[str, object], None],
) -> None:
    node = make_node(labels={"damon.io/e2e-outage": unique})
    operator = run_operator("--resync", str(RESYNC_S))
    name = f"outage-{unique}"
    scheme: dict[str, Any] = {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "ClusterDamonScheme",
        "metadata": {"name": name},
        "spec": {
            "wholeNode": True,
            "nodeSelector": {"matchLabels": {"damon.io/e2e-outage": unique}},
            "schemes": [{"name": "watch", "action": "stat"}],
        },
    }
    apply(scheme)
    agent = run_agent(node, "sim", "--status-interval", "2")
    wait_for(lambda: _heartbeat(kubectl, node), timeout=60, what="a first DamonNode status")
    wait_for(lambda: _nodes_ready(kubectl, name) == "1/1", timeout=60, what="the scheme Ready")
    assigned = kube_support.assigned_keys(kubectl, node)
    spec_generation = _generation(kubectl, node)
    rounds = _feedback_rounds(agent)

    # ---- frozen: every request hangs ----------------------------------------------------
    pid = _apiserver_pid()
    os.kill(pid, signal.SIGSTOP)
    frozen_at = datetime.datetime.now(datetime.UTC)
    try:
        time.sleep(OUTAGE_S)
        rounds = _assert_local_loop_alive(agent, rounds, OUTAGE_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    thawed = time.monotonic()
    wait_for(
        lambda: (_heartbeat(kubectl, node) or frozen_at) > frozen_at,
        timeout=30,
        what="the status to catch up after the freeze",
    )
    caught_up_s = time.monotonic() - thawed

    # ---- stopped, then started again (etcd keeps the data) ------------------------------
    os.kill(_apiserver_pid(), signal.SIGTERM)
    stopped_at = datetime.datetime.now(datetime.UTC)
    time.sleep(OUTAGE_S)
    rounds = _assert_local_loop_alive(agent, rounds, OUTAGE_S)
    restarted = time.monotonic()
    kube_support.restart_apiserver()
    wait_for(
        lambda: (_heartbeat(kubectl, node) or stopped_at) > stopped_at,
        timeout=60,
        what="the status to catch up after the restart",
    )
    restart_caught_up_s = time.monotonic() - restarted
    code, _ = agent.get("/readyz")
    assert code == 200, agent.log()[-3000:]
    assert "Traceback" not in agent.log(), agent.log()[-3000:]

    # ---- the operator's side ----------------------------------------------------------
    # Nothing was torn down for want of a watch: the node's spec is the one written
    # before the outage (same generation), and the operator ran through it.
    # (kopf itself logs a traceback when the restarting apiserver fails a watch with a
    # 404; the operator then resumes kopf in the same process: it must not have exited,
    # and none of its own lines may be an error.)
    assert operator.process.poll() is None, operator.log()[-3000:]
    own_errors = [
        line for line in operator.log().splitlines() if "damon_operator" in line and "ERROR" in line
    ]
    assert not own_errors, own_errors[:5]
    assert kube_support.assigned_keys(kubectl, node) == assigned
    assert _generation(kubectl, node) == spec_generation, "the node's spec was rewritten"
    # The scheme's status converges within one resync, and a change made now is
    # reconciled (the operator's watches are back).
    wait_for(
        lambda: _nodes_ready(kubectl, name) == "1/1",
        timeout=RESYNC_S + 5,
        what="the scheme's status within one resync",
    )
    edited = time.monotonic()
    scheme["spec"]["schemes"].append({"name": "watch-too", "action": "stat"})
    apply(scheme)
    wait_for(
        lambda: _generation(kubectl, node) > spec_generation,
        timeout=RESYNC_S + 5,
        what="an edit after the outage to reach the node's spec",
    )
    edit_s = time.monotonic() - edited
    record_property(
        "figures",
        f"status caught up {caught_up_s:.1f} s after a {OUTAGE_S:.0f} s freeze and "
        f"{restart_caught_up_s:.1f} s after the apiserver's restart (restart included); "
        f"node spec untouched through both; an edit after them reached the node in "
        f"{edit_s:.1f} s",
    )


def test_restart_apiserver_is_idempotent() -> None:
    # The fixture above relies on it being safe to call when the apiserver runs.
    kube_support.restart_apiserver()
    assert subprocess.run(["kill", "-0", str(_apiserver_pid())], check=False).returncode == 0
