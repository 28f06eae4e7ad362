"""scripts/controlplane.sh: reuse of a running control plane, holders, certificates."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest

pytestmark = pytest.mark.kube

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "controlplane.sh")


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=120, check=False)


def test_start_reuses_the_running_control_plane(controlplane: Any):
    started = time.monotonic()
    again = script("start", "--holder", str(os.getpid()))
    assert again.returncode == 0, again.stderr
    assert "reusing the running control plane" in again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(controlplane.kubeconfig)
    assert time.monotonic() - started < 10
    status = script("status")
    assert status.returncode == 0 and status.stdout.startswith("ready: https://127.0.0.1:6443")
    assert script("env").stdout.strip() == f"export KUBECONFIG={controlplane.kubeconfig}"


def test_releasing_another_holder_leaves_it_running_while_held(controlplane: Any):
    other = subprocess.Popen(["sleep", "30"])
    try:
        assert script("start", "--holder", str(other.pid)).returncode == 0
    finally:
        other.kill()
        other.wait()
    released = script("release", str(other.pid))
    assert released.returncode == 0, released.stderr
    assert "still held" in released.stderr
    assert script("status").returncode == 0


def test_serving_certificate_names_the_vm_guests_view_of_the_host(controlplane: Any):
    certificate = controlplane.kubeconfig.parent / "pki" / "apiserver.crt"
    text = subprocess.run(
        ["openssl", "x509", "-in", str(certificate), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in ("IP Address:127.0.0.1", "IP Address:10.0.2.2", "DNS:kubernetes.default.svc"):
        assert name in text
