"""The operator serving its admission webhooks to the test control plane, for kube tests.

``make_tls(directory)`` makes a throwaway CA and a serving certificate for 127.0.0.1 (what
the chart makes with genCA and genSignedCert); ``served_operator(...)`` starts
``damon-operator --standalone`` serving the webhooks over HTTPS on a free port, registers
a ValidatingWebhookConfiguration built from ``admission.WEBHOOKS`` (a URL instead of the
chart's Service, an objectSelector on ``labels`` so other sessions' objects never reach
it, failurePolicy Fail) and waits until the API server calls it. On exit the
configuration is removed and the operator stopped.

tests/kube/test_admission.py builds the same stack in its own words (it also starts and
stops webhooks mid-test).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from damon_operator import admission

INSTANCE_LABEL = "damon.io/instance"
FAST = ("--heartbeat-timeout", "30", "--resync", "1", "--totals-interval", "1")


@dataclasses.dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca.read_bytes()).decode()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_tls(directory: Path) -> Tls:
    ca, ca_key, cert, key, csr, ext = (
        directory / n for n in ("ca.crt", "ca.key", "tls.crt", "tls.key", "tls.csr", "tls.ext")
    )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             "/CN=damon-webhook-test-ca", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    ext.write_text(
        "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n"
    )
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return Tls(ca, cert, key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def webhook_configuration(
    name: str, port: int, tls: Tls, labels: Mapping[str, str]
) -> dict[str, Any]:
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
                "objectSelector": {"matchLabels": dict(labels)},
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "sideEffects": "None",  # so server-side dry runs are judged too
                "timeoutSeconds": 10,
                "admissionReviewVersions": ["v1", "v1beta1"],
            }
            for hook in admission.WEBHOOKS
        ],
    }


@dataclasses.dataclass
class ServedOperator:
    process: subprocess.Popen[bytes]
    log_path: Path
    labels: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_enforced(kubectl: Any, labels: Mapping[str, str], timeout: float = 30.0) -> None:
    """Until a server-side dry run of a scheme the operator refuses is denied by it."""
    probe = {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "ClusterDamonScheme",
        "metadata": {"name": f"{labels[INSTANCE_LABEL]}-probe", "labels": dict(labels)},
        "spec": {"wholeNode": True, "schemes": [{"name": "s", "action": "willneed"}]},
    }
    deadline = time.monotonic() + timeout
    while True:
        tried = kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(probe),
                        check=False)  # fmt: skip
        if "denied the request" in tried.stderr:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the webhook is not called after {timeout:.0f} s: {tried.stderr.strip()}")
        time.sleep(0.3)


@contextlib.contextmanager
def served_operator(
    kubectl: Any, env: Mapping[str, str], instance: str, tls: Tls, log_path: Path, name: str
) -> Iterator[ServedOperator]:
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "damon-operator"), "--instance", instance,
        "--standalone", *FAST, "--webhook-listen", f"127.0.0.1:{port}",
        "--webhook-cert", str(tls.cert), "--webhook-key", str(tls.key),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(env))
    labels = {INSTANCE_LABEL: instance, "damon.io/test-stack": name}
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the operator serves no webhook:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        kubectl("apply", "-f", "-",
                input=json.dumps(webhook_configuration(name, port, tls, labels)))  # fmt: skip
        wait_enforced(kubectl, labels)
        yield ServedOperator(process, log_path, labels)
    finally:
        kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found", check=False)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
