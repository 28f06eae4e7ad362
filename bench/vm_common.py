"""What the VM benches share: bench/vm_reclaim.py, bench/vm_tiering.py and their guest halves.

Host side, ``Bench``: the command line (``--quick``, ``--json``, ``--accessed-bits``), one
boot of the test guest (tests/support/harness.py) running the bench's scenario
(tests/vm/scenarios/bench_<name>.py), each variant's throughput against the baseline
variant ``none``, and the results as a Markdown table.

Guest side, ``GuestBench``: the scenario's params, its workload in a kubelet-shaped pod
cgroup, the variants one after the other, and the result file. The guest's userland is the
host's root file system, so a scenario imports this module from the repository (``$REPO``,
which the harness exports) rather than from its share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Result = dict[str, Any]
Row = dict[str, Any]

# ---------------------------------------------------------------------------------------
# Host side


@dataclass(frozen=True)
class Bench:
    """One VM bench: its scenario, its params, and how its results become rows and lines."""

    doc: str  # the bench's module docstring; its first line is the --help description
    scenario: str  # tests/vm/scenarios/<scenario>.py
    params: Callable[[bool], dict[str, Any]]  # quick -> the scenario's own params
    rows: Callable[[Result], list[Row]]  # the guest's result -> one row per variant
    columns: Sequence[str]  # the table's header, "variant" first
    cells: Callable[[Row], Sequence[str]]  # a row -> its cells after the variant's name
    notes: Callable[[list[Row]], Iterable[str]]  # lines printed after the table

    def main(self, argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(description=self.doc.partition("\n")[0])
        parser.add_argument("--quick", action="store_true", help="short variants, < 1 minute")
        parser.add_argument("--json", type=Path, help="write the raw results here")
        parser.add_argument(
            "--accessed-bits",
            choices=("faithful", "emulator"),
            default="faithful",
            help="faithful: the guest sees accesses as hardware does (the harness default); "
            "emulator: QEMU's own, which misses re-accesses (the figures before calibration)",
        )
        parser.add_argument(
            "--kernel",
            action="append",
            choices=("6.12", "6.18", "7.3"),
            help="the guest's kernel series, repeatable: one boot and one table each "
            "(default: the harness's default kernel)",
        )
        args = parser.parse_args(argv)
        print(f"accessed bits: {args.accessed_bits}")
        runs = []
        for series in args.kernel or [None]:
            print(f"booting the {series or 'default'} guest ...", file=sys.stderr, flush=True)
            result = self.run(args.quick, args.accessed_bits, series)
            measured = self.rows(result)
            print(f"\nkernel {result.get('release', series or 'default')}")
            print(f"boot: {result['boot']}; params: {json.dumps(result['params'])}")
            print(table(self.columns, [[m["variant"], *self.cells(m)] for m in measured]))
            for line in self.notes(measured):
                print(line)
            for name, agent in result.get("agents", {}).items():
                # 130: interrupted (the bench stops it with SIGINT); 0: its run ended first.
                if agent["exit"] not in (0, 130):
                    print(f"{name}: the agent exited {agent['exit']}; its log ends:")
                    print(agent["log_tail"])
            runs.append({"raw": result, "rows": measured})
        if args.json:
            args.json.write_text(json.dumps(runs[0] if len(runs) == 1 else runs, indent=1))
        return 0

    def run(
        self, quick: bool, accessed_bits: str = "faithful", series: str | None = None
    ) -> Result:
        """Boot once (kernel ``series``, None: the default) and run the scenario; its
        result, with the params and boot times."""
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
        import harness

        pod = {"pod_uid": str(uuid.uuid4()), "container_id": secrets.token_hex(32)}
        params = {**pod, **self.params(quick)}
        with tempfile.TemporaryDirectory(prefix="vm-bench-") as work_dir:
            runner = harness.Runner(harness.VmAssets.from_cache(series=series), Path(work_dir))
            config = harness.VmConfig(
                faithful_accessed_bits=accessed_bits == "faithful",
                deadline_s=float(params.get("deadline_s", harness.VmConfig.deadline_s)),
                node_mib=tuple(params.get("node_mib", harness.VmConfig.node_mib)),
            )
            guest = runner.scenario(self.scenario, params, config=config)
            result: Result = guest.json()
        result["params"] = params
        result["boot"] = {"wall_s": round(guest.wall_s, 1), "guest_boot_s": guest.guest_boot_s}
        return result


def with_throughput_vs_none(measured: list[Row]) -> list[Row]:
    """Adds each row's ``loops_per_s`` over the mean of the ``none`` rows' (the baseline).

    The baseline runs first and last: the hot loop speeds up over a run, so a single
    first baseline would flatter every later variant.
    """
    baselines = [m["loops_per_s"] for m in measured if m["variant"] == "none"]
    baseline = sum(baselines) / len(baselines)
    for m in measured:
        m["throughput_vs_none"] = m["loops_per_s"] / baseline if baseline else None
    return measured


def ratio_text(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}"


def table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table: the first column left-aligned, the others (figures) right."""
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Guest side


class GuestBench:
    """A scenario's params (params.json) and its workload, started in a pod's cgroup.

    NUMA balancing is turned off first: its page scanning and hint faults slow the hot
    loop while the task is young, and it must move no page in variants that are not its
    own (a scenario that has a NUMA-balancing variant turns it on there).
    """

    def __init__(self, *, node: int | None = None) -> None:
        # Guest-only imports: guest_lib is beside the scenario, in the share.
        import guest_lib

        from damon_agent.node import cgroups
        from damon_agent.ops.kernel import driver, sysfs

        Path("/proc/sys/kernel/numa_balancing").write_text("0")
        # Stock kernels from 6.17 on start DAMON_STAT at boot, which holds DAMON: off, as
        # this guest is the project's own.
        guest_lib.damon_stat_off()
        self.params: dict[str, Any] = json.loads(Path("params.json").read_text())
        self.seconds = float(self.params["seconds"])
        pod_uid, container_id = self.params["pod_uid"], self.params["container_id"]
        cgroup = guest_lib.kubelet_pod_cgroup(pod_uid, container_id, "burstable")
        guest_lib.make_cgroup(cgroup)
        self.app = guest_lib.Workload.start(
            hot_mib=self.params["hot_mib"],
            cold_mib=self.params["cold_mib"],
            cgroup=cgroup,
            node=node,
            pause_s=0.01,
        )
        self.layout = cgroups.discover()
        self.container = cgroups.find_pod(self.layout, pod_uid).container(container_id).path
        self.memcg = cgroups.memcg_path(self.layout, self.container)
        self.driver = driver.KdamondDriver(sysfs.HostSysfs(), Path("/tmp/damon-state"))
        # Agent variant -> its exit code and the tail of its log (``stop_agent``).
        self.agents: dict[str, dict[str, Any]] = {}

    def run(
        self, measure: Callable[[int, str], Result], reset: Callable[[], object]
    ) -> list[Result]:
        """``measure(index, variant)`` for every variant in turn, after a warm-up.

        Whatever happens, every kdamond is stopped and ``reset`` called at the end.
        """
        # The workload's and this script's start-up: the hot loop runs slower for its
        # first seconds, which would flatter every later variant.
        time.sleep(float(self.params.get("warmup_s", 3)))
        results = []
        try:
            for index, variant in enumerate(self.params["variants"]):
                results.append({"variant": variant, **measure(index, variant)})
        finally:
            self.driver.stop_all()
            reset()
        return results

    def start_agent(self, name: str, scheme: Path) -> subprocess.Popen[bytes]:
        """``damon-agent run --backend kernel`` on the workload's container, as a user runs
        it, for longer than any variant; its output goes to /tmp/NAME.log."""
        repo = Path(os.environ["REPO"])
        with open(f"/tmp/{name}.log", "wb") as log:
            return subprocess.Popen(
                [
                    str(repo / ".venv" / "bin" / "damon-agent"),
                    "run",
                    "--backend=kernel",
                    f"--scheme={scheme}",
                    f"--cgroup={self.container}",
                    f"--duration={int(self.seconds) * 4 + 120}s",
                    f"--state-dir=/tmp/agent-{name}",
                    "--quiet",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @staticmethod
    def wait_for_kdamond(agent: subprocess.Popen[bytes], timeout_s: float = 120.0) -> float:
        """Seconds until the agent's first kdamond is on with its schemes (its Python's
        start under emulation is not the policy's time); gives up when it exits."""
        import guest_lib

        t0 = time.monotonic()
        kdamond = guest_lib.DAMON_ADMIN / "kdamonds/0"
        while agent.poll() is None and time.monotonic() - t0 < timeout_s:
            with contextlib.suppress(OSError, ValueError):
                on = (kdamond / "state").read_text().strip() == "on"
                if on and int((kdamond / "contexts/0/schemes/nr_schemes").read_text()) > 0:
                    break
            time.sleep(0.5)
        return round(time.monotonic() - t0, 1)

    def stop_agent(self, name: str, agent: subprocess.Popen[bytes]) -> None:
        """SIGINT, as Ctrl-C (it turns its kdamonds off); its exit code and log's tail go
        into the result (``agents``), so a variant whose agent failed says why."""
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        log = Path(f"/tmp/{name}.log").read_text(errors="replace")
        self.agents[name] = {"exit": agent.returncode, "log_tail": log[-3000:]}

    def finish(self, results: list[Result], **extra: Any) -> None:
        """Stops the workload and writes result.json: the results, ``extra``, kdamonds left."""
        import guest_lib

        self.app.stop()
        left = guest_lib.nr_kdamonds()
        guest_lib.write_json(
            "result.json",
            {
                "results": results,
                **extra,
                "agents": self.agents,
                "nr_kdamonds_left": left,
                "release": platform.release(),
            },
        )


@contextlib.contextmanager
def running(
    variant: str, start: Callable[[str], None], stop: Callable[[str], None]
) -> Iterator[None]:
    """``variant`` started for the ``with`` block's time, and stopped however it ends."""
    start(variant)
    try:
        yield
    finally:
        stop(variant)
