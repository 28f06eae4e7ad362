"""The kernel suites' per-test report (tests/support/suite_report.py), on a real pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import suite_report

SUPPORT = Path(__file__).resolve().parents[1] / "support"

CASES = """
import pytest

def test_passes(record_property):
    record_property("figures", "saw 3 things")

def test_fails():
    assert 1 == 2, "one is not two"

def test_skips():
    pytest.skip("no kernel here")  # skip-ok: the plugin's skip outcome is what is tested

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_passes_then_teardown_fails(broken_teardown):
    pass
"""


def _run(tmp_path: Path, *args: str) -> list[suite_report.TestOutcome]:
    (tmp_path / "test_cases.py").write_text(CASES)
    report = tmp_path / "report.jsonl"
    env = dict(os.environ, PYTHONPATH=str(SUPPORT), **{suite_report.ENV: str(report)})
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "suite_report", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_cases.py"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    return suite_report.read_report(report)


def test_each_finished_test_gets_its_worst_outcome_message_and_figures(tmp_path: Path) -> None:
    outcomes = {t.nodeid.rsplit("::", 1)[-1]: t for t in _run(tmp_path)}
    assert {name: t.outcome for name, t in outcomes.items()} == {
        "test_passes": "passed",
        "test_fails": "failed",
        "test_skips": "skipped",
        "test_passes_then_teardown_fails": "failed",
    }
    assert outcomes["test_passes"].figures == ["saw 3 things"]
    assert "one is not two" in outcomes["test_fails"].message
    assert outcomes["test_fails"].message.startswith("call: ")
    assert "no kernel here" in outcomes["test_skips"].message
    assert outcomes["test_passes_then_teardown_fails"].message.startswith("teardown: ")


def test_a_resumed_run_deselects_what_finished_and_a_torn_line_is_dropped(
    tmp_path: Path,
) -> None:
    first = _run(tmp_path, "-k", "test_passes or test_fails")
    done = [t.nodeid for t in first if t.nodeid.endswith(("::test_passes", "::test_fails"))]
    assert len(done) == 2
    report = tmp_path / "report.jsonl"
    with report.open("a") as out:
        out.write('{"nodeid": "cut sho')  # a guest that died mid-write
    rest = _run(tmp_path, *(f"--deselect={nodeid}" for nodeid in done))
    names = sorted(t.nodeid.rsplit("::", 1)[-1] for t in rest)
    # The file holds the first run's lines, the torn one dropped, then the second run's.
    assert names == sorted(
        ["test_passes", "test_fails", "test_passes_then_teardown_fails", "test_skips"]
    )
