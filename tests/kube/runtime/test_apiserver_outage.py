"""The node-local loop goes on while the apiserver hangs, stops and restarts.

A sim agent runs a scheme assigned through the real operator and apiserver. Then the
apiserver is frozen (SIGSTOP: connections hang, as on an overloaded or partitioned
apiserver), later killed and started again by scripts/controlplane.sh (etcd keeps its
data). Throughout, the agent's own loop must go on: ``/healthz`` answers with a fresh
tick, PSI feedback keeps its one-second period (its rounds counter in /metrics), and the
plan keeps running; once the apiserver answers again, the DamonNode status catches up
(a heartbeat newer than the outage) within a few seconds.

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


def _apiserver_pid() -> int:
    return int((CONTROLPLANE_DIR / "apiserver.pid").read_text().strip())


def _feedback_rounds(agent: Any) -> int:
    code, text = agent.get("/metrics")
    assert code == 200, text
    found = re.search(r"^damon_agent_feedback_rounds_total (\d+(?:\.\d+)?)", text, re.M)
    assert found, "no damon_agent_feedback_rounds_total in /metrics"
    return int(float(found.group(1)))


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
    run_operator()
    apply(
        {
            "apiVersion": "damon.io/v1alpha1",
            "kind": "ClusterDamonScheme",
            "metadata": {"name": f"outage-{unique}"},
            "spec": {
                "wholeNode": True,
                "nodeSelector": {"matchLabels": {"damon.io/e2e-outage": unique}},
                "schemes": [{"name": "watch", "action": "stat"}],
            },
        }
    )
    agent = run_agent(node, "sim", "--status-interval", "2")
    wait_for(lambda: _heartbeat(kubectl, node), timeout=60, what="a first DamonNode status")
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
    record_property(
        "figures",
        f"status caught up {caught_up_s:.1f} s after a {OUTAGE_S:.0f} s freeze and "
        f"{restart_caught_up_s:.1f} s after the apiserver's restart (restart included)",
    )


def test_restart_apiserver_is_idempotent() -> None:
    # The fixture above relies on it being safe to call when the apiserver runs.
    kube_support.restart_apiserver()
    assert subprocess.run(["kill", "-0", str(_apiserver_pid())], check=False).returncode == 0
