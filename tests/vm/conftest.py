"""Fixtures of the VM scenarios (tests marked ``vm``).

``vm``: a ``harness.Runner`` (tests/support/harness.py) bound to the cached assets and a
session temporary directory; ``vm.scenario(name, params)`` boots the guest, runs
``scenarios/<name>.py`` with the project's Python and returns the ``harness.GuestRun``
(already checked for a zero exit status). Boots are slow (5-15 s of kernel start under
emulation, plus the work), so scenario modules boot once in a module-scoped fixture and
several tests assert on that one run's results.

``vm_figures``: tests record the figures they observed (boot time, RSS before/after,
share of hot pages on node 0, ...); the terminal summary prints them per test, so CI logs
carry the numbers behind each pass.

Missing assets fail the tests with the command that builds them; nothing is skipped.
"""

from __future__ import annotations

from typing import Any

import harness
import pytest


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> harness.Runner:
    try:
        assets = harness.VmAssets.from_cache()
    except harness.VmAssetsMissingError as error:
        pytest.fail(str(error))
    return harness.Runner(assets, tmp_path_factory.mktemp("vm"))


@pytest.fixture
def vm_figures(request: pytest.FixtureRequest) -> harness.Figures:
    return harness.Figures(request.node.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not harness.FIGURES:
        return
    terminalreporter.section("VM figures")
    for key, figures in harness.FIGURES.items():
        shown = ", ".join(f"{name}={value}" for name, value in figures.items())
        terminalreporter.write_line(f"{key}: {shown}")
