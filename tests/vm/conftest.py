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

For the guests run as nodes of the host's control plane (tests/support/cluster_guest.py):
``kubeconfig`` holds the control plane for the module (``kube_support.held_controlplane``,
as tests/kube and tests/helm hold it), ``kubectl`` with the project's CRDs established,
``instance`` a fresh label value whose objects are deleted afterwards, and ``operator``
the real operator for that instance (its log's path).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import kube_support
import pytest
from cluster_guest import INSTANCE_LABEL
from kube_support import Kubectl

REPO = harness.REPO_ROOT


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


@pytest.fixture(scope="module")
def kubeconfig() -> Iterator[Path]:
    with kube_support.held_controlplane() as path:
        yield path


@pytest.fixture(scope="module")
def kubectl(kubeconfig: Path) -> Kubectl:
    kubectl = Kubectl(kubeconfig)
    kubectl("apply", "-f", str(REPO / "crds"))
    names = kubectl("get", "-f", str(REPO / "crds"), "-o", "name").stdout.split()
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return kubectl


@pytest.fixture
def instance(kubectl: Kubectl) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:8]}"
    yield name
    strip = '{"metadata":{"finalizers":null}}'
    selector = f"{INSTANCE_LABEL}={name}"
    for kind in ("clusterdamonschemes.damon.io", "damonnodes.damon.io", "nodes"):
        for found in kubectl("get", kind, "-l", selector, "-o", "name", check=False).stdout.split():
            if kind != "nodes":
                kubectl("patch", found, "--type=merge", "-p", strip, check=False)
            kubectl("delete", found, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def operator(kubeconfig: Path, kubectl: Kubectl, instance: str, tmp_path: Path) -> Iterator[Path]:
    executable = Path(sys.executable).parent / "damon-operator"
    if not executable.exists():
        pytest.fail(f"{executable} is missing: install the project (scripts/bootstrap.sh)")
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(executable), "--instance", instance, "--standalone"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
    try:
        yield log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not harness.FIGURES:
        return
    terminalreporter.section("VM figures")
    for key, figures in harness.FIGURES.items():
        shown = ", ".join(f"{name}={value}" for name, value in figures.items())
        terminalreporter.write_line(f"{key}: {shown}")
