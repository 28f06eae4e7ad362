"""Who may read an agent's endpoints, decided by the real kube-apiserver.

Real agent processes (sim backend) check real ServiceAccount tokens (TokenRequest API)
with TokenReview and SubjectAccessReview against RBAC:

* ``/v1/snapshot``: a ServiceAccount bound to a snapshot-reader role gets 200, an unbound
  one 403, no token and a made-up token 401; ``damonctl report access --agent`` reads a
  real pod's snapshot with the token of its kubeconfig, and says in one line when it is
  refused;
* ``/metrics``: open by default, guarded by ``--metrics-auth`` with its own permission;
* an agent whose own credentials may not make the reviews answers 503 and never serves.

The roles here hold the same rule as the chart's FULLNAME-snapshot-reader and
FULLNAME-metrics-reader (tests/helm checks the chart's against ``guard``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kube_support
import pytest

from damon_agent.runtime import errors, guard, snapshot_client


class Accounts:
    """ServiceAccounts, reader ClusterRoles and bindings of one test, removed afterwards."""

    def __init__(self, kubectl: Any, namespace: str, prefix: str) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.prefix = prefix
        self.cluster_objects: list[str] = []

    def user(self, name: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{name}"

    def account(self, name: str) -> str:
        """A new ServiceAccount; returns a real token of it."""
        self.kubectl("create", "serviceaccount", name, "-n", self.namespace)
        return kube_support.service_account_token(self.kubectl, self.namespace, name)

    def grant(self, account: str, access: guard.Access) -> None:
        """A ClusterRole with the rule ``access`` needs, bound to ``account``."""
        name = f"{self.prefix}-{access.subresource}-reader-{account}"
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [access.group],
                    "resources": [f"{access.resource}/{access.subresource}"],
                    "verbs": [access.verb],
                }
            ],
        }
        self.kubectl.apply(role)
        self.cluster_objects.append(f"clusterrole/{name}")
        self.kubectl(
            "create", "clusterrolebinding", name, f"--clusterrole={name}",
            f"--serviceaccount={self.namespace}:{account}",
        )  # fmt: skip
        self.cluster_objects.append(f"clusterrolebinding/{name}")

    def remove(self) -> None:
        for name in self.cluster_objects:
            self.kubectl("delete", name, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def accounts(kubectl: Any, namespace: str, instance: str) -> Iterator[Accounts]:
    made = Accounts(kubectl, namespace, f"{instance}-{uuid.uuid4().hex[:4]}")
    yield made
    made.remove()


def _damonctl(*args: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "damonctl"
    return subprocess.run(
        [str(executable), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )


@pytest.mark.kube
@pytest.mark.slow
def test_snapshot_only_for_tokens_rbac_allows_and_damonctl_sends_one(
    kubectl: Any,
    kubeconfig: Path,
    namespace: str,
    accounts: Accounts,
    make_node: Callable[..., str],
    make_pod: Callable[..., Any],
    run_operator: Callable[..., Any],
    run_agent: Callable[..., Any],
    apply: Callable[..., Any],
    wait_for: Callable[..., Any],
    tmp_path: Path,
) -> None:
    node = make_node()
    reader = accounts.account("reader")
    stranger = accounts.account("stranger")
    accounts.grant("reader", guard.snapshot_access(node))
    agent = run_agent(node)
    snapshot = agent.url + "/v1/snapshot"

    code, body, _ = kube_support.http_get(snapshot, reader)
    assert code == 200, body
    assert json.loads(body)["node"] == node

    code, body, _ = kube_support.http_get(snapshot, stranger)
    assert code == 403, body
    refused = json.loads(body)
    assert refused["reason"] == "Forbidden"
    assert refused["message"] == (
        f"user {accounts.user('stranger')!r} may not get damonnodes/snapshot {node!r}"
    )

    code, body, headers = kube_support.http_get(snapshot, None)
    assert code == 401 and json.loads(body)["reason"] == "Unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    # Made-up tokens, one shaped like a ServiceAccount token (three base64 parts).
    for garbage in ("not-a-token", reader[:-8] + "AAAAAAAA"):
        code, body, _ = kube_support.http_get(snapshot, garbage)
        assert code == 401, body
        assert "did not accept the bearer token" in json.loads(body)["message"]

    # The probes and, without --metrics-auth, /metrics need no token.
    for path in ("/healthz", "/metrics"):
        assert agent.get(path, token=None)[0] == 200, path
    assert "Traceback" not in agent.log()

    # damonctl, with the token of the current kubeconfig context: a real pod's snapshot.
    run_operator()
    make_pod(namespace, "web-0", node, {"app": "web"})
    apply(
        {
            "apiVersion": "damon.io/v1alpha1",
            "kind": "DamonScheme",
            "metadata": {"name": "watch"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": node}},
                "schemes": [{"name": "count", "action": "stat"}],
            },
        },
        namespace=namespace,
    )
    pod = f"{namespace}/web-0"
    reader_config = kube_support.token_kubeconfig(kubeconfig, reader, tmp_path / "reader")
    as_reader = snapshot_client.kubeconfig_token(str(reader_config))
    assert as_reader.value == reader

    def pod_snapshot() -> Any:
        try:
            return snapshot_client.fetch_pod_snapshot(agent.url, pod, token=as_reader)
        except errors.SnapshotAccessError:
            raise
        except errors.SnapshotFetchError:
            return None  # no scheme runs for the pod yet

    wait_for(pod_snapshot, timeout=90, what=f"a snapshot of {pod} on the agent")
    shown = _damonctl(
        "report", "access", "--agent", agent.url, "--pod", pod, kubeconfig=reader_config
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"pod {pod} on {agent.url}\n")

    stranger_config = kube_support.token_kubeconfig(kubeconfig, stranger, tmp_path / "stranger")
    denied = _damonctl(
        "report", "access", "--agent", agent.url, "--pod", pod, kubeconfig=stranger_config
    )
    assert denied.returncode == 1 and denied.stdout == ""
    (line,) = denied.stderr.splitlines()
    assert "403 Forbidden" in line and accounts.user("stranger") in line
    assert "[token from kubeconfig context 'tested']" in line and "snapshot-reader" in line

    # --token-file wins over the kubeconfig.
    token_file = tmp_path / "reader-token"
    token_file.write_text(reader + "\n")
    chosen = _damonctl(
        "report", "access", "--agent", agent.url, "--pod", pod,
        "--token-file", str(token_file), kubeconfig=stranger_config,
    )  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr

    # The recent snapshots (/v1/snapshots, damonctl record) need the same permission.
    assert kube_support.http_get(agent.url + "/v1/snapshots", stranger)[0] == 403
    recording = tmp_path / "web-0.jsonl"
    recorded = _damonctl(
        "record", "--agent", agent.url, "--pod", pod, "--duration", "3s",
        "--output", str(recording), kubeconfig=reader_config,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    replayed = _damonctl("report", "access", "--input", str(recording), kubeconfig=reader_config)
    assert replayed.returncode == 0 and "regions" in replayed.stdout, replayed.stderr
    refused = _damonctl(
        "record", "--agent", agent.url, "--pod", pod, "--duration", "3s",
        "--output", str(tmp_path / "denied.jsonl"), kubeconfig=stranger_config,
    )  # fmt: skip
    assert refused.returncode == 1 and "403 Forbidden" in refused.stderr, refused.stderr
    assert not (tmp_path / "denied.jsonl").exists()


@pytest.mark.kube
def test_metrics_auth_guards_metrics_with_its_own_permission(
    accounts: Accounts, make_node: Callable[..., str], run_agent: Callable[..., Any]
) -> None:
    node = make_node()
    scraper = accounts.account("scraper")
    reader = accounts.account("reader")
    accounts.grant("scraper", guard.metrics_access(node))
    accounts.grant("reader", guard.snapshot_access(node))
    agent = run_agent(node, "sim", "--metrics-auth")
    assert agent.get("/metrics", token=None)[0] == 401
    assert agent.get("/metrics", token=reader)[0] == 403  # snapshots are not metrics
    code, text = agent.get("/metrics", token=scraper)
    assert code == 200 and f'damon_agent_info{{backend="sim",node="{node}"}}' in text
    assert agent.get("/v1/snapshot", token=scraper)[0] == 403  # nor metrics snapshots
    assert agent.get("/v1/snapshot", token=reader)[0] == 200
    assert agent.get("/healthz", token=None)[0] == 200


@pytest.mark.kube
def test_an_agent_that_cannot_make_reviews_serves_nothing(
    kubectl: Any,
    kubeconfig: Path,
    accounts: Accounts,
    make_node: Callable[..., str],
    run_agent: Callable[..., Any],
    tmp_path: Path,
) -> None:
    node = make_node()
    reader = accounts.account("reader")
    accounts.grant("reader", guard.snapshot_access(node))
    # The agent runs as a ServiceAccount without the chart's rules: the API server refuses
    # its TokenReviews (and its watches; it keeps serving the probes).
    powerless = accounts.account("powerless-agent")
    agent_config = kube_support.token_kubeconfig(kubeconfig, powerless, tmp_path / "agent")
    agent = run_agent(node, "sim", "--kubeconfig", str(agent_config))
    for _ in range(3):
        code, body, headers = kube_support.http_get(agent.url + "/v1/snapshot", reader)
        assert code == 503, body
        assert headers["Retry-After"] == "5"
        assert "could not review the token" in json.loads(body)["message"]
    assert agent.get("/healthz", token=None)[0] == 200
    logged = [line for line in agent.log().splitlines() if "TokenReview failed" in line]
    assert logged and "tokenreviews" in logged[0] and "forbidden" in logged[0].lower()
