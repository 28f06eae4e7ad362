"""Guest side of test_vm_cluster: the node agent in the guest, driven by the host's cluster.

The guest is one node of the control plane running on the host (reached at 10.0.2.2).
This script only sets the node up and watches; every decision comes from the cluster:
the host applies schemes, its operator assigns them to this node's DamonNode, and the
agent started here carries them out, on the kernel's DAMON or on its own userspace
engine, whichever ``params["backend"]`` (``--backend``) makes it take.

Steps: NUMA balancing off (only the agent moves pages), then the workloads of
``params["workloads"]``, each with a hot and a cold array starting on node 1 (the
CPU-less, lower-tier node), each in the cgroup a kubelet would give its pod
(``"pod": {"uid", "container_id"}``), in a plain cgroup (``"cgroup"``), or where the
script runs. Then ``damon-agent daemon`` for the node with the kubeconfig the host left
in the share. Every second a sample goes to ``progress.json`` in the share, which the
host reads while it drives the cluster: per workload the NUMA placement of both arrays
(move_pages queries), how many of their pages are resident (pagemap's present bit),
its major faults (swap-ins) and its hot loop's count; and what runs for the agent: the
number of kdamonds where the kernel has DAMON sysfs, else the schemes the agent reports
at its own ``/v1/snapshot``.

The host writes ``teardown`` into the share once it deleted its schemes; the script then
waits until nothing runs any more (no kdamond, or no scheme in the agent's snapshot),
stops the agent with SIGTERM, looks for any agent process left and writes
``result.json``. A time limit ends the watch whatever the host does, so the guest always
powers off in time.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import guest_lib
import numpy as np
import yaml

from damon_agent.node import numa

SHARE = Path(os.environ.get("SHARE", "/tmp/share"))
AGENT_URL = "http://127.0.0.1:8080"
params = json.loads(Path("params.json").read_text())
t0 = time.monotonic()


def elapsed() -> float:
    return round(time.monotonic() - t0, 1)


def swap_total_kib() -> int:
    # pageout reclaims anonymous memory into swap: /init's zram device (VmConfig.zram).
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("SwapTotal:"):
            return int(line.split()[1])
    return 0


Path("/proc/sys/kernel/numa_balancing").write_text("0")
topology = numa.read_topology()
(dram,) = topology.dram_nodes
(cxl,) = topology.cxl_nodes
damon_sysfs = guest_lib.DAMON_ADMIN.is_dir()
workloads: dict[str, guest_lib.Workload] = {}
for spec in params["workloads"]:
    cgroup: str | None = spec.get("cgroup")
    pod = spec.get("pod")
    if pod:
        # The pod the host created (no kubelet here): its cgroup as a systemd-driver
        # kubelet makes it (a pod without resources is BestEffort), named by its uid.
        cgroup = guest_lib.kubelet_pod_cgroup(pod["uid"], pod["container_id"], "besteffort")
    if cgroup:
        guest_lib.make_cgroup(cgroup)
    workloads[spec["name"]] = guest_lib.Workload.start(
        hot_mib=spec["hot_mib"],
        cold_mib=spec["cold_mib"],
        node=cxl,
        pause_s=0.01,
        cgroup=cgroup,
        name=spec["name"],
    )
agent = guest_lib.start_agent(
    params["node"],
    SHARE,
    backend=params.get("backend", "kernel"),
    status_interval_s=params["status_interval_s"],
)


def placement_of(workload: guest_lib.Workload, span: tuple[int, int]) -> dict[int, int]:
    pages = np.arange(span[0], span[1], guest_lib.PAGE, dtype=np.uint64)
    values, counts = np.unique(numa.page_nodes(workload.pid, pages), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def major_faults(pid: int) -> int:
    # /proc/PID/stat after the command's closing parenthesis: field 3 (state) onwards;
    # majflt is field 12. A swap-in from zram is a major fault.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12 - 3])


def workload_sample(workload: guest_lib.Workload) -> dict[str, Any]:
    return {
        "hot": placement_of(workload, workload.hot),
        "cold": placement_of(workload, workload.cold),
        "hot_resident": guest_lib.resident_pages(workload.pid, *workload.hot),
        "cold_resident": guest_lib.resident_pages(workload.pid, *workload.cold),
        "majflt": major_faults(workload.pid),
        "loops": workload.loops(),
    }


def kubeconfig_token() -> str:
    """The bearer token of the kubeconfig the host handed over (the admin's)."""
    config = yaml.safe_load((SHARE / "kubeconfig").read_text())
    return next(str(u["user"]["token"]) for u in config["users"] if u["user"].get("token"))


# /v1/snapshot answers only bearer tokens the API server accepts and allows to get
# damonnodes/snapshot (runtime/guard.py): the admin's may.
SNAPSHOT_REQUEST = urllib.request.Request(
    AGENT_URL + "/v1/snapshot", headers={"Authorization": f"Bearer {kubeconfig_token()}"}
)


def agent_report() -> dict[str, Any] | None:
    """What the agent says it runs (its /v1/snapshot): None when it does not answer,
    ``{"error": ...}`` when it refuses."""
    try:
        with urllib.request.urlopen(SNAPSHOT_REQUEST, timeout=5) as response:
            document = json.load(response)
    except urllib.error.HTTPError as error:
        return {"error": f"HTTP {error.code}"}
    except (OSError, ValueError):
        return None
    return {
        "backend": document.get("backend"),
        "schemes": sorted(e["scheme"] for e in document.get("schemes", [])),
        "operations": sorted({e["operations"] for e in document.get("schemes", [])}),
        "targets": sorted({len(e["snapshot"]["targets"]) for e in document.get("schemes", [])}),
    }


def sample() -> dict[str, Any]:
    return {
        "t": elapsed(),
        "kdamonds": guest_lib.nr_kdamonds() if damon_sysfs else None,
        # Without DAMON sysfs the agent's own report is what shows its schemes running.
        "agent": None if damon_sysfs else agent_report(),
        "workloads": {name: workload_sample(w) for name, w in workloads.items()},
    }


def nothing_runs(taken: dict[str, Any]) -> bool:
    if damon_sysfs:
        return bool(taken["kdamonds"] == 0)
    return taken["agent"] is not None and taken["agent"].get("schemes") == []


samples = [sample()]
progress: dict[str, Any] = {
    "dram": dram,
    "cxl": cxl,
    "damon_sysfs": damon_sysfs,
    "kernel": os.uname().release,
    "swap_kib": swap_total_kib(),
    "page": guest_lib.PAGE,
    "spans": {name: {"hot": w.hot, "cold": w.cold} for name, w in workloads.items()},
    "samples": samples,
}
guest_lib.write_atomically("progress.json", progress)
teardown_seen: float | None = None
monitoring_gone_at: float | None = None
limit_s = float(params["watch_limit_s"])
while time.monotonic() - t0 < limit_s:
    time.sleep(1.0)
    samples.append(sample())
    if samples[-1]["kdamonds"] and "kdamond_schemes" not in progress:
        time.sleep(1.0)  # the agent writes the whole tree before it turns the kdamond on
        progress["kdamond_schemes"] = guest_lib.kdamond_schemes()
    progress["agent_rc"] = agent.poll()
    guest_lib.write_atomically("progress.json", progress)
    if agent.poll() is not None:
        break  # the agent died: nothing more will happen here
    if teardown_seen is None and (SHARE / "teardown").exists():
        teardown_seen = elapsed()
    if teardown_seen is not None:
        if nothing_runs(samples[-1]):
            monitoring_gone_at = elapsed()
            break
        if elapsed() - teardown_seen > float(params["teardown_limit_s"]):
            break

agent_running_at_end = agent.poll() is None
agent_rc = guest_lib.stop_agent(agent)
for workload in workloads.values():
    workload.stop()
guest_lib.write_json(
    "result.json",
    {
        **progress,
        "teardown_seen_s": teardown_seen,
        "monitoring_gone_s": monitoring_gone_at,
        "agent_running_at_end": agent_running_at_end,
        "agent_rc": agent_rc,
        "agents_left": guest_lib.agent_processes(),
        "nr_kdamonds_after_agent": guest_lib.nr_kdamonds() if damon_sysfs else None,
    },
)
