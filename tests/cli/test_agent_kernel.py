"""`damon-agent run --backend kernel` through the CLI, on the host's real DAMON."""

from __future__ import annotations

import pathlib

import pytest

from damon_agent.cli import agent, damonctl
from damon_agent.reports import recording


@pytest.mark.kernel
def test_kernel_run_records_what_damonctl_renders(
    kernel_damon: pathlib.Path,
    repo: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    record = tmp_path / "k.jsonl"
    argv = [
        "run", "--backend", "kernel",
        "--scheme", str(repo / "examples/schemes/stat.yaml"),
        "--duration", "2s", "--record", str(record), "--quiet",
    ]  # fmt: skip
    assert agent.main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    rec = recording.read_recording(record)
    assert rec.meta["backend"] == "kernel"
    assert rec.snapshots, "the kernel run recorded no snapshot"
    # Physical memory: at least one region.
    assert sum(len(t) for t in rec.snapshots[-1].targets) >= 1
    assert damonctl.main(["report", "access", "--input", str(record)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1] == "target 0"
    assert "total " in out
    assert damonctl.main(["report", "wss", "--input", str(record)]) == 0
