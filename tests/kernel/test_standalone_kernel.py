"""``damon-agent run --backend kernel`` end to end on the host (and its bad-input paths)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from damon_agent.reports import recording
from damon_agent.runtime import standalone_kernel

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
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    running = (kernel_damon / "kdamonds/nr_kdamonds").read_text().strip()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    assert running == "1"
    assert process.returncode == standalone_kernel.EXIT_INTERRUPTED, stderr
    assert "interrupted" in stderr
    assert (kernel_damon / "kdamonds/nr_kdamonds").read_text().strip() == "0"
    assert recording.read_recording(out).snapshots


def test_bad_scheme_file_is_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schemes:\n  - name: x\n    action: explode\n")
    err = io.StringIO()
    code = standalone_kernel._run(
        bad, 1_000_000, None, None, None, progress=None, out=io.StringIO(), err=err
    )
    assert code == standalone_kernel.EXIT_BAD_INPUT
    assert "schemes[0].action" in err.getvalue()


def test_missing_pid_is_bad_input(tmp_path: Path) -> None:
    err = io.StringIO()
    code = standalone_kernel._run(
        None, 1_000_000, None, 2**22 + 12345, None, progress=None, out=io.StringIO(), err=err
    )
    assert code == standalone_kernel.EXIT_BAD_INPUT
    assert str(2**22 + 12345) in err.getvalue()
