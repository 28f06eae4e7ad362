"""What a VM node's host-side test sees inside the guest, as one JSON document.

Run in the guest by ``deployed.Deployment`` (through ``VmNode.exec``, with the project's
Python; the guest's root is the host's, so the repository is at the same path):

    python node_probe.py                 # one document on stdout
    python node_probe.py --serve DIR     # a document each time DIR/request appears

A Python start costs the emulated node seconds of CPU: one per probe, every few seconds,
took about a third of its two vCPUs, and slowed the pods the test times. So the test starts
one server (``--serve``) and asks it: it writes an id into ``DIR/request``; the server
answers in ``DIR/answer`` (``{"id": ..., "document": ...}``, replaced atomically) and
removes the request. It polls five times a second, and ends with the guest.

- ``workloads``: every process of the workload image (tests/vm/guest_lib.py's workload,
  in a pod): its pod's UID (from its cgroup, kubelet's layout), its pod cgroup's
  memory.current and memory.swap.current, and the pages of its hot and cold arrays per
  NUMA node (negative keys: not present, e.g. swapped out), from the ranges it reported
  in its own /tmp/workload.json (read through /proc/PID/root);
- ``kdamonds``: the DAMON sysfs kdamonds (index, state, pid);
- ``agents``: every ``damon-agent daemon`` process: pid, RSS and CPU seconds (user +
  system, all threads) so far;
- ``memory``: MiB free on each NUMA node and of swap used (the node's own reclaim, which
  swaps any pod's pages when a node runs short, tells apart from a scheme's pageout);
- ``cpu``: CPU seconds so far of the whole guest (busy and all, from /proc/stat), of the
  workloads together, of the kdamonds together, and of every process by its command name
  (``by_command``): where an emulated node's two vCPUs go.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Callable
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


def _int_file(path: Path, read: Callable[[Path], str] = Path.read_text) -> int | None:
    try:
        return int(read(path).split()[0])
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


def _sysfs_text(path: Path, attempts: int = 50) -> str:
    """A DAMON sysfs file's text. DAMON's sysfs takes its lock with a trylock and answers
    EBUSY meanwhile: the agent writing its kdamonds' files then is no error (a probe died
    of it once), so try again a little later."""
    for _ in range(attempts - 1):
        try:
            return path.read_text()
        except OSError as error:
            if error.errno != errno.EBUSY:
                raise
            time.sleep(0.02)
    return path.read_text()


def kdamonds() -> list[dict[str, Any]]:
    found = []
    try:
        count = int(_sysfs_text(KDAMONDS / "nr_kdamonds"))
    except (OSError, ValueError):
        return []
    for index in range(count):
        directory = KDAMONDS / str(index)
        found.append(
            {
                "index": index,
                "state": _sysfs_text(directory / "state").strip(),
                "pid": _int_file(directory / "pid", read=_sysfs_text),
            }
        )
    return found


def _cpu_s(pid: str | int) -> float | None:
    """User + system seconds of a process, all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # Fields after the command: state is [0], utime [11], stime [12] (proc(5), 14 and 15).
    return (int(fields[11]) + int(fields[12])) / TICKS


def agent(pid: str) -> dict[str, Any] | None:
    cpu_s = _cpu_s(pid)
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    if cpu_s is None:
        return None
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
    return {"pid": int(pid), "rss_bytes": rss_kib * 1024, "cpu_s": cpu_s}


def node_cpu_s() -> dict[str, float]:
    """Seconds of all the guest's CPUs so far: busy (not idle or iowait) and all."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    ticks = [int(value) for value in first[:8]]
    return {"busy_s": (sum(ticks) - ticks[3] - ticks[4]) / TICKS, "all_s": sum(ticks) / TICKS}


def memory() -> dict[str, float]:
    """MiB free on each NUMA node (``node0_free_mib`` ...) and of swap used."""
    found: dict[str, float] = {}
    for node in sorted(Path("/sys/devices/system/node").glob("node[0-9]*")):
        for line in (node / "meminfo").read_text().splitlines():
            # "Node 0 MemFree:  123456 kB"
            parts = line.split()
            if parts[2] == "MemFree:":
                found[f"{node.name}_free_mib"] = round(int(parts[3]) / 1024, 1)
    meminfo = {
        line.split(":")[0]: int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
    }
    found["swap_used_mib"] = round((meminfo["SwapTotal"] - meminfo["SwapFree"]) / 1024, 1)
    return found


def _command(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def document() -> dict[str, Any]:
    workloads, agents = [], []
    by_command: dict[str, float] = {}
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        name = _command(pid)
        if name.startswith("kworker"):
            name = "kworker"  # kworker/1:2-events and so on: one name for them all
        used = _cpu_s(pid) or 0.0
        by_command[name] = by_command.get(name, 0.0) + used
        argv = _cmdline(pid)
        if any(arg.endswith("guest_lib.py") for arg in argv) and "workload" in argv:
            found = workload(pid)
            if found is not None:
                found["cpu_s"] = used
                workloads.append(found)
        elif any(arg.endswith("damon-agent") for arg in argv[:2]) and "daemon" in argv:
            seen = agent(pid)
            if seen is not None:
                agents.append(seen)
    threads = kdamonds()
    cpu = node_cpu_s() | {
        "workloads_s": sum(w["cpu_s"] for w in workloads),
        "kdamonds_s": sum(_cpu_s(k["pid"]) or 0.0 for k in threads if k["pid"]),
        "by_command": by_command,
    }
    return {
        "workloads": workloads,
        "kdamonds": threads,
        "agents": agents,
        "memory": memory(),
        "cpu": cpu,
    }


def serve(directory: Path) -> None:
    request, answer = directory / "request", directory / "answer"
    while True:
        try:
            asked = request.read_text().strip()
        except OSError:
            asked = ""
        if asked:
            partial = directory / "answer.part"
            partial.write_text(json.dumps({"id": asked, "document": document()}))
            partial.rename(answer)
            request.unlink(missing_ok=True)
        time.sleep(0.2)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--serve"] and len(argv) == 2:
        serve(Path(argv[1]))
    elif not argv:
        json.dump(document(), sys.stdout)
    else:
        sys.exit("usage: node_probe.py [--serve DIR]")


if __name__ == "__main__":
    main(sys.argv[1:])
