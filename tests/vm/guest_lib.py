"""Guest-side helpers for the VM scenarios: workloads, cgroups, page placement, DAMON sysfs.

The harness copies this file into every boot's share, so guest scripts (run with the
project's Python, chrooted into the host root) ``import guest_lib``. Guest-only: the guest
finds it beside its script, not through tests/support, so it lives here with scenarios/.
It stays small and leans on the standard library and numpy only, so the scenarios
exercise the project's modules explicitly rather than through this file.

The workload (``python guest_lib.py workload ...``, started by ``Workload.start``) is the
scenarios' ground truth: it joins a cgroup, optionally binds its memory to one NUMA node
while it allocates, touches a *cold* array once and then touches one word of every page
of a *hot* array in a loop, forever. It reports its pid, the page-aligned address ranges
of both arrays and, continuously, its loop count, so a test can check that the hot loop
kept running while the kernel reclaimed or migrated memory under it.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
CGROUP_ROOT = Path("/sys/fs/cgroup")
DAMON_ADMIN = Path("/sys/kernel/mm/damon/admin")
MIB = 1 << 20

_MPOL_DEFAULT = 0
_MPOL_BIND = 2
_SYS_SET_MEMPOLICY = 238  # x86_64


class GuestError(Exception):
    """A guest-side step failed (message says which)."""


# ---- the workload ---------------------------------------------------------------------


def _set_mempolicy(mode: int, nodes: list[int]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    mask = ctypes.c_ulong(sum(1 << n for n in nodes))
    pointer = ctypes.byref(mask) if nodes else None
    maxnode = 64 if nodes else 0
    rc = libc.syscall(
        ctypes.c_long(_SYS_SET_MEMPOLICY), ctypes.c_long(mode), pointer, ctypes.c_ulong(maxnode)
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"set_mempolicy({mode}, {nodes}): {os.strerror(err)}")


def _page_range(array: Any) -> tuple[int, int]:
    start = int(array.ctypes.data)
    end = start + int(array.nbytes)
    return (start + PAGE - 1) // PAGE * PAGE, end // PAGE * PAGE


_HUGE = 2 * MIB
_KEEP: list[Any] = []  # the mmaps behind THP arrays live as long as the workload


def _array(mib: int, thp: bool | None) -> Any:
    """``mib`` MiB of float64 ones.

    ``thp=None``: numpy's own mapping, backed as the kernel and numpy choose (numpy advises
    huge pages for arrays of 4 MiB and more, so on a guest with THP ``always`` most of it is
    huge). Otherwise a 2 MiB-aligned slice of a private anonymous mapping advised
    MADV_HUGEPAGE (``True``) or MADV_NOHUGEPAGE (``False``, base pages only). Private, not
    Python's default shared mapping: shared anonymous memory is shmem, which THP leaves
    alone unless ``shmem_enabled`` says otherwise.
    """
    import mmap

    import numpy as np

    if thp is None:
        return np.ones(mib * MIB // 8, dtype=np.float64)
    area = mmap.mmap(-1, mib * MIB + _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    area.madvise(mmap.MADV_HUGEPAGE if thp else mmap.MADV_NOHUGEPAGE)
    _KEEP.append(area)
    base = np.frombuffer(area, dtype=np.uint8)
    offset = -int(base.ctypes.data) % _HUGE
    array = base[offset : offset + mib * MIB].view(np.float64)
    array[:] = 1.0
    return array


def huge_page_share(pid: int, span: tuple[int, int]) -> float:
    """Share of THP (AnonHugePages) in the mappings of ``pid`` that overlap ``span``.

    Per mapping, as smaps counts: the kernel merges a workload's two arrays into one
    mapping when their advice matches, so the share covers both and their alignment slack.
    """
    huge = size = 0
    overlaps = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):
            start, end = (int(x, 16) for x in first.split("-"))
            overlaps = start < span[1] and end > span[0]
            size += end - start if overlaps else 0
        elif overlaps and first == "AnonHugePages:":
            huge += int(line.split()[1]) * 1024
    return huge / size if size else 0.0


def _workload_main(args: argparse.Namespace) -> None:

    if args.cgroup:
        (CGROUP_ROOT / args.cgroup.lstrip("/") / "cgroup.procs").write_text(str(os.getpid()))
    if args.node is not None:
        _set_mempolicy(_MPOL_BIND, [args.node])
    # Cold first, then hot: separate anonymous mappings (numpy mmaps large arrays).
    thp = {"default": None, "base": False, "huge": True}[args.pages]
    cold = _array(args.cold_mib, thp)
    hot = _array(args.hot_mib, thp)
    if args.node is not None:
        # Placement was only for the start: later migrations must not fight a policy.
        _set_mempolicy(_MPOL_DEFAULT, [])
    stride = PAGE // 8
    report = {
        "pid": os.getpid(),
        "hot": _page_range(hot),
        "cold": _page_range(cold),
        "page": PAGE,
    }
    status = Path(args.status)
    tmp = status.with_suffix(".tmp")
    tmp.write_text(json.dumps(report))
    tmp.rename(status)
    # SIGUSR1: touch the cold array once more (benchmarks reset it between variants).
    retouch = {"asked": 0, "done": 0}
    signal.signal(signal.SIGUSR1, lambda *_: retouch.__setitem__("asked", retouch["asked"] + 1))
    # SIGUSR2: the hot set moves to the cold array's first hot_mib, or back (a bench of a
    # hot set that moves; Workload.move_hot_set).
    moves = {"asked": 0}
    signal.signal(signal.SIGUSR2, lambda *_: moves.__setitem__("asked", moves["asked"] + 1))
    loops = 0
    last = time.monotonic()
    counter = Path(args.status + ".loops")
    counter_tmp = Path(args.status + ".loops.tmp")
    while True:
        written = cold[: hot.size] if moves["asked"] % 2 else hot
        written[::stride] += 1.0
        loops += 1
        now = time.monotonic()
        if retouch["asked"] != retouch["done"]:
            cold[::stride] += 1.0
            retouch["done"] = retouch["asked"]
            Path(args.status + ".retouched.tmp").write_text(str(retouch["done"]))
            Path(args.status + ".retouched.tmp").rename(args.status + ".retouched")
        if now - last >= 0.25:
            # Replace, never truncate: readers must not see an empty file.
            counter_tmp.write_text(f"{loops} {now}")
            counter_tmp.rename(counter)
            last = now
        if args.pause_s:
            time.sleep(args.pause_s)


@dataclass
class Workload:
    """A running workload process and the ranges it reported."""

    proc: subprocess.Popen[bytes]
    pid: int
    hot: tuple[int, int]
    cold: tuple[int, int]
    status: Path
    moved: bool = False  # the hot set written is the cold array's head (move_hot_set)

    @classmethod
    def start(
        cls,
        *,
        hot_mib: int,
        cold_mib: int,
        cgroup: str | None = None,
        node: int | None = None,
        pause_s: float = 0.0,
        name: str = "workload",
        thp: bool | None = None,
        timeout_s: float = 120.0,
    ) -> Workload:
        status = Path(f"/tmp/{name}.json")
        status.unlink(missing_ok=True)  # an earlier workload's report is not ours
        argv = [sys.executable, __file__, "workload", f"--hot-mib={hot_mib}"]
        if thp is not None:
            argv.append(f"--pages={'huge' if thp else 'base'}")
        argv += [f"--cold-mib={cold_mib}", f"--status={status}", f"--pause-s={pause_s}"]
        if cgroup:
            argv.append(f"--cgroup={cgroup}")
        if node is not None:
            argv.append(f"--node={node}")
        proc = subprocess.Popen(argv)
        deadline = time.monotonic() + timeout_s
        while not status.exists():
            if proc.poll() is not None:
                raise GuestError(f"workload exited with {proc.returncode} before reporting")
            if time.monotonic() > deadline:
                proc.kill()
                raise GuestError(f"workload did not report within {timeout_s} s")
            time.sleep(0.1)
        report = json.loads(status.read_text())
        return cls(proc, report["pid"], tuple(report["hot"]), tuple(report["cold"]), status)

    def loops(self) -> int:
        try:
            return int(Path(str(self.status) + ".loops").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return 0

    def retouch_cold(self, timeout_s: float = 60.0) -> None:
        """Make the workload write its cold array once more (faulting it back in)."""
        done = Path(str(self.status) + ".retouched")
        before = done.read_text() if done.exists() else "0"
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while not done.exists() or done.read_text() == before:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise GuestError("the workload did not re-touch its cold array")
            time.sleep(0.05)

    def move_hot_set(self) -> None:
        """Move the hot set to the cold array's first pages of the hot array's size, or
        back from there (the loop takes it at its next round)."""
        self.proc.send_signal(signal.SIGUSR2)
        self.moved = not self.moved

    @property
    def hot_now(self) -> tuple[int, int]:
        """The span the loop writes now: ``hot``, or the cold array's head once moved."""
        size = self.hot[1] - self.hot[0]
        return (self.cold[0], self.cold[0] + size) if self.moved else self.hot

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


# ---- page state -------------------------------------------------------------------------


def resident_pages(pid: int, start: int, end: int) -> int:
    """Pages of [start, end) present in RAM, from /proc/PID/pagemap (bit 63)."""
    import numpy as np

    count = (end - start) // PAGE
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        pagemap.seek(start // PAGE * 8)
        entries = np.frombuffer(pagemap.read(count * 8), dtype=np.uint64)
    return int(np.count_nonzero(entries >> np.uint64(63)))


def page_nodes(pid: int, start: int, end: int, step_pages: int = 1) -> dict[int, int]:
    """Pages of [start, end) per NUMA node (negative keys: errnos, e.g. -14 not present)."""
    import numpy as np

    from damon_agent.node import syscalls

    addresses = np.arange(start, end, PAGE * step_pages, dtype=np.uint64)
    result = syscalls.move_pages(pid, addresses, None)
    values, counts = np.unique(result.status, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def numa_maps_pages(pid: int, start: int, end: int) -> dict[int, int]:
    """Pages per node of the VMAs inside [start, end), from /proc/PID/numa_maps."""
    pages: dict[int, int] = {}
    for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines():
        fields = line.split()
        vma_start = int(fields[0], 16)
        if not start - PAGE <= vma_start < end:
            continue
        for one in fields[2:]:
            if one.startswith("N") and "=" in one:
                node, count = one[1:].split("=")
                pages[int(node)] = pages.get(int(node), 0) + int(count)
    return pages


def move_range(pid: int, start: int, end: int, node: int) -> int:
    """Move the present pages of [start, end) to ``node``; return how many failed."""
    import numpy as np

    from damon_agent.node import syscalls

    addresses = np.arange(start, end, PAGE, dtype=np.uint64)
    nodes = np.full(addresses.size, node, dtype=np.int32)
    return syscalls.move_pages(pid, addresses, nodes).not_migrated


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise GuestError(f"/proc/{pid}/status has no {field}")


# ---- cgroups ----------------------------------------------------------------------------


def make_cgroup(path: str, controllers: str = "+memory +cpu") -> Path:
    """Create ``path`` (``/a/b/c``) under the v2 root, enabling controllers on the way."""
    current = CGROUP_ROOT
    for part in path.strip("/").split("/"):
        (current / "cgroup.subtree_control").write_text(controllers)
        current = current / part
        current.mkdir(exist_ok=True)
    return current


def kubelet_pod_cgroup(pod_uid: str, container_id: str, qos: str = "burstable") -> str:
    """A systemd-driver kubelet's container cgroup path for a pod of ``qos``."""
    uid = pod_uid.replace("-", "_")
    return (
        f"/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid}.slice"
        f"/cri-containerd-{container_id}.scope"
    )


# ---- NUMA -------------------------------------------------------------------------------


def node_phys_ranges(nid: int) -> list[tuple[int, int]]:
    """Physical address ranges of ``nid``'s online memory blocks, merged."""
    base = Path("/sys/devices/system/memory")
    block = int((base / "block_size_bytes").read_text(), 16)
    node = Path(f"/sys/devices/system/node/node{nid}")
    blocks = sorted(int(p.name[len("memory") :]) for p in node.glob("memory[0-9]*"))
    ranges: list[tuple[int, int]] = []
    for index in blocks:
        start, end = index * block, (index + 1) * block
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return ranges


def all_ram_region(model: Any) -> Any:
    """One paddr ``model.Region`` from the lowest to the highest address of both nodes."""
    ranges = [r for nid in (0, 1) for r in node_phys_ranges(nid)]
    return model.Region(min(s for s, _ in ranges), max(e for _, e in ranges))


def node_span(nid: int) -> tuple[int, int]:
    """Lowest and highest physical address of ``nid``'s memory."""
    ranges = node_phys_ranges(nid)
    return min(s for s, _ in ranges), max(e for _, e in ranges)


def tiering_kdamond(model: Any, *, dram: int, cxl: int, memcg: str) -> Any:
    """The paddr kdamond of the kernel-engine tiering scenarios (test and benchmark).

    Two schemes over both nodes, each kept to its source node by an ``addr`` filter that
    rejects the other node (the positive form, matching=False on the wanted range,
    rejects everything on 6.12: its paddr operations evaluate every filter per folio and
    an addr filter never "matches" there) and to the container by a ``memcg`` filter:

    - ``migrate_hot`` to DRAM for regions accessed in at least a quarter of the samples;
    - ``migrate_cold`` to CXL for regions idle for 3 s.

    Why these settings (all seen in this guest):

    - The hot array's 2 MiB huge pages can sit anywhere in node 1, next to cold ones.
      With the default 10 regions (~200 MiB each here) a region holding one hot huge
      page is seen accessed in a sample or two, and the promotion stalled at 11-13 of 16
      huge pages in some runs. At least 100 regions (~20 MiB at most) let the splits
      isolate every huge page within a few aggregations.
    - ``young`` filters check every page: promote only pages found accessed, never
      demote one found accessed. Without them promoted pages land in large idle DRAM
      regions and ``migrate_cold`` sends them back.
    - The threshold stays at a quarter: at 10 % the promotion walked regions mostly
      cold, and the young filter let through the cold pages whose accessed bits were
      still set from their first write (never checked before): 114 MiB of 192 moved up
      and back.
    - Sampling every 40 ms leaves the hot loop time to re-touch its pages between two
      checks even when the host is loaded.
    """
    sample_us, aggr_us = 40_000, 800_000
    only_app = model.Filter(type="memcg", matching=False, memcg_path=memcg)

    def not_node(nid: int) -> Any:
        start, end = node_span(nid)
        return model.Filter(type="addr", matching=True, addr_start=start, addr_end=end)

    schemes = (
        model.Scheme(
            action="migrate_hot",
            target_nid=dram,
            access_pattern=model.AccessPattern(
                nr_accesses=model.Range(aggr_us // sample_us // 4, model.ULONG_MAX),
                age=model.Range(1, model.ULONG_MAX),
            ),
            filters=(not_node(dram), only_app, model.Filter(type="young", matching=False)),
        ),
        model.Scheme(
            action="migrate_cold",
            target_nid=cxl,
            access_pattern=model.AccessPattern(
                nr_accesses=model.Range(0, 0),
                age=model.Range(3_000_000 // aggr_us, model.ULONG_MAX),
            ),
            filters=(not_node(cxl), only_app, model.Filter(type="young", matching=True)),
        ),
    )
    regions = tuple(model.Region(*node_span(n)) for n in sorted((dram, cxl), key=node_span))
    intervals = model.Intervals(sample_us=sample_us, aggr_us=aggr_us, update_us=1_000_000)
    return model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                monitoring_attrs=model.MonitoringAttrs(
                    intervals=intervals, nr_regions=model.Range(100, 1_000)
                ),
                targets=(model.Target(regions=regions),),
                schemes=schemes,
            ),
        )
    )


def kdamond_schemes(index: int = 0) -> list[dict[str, Any]]:
    """What kdamond ``index`` runs, read back from sysfs: per scheme its action, target
    node, access pattern and filters (for the record of what the agent wrote)."""
    base = DAMON_ADMIN / f"kdamonds/{index}/contexts/0/schemes"

    def read(path: Path) -> str:
        try:
            return path.read_text().strip()
        except OSError:
            return ""

    schemes = []
    for number in range(int(read(base / "nr_schemes") or 0)):
        scheme = base / str(number)
        filters = []
        for f_number in range(int(read(scheme / "filters/nr_filters") or 0)):
            one = scheme / "filters" / str(f_number)
            filters.append({name: read(one / name) for name in ("type", "matching", "memcg_path")})
        pattern = scheme / "access_pattern"
        schemes.append(
            {
                "action": read(scheme / "action"),
                "target_nid": read(scheme / "target_nid"),
                "nr_accesses": [read(pattern / f"nr_accesses/{e}") for e in ("min", "max")],
                "age": [read(pattern / f"age/{e}") for e in ("min", "max")],
                "quota_bytes": read(scheme / "quotas/bytes"),
                "filters": filters,
            }
        )
    return schemes


def staged_targets() -> dict[int, dict[str, Any]]:
    """Per kdamond that is on: its operations, the pids of its live vaddr targets (an
    ``obsolete_target`` one left out) and the memcg paths its schemes' filters name,
    in whichever filter layer (``filters``, ``core_filters``, ``ops_filters``)."""

    def read(path: Path) -> str:
        # A kdamond's ``state`` answers EBUSY while another writer holds DAMON's sysfs lock
        # (the agent committing; kernels with the 2025-09 state_show fix, 7.3 here): read
        # again rather than count the kdamond off (CI, 2026-12-05: a final look saw none).
        for _ in range(400):
            try:
                return path.read_text().strip()
            except OSError as error:
                if error.errno != errno.EBUSY:
                    return ""  # rewritten by a commit while we looked
                time.sleep(0.005)
        raise TimeoutError(f"{path}: EBUSY for 2 s")

    found: dict[int, dict[str, Any]] = {}
    for index in range(int(read(DAMON_ADMIN / "kdamonds/nr_kdamonds") or 0)):
        kdamond = DAMON_ADMIN / f"kdamonds/{index}"
        if read(kdamond / "state") != "on":
            continue
        context = kdamond / "contexts/0"
        pids = []
        targets = context / "targets"
        for number in range(int(read(targets / "nr_targets") or 0)):
            target = targets / str(number)
            if read(target / "obsolete_target") != "Y":
                pids.append(int(read(target / "pid_target") or -1))
        memcgs = set()
        schemes = context / "schemes"
        for number in range(int(read(schemes / "nr_schemes") or 0)):
            for layer in ("filters", "core_filters", "ops_filters"):
                filters = schemes / str(number) / layer
                for f_number in range(int(read(filters / "nr_filters") or 0)):
                    path = read(filters / str(f_number) / "memcg_path")
                    if path and read(filters / str(f_number) / "type") == "memcg":
                        memcgs.add(path)
        found[index] = {
            "pid": int(read(kdamond / "pid") or -1),
            "operations": read(context / "operations"),
            "pids": pids,
            "memcgs": sorted(memcgs),
        }
    return found


# ---- the agent daemon -------------------------------------------------------------------


def start_agent(
    node: str, share: Path, *, backend: str = "kernel", status_interval_s: float = 3
) -> subprocess.Popen[bytes]:
    """``damon-agent daemon`` for ``node``, with the kubeconfig the host left in the share;
    its output goes to ``agent.log`` there."""
    log = (share / "agent.log").open("wb")
    agent = subprocess.Popen(
        [
            str(Path(os.environ["REPO"]) / ".venv" / "bin" / "damon-agent"),
            "daemon",
            "--node-name",
            node,
            "--kubeconfig",
            str(share / "kubeconfig"),
            "--backend",
            backend,
            "--listen",
            "127.0.0.1:8080",
            "--state-dir",
            "/tmp/damon-agent-state",
            "--tick",
            "1",
            "--status-interval",
            str(status_interval_s),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # A crash (SIGSEGV, SIGABRT) leaves every thread's Python stack in agent.log.
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    log.close()  # the child holds its own descriptor
    return agent


def stop_agent(agent: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, as kubelet stops a pod; its exit status (None: it had to be killed)."""
    agent.send_signal(signal.SIGTERM)
    try:
        return agent.wait(timeout=30)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait(timeout=10)
        return None


def agent_processes() -> list[int]:
    """Pids of every damon-agent process in the guest."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"damon-agent" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue  # exited while we looked
    return found


def damon_stat_off() -> bool:
    """Turn DAMON_STAT off where the guest's kernel started it at boot (stock kernels from
    6.17 on do): its kdamond holds DAMON and no sysfs kdamond could start. This guest is
    the project's own. Whether it was on."""
    enabled = Path("/sys/module/damon_stat/parameters/enabled")
    if enabled.exists() and enabled.read_text().strip() == "Y":
        enabled.write_text("N")
        return True
    return False


def nr_kdamonds() -> int:
    return int((DAMON_ADMIN / "kdamonds/nr_kdamonds").read_text())


def swap_used_kib() -> int:
    return sum(int(line.split()[3]) for line in Path("/proc/swaps").read_text().splitlines()[1:])


def write_atomically(name: str, data: Any) -> None:
    """JSON into the share for a host that reads it while the guest writes: the file is
    replaced, never truncated."""
    share = Path(os.environ.get("SHARE", "/tmp/share"))
    tmp = share / f".{name}.tmp"
    tmp.write_text(json.dumps(data))
    tmp.rename(share / name)


def remove_cgroup(path: str) -> None:
    """Remove cgroup ``path`` (``/a/b``), waiting for a killed process to leave it."""
    directory = CGROUP_ROOT / path.strip("/")
    for _ in range(50):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY until the killed process has left
            time.sleep(0.05)


def write_json(name: str, data: Any) -> None:
    Path(os.environ.get("SHARE", "/tmp/share"), name).write_text(json.dumps(data, indent=1))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="guest_lib")
    sub = parser.add_subparsers(dest="command", required=True)
    workload = sub.add_parser("workload")
    workload.add_argument("--hot-mib", type=int, required=True)
    workload.add_argument("--cold-mib", type=int, required=True)
    workload.add_argument("--status", required=True)
    workload.add_argument("--cgroup")
    workload.add_argument("--node", type=int)
    workload.add_argument("--pause-s", type=float, default=0.0)
    workload.add_argument(
        "--pages",
        choices=("default", "base", "huge"),
        default="default",
        help="what backs the arrays: numpy's choice, base pages only, or THP",
    )
    args = parser.parse_args(argv)
    if args.command == "workload":
        _workload_main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
