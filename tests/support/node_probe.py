"""What a VM node's host-side test sees inside the guest, as one JSON document on stdout.

Run in the guest by ``deployed.Deployment`` (through ``VmNode.exec``, with the project's
Python; the guest's root is the host's, so the repository is at the same path):

    python node_probe.py

- ``workloads``: every process of the workload image (tests/vm/guest_lib.py's workload,
  in a pod): its pod's UID (from its cgroup, kubelet's layout), its pod cgroup's
  memory.current and memory.swap.current, and the pages of its hot and cold arrays per
  NUMA node (negative keys: not present, e.g. swapped out), from the ranges it reported
  in its own /tmp/workload.json (read through /proc/PID/root);
- ``kdamonds``: the DAMON sysfs kdamonds (index, state, pid);
- ``agents``: every ``damon-agent daemon`` process: pid, RSS and CPU seconds (user +
  system, all threads) so far.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "vm"))
sys.path.insert(0, str(REPO / "agent"))

import guest_lib  # noqa: E402  (after the path set-up above)

CGROUP_ROOT = Path("/sys/fs/cgroup")
KDAMONDS = Path("/sys/kernel/mm/damon/admin/kdamonds")
TICKS = os.sysconf("SC_CLK_TCK")


def _cmdline(pid: str) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _cgroup(pid: str) -> str:
    # cgroup v2: one line, "0::/kubepods/burstable/pod<uid>/<container id>".
    return Path(f"/proc/{pid}/cgroup").read_text().strip().partition("::")[2]


def _pod_uid(cgroup: str) -> str | None:
    for part in cgroup.split("/"):
        if part.startswith("pod"):
            return part[3:].replace("_", "-")
    return None


def _int_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def workload(pid: str) -> dict[str, Any] | None:
    try:
        reported = json.loads(Path(f"/proc/{pid}/root/tmp/workload.json").read_text())
        cgroup = _cgroup(pid)
    except (OSError, ValueError):
        return None  # still starting, or gone
    pod_dir = CGROUP_ROOT / cgroup.lstrip("/")
    pod_dir = pod_dir.parent  # the container's cgroup is below the pod's
    return {
        "pid": int(pid),
        "pod_uid": _pod_uid(cgroup),
        "memory_current": _int_file(pod_dir / "memory.current"),
        "swap_current": _int_file(pod_dir / "memory.swap.current"),
        "hot": guest_lib.page_nodes(int(pid), *reported["hot"]),
        "cold": guest_lib.page_nodes(int(pid), *reported["cold"]),
    }


def kdamonds() -> list[dict[str, Any]]:
    found = []
    try:
        count = int((KDAMONDS / "nr_kdamonds").read_text())
    except (OSError, ValueError):
        return []
    for index in range(count):
        directory = KDAMONDS / str(index)
        found.append(
            {
                "index": index,
                "state": (directory / "state").read_text().strip(),
                "pid": _int_file(directory / "pid"),
            }
        )
    return found


def agent(pid: str) -> dict[str, Any] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
    # Fields after the command: state is [0], utime [11], stime [12] (proc(5), 14 and 15).
    cpu_s = (int(fields[11]) + int(fields[12])) / TICKS
    return {"pid": int(pid), "rss_bytes": rss_kib * 1024, "cpu_s": cpu_s}


def main() -> None:
    workloads, agents = [], []
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        argv = _cmdline(pid)
        if any(arg.endswith("guest_lib.py") for arg in argv) and "workload" in argv:
            found = workload(pid)
            if found is not None:
                workloads.append(found)
        elif any(arg.endswith("damon-agent") for arg in argv[:2]) and "daemon" in argv:
            seen = agent(pid)
            if seen is not None:
                agents.append(seen)
    json.dump({"workloads": workloads, "kdamonds": kdamonds(), "agents": agents}, sys.stdout)


if __name__ == "__main__":
    main()
