"""A pytest plugin that writes one JSON line per finished test, as each one ends.

Loaded in the kernel suites' guests (``-p suite_report``, path in ``$DAMON_K8S_SUITE_REPORT``).
JUnit XML is written only when a session ends, so a guest whose kernel dies mid-suite (the
emulator's int3 race, ``harness.VmConfig``) would leave nothing of the tests it did finish;
these lines survive it, and the host runs again only the tests that have none.

A line: ``{"nodeid", "outcome": "passed" | "failed" | "skipped", "message", "figures"}``, the
worst outcome of the test's setup, call and teardown, the first line of its failure or skip
message, and what it recorded with ``record_property("figures", ...)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ENV = "DAMON_K8S_SUITE_REPORT"
_RANK = {"passed": 0, "skipped": 1, "failed": 2}


@dataclass
class TestOutcome:
    nodeid: str
    outcome: str = "passed"
    message: str = ""
    figures: list[str] = field(default_factory=list)

    def to_line(self) -> str:
        return json.dumps(
            {
                "nodeid": self.nodeid,
                "outcome": self.outcome,
                "message": self.message,
                "figures": self.figures,
            }
        )


def read_report(path: Path) -> list[TestOutcome]:
    """The finished tests of a report file; a line cut by the guest's death is dropped."""
    outcomes: list[TestOutcome] = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return outcomes
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            outcomes.append(
                TestOutcome(
                    str(entry["nodeid"]),
                    str(entry["outcome"]),
                    str(entry["message"]),
                    [str(f) for f in entry["figures"]],
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return outcomes


_running: dict[str, TestOutcome] = {}


def _first_line(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).strip()  # (path, line, "Skipped: why")
    text = str(report.longrepr or "")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        text = str(crash.message)
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _running.setdefault(report.nodeid, TestOutcome(report.nodeid))
    outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
    if _RANK[outcome] > _RANK[entry.outcome]:
        entry.outcome = outcome
        entry.message = f"{report.when}: {_first_line(report)}"
    for name, value in report.user_properties:
        if name == "figures" and str(value) not in entry.figures:
            entry.figures.append(str(value))


def pytest_sessionstart(session: pytest.Session) -> None:
    """End a line a run before this one left cut (its guest died mid-write)."""
    target = os.environ.get(ENV)
    if not target:
        return
    try:
        with open(target, "rb+") as out:
            if out.seek(0, os.SEEK_END) > 0:
                out.seek(-1, os.SEEK_END)
                if out.read(1) != b"\n":
                    out.write(b"\n")
    except FileNotFoundError:
        pass


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    entry = _running.pop(nodeid, TestOutcome(nodeid))
    target = os.environ.get(ENV)
    if not target:
        return
    with open(target, "a", encoding="utf-8") as out:
        out.write(entry.to_line() + "\n")
        out.flush()
        os.fsync(out.fileno())  # the guest may die on the next test: the line must be out
