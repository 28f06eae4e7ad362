"""Test support shared by the suites that talk to the real apiserver (kube, helm, vm)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

KUBECTL = "/usr/bin/kubectl"


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
