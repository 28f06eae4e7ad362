"""The operator's admission webhooks against the real kube-apiserver (1.20).

The operator runs as a real process serving the webhooks over HTTPS on 127.0.0.1 (a
certificate from a throwaway CA made with openssl); each test registers a
ValidatingWebhookConfiguration built from ``admission.WEBHOOKS`` (the names, paths, rules
and operations the chart's template uses: tests/helm/test_webhook.py checks that), with
a URL instead of the chart's Service (no kube-proxy here) and an objectSelector on this
session's instance label, so concurrent sessions sharing the control plane never reach
this operator.

* every class of spec the operator refuses today (``Accepted=False``) that the CRD schema
  lets through is refused by ``kubectl apply``, word for word with the operator's verdict;
* the webhook down: with ``Ignore`` (the chart's default) an invalid scheme gets in and
  the operator, the second line, marks it ``Accepted=False`` with the same message; with
  ``Fail`` writes are refused until it is back;
* two agents' real bound tokens (TokenRequest bound to two Pods on two nodes): each may
  write its own DamonNode's status and is refused the other's.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
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
import webhook_stack
import yaml
from webhook_stack import Tls, free_port, listening, wait_enforced

from damon_agent.api import resources
from damon_operator import admission, validation

pytestmark = pytest.mark.kube

INSTANCE_LABEL = "damon.io/instance"
FAST = ("--heartbeat-timeout", "30", "--resync", "1", "--totals-interval", "1")
AGENT_SA = "agent"


# ---------------------------------------------------------------------------------------
# What the operator refuses today (Accepted=False) and the CRD schema lets through: one row
# per class, the words that must name the field. Classes the schema itself refuses (enums,
# bounds, patterns, unknown fields, required fields) never reach the webhook: see
# tests/kube/test_crds.py.


def _s(**fields: Any) -> dict[str, Any]:
    return {"name": "s", "action": "pageout", **fields}


def _pods(*schemes: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"podSelector": {}, "schemes": list(schemes), **spec}


def _goal(**goal: Any) -> dict[str, Any]:
    return _s(quota={"goals": [goal]})


REFUSED: list[tuple[str, str, dict[str, Any], str]] = [
    # InvalidSpec: the models' cross-field rules
    ("age", "DamonScheme", _pods(_s(accessPattern={"age": {"min": "30s", "max": "10s"}})),
     "schemes[0].accessPattern.age: min 30s is greater than max 10s"),
    ("size", "DamonScheme", _pods(_s(accessPattern={"size": {"min": "1Gi", "max": "4Ki"}})),
     "schemes[0].accessPattern.size: min 1Gi is greater than max 4Ki"),
    ("access-rate", "DamonScheme",
     _pods(_s(accessPattern={"accessRate": {"min": "50%", "max": "5%"}})),
     "schemes[0].accessPattern.accessRate: min 50% is greater than max 5%"),
    ("goal-without-nid", "DamonScheme", _pods(_goal(metric="node_mem_free_bp", target="5%")),
     "schemes[0].quota.goals[0]: metric node_mem_free_bp needs nid"),
    ("goal-target-unit", "DamonScheme", _pods(_goal(metric="some_mem_psi_us", target="5%")),
     "schemes[0].quota.goals[0]: target of some_mem_psi_us: '5%' has unknown duration"),
    ("goal-without-path", "DamonScheme", _pods(_goal(metric="pod_mem_psi_us", target="1ms")),
     "schemes[0].quota.goals[0]: metric pod_mem_psi_us needs path"),
    ("watermarks", "DamonScheme", _pods(_s(watermarks={"high": "20%", "mid": "30%", "low": "5%"})),
     "schemes[0].watermarks: watermarks must be high >= mid >= low"),
    ("memcg-filter", "DamonScheme", _pods(_s(filters=[{"type": "memcg"}])),
     "schemes[0].filters[0]: a memcg filter needs memcgPath"),
    ("anon-filter-path", "DamonScheme", _pods(_s(filters=[{"type": "anon", "memcgPath": "/a"}])),
     "schemes[0].filters[0]: a anon filter takes no memcgPath"),
    ("addr-filter", "DamonScheme",
     _pods(_s(filters=[{"type": "addr", "addrStart": "8Ki", "addrEnd": "4Ki"}])),
     "schemes[0].filters[0]: addrStart 8Ki is not below addrEnd 4Ki"),
    ("migrate-without-target", "DamonScheme", _pods(_s(action="migrate_cold")),
     "schemes[0]: action migrate_cold needs exactly one of targetNid or tier"),
    ("migrate-two-targets", "DamonScheme",
     _pods(_s(action="migrate_hot", targetNid=1, tier="cxl")),
     "schemes[0]: action migrate_hot needs exactly one of targetNid or tier"),
    ("target-without-migrate", "DamonScheme", _pods(_s(targetNid=1)),
     "schemes[0]: action pageout takes no targetNid or tier"),
    ("size-unit", "DamonScheme", _pods(_s(quota={"size": "128Mx"})),
     "schemes[0].quota.size: '128Mx' has unknown size unit 'Mx'"),
    ("reset-interval", "DamonScheme", _pods(_s(quota={"resetInterval": "0"})),
     "schemes[0].quota: resetInterval must be more than 0"),
    ("intervals", "DamonScheme",
     _pods(_s(), monitoring={"intervals": {"sample": "1s", "aggregation": "100ms"}}),
     "monitoring.intervals: sample 1s is longer than aggregation 100ms"),
    ("regions", "DamonScheme", _pods(_s(), monitoring={"regions": {"min": 100, "max": 10}}),
     "monitoring.regions: min 100 is greater than max 10"),
    ("duplicate-names", "DamonScheme", _pods(_s(), _s()), "scheme name 's' is used twice"),
    ("no-schemes", "DamonScheme", _pods(), "schemes: at least one scheme is needed"),
    ("selector-values", "DamonScheme",
     {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}, "schemes": [_s()]},
     "podSelector.matchExpressions[0]: operator In needs at least one value"),
    ("whole-node-with-pods", "ClusterDamonScheme",
     {"wholeNode": True, "podSelector": {}, "schemes": [_s()]},
     "wholeNode targets physical memory: it takes no pod selectors"),
    ("no-target", "ClusterDamonScheme", {"schemes": [_s()]},
     "podSelector is needed unless wholeNode is true"),
    # UnsupportedAction: what the targeted operations set cannot do
    ("whole-node-vaddr-action", "ClusterDamonScheme",
     {"wholeNode": True, "schemes": [_s(action="willneed")]},
     "schemes[0] (s): action willneed needs virtual address monitoring (vaddr)"),
    ("paddr-vaddr-action", "DamonScheme", _pods(_s(action="cold"), monitoring={"mode": "paddr"}),
     "schemes[0] (s): action cold needs virtual address monitoring (vaddr), but mode paddr"),
    ("vaddr-paddr-action", "DamonScheme",
     _pods(_s(action="lru_prio"), monitoring={"mode": "vaddr"}),
     "schemes[0] (s): action lru_prio works on physical memory only (paddr)"),
    # UnsupportedGoal: a pod's metric in a whole-node scheme
    ("whole-node-pod-goal", "ClusterDamonScheme",
     {"wholeNode": True, "schemes": [_s(quota={"size": "1Gi", "goals": [
         {"metric": "pod_mem_psi_us", "target": "1ms", "path": "/x"}]})]},
     "schemes[0] (s): goal metric pod_mem_psi_us measures a pod"),
]  # fmt: skip


def test_the_table_covers_every_reason_the_operator_refuses_a_spec_for() -> None:
    reasons = {validation.judge(kind, spec)[1].reason for _, kind, spec, _ in REFUSED}
    # TierUnavailable depends on the nodes' reports, not on the spec: a warning at apply
    # time (test_a_tier_no_node_has_is_a_warning_not_a_refusal), a condition afterwards.
    assert reasons == {"InvalidSpec", "UnsupportedAction", "UnsupportedGoal"}
    for case, kind, spec, words in REFUSED:
        _, verdict = validation.judge(kind, spec)
        assert not verdict.accepted, case
        assert words in verdict.message, (case, verdict.message)


# ---------------------------------------------------------------------------------------
# The serving side: certificates, the operator, the webhook configuration


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA and a serving certificate for 127.0.0.1 (what the chart makes with genCA and
    genSignedCert for the webhook Service's DNS names)."""
    return webhook_stack.make_tls(tmp_path_factory.mktemp("webhook-tls"))


def webhook_configuration(
    name: str, port: int, tls: Tls, labels: dict[str, str], policy: str
) -> dict[str, Any]:
    """The chart's webhooks (names, paths, rules), called by URL, for objects carrying
    ``labels`` only (this session's instance label, and more to tell stacks apart)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {INSTANCE_LABEL: labels[INSTANCE_LABEL]}},
        "webhooks": [
            {
                "name": hook.name,
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}{hook.path}",
                    "caBundle": tls.ca_bundle,
                },
                "rules": [
                    {
                        "apiGroups": ["damon.io"],
                        "apiVersions": ["v1alpha1"],
                        "resources": [hook.resource],
                        "operations": list(hook.operations),
                        "scope": "*",
                    }
                ],
                "objectSelector": {"matchLabels": labels},
                "failurePolicy": policy,
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "timeoutSeconds": 10,
                "admissionReviewVersions": ["v1", "v1beta1"],
            }
            for hook in admission.WEBHOOKS
        ],
    }


@dataclasses.dataclass
class Webhooks:
    """This test's webhook stack: ``start()`` the operator serving it on ``port``,
    ``configure(policy)`` the ValidatingWebhookConfiguration; removed after the test,
    before the other fixtures clean up (so their writes are never refused)."""

    kubectl: Any
    run_operator: Callable[..., Any]
    tls: Tls
    instance: str
    agent_namespace: str
    name: str
    port: int = dataclasses.field(default_factory=free_port)
    operator: Any = None

    def start(self, *args: str, standalone: bool = True) -> Any:
        self.operator = self.run_operator(
            *FAST,
            "--webhook-listen", f"127.0.0.1:{self.port}",
            "--webhook-cert", str(self.tls.cert),
            "--webhook-key", str(self.tls.key),
            "--agent-service-account", f"{self.agent_namespace}:{AGENT_SA}",
            *args,
            standalone=standalone,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not listening(self.port):
            if self.operator.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the operator serves no webhook:\n{self.operator.log()[-3000:]}")
            time.sleep(0.2)
        return self.operator

    def stop(self) -> None:
        self.operator.stop()
        deadline = time.monotonic() + 10
        while listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    @property
    def labels(self) -> dict[str, str]:
        return {INSTANCE_LABEL: self.instance}

    def configure(self, policy: str) -> None:
        body = webhook_configuration(self.name, self.port, self.tls, self.labels, policy)
        self.kubectl("apply", "-f", "-", input=json.dumps(body))
        if self.operator is not None and self.operator.process.poll() is None:
            wait_enforced(self.kubectl, self.labels)
        else:
            time.sleep(2)  # nothing answers to prove it: give the API server time to see it

    def remove(self) -> None:
        self.kubectl("delete", "validatingwebhookconfiguration", self.name,
                     "--ignore-not-found", check=False)  # fmt: skip


@pytest.fixture
def webhooks(
    kubectl: Any,
    run_operator: Callable[..., Any],
    apply: Any,
    namespace: str,
    make_node: Any,
    tls: Tls,
    instance: str,
) -> Iterator[Webhooks]:
    stack = Webhooks(
        kubectl, run_operator, tls, instance, namespace, f"{instance}-{uuid.uuid4().hex[:6]}"
    )
    yield stack
    stack.remove()


# A module-wide stack for the table: one operator and one configuration for every row. Its
# configuration selects objects with a label of its own too, so the other tests' stacks
# (and objects) never meet it.


@dataclasses.dataclass
class Served:
    namespace: str
    kubectl: Any
    labels: dict[str, str]


@pytest.fixture(scope="module")
def served(
    controlplane: Any, kubectl: Any, crds: list[str], instance: str, tls: Tls, tmp_path_factory: Any
) -> Iterator[Served]:
    namespace = f"{instance}-adm-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    port = free_port()
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    command = [
        str(Path(sys.executable).parent / "damon-operator"), "--instance", instance,
        "--standalone", *FAST, "--webhook-listen", f"127.0.0.1:{port}",
        "--webhook-cert", str(tls.cert), "--webhook-key", str(tls.key),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=controlplane.env
        )
    name = f"{instance}-table-{uuid.uuid4().hex[:6]}"
    labels = {INSTANCE_LABEL: instance, "damon.io/test-stack": name}
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the operator serves no webhook:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        body = webhook_configuration(name, port, tls, labels, "Fail")
        kubectl("apply", "-f", "-", input=json.dumps(body))
        wait_enforced(kubectl, labels)
        yield Served(namespace, kubectl, labels)
        assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
    finally:
        kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found", check=False)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _scheme(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "damon.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("kind", "spec", "words"),
    [pytest.param(kind, spec, words, id=case) for case, kind, spec, words in REFUSED],
)
def test_kubectl_apply_refuses_what_the_operator_would_not_accept(
    served: Served, kind: str, spec: dict[str, Any], words: str
) -> None:
    kubectl = served.kubectl
    name = f"{served.labels[INSTANCE_LABEL]}-bad-{uuid.uuid4().hex[:6]}"
    where = ["-n", served.namespace] if kind == "DamonScheme" else []
    body = _scheme(kind, name, spec, served.labels)
    result = kubectl("apply", *where, "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0, f"{kind} was accepted: {result.stdout}"
    hook = admission.SCHEMES if kind == "DamonScheme" else admission.CLUSTER_SCHEMES
    _, verdict = validation.judge(kind, spec)
    # Word for word what the operator writes into Accepted=False.
    assert f'admission webhook "{hook.name}" denied the request: {verdict.message}' in (
        result.stderr
    ), result.stderr
    assert words in result.stderr
    assert kubectl("get", resources.PLURALS[kind], name, *where, check=False).returncode != 0


def test_a_standby_replica_answers_too(
    webhooks: Webhooks, kubectl: Any, apply: Any, namespace: str, instance: str
) -> None:
    # Peering pauses a standby's handlers, not its webhook server: the chart's Service may
    # send a review to any replica. Here the configuration calls the standby only.
    peering = f"{instance}-adm-peering"
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
            "metadata": {"name": peering}}  # fmt: skip
    kubectl("apply", "-f", "-", input=json.dumps(body))
    try:
        common = ("--peering", peering, "--peering-lifetime", "10")
        leader = webhooks.run_operator(*FAST, *common, "--priority", "200", standalone=False)
        leader.wait_for_log("Resuming operations")
        standby = webhooks.start(*common, "--priority", "100", standalone=False)
        standby.wait_for_log("Initial authentication has finished")
        webhooks.configure("Fail")
        refused = apply("contradictory.yaml", namespace, check=False)
        assert "denied the request: schemes[0].accessPattern.age: min 30s" in refused.stderr
        assert "Resuming operations" not in standby.log()
    finally:
        kubectl("delete", "clusterkopfpeering", peering, "--ignore-not-found", check=False)


def test_valid_schemes_and_updates_that_keep_the_spec_pass(
    webhooks: Webhooks, apply: Any, kubectl: Any, namespace: str, wait_for: Any
) -> None:
    webhooks.start()
    webhooks.configure("Fail")
    assert apply("reclaim-cold.yaml", namespace).returncode == 0
    # A spec change is judged: a valid one passes...
    kubectl(
        "patch", "damonscheme", "reclaim-cold", "-n", namespace, "--type=json", "-p",
        '[{"op": "replace", "path": "/spec/schemes/0/action", "value": "cold"}]',
    )  # fmt: skip
    backwards = {"min": "2m", "max": "1m"}  # ...an invalid one is refused...
    refused = kubectl(
        "patch", "damonscheme", "reclaim-cold", "-n", namespace, "--type=json", "-p",
        json.dumps([{"op": "add", "path": "/spec/schemes/0/accessPattern/age",
                     "value": backwards}]),
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "schemes[0].accessPattern.age: min 2m is greater than max 1m" in refused.stderr
    # ...and the operator's own writes (finalizer, annotations) and the status pass.
    wait_for(
        lambda: condition(kubectl.json("damonscheme", "reclaim-cold", "-n", namespace), "Accepted"),
        what="the operator's Accepted condition",
    )
    meta = kubectl.json("damonscheme", "reclaim-cold", "-n", namespace)["metadata"]
    assert any(f.startswith("damon.io/teardown") for f in meta.get("finalizers", []))
    assert "Traceback" not in webhooks.operator.log()


condition = kube_support.condition


def test_a_tier_no_node_has_is_a_warning_not_a_refusal(
    webhooks: Webhooks,
    apply: Any,
    kubectl: Any,
    make_node: Any,
    agent_report: Any,
    load_manifest: Any,
    instance: str,
    wait_for: Any,
) -> None:
    node = make_node(labels={"damon.io/tiering": "true"})
    webhooks.start()
    webhooks.configure("Fail")
    wait_for(lambda: kubectl.get("damonnode", node), what="the DamonNode")
    agent_report(node, numa=[{"nid": 0, "tier": "dram"}])
    tiering = load_manifest("tiering.yaml")
    tiering["metadata"]["name"] = f"{instance}-tiering"

    def warned() -> str | None:
        # The operator's index must have seen the report first; a dry run changes nothing.
        body = copy.deepcopy(tiering)
        body["metadata"]["labels"] = {INSTANCE_LABEL: instance}
        tried = kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False)
        return tried.stderr if "memory tier" in tried.stderr else None

    warning = wait_for(warned, what="a warning about the tier")
    assert "Warning: schemes[0] (demote): no targeted node has a cxl memory tier" in warning
    applied = apply(tiering)
    assert applied.returncode == 0  # a warning, not a refusal: nodes may gain the tier
    rejected = wait_for(
        lambda: (c := condition(kubectl.json("clusterdamonscheme", f"{instance}-tiering"),
                                "Accepted")) and c["reason"] == "TierUnavailable" and c,
        what="TierUnavailable",
    )  # fmt: skip
    assert rejected["message"] in warning


@pytest.mark.parametrize("policy", ["Ignore", "Fail"])
def test_with_the_webhook_down_failure_policy_decides(
    policy: str,
    webhooks: Webhooks,
    apply: Any,
    kubectl: Any,
    namespace: str,
    load_manifest: Any,
    wait_for: Any,
) -> None:
    webhooks.start()
    webhooks.configure(policy)
    assert "denied the request" in apply("contradictory.yaml", namespace, check=False).stderr
    webhooks.stop()

    if policy == "Fail":
        # Nothing gets in while the webhook is down, valid or not.
        refused = apply("reclaim-cold.yaml", namespace, check=False)
        assert refused.returncode != 0
        assert f'failed calling webhook "{admission.SCHEMES.name}"' in refused.stderr
        webhooks.start()
        wait_enforced(kubectl, webhooks.labels)
        assert apply("reclaim-cold.yaml", namespace).returncode == 0
        return

    # Ignore: the API server lets the invalid spec in...
    assert apply("contradictory.yaml", namespace).returncode == 0
    # ...and the operator, the second line, refuses it in its Accepted condition with the
    # message the webhook gives.
    webhooks.start()
    accepted = wait_for(
        lambda: condition(kubectl.json("damonscheme", "contradictory", "-n", namespace),
                          "Accepted"),
        what="Accepted",
    )  # fmt: skip
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidSpec")
    original = load_manifest("contradictory.yaml")
    assert accepted["message"] == validation.judge("DamonScheme", original["spec"])[1].message
    wait_enforced(kubectl, webhooks.labels)
    changed = load_manifest("contradictory.yaml")
    changed["spec"]["schemes"][0]["accessPattern"]["age"]["min"] = "40s"
    refused = apply(changed, namespace, check=False)
    still_wrong = validation.judge("DamonScheme", changed["spec"])[1].message
    assert f"denied the request: {still_wrong}" in refused.stderr
    # The invalid object stays manageable: updates that keep its spec pass (the operator's
    # finalizer went on; labels here), and it can be deleted.
    kubectl("label", "damonscheme", "contradictory", "-n", namespace, "team=shop")
    kubectl("delete", "damonscheme", "contradictory", "-n", namespace, "--wait=false")
    wait_for(
        lambda: kubectl.get("damonscheme", "contradictory", "-n", namespace) is None,
        what="the invalid scheme deleted",
    )


# ---------------------------------------------------------------------------------------
# Each agent its own DamonNode


def _token_client(kube_client: Any, token: str) -> Any:
    config = copy.copy(kube_client.configuration)
    config.api_key = {"authorization": f"Bearer {token}"}
    config.api_key_prefix = {}
    config.refresh_api_key_hook = None
    return kubernetes.client.ApiClient(config)


def _request_token(kube_client: Any, namespace: str, pod: dict[str, Any] | None) -> str:
    """A token of the agents' ServiceAccount from the TokenRequest API (``kubectl create
    token`` came with 1.24), bound to ``pod`` like a projected token, or unbound."""
    spec: dict[str, Any] = {"audiences": [], "expirationSeconds": 3600}
    if pod is not None:
        meta = pod["metadata"]
        spec["boundObjectRef"] = {
            "apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"],
        }  # fmt: skip
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    core = kubernetes.client.CoreV1Api(kube_client)
    answer = core.create_namespaced_service_account_token(AGENT_SA, namespace, body)
    token: str = answer.status.token
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:{AGENT_SA}"
    return token


@pytest.fixture
def agent_rbac(kubectl: Any, namespace: str) -> Iterator[str]:
    """The agents' ServiceAccount with the chart's agent rights on DamonNodes."""
    name = f"{namespace}-agent"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": ["damon.io"], "resources": ["damonnodes"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["damon.io"], "resources": ["damonnodes/status"],
             "verbs": ["patch", "update"]},
        ],
    }  # fmt: skip
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": AGENT_SA, "namespace": namespace}],
    }
    kubectl("create", "serviceaccount", AGENT_SA, "-n", namespace)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    yield name
    kubectl("delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found", check=False)


def _agent_pod(kubectl: Any, namespace: str, name: str, node: str) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "serviceAccountName": AGENT_SA,
            # No token controller or kubelet here: the test mints the pod's token itself.
            "automountServiceAccountToken": False,
            "containers": [{"name": "agent", "image": "damon-k8s"}],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod))
    created: dict[str, Any] = kubectl.json("pod", name, "-n", namespace)
    return created


def _patch_status(client: Any, node: str, backend: str = "sim") -> None:
    kubernetes.client.CustomObjectsApi(client).patch_cluster_custom_object_status(
        "damon.io", "v1alpha1", "damonnodes", node,
        [{"op": "add", "path": "/status", "value": {"backend": backend}}],
        _content_type="application/json-patch+json",
    )  # fmt: skip


def _replace_status(client: Any, node: str) -> None:
    api = kubernetes.client.CustomObjectsApi(client)
    current = api.get_cluster_custom_object("damon.io", "v1alpha1", "damonnodes", node)
    current["status"] = {"backend": "sim"}
    api.replace_cluster_custom_object_status("damon.io", "v1alpha1", "damonnodes", node, current)


def _refused(call: Callable[[], Any]) -> tuple[int, str]:
    with pytest.raises(kubernetes.client.ApiException) as raised:
        call()
    body = json.loads(raised.value.body or "{}")
    return int(raised.value.status), str(body.get("message", raised.value.body))


def test_each_agent_writes_only_its_own_nodes_damon_node_status(
    webhooks: Webhooks,
    agent_rbac: str,
    kube_client: Any,
    kubectl: Any,
    make_node: Any,
    namespace: str,
    agent_report: Any,
    wait_for: Any,
) -> None:
    node_a, node_b = make_node(), make_node()
    webhooks.start()
    webhooks.configure("Ignore")  # the chart's default: a refusal is an answer, not a failure
    for node in (node_a, node_b):
        wait_for(lambda n=node: kubectl.get("damonnode", n), what=f"DamonNode {node}")
    pod_a = _agent_pod(kubectl, namespace, "agent-a", node_a)
    pod_b = _agent_pod(kubectl, namespace, "agent-b", node_b)
    clients = {
        "a": _token_client(kube_client, _request_token(kube_client, namespace, pod_a)),
        "b": _token_client(kube_client, _request_token(kube_client, namespace, pod_b)),
        "unbound": _token_client(kube_client, _request_token(kube_client, namespace, None)),
    }
    try:
        # Each agent's own DamonNode: patch and update (the verbs the chart grants).
        _patch_status(clients["a"], node_a)
        _replace_status(clients["a"], node_a)
        _patch_status(clients["b"], node_b)
        _replace_status(clients["b"], node_b)
        assert kubectl.json("damonnode", node_a)["status"]["backend"] == "sim"

        # The other's: refused, naming the pod, its node and the DamonNode.
        hook = f'admission webhook "{admission.DAMON_NODE_STATUS.name}" denied the request'
        for who, own, other in (("a", node_a, node_b), ("b", node_b, node_a)):
            for write in (_patch_status, _replace_status):
                status, message = _refused(lambda w=write, o=other, c=clients[who]: w(c, o))
                assert status == 403, message
                assert hook in message
                assert (
                    f"agent pod {namespace}/agent-{who} runs on node {own}: it may write the "
                    f"status of DamonNode {own} only, not of {other}"
                ) in message

        # A token of the same account bound to no pod cannot say which node it is.
        status, message = _refused(lambda: _patch_status(clients["unbound"], node_a))
        assert status == 403 and hook in message
        assert "this token names no pod" in message

        # Everyone else is left to RBAC: the admin writes both (the operator never does).
        agent_report(node_a)
        agent_report(node_b)

        # A deleted pod's token stops working altogether: the API server checks the binding
        # (against its informers' view of pods, so within moments, not at once).
        kubectl("delete", "pod", "agent-b", "-n", namespace, "--grace-period=0", "--force")

        def unauthorized() -> bool:
            try:
                _patch_status(clients["b"], node_b)
            except kubernetes.client.ApiException as err:
                return err.status == 401
            return False

        wait_for(unauthorized, timeout=15, what="the deleted pod's token to be refused")
    finally:
        for client in clients.values():
            client.close()
        kubectl("delete", "pod", "agent-a", "agent-b", "-n", namespace, "--grace-period=0",
                "--force", "--ignore-not-found", check=False)  # fmt: skip
    assert "Traceback" not in webhooks.operator.log()
