"""Test support shared by the suites that talk to the real apiserver (kube, helm, vm)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

KUBECTL = "/usr/bin/kubectl"
CONTROLPLANE = Path(__file__).resolve().parents[2] / "scripts" / "controlplane.sh"


def _controlplane(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(CONTROLPLANE), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/controlplane.sh {' '.join(args)} did not finish within {timeout} s")


@contextlib.contextmanager
def held_controlplane() -> Iterator[Path]:
    """The test control plane's kubeconfig, held by this process for the ``with`` block.

    ``scripts/controlplane.sh start --holder PID`` reuses a running control plane (or
    starts etcd and kube-apiserver) and records the hold; ``release PID`` drops it and the
    last holder's release stops the servers. Holds are by pid, so a second hold taken by
    the same process (tests/kube and tests/vm in one run) leaves the release to the first.
    FAILS the test, never skips, when it cannot start (a missing kube-apiserver binary is
    built by scripts/build-apiserver.sh). With ``DAMON_K8S_KUBECONFIG`` set (the kernel
    suites in a VM guest) that kubeconfig is used as it is.
    """
    given = os.environ.get("DAMON_K8S_KUBECONFIG")
    if given:
        # Inside a VM guest: the host holds its control plane and handed us a kubeconfig.
        yield Path(given)
        return
    holder = str(os.getpid())
    cache = Path(os.environ.get("DAMON_K8S_CACHE", str(Path.home() / ".cache" / "damon-k8s")))
    held_already = (cache / "controlplane" / "holders" / holder).exists()
    started = _controlplane("start", "--holder", holder, timeout=240)
    if started.returncode != 0:
        pytest.fail(
            "the control plane did not start (scripts/controlplane.sh start failed; a missing "
            "kube-apiserver binary is built by scripts/build-apiserver.sh):\n" + started.stderr
        )
    try:
        yield Path(started.stdout.strip().splitlines()[-1])
    finally:
        if not held_already:
            _controlplane("release", holder, timeout=60)


class Kubectl:
    """``kubectl`` against one kubeconfig; a failed call fails the test with kubectl's words."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, obj: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
        """``kubectl apply`` of one object given as a mapping."""
        return self("apply", "-f", "-", input=json.dumps(obj))

    def json(self, *args: str) -> Any:
        """``kubectl get ARGS -o json``, parsed; the object must exist."""
        return json.loads(self("get", *args, "-o", "json").stdout)

    def get(self, *args: str) -> dict[str, Any] | None:
        """``kubectl get ARGS -o json``, parsed, or None when it does not exist."""
        found = self("get", *args, "-o", "json", check=False)
        if found.returncode != 0:
            return None
        parsed: dict[str, Any] = json.loads(found.stdout)
        return parsed
