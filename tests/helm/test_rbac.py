"""The chart's RBAC against the real apiserver.

Two kinds of evidence:

* a permission matrix asked by impersonation (``kubectl auth can-i --as
  system:serviceaccount:NS:NAME`` with the groups a real ServiceAccount token carries), both
  what each component must be able to do and what it must not — printed as a table;
* the real programs, run under real tokens of the chart's ServiceAccounts (TokenRequest):
  the operator (with peering through the chart's ClusterKopfPeering) and an agent (sim
  backend) take a scheme to Ready with nothing refused (the operator's Events included),
  while the agent's token is refused writes outside its DamonNode's status; the agent,
  with exactly the chart's rules, reviews tokens and serves its snapshot to a
  ServiceAccount the values bound to the snapshot-reader role, and to no other.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, NamedTuple

import kube_support
import kubernetes
import pytest

REPO = Path(__file__).resolve().parents[2]
SIM_WORKLOAD = REPO / "examples" / "workloads" / "hot-cold.yaml"
INSTANCE_LABEL = "damon.io/instance"


class Ask(NamedTuple):
    who: str  # "agent" | "operator" | "reader" (bound through agent.auth.snapshotReaders)
    verb: str
    resource: str  # resource[.group], with /subresource
    expected: bool
    namespace: str | None = None  # None: cluster-scoped (or all namespaces for list/watch)
    name: str | None = None


NS = "tenant-a"
PEERING = "{peering}"  # replaced by the release's peering object name
RELEASE_NS = "{release}"  # replaced by the release's namespace
AGENT_DS = "{agent}"  # replaced by the agent DaemonSet's name
READERS_NS = "readers"  # the reader's ServiceAccount: readers/reader
MATRIX: list[Ask] = [
    # The agent: its DamonNode (read) and that node's status (write), the pods (read).
    Ask("agent", "get", "damonnodes.damon.io", True, name="node-1"),
    Ask("agent", "list", "damonnodes.damon.io", True),
    Ask("agent", "watch", "damonnodes.damon.io", True),
    Ask("agent", "patch", "damonnodes.damon.io/status", True, name="node-1"),
    Ask("agent", "update", "damonnodes.damon.io/status", True, name="node-1"),
    Ask("agent", "list", "pods", True),
    Ask("agent", "watch", "pods", True),
    Ask("agent", "patch", "damonnodes.damon.io", False, name="node-1"),
    Ask("agent", "update", "damonnodes.damon.io", False, name="node-1"),
    Ask("agent", "create", "damonnodes.damon.io", False),
    Ask("agent", "delete", "damonnodes.damon.io", False, name="node-1"),
    Ask("agent", "create", "damonschemes.damon.io", False, NS),
    Ask("agent", "patch", "damonschemes.damon.io", False, NS, "s"),
    Ask("agent", "update", "damonschemes.damon.io/status", False, NS, "s"),
    Ask("agent", "create", "clusterdamonschemes.damon.io", False),
    Ask("agent", "patch", "clusterdamonschemes.damon.io", False, name="s"),
    Ask("agent", "get", "secrets", False, NS, "s"),
    Ask("agent", "list", "secrets", False),
    Ask("agent", "delete", "pods", False, NS, "p"),
    Ask("agent", "create", "pods/eviction", False, NS, "p"),
    Ask("agent", "patch", "nodes", False, name="node-1"),
    # ...reads, once at SIGTERM, its own DaemonSet and Node (agent.handOver: is a successor
    # coming to take its kdamonds over?), and no other DaemonSet.
    Ask("agent", "get", "daemonsets.apps", True, RELEASE_NS, AGENT_DS),
    Ask("agent", "get", "daemonsets.apps", False, RELEASE_NS, "other"),
    Ask("agent", "list", "daemonsets.apps", False, RELEASE_NS),
    Ask("agent", "get", "nodes", True, name="node-1"),
    Ask("agent", "create", "events", False, NS),
    # ...posts Events on its DamonNode (cluster-scoped: they live in "default"), raising a
    # repeated one's count; nowhere else, and reads none.
    Ask("agent", "create", "events", True, "default"),
    Ask("agent", "patch", "events", True, "default", "node-1.0123456789abcdef"),
    Ask("agent", "patch", "events", False, NS, "s.0123456789abcdef"),
    Ask("agent", "list", "events", False, "default"),
    # ...and asks the API server about the tokens its endpoints get (runtime.guard).
    Ask("agent", "create", "tokenreviews.authentication.k8s.io", True),
    Ask("agent", "create", "subjectaccessreviews.authorization.k8s.io", True),
    Ask("agent", "get", "damonnodes.damon.io/snapshot", False, name="node-1"),
    # A snapshot reader: pods' memory layouts from the agents, nothing else.
    Ask("reader", "get", "damonnodes.damon.io/snapshot", True, name="node-1"),
    Ask("reader", "get", "damonnodes.damon.io/metrics", False, name="node-1"),
    Ask("reader", "get", "damonnodes.damon.io", False, name="node-1"),
    Ask("reader", "list", "damonnodes.damon.io", False),
    Ask("reader", "list", "pods", False),
    Ask("reader", "create", "tokenreviews.authentication.k8s.io", False),
    # The operator: schemes (watch, finalizers, status), DamonNodes, targeting inputs,
    # events, peering, CRD scanning.
    Ask("operator", "list", "damonschemes.damon.io", True),
    Ask("operator", "watch", "damonschemes.damon.io", True),
    Ask("operator", "patch", "damonschemes.damon.io", True, NS, "s"),
    Ask("operator", "patch", "damonschemes.damon.io/status", True, NS, "s"),
    Ask("operator", "list", "clusterdamonschemes.damon.io", True),
    Ask("operator", "watch", "clusterdamonschemes.damon.io", True),
    Ask("operator", "patch", "clusterdamonschemes.damon.io", True, name="s"),
    Ask("operator", "patch", "clusterdamonschemes.damon.io/status", True, name="s"),
    Ask("operator", "create", "damonnodes.damon.io", True),
    Ask("operator", "patch", "damonnodes.damon.io", True, name="node-1"),
    Ask("operator", "delete", "damonnodes.damon.io", True, name="node-1"),
    Ask("operator", "list", "damonnodes.damon.io", True),
    Ask("operator", "watch", "damonnodes.damon.io", True),
    Ask("operator", "get", "nodes", True, name="node-1"),
    Ask("operator", "list", "nodes", True),
    Ask("operator", "watch", "nodes", True),
    Ask("operator", "list", "namespaces", True),
    Ask("operator", "watch", "namespaces", True),
    Ask("operator", "create", "events", True, NS),
    Ask("operator", "patch", "events", True, NS, "s.0123456789abcdef"),
    Ask("operator", "create", "events", True, "default"),  # about ClusterDamonSchemes
    Ask("operator", "list", "clusterkopfpeerings.kopf.dev", True),
    Ask("operator", "watch", "clusterkopfpeerings.kopf.dev", True),
    Ask("operator", "patch", "clusterkopfpeerings.kopf.dev", True, name=PEERING),
    Ask("operator", "list", "customresourcedefinitions.apiextensions.k8s.io", True),
    Ask("operator", "watch", "customresourcedefinitions.apiextensions.k8s.io", True),
    Ask("operator", "patch", "clusterkopfpeerings.kopf.dev", False, name="someone-elses"),
    Ask("operator", "create", "damonschemes.damon.io", False, NS),
    Ask("operator", "update", "damonschemes.damon.io", False, NS, "s"),
    Ask("operator", "delete", "damonschemes.damon.io", False, NS, "s"),
    Ask("operator", "delete", "clusterdamonschemes.damon.io", False, name="s"),
    Ask("operator", "patch", "damonnodes.damon.io/status", False, name="node-1"),
    Ask("operator", "get", "secrets", False, NS, "s"),
    Ask("operator", "list", "secrets", False),
    Ask("operator", "list", "pods", False),
    Ask("operator", "delete", "pods", False, NS, "p"),
    Ask("operator", "patch", "nodes", False, name="node-1"),
    Ask("operator", "delete", "nodes", False, name="node-1"),
    Ask("operator", "create", "namespaces", False),
    Ask("operator", "create", "configmaps", False, NS),
    Ask("operator", "create", "clusterrolebindings.rbac.authorization.k8s.io", False),
    Ask("operator", "delete", "customresourcedefinitions.apiextensions.k8s.io", False, name="x"),
    Ask("operator", "create", "tokenreviews.authentication.k8s.io", False),
    Ask("operator", "get", "damonnodes.damon.io/snapshot", False, name="node-1"),
]


def _can_i(kubectl: Any, subject: str, namespace: str, ask: Ask, peering: str) -> bool:
    resource, _, subresource = ask.resource.partition("/")
    target = resource
    if ask.name:
        target += "/" + ask.name.replace(PEERING, peering)
    args = ["auth", "can-i", ask.verb, target, f"--as={subject}"]
    # What a real token of this ServiceAccount carries besides its user name.
    for group in (
        "system:serviceaccounts",
        f"system:serviceaccounts:{namespace}",
        "system:authenticated",
    ):
        args.append(f"--as-group={group}")
    if subresource:
        args.append(f"--subresource={subresource}")
    if ask.namespace:
        args += ["-n", ask.namespace]
    elif ask.verb in {"list", "watch"} and "." not in resource:
        args.append("--all-namespaces")
    answer = kubectl(*args, check=False)
    verdict = answer.stdout.strip()
    if verdict not in {"yes", "no"}:
        pytest.fail(
            f"kubectl {' '.join(args)}: unexpected answer {answer.stdout!r} {answer.stderr!r}"
        )
    return verdict == "yes"


@pytest.mark.kube
def test_permission_matrix_by_impersonation(
    kubectl: Any, release: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    reader = {"kind": "ServiceAccount", "name": "reader", "namespace": READERS_NS}
    rel = release({"agent": {"auth": {"snapshotReaders": [reader]}}})
    subjects = {
        "agent": (f"system:serviceaccount:{rel.namespace}:{rel.agent}", rel.namespace),
        "operator": (f"system:serviceaccount:{rel.namespace}:{rel.operator}", rel.namespace),
        "reader": (f"system:serviceaccount:{READERS_NS}:reader", READERS_NS),
    }
    matrix = [
        ask._replace(
            namespace=ask.namespace and ask.namespace.replace(RELEASE_NS, rel.namespace),
            name=ask.name and ask.name.replace(AGENT_DS, rel.agent),
        )
        for ask in MATRIX
    ]
    with futures.ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(
            pool.map(
                lambda ask: _can_i(kubectl, *subjects[ask.who], ask, rel.operator),
                matrix,
            )
        )
    rows = []
    for ask, allowed in zip(matrix, answers, strict=True):
        where = ask.namespace or "(cluster)"
        name = (ask.name or "*").replace(PEERING, rel.operator)
        mark = "ok" if allowed == ask.expected else "WRONG"
        rows.append(
            f"{ask.who:8} {ask.verb:7} {ask.resource:50} {where:10} {name:28} "
            f"{'allowed' if allowed else 'denied':8} {mark}"
        )
    with capsys.disabled():
        print(f"\nRBAC matrix ({len(rows)} checks, release {rel.name}):")
        print(f"{'who':8} {'verb':7} {'resource':50} {'namespace':10} {'name':28} {'answer':8}")
        print("\n".join(rows))
    wrong = [row for row in rows if row.endswith("WRONG")]
    assert not wrong, "\n".join(wrong)
    assert sum(a.expected for a in MATRIX) >= 20 and sum(not a.expected for a in MATRIX) >= 20


# ---------------------------------------------------------------------------------------
# The real programs under the real tokens


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(predicate: Any, timeout: float, what: str, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name} ---\n{p.read_text()[-3000:]}" for p in logs)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.5)


def _get(kubectl: Any, *args: str) -> dict[str, Any]:
    """The object as JSON, or {} while it does not exist."""
    found = kubectl("get", *args, "-o", "json", check=False)
    loaded: dict[str, Any] = json.loads(found.stdout) if found.returncode == 0 else {}
    return loaded


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def _event_reasons(kubectl: Any, namespace: str, name: str) -> set[str]:
    found = kubectl.json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )
    return {str(e.get("reason")) for e in found.get("items", [])}


class _Processes:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, command: list[str], kubeconfig: Path) -> Path:
        log = self.tmp_path / f"{name}.log"
        env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"}
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.started.append((process, log))
        return log

    def stop(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.terminate()
        for process, _ in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[_Processes]:
    running = _Processes(tmp_path)
    yield running
    running.stop()


# A refused request as the kubernetes client, aiohttp and kopf log it. The status code is
# matched as a number of its own: a log line's timestamp ends in milliseconds, which are
# "403" one time in a thousand.
_REFUSAL = re.compile(
    r"(?<![\d,.:])403(?!\d)|[Ff]orbidden|Not enough permissions|cannot patch|cannot list"
)


@pytest.mark.kube
@pytest.mark.slow
def test_operator_and_agent_work_with_exactly_the_granted_permissions(
    kubectl: Any, release: Any, sa_kubeconfig: Any, processes: _Processes
) -> None:
    instance = f"h{uuid.uuid4().hex[:8]}"
    node, tenant = f"{instance}-node", f"{instance}-tenant"
    reader = {"kind": "ServiceAccount", "name": "snapshot-reader", "namespace": tenant}
    rel = release({"agent": {"auth": {"snapshotReaders": [reader]}}})
    operator_config = sa_kubeconfig(rel.namespace, rel.operator)
    agent_config = sa_kubeconfig(rel.namespace, rel.agent)
    bin_dir = Path(sys.executable).parent
    kubectl("create", "namespace", tenant)
    # The ServiceAccount admission plugin wants the default account; the controller-manager
    # makes it too (scripts/controlplane.sh runs one): whichever comes first.
    kubectl("create", "serviceaccount", "default", "-n", tenant, check=False)
    kubectl("create", "serviceaccount", "snapshot-reader", "-n", tenant)
    try:
        kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": node, "labels": {INSTANCE_LABEL: instance}},
                }
            ),
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": tenant, "labels": {"app": "web"}},
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": False,
                "containers": [{"name": "app", "image": "busybox"}],
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(pod))
        kubectl(
            "patch", "pod", "web-0", "-n", tenant, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"phase": "Running", "qosClass": "Burstable"}}),
        )  # fmt: skip
        operator_log = processes.start(
            "operator",
            [
                str(bin_dir / "damon-operator"),
                f"--peering={rel.operator}",
                "--priority=100",
                f"--instance={instance}",
                "--log-format=plain",
            ],
            operator_config,
        )
        agent_port = _free_port()
        agent_log = processes.start(
            "agent",
            [
                str(bin_dir / "damon-agent"), "daemon",
                f"--node-name={node}",
                "--backend=sim", f"--sim-workload={SIM_WORKLOAD}",
                f"--listen=127.0.0.1:{agent_port}",
                f"--state-dir={processes.tmp_path / 'state'}",
                "--tick=1",
            ],
            agent_config,
        )  # fmt: skip
        logs = [operator_log, agent_log]
        scheme = {
            "apiVersion": "damon.io/v1alpha1",
            "kind": "DamonScheme",
            "metadata": {"name": "stat", "namespace": tenant, "labels": {INSTANCE_LABEL: instance}},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "schemes": [{"name": "count-cold", "action": "stat"}],
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(scheme))

        # The operator (its own token) assigned the scheme to the node...
        _wait(
            lambda: (_get(kubectl, "damonnode", node).get("spec") or {}).get("schemes"),
            60,
            "the operator to create the DamonNode with the scheme",
            logs,
        )
        # ...the agent (its own token) reported it running, and the operator aggregated it.
        ready = _wait(
            lambda: (
                _condition(kubectl.json("damonscheme", "stat", "-n", tenant), "Ready").get("status")
                == "True"
                and kubectl.json("damonscheme", "stat", "-n", tenant)
            ),
            90,
            "the scheme to become Ready",
            logs,
        )
        assert ready["status"]["nodesReady"] == "1/1"
        # ...and said so in Events on the scheme, posted with its token.
        _wait(
            lambda: {"Accepted", "Ready"} <= _event_reasons(kubectl, tenant, "stat"),
            30,
            "the operator's Accepted and Ready Events on the scheme",
            logs,
        )
        # Only this operator adds its finalizer (with its token's patch right). Operators of
        # other test sessions sharing the control plane may strip it meanwhile (kopf drops
        # a finalizer no handler of theirs claims), so wait to see it rather than expect it.
        # The finalizer is "damon.io/teardown", suffixed with "-<instance>" when the operator
        # runs with --instance.
        _wait(
            lambda: any(
                name == "damon.io/teardown" or name.startswith("damon.io/teardown-")
                for name in (
                    _get(kubectl, "damonscheme", "stat", "-n", tenant)["metadata"].get("finalizers")
                    or []
                )
            ),
            30,
            "the operator's finalizer on the scheme",
            logs,
        )
        peering = kubectl.json("clusterkopfpeering", rel.operator)
        assert peering.get("status"), "the operator did not renew its record in the peering object"
        dnode = kubectl.json("damonnode", node)
        assert dnode["status"]["backend"] == "sim"

        # Deleting the scheme: the finalizer is removed by the operator once torn down.
        kubectl("delete", "damonscheme", "stat", "-n", tenant, "--wait=false")
        _wait(
            lambda: (
                kubectl("get", "damonscheme", "stat", "-n", tenant, check=False).returncode != 0
            ),
            60,
            "the scheme to be torn down and deleted",
            logs,
        )
        for log in logs:
            refused = [line for line in log.read_text().splitlines() if _REFUSAL.search(line)]
            assert not refused, f"{log.name}: refused requests:\n" + "\n".join(refused[:20])

        # The agent's endpoints: with exactly the chart's rules it reviews tokens, and
        # serves its snapshot to the reader the values bound, not to the operator.
        snapshot = f"http://127.0.0.1:{agent_port}/v1/snapshot"
        reader_token = kube_support.service_account_token(kubectl, tenant, "snapshot-reader")
        operator_token = kube_support.service_account_token(kubectl, rel.namespace, rel.operator)
        code, body, _ = kube_support.http_get(snapshot, reader_token)
        assert code == 200 and json.loads(body)["node"] == node, body
        code, body, _ = kube_support.http_get(snapshot, operator_token)
        assert code == 403, body
        assert kube_support.http_get(snapshot, None)[0] == 401

        # The agent's token, used directly: only its DamonNode's status is writable.
        client = kubernetes.config.new_client_from_config(config_file=str(agent_config))
        try:
            custom = kubernetes.client.CustomObjectsApi(client)
            core = kubernetes.client.CoreV1Api(client)
            custom.patch_cluster_custom_object_status(
                "damon.io", "v1alpha1", "damonnodes", node,
                {"status": {"backend": "sim"}},
            )  # fmt: skip
            refused_calls = {
                "patch DamonNode spec": lambda: custom.patch_cluster_custom_object(
                    "damon.io", "v1alpha1", "damonnodes", node, {"spec": {"schemes": []}}
                ),
                "create DamonScheme": lambda: custom.create_namespaced_custom_object(
                    "damon.io", "v1alpha1", tenant, "damonschemes", scheme
                ),
                "list secrets": lambda: core.list_namespaced_secret(tenant),
                "delete pod": lambda: core.delete_namespaced_pod("web-0", tenant),
            }
            for what, call in refused_calls.items():
                with pytest.raises(kubernetes.client.ApiException) as raised:
                    call()
                assert raised.value.status == 403, f"{what}: {raised.value.status}"
        finally:
            client.close()
    finally:
        processes.stop()
        for kind, name, where in (
            ("damonscheme", "stat", ["-n", tenant]),
            ("damonnode", node, []),
        ):
            kubectl(
                "patch", kind, name, *where, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False,
            )  # fmt: skip
            kubectl("delete", kind, name, *where, "--wait=false", check=False)
        kubectl("delete", "pod", "web-0", "-n", tenant, "--grace-period=0", "--force", check=False)
        kubectl("delete", "node", node, "--wait=false", check=False)
        kubectl("delete", "namespace", tenant, "--wait=false", check=False)
