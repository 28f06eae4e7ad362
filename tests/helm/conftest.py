"""Fixtures for the chart's tests against the real control plane (no kubelet: pods never run).

The control plane is shared with the other test directories through
``kube_support.held_controlplane`` (tests/support): ``scripts/controlplane.sh start
--holder <pid>`` reuses a running one (or starts it) and the last holder's release stops it.

=============== ========= ==================================================================
helm_kubeconfig session   Path of the admin kubeconfig (FAILS when no control plane starts).
kubectl         session   ``Kubectl``: ``kubectl("get", ..., check=True)`` -> CompletedProcess;
                          ``kubectl.json(...)`` parses ``get ... -o json``.
helm            session   ``Helm``: Helm's own engine (helm-sdkpy) for lint, install, upgrade
                          and uninstall, always with ``wait=False`` (no pod ever runs here).
                          Installs and upgrades turn the uninstall hook off unless the values
                          set ``operator.releaseFinalizersOnUninstall`` (see ``_no_hook``).
release         function  ``release(values=None) -> Release``: installs the chart as a fresh
                          release in a fresh namespace; uninstalled afterwards if still there.
sa_kubeconfig   function  ``sa_kubeconfig(namespace, name) -> Path``: a kubeconfig holding a
                          real token of that ServiceAccount (TokenRequest API), to run code
                          under exactly the permissions the chart grants.
=============== ========= ==================================================================
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_sdkpy
import kube_support
import pytest
import yaml
from kube_support import Kubectl

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "damon-k8s"
INSTANCE = "app.kubernetes.io/instance"


@pytest.fixture(scope="session")
def helm_kubeconfig() -> Iterator[Path]:
    with kube_support.held_controlplane() as kubeconfig:
        yield kubeconfig


@pytest.fixture(scope="session")
def kubectl(helm_kubeconfig: Path) -> Kubectl:
    return Kubectl(helm_kubeconfig)


def _no_hook(values: dict[str, Any] | None) -> dict[str, Any]:
    """``values`` with ``operator.releaseFinalizersOnUninstall: false`` unless they set it.

    Without a kubelet the chart's pre-delete hook Job never completes, and Helm waits for a
    hook Job at uninstall even with ``wait=False``, up to the timeout, then fails the
    uninstall. helm-sdkpy's ``Uninstall.run`` has no disable-hooks option (0.1.32: only
    ``wait`` and ``timeout``), so the releases here are made without the hook; a test that
    installs it (by setting the value) upgrades it away before uninstalling."""
    merged = dict(values or {})
    operator = dict(merged.get("operator") or {})
    operator.setdefault("releaseFinalizersOnUninstall", False)
    merged["operator"] = operator
    return merged


class Helm:
    """Helm's engine (Go, through helm-sdkpy) against the test control plane."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def _config(self, namespace: str) -> Any:
        return helm_sdkpy.Configuration(namespace=namespace, kubeconfig=str(self.kubeconfig))

    def lint(self, chart: Path = CHART) -> dict[str, Any]:
        result: dict[str, Any] = asyncio.run(
            helm_sdkpy.Lint(self._config("default")).run(str(chart))
        )
        return result

    def install(
        self, name: str, namespace: str, values: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        action = helm_sdkpy.Install(self._config(namespace))
        result: dict[str, Any] = asyncio.run(
            action.run(
                name,
                str(CHART),
                values=_no_hook(values),
                create_namespace=True,
                wait=False,
                timeout=120,
            )
        )
        return result

    def upgrade(
        self, name: str, namespace: str, values: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Upgrade to exactly ``values`` over the chart's defaults (``--reset-values``)."""
        action = helm_sdkpy.Upgrade(self._config(namespace))
        result: dict[str, Any] = asyncio.run(
            action.run(
                name,
                str(CHART),
                values=_no_hook(values),
                wait=False,
                timeout=120,
                reset_values=True,
            )
        )
        return result

    def uninstall(self, name: str, namespace: str) -> dict[str, Any]:
        action = helm_sdkpy.Uninstall(self._config(namespace))
        result: dict[str, Any] = asyncio.run(action.run(name, wait=False, timeout=120))
        return result

    def releases(self, namespace: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] | None = asyncio.run(
            helm_sdkpy.List(self._config(namespace)).run(all=True)
        )
        return found or []  # helm-sdkpy gives None for no release


@pytest.fixture(scope="session")
def helm(helm_kubeconfig: Path) -> Helm:
    return Helm(helm_kubeconfig)


@dataclasses.dataclass
class Release:
    name: str
    namespace: str
    helm: Helm
    installed: dict[str, Any]
    uninstalled: bool = False

    @property
    def fullname(self) -> str:
        return f"{self.name}-damon-k8s"

    @property
    def operator(self) -> str:
        return f"{self.fullname}-operator"

    @property
    def agent(self) -> str:
        return f"{self.fullname}-agent"

    def manifest(self) -> list[dict[str, Any]]:
        """The rendered objects Helm applied, parsed."""
        return [d for d in yaml.safe_load_all(self.installed["manifest"]) if d]

    def upgrade(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        self.installed = self.helm.upgrade(self.name, self.namespace, values)
        return self.installed

    def uninstall(self) -> dict[str, Any]:
        self.uninstalled = True
        return self.helm.uninstall(self.name, self.namespace)


@pytest.fixture
def release(helm: Helm, kubectl: Kubectl) -> Iterator[Callable[..., Release]]:
    made: list[Release] = []

    def install(values: dict[str, Any] | None = None) -> Release:
        suffix = uuid.uuid4().hex[:6]
        name, namespace = f"dk{suffix}", f"dk-helm-{suffix}"
        made.append(Release(name, namespace, helm, helm.install(name, namespace, values)))
        return made[-1]

    yield install
    for rel in made:
        if not rel.uninstalled:
            rel.uninstall()
        # The namespace controller empties and removes it.
        kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)


@pytest.fixture
def sa_kubeconfig(kubectl: Kubectl, tmp_path: Path) -> Callable[[str, str], Path]:
    admin = yaml.safe_load(kubectl.kubeconfig.read_text())

    def make(namespace: str, name: str) -> Path:
        token = kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
        if token.count(".") != 2:
            pytest.fail(f"kubectl create token {name} gave no JWT: {token[:80]!r}")
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        expected = f"system:serviceaccount:{namespace}:{name}"
        if claims.get("sub") != expected:
            pytest.fail(f"token subject {claims.get('sub')!r}, expected {expected!r}")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": admin["clusters"],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [
                {
                    "name": name,
                    "context": {"cluster": admin["clusters"][0]["name"], "user": name},
                }
            ],
            "current-context": name,
        }
        path = tmp_path / f"kubeconfig-{name}"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    return make
