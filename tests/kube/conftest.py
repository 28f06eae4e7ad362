"""Fixtures for tests against the real control plane (etcd, kube-apiserver,
kube-controller-manager and kube-scheduler; no kubelet).

Fixture names are stable (tests/kube/runtime/ uses them):

=============== ========= ==================================================================
controlplane    session   ``ControlPlane``: ``.kubeconfig`` (Path), ``.env`` (environment for
                          subprocesses, with KUBECONFIG). Started (or reused when already
                          running) by ``scripts/controlplane.sh start --holder <pid>`` and
                          released at the end (the last holder stops it). FAILS, never skips,
                          when the apiserver binary is missing or does not become ready.
kubeconfig      session   Path of the admin kubeconfig.
kube_client     session   ``kubernetes.client.ApiClient`` with admin credentials.
kubectl         session   ``Kubectl``: ``kubectl("get", "nodes", input=None, check=True)``
                          returns the ``CompletedProcess`` (text); ``kubectl.json(...)``
                          parses ``-o json`` output.
crds            session   Installs crds/*.yaml (ours and kopf's peering CRDs) and waits until
                          they are Established; returns the CRD names.
instance        session   This session's id; objects labelled ``damon.io/instance=<id>``
                          belong to it, and ``run_operator`` passes ``--instance <id>`` so
                          concurrent sessions on one control plane do not disturb each other.
namespace       function  A fresh namespace with its "default" ServiceAccount (made here or
                          by the controller-manager, whichever comes first; Pods are
                          refused without it, and without a token in it unless they say
                          ``automountServiceAccountToken: false``); its damon objects are
                          removed afterwards, then the namespace is deleted.
make_node       function  ``make_node(name=None, labels=None) -> name``: a Node object carrying
                          the instance label; deleted afterwards with its DamonNode.
run_operator    function  ``run_operator(*args, standalone=True, name="operator")``: starts
                          ``damon-operator --instance <id> ...`` as a subprocess, logs to a
                          file; returns ``OperatorProcess`` (``.log()``, ``.wait_for_log()``,
                          ``.stop()``, ``.kill()``: SIGKILL); stopped after the test.
agent_report    function  ``agent_report(node, schemes=[...], heartbeat=None, numa=None,
                          backend="sim")``: writes a DamonNode status as that node's agent
                          would (``heartbeat`` defaults to now; ``schemes`` are
                          ``NodeSchemeStatus`` models or dicts).
apply           function  ``apply("reclaim-cold.yaml" | dict, namespace=None, check=True)``:
                          ``kubectl apply`` of a manifest from tests/kube/manifests (or a
                          dict) with the instance label added; returns the CompletedProcess.
                          ClusterDamonSchemes it applied are deleted after the test.
load_manifest   session   ``load_manifest("x.yaml") -> dict`` (a fresh copy each call).
wait_for        function  ``wait_for(predicate, timeout=30, what="...")``: polls until the
                          predicate returns a truthy value and returns it; fails naming
                          ``what`` and the last value otherwise.
=============== ========= ==================================================================

Objects of the ``damon.io`` group carry the operator's finalizer; the teardown strips it
so leftovers never block (the operator may already be stopped by then).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kube_support
import kubernetes
import pytest
import yaml
from kube_support import Kubectl

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = Path(__file__).resolve().parent / "manifests"
INSTANCE_LABEL = "damon.io/instance"
DAMON_GROUP = "damon.io"


@dataclasses.dataclass(frozen=True)
class ControlPlane:
    kubeconfig: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


@pytest.fixture(scope="session")
def controlplane() -> Iterator[ControlPlane]:
    with kube_support.held_controlplane() as kubeconfig:
        yield ControlPlane(kubeconfig)


@pytest.fixture(scope="session")
def kubeconfig(controlplane: ControlPlane) -> Path:
    return controlplane.kubeconfig


@pytest.fixture(scope="session")
def kube_client(kubeconfig: Path) -> Iterator[Any]:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    return Kubectl(kubeconfig)


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> list[str]:
    kubectl("apply", "-f", str(REPO / "crds"))
    names = [
        line.split("/", 1)[1]
        for line in kubectl("get", "-f", str(REPO / "crds"), "-o", "name").stdout.split()
    ]
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    return names


@pytest.fixture(scope="session")
def instance(kubectl: Kubectl, crds: list[str]) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:8]}"
    yield name
    selector = f"{INSTANCE_LABEL}={name}"
    _strip_finalizers(kubectl, "clusterdamonschemes.damon.io", selector=selector)
    kubectl("delete", "damonnodes", "-l", selector, "--wait=false", check=False)


def _wait_for[T](
    predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition", every: float = 0.3
) -> T:
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")
        time.sleep(every)
        last = predicate()
    return last


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    return _wait_for


def _strip_finalizers(
    kubectl: Kubectl, kind: str, namespace: str | None = None, selector: str | None = None
) -> None:
    where = ["-n", namespace] if namespace else []
    select = ["-l", selector] if selector else []
    names = kubectl("get", kind, *where, *select, "-o", "name", check=False).stdout.split()
    for name in names:
        strip = '{"metadata":{"finalizers":null}}'
        kubectl("patch", name, *where, "--type=merge", "-p", strip, check=False)
        kubectl("delete", name, *where, "--wait=false", check=False)


@pytest.fixture
def namespace(kubectl: Kubectl, crds: list[str], instance: str) -> Iterator[str]:
    name = f"{instance}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    # Pods are refused without it. The controller-manager's serviceaccount controller
    # makes it too (scripts/controlplane.sh runs one); whichever comes first wins.
    made = kubectl("create", "serviceaccount", "default", "-n", name, check=False)
    if made.returncode != 0 and "already exists" not in made.stderr:
        pytest.fail(f"kubectl create serviceaccount default failed: {made.stderr.strip()}")
    try:
        yield name
    finally:
        _strip_finalizers(kubectl, "damonschemes.damon.io", name)
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def make_node(kubectl: Kubectl, instance: str) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(name: str | None = None, labels: dict[str, str] | None = None) -> str:
        node = name or f"{instance}-n{len(made)}-{uuid.uuid4().hex[:4]}"
        all_labels = {INSTANCE_LABEL: instance, "kubernetes.io/hostname": node, **(labels or {})}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node, "labels": all_labels},
        }
        kubectl("apply", "-f", "-", input=json.dumps(body))
        made.append(node)
        return node

    yield make
    for node in made:
        kubectl("delete", "node", node, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "damonnode", node, "--ignore-not-found", "--wait=false", check=False)


@dataclasses.dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        return _wait_for(
            lambda: text in self.log() and self.log(), timeout, f"{text!r} in {self.log_path}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def kill(self) -> int:
        """SIGKILL, as the OOM killer would: no cleanup handlers, no goodbye to peers.
        Returns the exit status (``-9``)."""
        self.process.kill()
        return self.process.wait(timeout=5)


@pytest.fixture
def run_operator(
    controlplane: ControlPlane, crds: list[str], instance: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []
    executable = Path(sys.executable).parent / "damon-operator"
    if not executable.exists():
        pytest.fail(f"{executable} is missing: install the project (scripts/bootstrap.sh)")

    def run(*args: str, standalone: bool = True, name: str = "operator") -> OperatorProcess:
        log_path = tmp_path / f"{name}-{len(started)}.log"
        command = [str(executable), "--instance", instance, *args]
        if standalone:
            command.append("--standalone")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=controlplane.env
            )
        operator = OperatorProcess(process, log_path)
        started.append(operator)
        return operator

    yield run
    for operator in started:
        operator.stop()
    failed = [op for op in started if "Traceback" in op.log()]
    for operator in failed:
        sys.stderr.write(f"--- {operator.log_path} ---\n{operator.log()[-4000:]}\n")


@pytest.fixture
def agent_report(kube_client: Any) -> Callable[..., dict[str, Any]]:
    from damon_agent.api import conditions, resources

    api = kubernetes.client.CustomObjectsApi(kube_client)

    def report(
        node: str,
        schemes: list[Any] | None = None,
        heartbeat: Any = None,
        numa: list[dict[str, Any]] | None = None,
        backend: str = "sim",
    ) -> dict[str, Any]:
        status = resources.DamonNodeStatus.model_validate(
            {
                "heartbeat": heartbeat or conditions.now(),
                "backend": backend,
                "numa": numa or [],
                "schemes": [
                    s if isinstance(s, dict) else resources.to_api(s) for s in schemes or []
                ],
            }
        )
        body = resources.to_api(status)
        api.patch_cluster_custom_object_status(
            DAMON_GROUP,
            "v1alpha1",
            "damonnodes",
            node,
            [{"op": "add", "path": "/status", "value": body}],
            _content_type="application/json-patch+json",
        )
        return body

    return report


@pytest.fixture(scope="session")
def load_manifest() -> Callable[[str], dict[str, Any]]:
    def load(name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load((MANIFESTS / name).read_text())
        return loaded

    return load


@pytest.fixture
def apply(
    kubectl: Kubectl, instance: str, load_manifest: Callable[[str], dict[str, Any]]
) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    cluster_scoped: list[str] = []

    def run(
        manifest: str | dict[str, Any], namespace: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        body = load_manifest(manifest) if isinstance(manifest, str) else manifest
        labels = body.setdefault("metadata", {}).setdefault("labels", {})
        labels[INSTANCE_LABEL] = instance
        where = ["-n", namespace] if namespace else []
        if body.get("kind") == "ClusterDamonScheme":
            cluster_scoped.append(f"clusterdamonscheme/{body['metadata']['name']}")
        return kubectl("apply", *where, "-f", "-", input=json.dumps(body), check=check)

    yield run
    # Cluster-scoped schemes would target the next test's nodes: remove them now.
    strip = '{"metadata":{"finalizers":null}}'
    for name in cluster_scoped:
        kubectl("patch", name, "--type=merge", "-p", strip, check=False)
        kubectl("delete", name, "--ignore-not-found", "--wait=false", check=False)
