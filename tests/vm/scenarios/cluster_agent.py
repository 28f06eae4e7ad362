"""Guest side of test_vm_cluster: the node agent in the guest, driven by the host's cluster.

The guest is one node of the control plane running on the host (reached at 10.0.2.2).
This script only sets the node up and watches; every DAMON decision comes from the
cluster: the host applies a ClusterDamonScheme, its operator assigns it to this node's
DamonNode, and the agent started here runs the kdamond.

Steps: NUMA balancing off (only DAMOS moves pages), a workload whose hot and cold arrays
start on node 1 (the CPU-less, lower-tier node) — with ``params["pod"]``, in the cgroup a
kubelet would give that pod, beside a "decoy" workload no scheme selects — then
``damon-agent daemon`` for the node
with the kubeconfig the host left in the share. Every second the page placement of both
arrays and the number of kdamonds go to ``progress.json`` in the share, which the host
reads while it drives the cluster. The host writes ``teardown`` into the share once it
deleted the scheme; the script then waits for the agent to turn its kdamond off, stops
the agent with SIGTERM and writes ``result.json``. A time limit ends the watch whatever
the host does, so the guest always powers off in time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import guest_lib
import numpy as np

from damon_agent.node import numa

SHARE = Path(os.environ.get("SHARE", "/tmp/share"))
params = json.loads(Path("params.json").read_text())
t0 = time.monotonic()


def elapsed() -> float:
    return round(time.monotonic() - t0, 1)


def write_atomically(name: str, data: Any) -> None:
    # The host reads these while the guest writes: replace, never truncate.
    tmp = SHARE / f".{name}.tmp"
    tmp.write_text(json.dumps(data))
    tmp.rename(SHARE / name)


Path("/proc/sys/kernel/numa_balancing").write_text("0")
topology = numa.read_topology()
(dram,) = topology.dram_nodes
(cxl,) = topology.cxl_nodes
pod = params.get("pod")
app_cgroup: str | None = None
decoy: guest_lib.Workload | None = None
if pod:
    # The pod the host created (no kubelet here): its cgroup as a systemd-driver kubelet
    # makes it (a pod without resources is BestEffort), named by the apiserver's uid.
    app_cgroup = guest_lib.kubelet_pod_cgroup(pod["uid"], pod["container_id"], "besteffort")
    guest_lib.make_cgroup(app_cgroup)
    # As hot as the pod's workload, in a cgroup no scheme selects: it must stay put.
    guest_lib.make_cgroup("/decoy")
    decoy = guest_lib.Workload.start(
        hot_mib=16, cold_mib=16, node=cxl, pause_s=0.01, cgroup="/decoy", name="decoy"
    )
app = guest_lib.Workload.start(
    hot_mib=params["hot_mib"],
    cold_mib=params["cold_mib"],
    node=cxl,
    pause_s=0.01,
    cgroup=app_cgroup,
)
agent_log = (SHARE / "agent.log").open("wb")
agent = subprocess.Popen(
    [
        str(Path(os.environ["REPO"]) / ".venv" / "bin" / "damon-agent"),
        "daemon",
        "--node-name",
        params["node"],
        "--kubeconfig",
        str(SHARE / "kubeconfig"),
        "--backend",
        "kernel",
        "--listen",
        "127.0.0.1:8080",
        "--state-dir",
        "/tmp/damon-agent-state",
        "--tick",
        "1",
        "--status-interval",
        str(params["status_interval_s"]),
    ],
    stdout=agent_log,
    stderr=subprocess.STDOUT,
)


def placement_of(workload: guest_lib.Workload, span: tuple[int, int]) -> dict[int, int]:
    pages = np.arange(span[0], span[1], guest_lib.PAGE, dtype=np.uint64)
    values, counts = np.unique(numa.page_nodes(workload.pid, pages), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def sample() -> dict[str, Any]:
    taken = {
        "t": elapsed(),
        "hot": placement_of(app, app.hot),
        "cold": placement_of(app, app.cold),
        "kdamonds": guest_lib.nr_kdamonds(),
        "loops": app.loops(),
    }
    if decoy is not None:
        taken["decoy_hot"] = placement_of(decoy, decoy.hot)
    return taken


samples = [sample()]
progress: dict[str, Any] = {"dram": dram, "cxl": cxl, "samples": samples}
write_atomically("progress.json", progress)
teardown_seen: float | None = None
kdamonds_gone_at: float | None = None
limit_s = float(params["watch_limit_s"])
while time.monotonic() - t0 < limit_s:
    time.sleep(1.0)
    samples.append(sample())
    if samples[-1]["kdamonds"] and "kdamond_schemes" not in progress:
        time.sleep(1.0)  # the agent writes the whole tree before it turns the kdamond on
        progress["kdamond_schemes"] = guest_lib.kdamond_schemes()
    progress["agent_rc"] = agent.poll()
    write_atomically("progress.json", progress)
    if agent.poll() is not None:
        break  # the agent died: nothing more will happen here
    if teardown_seen is None and (SHARE / "teardown").exists():
        teardown_seen = elapsed()
    if teardown_seen is not None:
        if samples[-1]["kdamonds"] == 0:
            kdamonds_gone_at = elapsed()
            break
        if elapsed() - teardown_seen > float(params["teardown_limit_s"]):
            break

agent_running_at_end = agent.poll() is None
agent.send_signal(signal.SIGTERM)
try:
    agent_rc: int | None = agent.wait(timeout=30)
except subprocess.TimeoutExpired:
    agent.kill()
    agent_rc = None
agent_log.close()
app.stop()
if decoy is not None:
    decoy.stop()
guest_lib.write_json(
    "result.json",
    {
        **progress,
        "teardown_seen_s": teardown_seen,
        "kdamonds_gone_s": kdamonds_gone_at,
        "agent_running_at_end": agent_running_at_end,
        "agent_rc": agent_rc,
        "nr_kdamonds_after_agent": guest_lib.nr_kdamonds(),
    },
)
