"""The chart's admission webhooks, installed with Helm's engine into the real apiserver: the
configuration matches the operator's handlers (``damon_operator.admission.WEBHOOKS``), the
generated certificate is valid for the Service and survives upgrades, the operator is
wired to serve it, the pod lookup is granted in the agents' namespace only, and the knobs
(off, no confinement, a certificate of one's own) do what values.yaml says.

No pod runs here (no kubelet): the webhooks themselves are tested against a real operator
process in tests/kube/test_admission.py. The configurations these releases install fail
open (``Ignore``, the default) and are never set to ``Fail`` here: the control plane is
shared, and a ``Fail`` configuration whose Service has no pods would refuse every other
session's scheme writes.
"""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import helm_sdkpy
import pytest

from damon_operator import admission
from damon_operator import main as operator_main

pytestmark = pytest.mark.kube


def _get(kubectl: Any, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    where = ["-n", namespace] if namespace else []
    found: dict[str, Any] = kubectl.json(kind, name, *where)
    return found


def _gone(kubectl: Any, kind: str, name: str, namespace: str | None = None) -> bool:
    where = ["-n", namespace] if namespace else []
    result = kubectl("get", kind, name, *where, check=False)
    return result.returncode != 0 and "NotFound" in result.stderr


def _operator(kubectl: Any, rel: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator's pod spec and its container."""
    pod = _get(kubectl, "deployment", rel.operator, rel.namespace)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def _operator_args(kubectl: Any, rel: Any) -> Any:
    _, container = _operator(kubectl, rel)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(
            _get(kubectl, "configmap", source["configMapRef"]["name"], rel.namespace)["data"]
        )
    args = [re.sub(r"\$\(([A-Z_]+)\)", lambda m: env[m[1]], arg) for arg in container["args"]]
    return operator_main.parser().parse_args(args)


def _openssl(*args: str, input: bytes | None = None) -> str:
    done = subprocess.run(["openssl", *args], input=input, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def _can(kubectl: Any, who: str, *args: str) -> bool:
    answer = kubectl("auth", "can-i", *args, "--as", who, check=False).stdout.strip()
    return answer == "yes"


def test_the_chart_wires_the_operators_webhooks_with_a_certificate_that_survives_upgrades(
    kubectl: Any, release: Any, tmp_path: Path
) -> None:
    rel = release()
    service = f"{rel.fullname}-webhook"
    config = _get(kubectl, "validatingwebhookconfiguration", rel.operator)
    hooks = {hook["name"]: hook for hook in config["webhooks"]}
    assert list(hooks) == [hook.name for hook in admission.WEBHOOKS]
    for expected in admission.WEBHOOKS:
        hook = hooks[expected.name]
        assert hook["clientConfig"]["service"] == {
            "name": service,
            "namespace": rel.namespace,
            "port": 443,
            "path": expected.path,
        }
        (rule,) = hook["rules"]
        assert rule["apiGroups"] == ["damon.io"] and rule["apiVersions"] == ["v1alpha1"]
        assert rule["resources"] == [expected.resource]
        assert rule["operations"] == list(expected.operations)
        assert hook["failurePolicy"] == "Ignore"  # the documented default, both webhooks
        assert hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] == 10

    # The certificate: issued by the CA the API server is given, for the name it calls.
    secret = _get(kubectl, "secret", f"{rel.fullname}-webhook-tls", rel.namespace)
    assert secret["type"] == "kubernetes.io/tls"
    data = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    ca_bundle = hooks[admission.SCHEMES.name]["clientConfig"]["caBundle"]
    assert all(h["clientConfig"]["caBundle"] == ca_bundle for h in hooks.values())
    assert base64.b64decode(ca_bundle) == data["ca.crt"]
    (tmp_path / "ca.crt").write_bytes(data["ca.crt"])
    (tmp_path / "tls.crt").write_bytes(data["tls.crt"])
    host = f"{service}.{rel.namespace}.svc"
    verified = _openssl(
        "verify", "-CAfile", str(tmp_path / "ca.crt"), "-verify_hostname", host,
        str(tmp_path / "tls.crt"),
    )  # fmt: skip
    assert verified.strip().endswith("OK")
    certificate_key = _openssl("x509", "-noout", "-pubkey", input=data["tls.crt"])
    assert _openssl("pkey", "-pubout", input=data["tls.key"]) == certificate_key

    # The Service reaches the operator's webhook port, which the operator serves.
    svc = _get(kubectl, "service", service, rel.namespace)["spec"]
    pod, container = _operator(kubectl, rel)
    labels = _get(kubectl, "deployment", rel.operator, rel.namespace)["spec"]["template"][
        "metadata"
    ]["labels"]
    assert svc["selector"].items() <= labels.items()
    assert svc["ports"] == [
        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "webhook"}
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["webhook"] == 9443
    assert container["readinessProbe"]["tcpSocket"]["port"] == "webhook"
    args = _operator_args(kubectl, rel)
    assert args.webhook_listen == ("0.0.0.0", 9443)
    assert args.agent_service_account == admission.ServiceAccount(rel.namespace, rel.agent)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount["readOnly"] is True
    assert {args.webhook_cert.parent, args.webhook_key.parent} == {Path(mount["mountPath"])}
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == f"{rel.fullname}-webhook-tls"

    # The pod lookup: get, in the agents' namespace only.
    operator = f"system:serviceaccount:{rel.namespace}:{rel.operator}"
    assert _can(kubectl, operator, "get", "pods", "-n", rel.namespace)
    assert not _can(kubectl, operator, "list", "pods", "-n", rel.namespace)
    assert not _can(kubectl, operator, "get", "pods", "-n", "default")

    # An upgrade keeps the certificate (read back from the Secret), changes what it should.
    rel.upgrade({"webhook": {"timeoutSeconds": 5}})
    after = _get(kubectl, "secret", f"{rel.fullname}-webhook-tls", rel.namespace)
    assert after["data"] == secret["data"]
    config = _get(kubectl, "validatingwebhookconfiguration", rel.operator)
    assert {h["clientConfig"]["caBundle"] for h in config["webhooks"]} == {ca_bundle}
    assert {h["timeoutSeconds"] for h in config["webhooks"]} == {5}

    rel.uninstall()
    assert _gone(kubectl, "validatingwebhookconfiguration", rel.operator)
    assert _gone(kubectl, "secret", f"{rel.fullname}-webhook-tls", rel.namespace)


def test_webhook_knobs_off_unconfined_and_a_certificate_of_ones_own(
    kubectl: Any, release: Any
) -> None:
    rel = release({"webhook": {"enable": False}})
    assert _gone(kubectl, "validatingwebhookconfiguration", rel.operator)
    assert _gone(kubectl, "service", f"{rel.fullname}-webhook", rel.namespace)
    assert _gone(kubectl, "secret", f"{rel.fullname}-webhook-tls", rel.namespace)
    assert _operator_args(kubectl, rel).webhook_listen is None
    pod, container = _operator(kubectl, rel)
    assert "readinessProbe" not in container
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]

    rel.upgrade({"webhook": {"nodeConfinement": {"enable": False}}})
    config = _get(kubectl, "validatingwebhookconfiguration", rel.operator)
    assert [h["name"] for h in config["webhooks"]] == [
        admission.SCHEMES.name,
        admission.CLUSTER_SCHEMES.name,
    ]
    args = _operator_args(kubectl, rel)
    assert args.webhook_listen is not None and args.agent_service_account is None
    assert _gone(kubectl, "role", f"{rel.operator}-webhook", rel.namespace)

    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot checked here\n").decode()
    own = {"existingSecret": "my-webhook-cert", "caBundle": ca}
    rel.upgrade({"webhook": {"certificate": own}})
    config = _get(kubectl, "validatingwebhookconfiguration", rel.operator)
    assert {h["clientConfig"]["caBundle"] for h in config["webhooks"]} == {ca}
    assert _gone(kubectl, "secret", f"{rel.fullname}-webhook-tls", rel.namespace)
    pod, _ = _operator(kubectl, rel)
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == "my-webhook-cert"

    injected = {
        "certificate": {"existingSecret": "my-webhook-cert"},
        "annotations": {"cert-manager.io/inject-ca-from": f"{rel.namespace}/my-webhook-cert"},
    }
    rel.upgrade({"webhook": injected})
    config = _get(kubectl, "validatingwebhookconfiguration", rel.operator)
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]

    for values, words in (
        ({"certificate": {"existingSecret": "my-webhook-cert"}}, "caBundle"),
        ({"failurePolicy": "Maybe"}, "failurePolicy"),
        ({"nodeConfinement": {"failurePolicy": "fail"}}, "failurePolicy"),
        ({"port": 8080}, "healthPort"),
        ({"port": 443}, "port"),
        ({"timeoutSeconds": 31}, "timeoutSeconds"),
    ):
        with pytest.raises(helm_sdkpy.HelmError) as raised:
            release({"webhook": values})
        assert words in str(raised.value), (values, str(raised.value))
