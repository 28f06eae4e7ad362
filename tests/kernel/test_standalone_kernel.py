"""``damon-agent run --backend kernel`` end to end on the kernel under test (and its bad-input
paths): the scheme file is planned like the daemon's and a ``--pid`` becomes the pod it targets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from damon_agent.cli import agent
from damon_agent.reports import recording
from damon_agent.runtime import errors, observing, standalone

AGENT = [sys.executable, "-m", "damon_agent.cli.agent"]
STAT = Path(__file__).parents[2] / "examples" / "schemes" / "stat.yaml"


def _agent(args: list[str], state_dir: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, DAMON_AGENT_STATE_DIR=str(state_dir))
    return subprocess.Popen(
        [*AGENT, "run", "--backend", "kernel", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.kernel
def test_run_records_snapshots_stats_and_footprints(
    kernel_damon: Path, tmp_path: Path, spawn_workload: Callable[..., object]
) -> None:
    work = spawn_workload(hot_mib=64, cold_mib=64, max_seconds=60)
    out = tmp_path / "k.jsonl"
    process = _agent(
        ["--scheme", str(STAT), "--duration", "3s", "--record", str(out), "--pid",
         str(work.pid)],  # type: ignore[attr-defined]
        tmp_path / "state",
    )  # fmt: skip
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    rec = recording.read_recording(out)
    assert rec.meta["backend"] == "kernel"
    # The process is the target (vaddr where the kernel has it), not the whole node.
    assert rec.meta["operations"] == "vaddr"
    assert rec.meta["pid"] == work.pid  # type: ignore[attr-defined]
    assert len(rec.snapshots) >= 2
    assert all(len(s.targets[0]) >= 3 for s in rec.snapshots)
    assert rec.scheme_stats and rec.scheme_stats[-1][1][0]["name"] == "stat-all"
    assert rec.footprints
    values = rec.footprints[-1][1]
    assert values["rss"] >= 128 << 20 and values["vsz"] >= values["rss"]
    assert values["sys_used"] > values["rss"]
    assert "recorded" in stdout
    assert (kernel_damon / "kdamonds/nr_kdamonds").read_text().strip() == "0"


@pytest.mark.kernel
def test_sigterm_turns_the_kdamond_off(kernel_damon: Path, tmp_path: Path) -> None:
    out = tmp_path / "k.jsonl"
    process = _agent(["--duration", "60s", "--record", str(out)], tmp_path / "state")
    # An emulated guest under load takes a while to import the agent and probe DAMON.
    deadline = time.monotonic() + 50
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    running = (kernel_damon / "kdamonds/nr_kdamonds").read_text().strip()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    assert running == "1"
    assert process.returncode == agent.EXIT_INTERRUPTED, stderr
    assert "interrupted" in stderr
    assert (kernel_damon / "kdamonds/nr_kdamonds").read_text().strip() == "0"
    assert recording.read_recording(out).snapshots


def test_bad_scheme_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schemes:\n  - name: x\n    action: explode\n")
    code = agent.main(["run", "--backend", "kernel", "--scheme", str(bad), "--duration", "1s"])
    assert code == agent.EXIT_BAD_INPUT
    assert "schemes[0].action" in capsys.readouterr().err


def test_missing_pid_names_it() -> None:
    gone = 2**22 + 12345
    with pytest.raises(errors.RunError, match=f"--pid: .*{gone}"):
        standalone.target_facts(standalone.ProcessTarget(pid=gone), observing.NodeRoots())
