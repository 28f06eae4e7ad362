"""``damon-operator release-finalizers`` against the real apiserver: only this instance's
finalizer goes, from both scheme kinds; foreign finalizers and another instance's objects
stay; a scheme that held only ours can then be deleted; ``--stop-deployment`` scales a
Deployment to 0 first, and waits until its terminating pods are gone (a terminating
operator still adds its finalizer back)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from damon_operator import kube

pytestmark = pytest.mark.kube

FOREIGN = "example.com/keep"
INSTANCE_LABEL = "damon.io/instance"


def _scheme(kind: str, name: str, instance: str, finalizers: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "monitoring": {"mode": "paddr" if kind == "ClusterDamonScheme" else "auto"},
        "schemes": [{"name": "stat", "action": "stat"}],
    }
    if kind == "ClusterDamonScheme":
        spec["wholeNode"] = True
    else:
        spec["podSelector"] = {"matchLabels": {"app": "none"}}
    return {
        "apiVersion": "damon.io/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": name,
            "labels": {INSTANCE_LABEL: instance},
            "finalizers": finalizers,
        },
        "spec": spec,
    }


def _finalizers(kubectl: Any, kind: str, name: str, namespace: str | None = None) -> list[str]:
    where = ["-n", namespace] if namespace else []
    obj = kubectl.json(kind, name, *where)
    return list(obj["metadata"].get("finalizers") or [])


def _deployment(name: str, namespace: str, placement: dict[str, Any]) -> dict[str, Any]:
    """A one-replica Deployment standing in for the operator's, its pods labelled app=NAME and
    placed by ``placement`` (a pod spec's nodeSelector or nodeName)."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **placement,
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "operator", "image": "example.invalid/op:0"}],
                },
            },
        },
    }


def _run(controlplane: Any, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "damon-operator"
    return subprocess.run(
        [str(executable), "release-finalizers", *args],
        capture_output=True,
        text=True,
        env=controlplane.env,
        timeout=120,
        check=False,
    )


def test_release_finalizers_removes_only_this_instances_finalizer(
    controlplane: Any, kubectl: Any, namespace: str, instance: str
) -> None:
    ours = kube.finalizer(instance)
    other = f"{instance}x"
    cluster = f"{instance}-rf-{uuid.uuid4().hex[:4]}"
    made = [
        (_scheme("DamonScheme", "mine", instance, [FOREIGN, ours]), namespace),
        (_scheme("DamonScheme", "only-ours", instance, [ours]), namespace),
        # Another instance's object, even carrying our finalizer's name: not ours.
        (_scheme("DamonScheme", "theirs", other, [kube.finalizer(other), ours]), namespace),
        (_scheme("ClusterDamonScheme", cluster, instance, [ours, FOREIGN]), None),
    ]
    try:
        for body, ns in made:
            where = ["-n", ns] if ns else []
            kubectl("apply", *where, "-f", "-", input=json.dumps(body))
        # Admission and kubectl apply kept the finalizers as written.
        assert _finalizers(kubectl, "damonscheme", "mine", namespace) == [FOREIGN, ours]

        ran = _run(controlplane, "--instance", instance)
        assert ran.returncode == 0, ran.stderr
        lines = ran.stdout.splitlines()
        # The session's instance is shared: schemes other tests of this session left
        # holding our finalizer are released too, so ours must be among those released.
        released = {
            f"released {what}: removed finalizer {ours}"
            for what in (
                f"DamonScheme {namespace}/mine",
                f"DamonScheme {namespace}/only-ours",
                f"ClusterDamonScheme {cluster}",
            )
        }
        assert released <= set(lines[:-1]), ran.stdout
        assert all(line.startswith("released ") for line in lines[:-1]), ran.stdout
        assert f"from finalizer {ours}" in lines[-1], ran.stdout
        assert "0 failed" in lines[-1]

        assert _finalizers(kubectl, "damonscheme", "mine", namespace) == [FOREIGN]
        assert _finalizers(kubectl, "damonscheme", "only-ours", namespace) == []
        assert _finalizers(kubectl, "damonscheme", "theirs", namespace) == [
            kube.finalizer(other),
            ours,
        ]
        assert _finalizers(kubectl, "clusterdamonscheme", cluster) == [FOREIGN]

        # Nothing holds it any more: deleting completes instead of hanging.
        kubectl("delete", "damonscheme", "only-ours", "-n", namespace, "--timeout=30s")
        gone = kubectl("get", "damonscheme", "only-ours", "-n", namespace, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr

        again = _run(controlplane, "--instance", instance)
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith("released 0 scheme(s)"), again.stdout
    finally:
        strip = '{"metadata":{"finalizers":null}}'
        for body, ns in made:
            where = ["-n", ns] if ns else []
            name = f"{body['kind'].lower()}/{body['metadata']['name']}"
            kubectl("patch", name, *where, "--type=merge", "-p", strip, check=False)
            kubectl("delete", name, *where, "--ignore-not-found", "--wait=false", check=False)


def test_stop_deployment_scales_it_to_zero_first(
    controlplane: Any, kubectl: Any, namespace: str, instance: str
) -> None:
    # Never scheduled here (no such node): scaling down removes its pod at once.
    placement = {"nodeSelector": {"damon.io/none": uuid.uuid4().hex}}
    kubectl("apply", "-f", "-", input=json.dumps(_deployment("operator", namespace, placement)))
    ran = _run(controlplane, "--instance", instance, f"--stop-deployment={namespace}/operator")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0].startswith(f"scaled Deployment {namespace}/operator to 0")
    live = kubectl.json("deployment", "operator", "-n", namespace)
    assert live["spec"]["replicas"] == 0
    assert not live.get("status", {}).get("replicas")

    missing = _run(controlplane, "--instance", instance, f"--stop-deployment={namespace}/nope")
    assert missing.returncode == 0, missing.stderr
    assert f"Deployment {namespace}/nope is gone already" in missing.stdout


def _report_terminated(controlplane: Any, namespace: str, name: str) -> None:
    """Play the kubelet whose container exited: the pod's status says so."""
    terminated = {
        "name": "operator",
        "image": "example.invalid/op:0",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
    }
    config = str(controlplane.kubeconfig)
    with kubernetes.config.new_client_from_config(config_file=config) as client:  # type: ignore[no-untyped-call]
        kubernetes.client.CoreV1Api(client).patch_namespaced_pod_status(
            name, namespace, {"status": {"containerStatuses": [terminated]}}
        )


@pytest.mark.parametrize("ending", ["pod deleted", "containers terminated"])
def test_stop_deployment_waits_for_its_terminating_pods(
    controlplane: Any, kubectl: Any, namespace: str, instance: str, make_node: Any, ending: str
) -> None:
    # A pod bound to a node with no kubelet stays Terminating once deleted, as an operator's
    # pod does through its grace period; here the test plays the kubelet that ends it: by
    # reporting its container terminated (the operator can no longer write: the wait ends,
    # the pod object still there) or by deleting the pod (as after the sandbox's teardown).
    node = make_node()
    deployment = _deployment("slow-operator", namespace, {"nodeName": node})
    kubectl("apply", "-f", "-", input=json.dumps(deployment))

    def pods() -> list[dict[str, Any]]:
        listed = kubectl("get", "pods", "-n", namespace, "-l", "app=slow-operator", "-o", "json")
        return list(json.loads(listed.stdout)["items"])

    deadline = time.monotonic() + 60
    while not pods():
        assert time.monotonic() < deadline, "the Deployment's pod never appeared"
        time.sleep(0.5)
    (pod,) = pods()
    executable = Path(sys.executable).parent / "damon-operator"
    command = [str(executable), "release-finalizers", "--instance", instance,
               f"--stop-deployment={namespace}/slow-operator", "--stop-timeout=60"]  # fmt: skip
    started = time.monotonic()
    running = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=controlplane.env
    )
    try:
        # Scaled to 0, the pod is Terminating and the Deployment counts no replica: the
        # command must still be waiting.
        deadline = time.monotonic() + 30
        while not (pods() and pods()[0]["metadata"].get("deletionTimestamp")):
            assert time.monotonic() < deadline, "the pod was never marked for deletion"
            time.sleep(0.5)
        time.sleep(3)
        assert running.poll() is None, running.communicate()
        name = pod["metadata"]["name"]
        if ending == "pod deleted":
            kubectl("delete", "pod", name, "-n", namespace, "--grace-period=0", "--force")
        else:
            _report_terminated(controlplane, namespace, name)
        stdout, stderr = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.communicate()
    assert running.returncode == 0, stderr
    first = stdout.splitlines()[0]
    assert first.startswith(f"scaled Deployment {namespace}/slow-operator to 0; its terminating")
    assert time.monotonic() - started >= 3
    if ending == "containers terminated":
        assert [p["metadata"]["name"] for p in pods()] == [name]
