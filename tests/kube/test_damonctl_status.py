"""``damonctl status`` against the real apiserver: a node's and a scheme's outcome as the
agents report it, and one clear line (exit 1) for what does not exist (an unreachable
apiserver: tests/cli/test_damonctl_status.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kube_support import Kubectl

from damon_agent.api import conditions, resources

pytestmark = pytest.mark.kube

DAMONCTL = [sys.executable, "-m", "damon_agent.cli.damonctl"]


def _damonctl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    return subprocess.run(
        [*DAMONCTL, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def _node_report(node: str, namespace: str) -> dict[str, Any]:
    key = f"DamonScheme/{namespace}/reclaim-cold"
    now = conditions.now()
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Applied",
        "message": "1 scheme(s) over 1 pod(s)",
        "lastTransitionTime": now.isoformat(),
    }
    status = resources.DamonNodeStatus.model_validate(
        {
            "heartbeat": now,
            "backend": "kernel",
            "capabilities": {"kernelRelease": "6.18.4"},
            "conditions": [ready],
            "contexts": [
                {
                    "operations": "paddr",
                    "schemes": [f"{key}/pageout-cold"],
                    "kdamondPid": 4242,
                    "cpuSeconds": 12.5,
                    "cpuPercent": 3.25,
                }
            ],
            "schemes": [
                {
                    "kind": "DamonScheme",
                    "namespace": namespace,
                    "name": "reclaim-cold",
                    "uid": "u",
                    "observedGeneration": 1,
                    "conditions": [ready],
                    "targets": 1,
                    "savedBytes": 96 << 20,
                    "stats": [
                        {
                            "name": "pageout-cold",
                            "appliedBytes": 1 << 30,
                            "effectiveQuotaBytes": 12 << 20,
                            "goals": [{"metric": "some_mem_psi_us", "target": 10_000}],
                        }
                    ],
                }
            ],
            "pods": [
                {
                    "namespace": namespace,
                    "name": "cart-0",
                    "schemes": [key],
                    "psi": {"someAvg10": 1.5, "someTotalUs": 2_300_000},
                    "memoryBytes": 200 << 20,
                    "swapBytes": 64 << 20,
                    "firstMemoryBytes": 296 << 20,
                    "savedBytes": 96 << 20,
                    "refaults": 12,
                    "since": now,
                }
            ],
            "savedBytes": 96 << 20,
        }
    )
    return resources.to_api(status)


def test_status_of_a_node_and_of_a_scheme(
    kubeconfig: Path,
    kubectl: Kubectl,
    kube_client: Any,
    make_node: Callable[..., str],
    namespace: str,
    apply: Callable[..., Any],
) -> None:
    node = make_node()
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": resources.API_VERSION, "kind": "DamonNode", "metadata": {"name": node}}
        ),
    )
    api = kubernetes.client.CustomObjectsApi(kube_client)
    body = _node_report(node, namespace)
    api.patch_cluster_custom_object_status(
        resources.GROUP,
        resources.VERSION,
        "damonnodes",
        node,
        [{"op": "add", "path": "/status", "value": body}],
        _content_type="application/json-patch+json",
    )
    # The apiserver kept every field the agent wrote (the CRD's status schema has them).
    stored = api.get_cluster_custom_object(resources.GROUP, resources.VERSION, "damonnodes", node)
    assert stored["status"]["pods"][0]["savedBytes"] == 96 << 20
    assert stored["status"]["schemes"][0]["stats"][0]["goals"][0]["target"] == 10_000
    columns = kubectl("get", "damonnode", node, "-o", "wide").stdout
    assert "96.000 MiB" in columns and "3.2%" in columns  # SAVED, KDAMOND-CPU

    shown = _damonctl(kubeconfig, "status", "--node", node)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.startswith(f"DamonNode {node}: kernel backend (Linux 6.18.4), heartbeat ")
    assert f"DamonScheme {namespace}/reclaim-cold: Ready=True (Applied)" in out
    cold = next(line for line in out.splitlines() if line.strip().startswith("pageout-cold"))
    assert "12.000 MiB" in cold and "some_mem_psi_us ? / 10 ms" in cold
    cart = next(line for line in out.splitlines() if f"{namespace}/cart-0" in line)
    assert "1.50%" in cart and "96.000 MiB" in cart

    apply("reclaim-cold.yaml", namespace=namespace)
    api.patch_namespaced_custom_object_status(
        resources.GROUP,
        resources.VERSION,
        namespace,
        "damonschemes",
        "reclaim-cold",
        {"status": {"nodesReady": "1/1", "applied": "1.000 GiB", "saved": "96.000 MiB"}},
    )
    shown = _damonctl(kubeconfig, "status", "--scheme", f"{namespace}/reclaim-cold")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == (
        f"DamonScheme {namespace}/reclaim-cold: nodes ready 1/1, applied 1.000 GiB, "
        "saved 96.000 MiB"
    )
    assert any(line.split()[:2] == [node, "pageout-cold"] for line in lines)
    assert any(line.split()[:2] == [f"{namespace}/cart-0", node] for line in lines)


def test_what_does_not_exist_is_one_line(kubeconfig: Path, crds: list[str], namespace: str) -> None:
    for args, words in (
        (["--node", "no-such-node"], "DamonNode no-such-node not found"),
        (["--scheme", f"{namespace}/nope"], f"DamonScheme {namespace}/nope not found"),
        (["--scheme", "nope"], "ClusterDamonScheme nope not found"),
        (["--scheme", "a/b/c"], "give NS/NAME for a DamonScheme"),
    ):
        shown = _damonctl(kubeconfig, "status", *args)
        assert shown.returncode == 1 and shown.stdout == ""
        err = shown.stderr
        assert err.startswith("damonctl: ") and words in err and err.count("\n") == 1, err
