"""The daemon's own loop, idle, on this host: its CPU with nothing else to do.

bench/agent_overhead.py measures the agent beside a real kdamond, which needs a free
DAMON (here only in the test guest, slowed by emulation). What the agent's steady state
costs apart from DAMON is its loop: the tick (every 2 s), PSI feedback (every second)
and the status (every 10 s). That can be measured on any host, with no kdamond: the real
``daemon.serve`` runs in a child process against bench/agent_overhead.py's stand-in API
server and DamonNode (one whole-node scheme, a stat and a pageout scheme), with the
kernel backend on ``ops.kernel.fake.FakeDamonSysfs`` (a DAMON sysfs tree of plain files
in a temporary directory: the same driver code reads and writes it, nothing monitors)
instead of the host's DAMON, which it never touches. ``/proc`` is the host's (PSI,
meminfo, iomem, /proc/PID/stat), ``/sys`` the checked-in two-node CXL tree
(tests/node/trees/numa-cxl). Nobody reads snapshots.

The child's user+system CPU (/proc/PID/stat) is measured over ``--duration`` seconds
after ``--settle`` seconds. With ``--baseline REV`` the same child runs the agent of
commit REV too (a ``git worktree`` of it, removed afterwards), one after the other in the
same run, and the table shows both side by side::

    .venv/bin/python bench/agent_loop_cost.py [--baseline REV] [--duration S] [--profile OUT]

``--profile OUT``: the current tree's child also writes a cProfile of its run to OUT
(``python -m pstats OUT``), to see where the loop's time goes; it makes the worker threads'
calls inline, since cProfile sees one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import agent_overhead

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
SYS_TREE = REPO / "tests" / "node" / "trees" / "numa-cxl" / "sys"


@dataclass(frozen=True)
class Run:
    label: str
    wall_s: float
    cpu_s: float
    status_writes: int

    @property
    def percent(self) -> float:
        return 100 * self.cpu_s / self.wall_s if self.wall_s else 0.0


# ---------------------------------------------------------------------------------------
# The child: the agent of whichever tree is first on PYTHONPATH


def child(kubeconfig: Path, work: Path, profile: Path | None) -> None:
    """``daemon.serve`` with the kernel backend on a fake DAMON sysfs, until SIGTERM."""
    import asyncio
    import logging

    from damon_agent.ops.kernel import damon as kernel_damon
    from damon_agent.ops.kernel import driver as kdriver
    from damon_agent.ops.kernel import fake
    from damon_agent.runtime import daemon, observing
    from damon_agent.runtime.backends import kernel as kernel_backend

    logging.basicConfig(level=logging.WARNING)
    state = work / "state"
    state.mkdir(parents=True, exist_ok=True)
    (work / "module").mkdir(exist_ok=True)
    roots = observing.NodeRoots(proc=Path("/proc"), sys=SYS_TREE)

    def open_fake(config: daemon.Config) -> kernel_backend.KernelBackend:
        kernel = kernel_damon.KernelDamon(
            driver=kdriver.KdamondDriver(fake.FakeDamonSysfs(work / "admin"), state),
            kernel_release="6.12.0-bench",
            proc_root=config.roots.proc,
            snapshot_source="sysfs",
            module_root=work / "module",
        )
        tiers = observing.tiers_of(observing.read_numa(config.roots))
        return kernel_backend.KernelBackend(kernel, tiers, {})

    daemon.open_backend = open_fake  # type: ignore[assignment]
    config = daemon.Config(
        node_name="bench-node",
        kubeconfig=str(kubeconfig),
        backend="kernel",
        sim_workload=None,
        listen_host="127.0.0.1",
        listen_port=0,
        state_dir=state,
        roots=roots,
    )
    if profile is None:
        asyncio.run(daemon.serve(config))
        return
    import cProfile

    # cProfile sees one thread: the profiled run does the worker threads' calls inline.
    async def inline(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return func(*args, **kwargs)

    asyncio.to_thread = inline
    # Only the measured window: the parent sends SIGUSR1 at its start, SIGUSR2 at its end.
    profiler = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    asyncio.run(daemon.serve(config))
    profiler.dump_stats(profile)


# ---------------------------------------------------------------------------------------
# The parent


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    label: str,
    pythonpath: str,
    *,
    apiserver: agent_overhead.StandInApiserver,
    work: Path,
    settle_s: float,
    duration_s: float,
    profile: Path | None,
) -> Run:
    kubeconfig = apiserver.kubeconfig(work / "kubeconfig")
    command = [sys.executable, __file__, "--child", str(kubeconfig), str(work)]
    if profile is not None:
        command += ["--profile", str(profile)]
    env = dict(os.environ, PYTHONPATH=pythonpath)
    writes_before = apiserver.status_writes
    with (work / "agent.log").open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(settle_s)
        if process.poll() is not None:
            raise RuntimeError(f"{label}: the agent exited: {(work / 'agent.log').read_text()}")
        if profile is not None:
            process.send_signal(signal.SIGUSR1)
        cpu, wall = process_cpu_s(process.pid), time.monotonic()
        writes = apiserver.status_writes
        time.sleep(duration_s)
        cpu_s = process_cpu_s(process.pid) - cpu
        wall_s = time.monotonic() - wall
        written = apiserver.status_writes - writes
        if profile is not None:
            process.send_signal(signal.SIGUSR2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    if not apiserver.status_writes - writes_before:
        raise RuntimeError(f"{label}: no status written: {(work / 'agent.log').read_text()}")
    return Run(label, wall_s, cpu_s, written)


def table(runs: list[Run]) -> str:
    lines = [
        "| agent | CPU (% of one) | CPU s | status writes | measured |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run.label} | {run.percent:.3f} % | {run.cpu_s:.2f} | {run.status_writes} "
            f"| {run.wall_s:.0f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--baseline", help="also measure the agent of this commit")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before measuring")
    parser.add_argument("--profile", type=Path, help="cProfile of the current tree's run")
    parser.add_argument("--json", type=Path, help="write the runs here")
    parser.add_argument("--child", nargs=2, metavar=("KUBECONFIG", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.profile)
        return 0
    trees: list[tuple[str, Path]] = []
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="damon-loop-cost-") as scratch:
        if args.baseline:
            worktree = Path(scratch) / "baseline"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q",
                 str(worktree), args.baseline],
                check=True,
            )  # fmt: skip
            trees.append((f"{args.baseline} (baseline)", worktree))
        trees.append(("this tree", REPO))
        try:
            with agent_overhead.StandInApiserver() as apiserver:
                for index, (label, tree) in enumerate(trees):
                    work = Path(scratch) / f"run-{index}"
                    work.mkdir()
                    pythonpath = f"{tree / 'agent'}:{tree / 'operator'}"
                    profile = args.profile if tree == REPO else None
                    run = measure(
                        label,
                        pythonpath,
                        apiserver=apiserver,
                        work=work,
                        settle_s=args.settle,
                        duration_s=args.duration,
                        profile=profile,
                    )
                    runs.append(run)
        finally:
            if args.baseline:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force",
                     str(Path(scratch) / "baseline")],
                    check=False,
                )  # fmt: skip
    print(
        "the daemon's idle loop on this host: kernel backend on a fake DAMON sysfs, "
        "one whole-node scheme, nobody reading snapshots"
    )
    print(table(runs))
    if args.json:
        args.json.write_text(json.dumps([run.__dict__ for run in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
