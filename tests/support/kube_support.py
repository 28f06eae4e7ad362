"""Test support shared by the suites that talk to the real apiserver (kube, helm, vm)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def restart_apiserver() -> None:
    """Start the apiserver again where it was stopped or hangs; etcd and its data stay.

    ``controlplane.sh start`` restarts an apiserver that is gone or not ready and reuses
    a healthy one, so this is safe to call at any time (the hold is this process's).
    """
    started = _controlplane("start", "--holder", str(os.getpid()), timeout=240)
    if started.returncode != 0:
        pytest.fail("the apiserver did not start again:\n" + started.stderr)


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


def kubeconfig_token(kubeconfig: Path) -> str:
    """The bearer token of the kubeconfig's current context's user (the test control
    plane's admin kubeconfig carries one)."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    user = next(u for u in config["users"] if u["name"] == context["context"]["user"])
    token = user["user"].get("token")
    if not token:
        pytest.fail(f"{kubeconfig}: the current context's user has no token")
    return str(token)


def service_account_token(kubectl: Kubectl, namespace: str, name: str) -> str:
    """A real token of that ServiceAccount from the TokenRequest API (valid for an hour)."""
    token = kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    if token.count(".") != 2:
        pytest.fail(f"kubectl create token {name} gave no JWT: {token[:80]!r}")
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    expected = f"system:serviceaccount:{namespace}:{name}"
    if claims.get("sub") != expected:
        pytest.fail(f"token subject {claims.get('sub')!r}, expected {expected!r}")
    return token


def token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig at ``path``: the admin's cluster, ``token`` as its user's credential."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["name"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "tested", "user": {"token": token}}],
        "contexts": [{"name": "tested", "context": {"cluster": cluster, "user": "tested"}}],
        "current-context": "tested",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def http_get(
    url: str, token: str | None = None, timeout: float = 10
) -> tuple[int, str, Mapping[str, str]]:
    """(status, body, headers) of GET ``url``, with ``Authorization: Bearer token`` if given;
    an HTTP error status is returned, not raised."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode(), dict(err.headers)


# The Prometheus Operator's kinds the chart can render (its optional monitors and rules).
MONITORING_KINDS = (
    ("podmonitors", "PodMonitor"),
    ("servicemonitors", "ServiceMonitor"),
    ("prometheusrules", "PrometheusRule"),
)


def install_monitoring_crds(kubectl: Kubectl) -> None:
    """The Prometheus Operator's CRDs, reduced to what the apiserver needs to store the
    chart's objects (no schema), applied and Established."""
    for plural, kind in MONITORING_KINDS:
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"plural": plural, "kind": kind, "singular": kind.lower()},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(crd))
    names = [f"crd/{plural}.monitoring.coreos.com" for plural, _ in MONITORING_KINDS]
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of ``type_`` in an object's status (None without one)."""
    found = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_]
    return found[0] if found else None


def assigned_keys(kubectl: Kubectl, node: str) -> list[str] | None:
    """The scheme keys the node's DamonNode spec assigns; None without a DamonNode."""
    from damon_agent.api import resources

    got = kubectl("get", "damonnode", node, "-o", "json", check=False)
    if got.returncode != 0:
        return None
    return [
        resources.scheme_key(a["kind"], a.get("namespace"), a["name"])
        for a in json.loads(got.stdout).get("spec", {}).get("schemes", [])
    ]
