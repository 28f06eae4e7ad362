"""Guest side of test_vm_pod_churn: pods come and go under pod-targeted schemes.

The guest is one node of the host's control plane (as in cluster_agent.py). The host
creates and deletes Pod objects bound to this node; no kubelet runs here, so this script
plays kubelet's part for the cgroups: the host keeps the live set in ``pods.json`` in the
share (``{uid: container_id}``), and every poll the script makes a new pod's cgroups in a
systemd-driver kubelet's layout (BestEffort) with one small process in its container
cgroup, and for a pod gone from the set kills the process and removes the cgroups, as
kubelet does when a pod is deleted.

Meanwhile it watches what the kernel runs (``guest_lib.staged_targets``: every kdamond
that is on, its vaddr targets' pids and its filters' memcg paths) and notes, per pod,
when its process started and when its pid first showed in a vaddr kdamond and its
container's memcg in a paddr one: the pod-start-to-kernel latency, through the apiserver,
the agent's watch, planning and the commit. It also notes every kdamond thread seen (a
restart shows as a new pid).

The host writes ``settle`` once it stopped churning; the script waits ``settle_s`` and
then records what the kernel runs against the pods that live: a pid or memcg of a
deleted pod still there is a leak, a live pod missing is a miss. Then it waits for
``teardown`` (the host deleted its schemes), for the kdamonds to stop, stops the agent
and writes ``result.json``. A time limit ends the watch whatever the host does.
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

SHARE = Path(os.environ.get("SHARE", "/tmp/share"))
POLL_S = 0.2
params = json.loads(Path("params.json").read_text())
t0 = time.monotonic()


def elapsed() -> float:
    return round(time.monotonic() - t0, 2)


def wanted_pods() -> dict[str, str]:
    try:
        parsed: dict[str, str] = json.loads((SHARE / "pods.json").read_text())
        return parsed
    except (FileNotFoundError, ValueError):
        return {}  # not written yet, or replaced while we read


class Pod:
    """A pod's cgroups and its one process, as kubelet would run them."""

    def __init__(self, uid: str, container_id: str) -> None:
        self.uid = uid
        self.container = guest_lib.kubelet_pod_cgroup(uid, container_id, "besteffort")
        self.pod = self.container.rsplit("/", 1)[0]
        directory = guest_lib.make_cgroup(self.container)
        procs = directory / "cgroup.procs"
        self.process = subprocess.Popen(
            ["sleep", "3600"],
            preexec_fn=lambda: procs.write_text(f"{os.getpid()}\n"),  # noqa: PLW1509
        )
        self.started = elapsed()

    def remove(self) -> None:
        self.process.kill()
        self.process.wait()
        guest_lib.remove_cgroup(self.container)
        guest_lib.remove_cgroup(self.pod)


def big_pod(uid: str, container_id: str, count: int) -> tuple[str, subprocess.Popen[bytes]]:
    """A pod running ``count`` processes (mode auto monitors such a pod's physical
    memory): a shell in its container cgroup starts them (a shell forks cheaply; the
    children inherit its cgroup) and waits; its session is killed at the end."""
    container = guest_lib.kubelet_pod_cgroup(uid, container_id, "besteffort")
    procs = guest_lib.make_cgroup(container) / "cgroup.procs"
    script = (
        f"echo $$ > {procs}; i=0; "
        f"while [ $i -lt {count} ]; do sleep 3600 & i=$((i+1)); done; echo started; wait"
    )
    shell = subprocess.Popen(
        ["sh", "-c", script],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert shell.stdout is not None
    shell.stdout.readline()  # "started": every process runs
    return container, shell


damon_stat_was_on = guest_lib.damon_stat_off()
agent = guest_lib.start_agent(params["node"], SHARE, status_interval_s=params["status_interval_s"])
big: dict[str, Any] = {}
big_shell: subprocess.Popen[bytes] | None = None
if params.get("big_pod"):
    spec = params["big_pod"]
    began = time.monotonic()
    big["container"], big_shell = big_pod(spec["uid"], spec["container_id"], spec["processes"])
    directory = guest_lib.CGROUP_ROOT / big["container"].strip("/")
    big["processes"] = len((directory / "cgroup.procs").read_text().split())
    big["spawn_s"] = round(time.monotonic() - began, 1)

pods: dict[str, Pod] = {}
ended: dict[str, dict[str, Any]] = {}  # uid -> what became of a deleted pod
seen_vaddr: dict[str, float] = {}
seen_paddr: dict[str, float] = {}
# The kdamond threads seen once the first churn pod ran in both modes (the plan's last
# change of contexts) until the final look: a restart would show a new one.
steady_threads: set[int] = set()
polls = 0
settle_at: float | None = None
final: dict[str, Any] | None = None
teardown_seen: float | None = None
monitoring_gone_at: float | None = None
limit_s = float(params["watch_limit_s"])
vaddr_pids: set[int] = set()
paddr_memcgs: set[str] = set()

while time.monotonic() - t0 < limit_s and agent.poll() is None:
    wanted = wanted_pods()
    for uid in set(pods) - set(wanted):
        pod = pods.pop(uid)
        # Still in the kernel at the last look, as its cgroups go? (Deleted gracefully, the
        # agent should have dropped it on its deletionTimestamp.)
        kept = pod.process.pid in vaddr_pids or pod.container in paddr_memcgs
        pod.remove()
        ended[uid] = {
            "started": pod.started,
            "removed": elapsed(),
            "pod_cgroup": pod.pod,
            "in_kernel_at_removal": kept,
        }
    for uid, container_id in wanted.items():
        if uid not in pods and uid not in ended:
            pods[uid] = Pod(uid, container_id)
    running = guest_lib.staged_targets()
    now = elapsed()
    polls += 1
    vaddr_pids = {p for k in running.values() if k["operations"] == "vaddr" for p in k["pids"]}
    paddr_memcgs = {m for k in running.values() if k["operations"] == "paddr" for m in k["memcgs"]}
    for uid, pod in pods.items():
        if uid not in seen_vaddr and pod.process.pid in vaddr_pids:
            seen_vaddr[uid] = now
        if uid not in seen_paddr and pod.container in paddr_memcgs:
            seen_paddr[uid] = now
    if final is None and set(seen_vaddr) & set(seen_paddr):
        steady_threads |= {k["pid"] for k in running.values() if k["pid"] > 0}
    if big and "paddr_seen_s" not in big and big["container"] in paddr_memcgs:
        big["paddr_seen_s"] = now
        small = sum(p.process.pid in vaddr_pids for p in pods.values())
        big["processes_in_vaddr"] = len(vaddr_pids) - small
    if settle_at is None and (SHARE / "settle").exists():
        settle_at = time.monotonic()
    if (
        final is None
        and settle_at is not None
        and time.monotonic() - settle_at >= float(params["settle_s"])
    ):
        live_pids = {p.process.pid for p in pods.values()}
        live_memcgs = {p.container for p in pods.values()}
        deleted = tuple(p["pod_cgroup"] + "/" for p in ended.values())
        final = {
            "t": now,
            "live_pods": len(pods),
            "kdamonds": {str(i): k for i, k in running.items()},
            "vaddr_missing": len(live_pids - vaddr_pids),
            "vaddr_leaked": sorted(vaddr_pids - live_pids),
            "paddr_missing": len(live_memcgs - paddr_memcgs),
            "paddr_leaked": sorted(m for m in paddr_memcgs if (m + "/").startswith(deleted)),
        }
        guest_lib.write_atomically("final.json", final)
    if teardown_seen is None and (SHARE / "teardown").exists():
        teardown_seen = elapsed()
    if teardown_seen is not None:
        if not running:
            monitoring_gone_at = elapsed()
            break
        if elapsed() - teardown_seen > float(params["teardown_limit_s"]):
            break
    if polls % 5 == 0:
        guest_lib.write_atomically(
            "progress.json",
            {"t": now, "pods": len(pods), "ended": len(ended), "kdamonds": len(running)},
        )
    time.sleep(POLL_S)

agent_running_at_end = agent.poll() is None
agent_rc = guest_lib.stop_agent(agent)
for pod in pods.values():
    pod.remove()
if big_shell is not None:
    os.killpg(big_shell.pid, signal.SIGKILL)
    big_shell.wait()


def latencies(seen: dict[str, float]) -> list[float]:
    started = {uid: p["started"] for uid, p in ended.items()} | {
        uid: p.started for uid, p in pods.items()
    }
    return sorted(round(seen[uid] - started[uid], 2) for uid in seen)


lived = {uid: p["removed"] - p["started"] for uid, p in ended.items()}
guest_lib.write_json(
    "result.json",
    {
        "kernel": os.uname().release,
        "damon_stat_was_on": damon_stat_was_on,
        "polls": polls,
        "pods_started": len(ended) + len(pods),
        "pods_removed": len(ended),
        "dropped_before_removal": sum(not p["in_kernel_at_removal"] for p in ended.values()),
        "pods_never_seen_vaddr": sorted(set(lived) - set(seen_vaddr)),
        "pods_never_seen_paddr": sorted(set(lived) - set(seen_paddr)),
        "shortest_life_s": round(min(lived.values()), 2) if lived else None,
        "vaddr_latency_s": latencies(seen_vaddr),
        "paddr_latency_s": latencies(seen_paddr),
        "steady_kdamond_threads": sorted(steady_threads),
        "big_pod": big,
        "final": final,
        "teardown_seen_s": teardown_seen,
        "monitoring_gone_s": monitoring_gone_at,
        "agent_running_at_end": agent_running_at_end,
        "agent_rc": agent_rc,
        "agents_left": guest_lib.agent_processes(),
        "nr_kdamonds_after_agent": guest_lib.nr_kdamonds(),
    },
)
