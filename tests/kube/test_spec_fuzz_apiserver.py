"""Scheme specs drawn from the CRDs (tests/support/spec_strategies.py), right and broken,
through a real ``kubectl apply --dry-run=server``: the apiserver's structural schema, then
the operator's admission webhook (sideEffects None: dry runs are judged too).

Each spec is either let in, and then ``validation.judge`` accepts it as the apiserver
stores it (unknown fields pruned), or refused naming a field: by the webhook with
``judge``'s own message, or by the schema (kubectl's or the apiserver's words, a
``spec.<field>`` path). Two of the specs let in are then applied for real, and the
operator (the second line) marks them ``Accepted``. After the run the operator is the
same process it was, and its log holds no traceback.

A smaller, derandomized draw than tests/api/test_spec_fuzz.py: about 40 specs, under a
minute.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import spec_strategies as strategies
import webhook_stack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from damon_operator import validation

pytestmark = pytest.mark.kube

DRAW = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VALID = {"name": "s", "action": "pageout", "accessPattern": {"age": {"min": "2m"}}}
# A field as the schema's refusals name it: a path, "spec.schemes[0].name" (apiserver) or
# "DamonScheme.spec.schemes[0]" (kubectl's client-side check), or kubectl's
# 'unknown field "bogusField" in ...spec' or 'missing required field "podSelector"'.
SCHEMA_FIELD = re.compile(
    r'\bspec(?:\.[A-Za-z]\w*|\[\d+\])+|(?:unknown|missing required) field "\w+"'
)


@pytest.fixture(scope="module")
def stack(
    controlplane: Any, kubectl: Any, crds: list[str], instance: str, tmp_path_factory: Any
) -> Iterator[tuple[webhook_stack.ServedOperator, str]]:
    tls = webhook_stack.make_tls(tmp_path_factory.mktemp("fuzz-tls"))
    log_path: Path = tmp_path_factory.mktemp("fuzz-operator") / "operator.log"
    namespace = f"{instance}-fuzz-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    name = f"{instance}-fuzz-{uuid.uuid4().hex[:6]}"
    try:
        with webhook_stack.served_operator(
            kubectl, controlplane.env, instance, tls, log_path, name
        ) as served:
            yield served, namespace
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _body(kind: str, name: str, spec: Any, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "damon.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }


def _accepted(kubectl: Any, kind: str, name: str, where: list[str]) -> dict[str, Any] | None:
    status = kubectl.json(kind.lower(), name, *where).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "Accepted"), None)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[strategies.Kind, dict[str, Any]]:
    kind: strategies.Kind = draw(st.sampled_from(["DamonScheme", "ClusterDamonScheme"]))
    if draw(st.booleans()):
        return kind, draw(strategies.specs(kind))
    spec, _, _ = draw(strategies.mutated(kind))
    return kind, spec


def test_drawn_specs_are_let_in_only_when_judged_valid_and_refusals_name_a_field(
    stack: tuple[webhook_stack.ServedOperator, str], kubectl: Any, wait_for: Any
) -> None:
    served, namespace = stack
    pid = served.process.pid
    let_in: list[tuple[str, dict[str, Any]]] = []
    outcomes: dict[str, int] = {}

    @DRAW
    @given(case=_cases())
    # Most draws are refused; these are not, so the way in is taken too.
    @example(case=("DamonScheme", {"podSelector": {}, "schemes": [VALID]}))
    @example(case=("ClusterDamonScheme", {"wholeNode": True, "schemes": [VALID]}))
    def applied(case: tuple[strategies.Kind, dict[str, Any]]) -> None:
        kind, spec = case
        where = ["-n", namespace] if kind == "DamonScheme" else []
        body = _body(kind, f"{served.labels['damon.io/test-stack']}-dry", spec, served.labels)
        result = kubectl("apply", "--dry-run=server", *where, "-f", "-",
                         input=json.dumps(body), check=False)  # fmt: skip
        stored = strategies.prune(spec, strategies.crd_spec_schema(kind))
        _, verdict = validation.judge(kind, stored)
        if result.returncode == 0:
            outcomes["let in"] = outcomes.get("let in", 0) + 1
            assert verdict.accepted, (verdict.message, spec)
            let_in.append((kind, spec))
        elif "denied the request" in result.stderr:
            outcomes["webhook"] = outcomes.get("webhook", 0) + 1
            assert not verdict.accepted and verdict.message in result.stderr, result.stderr
            for path in strategies.named_paths(verdict.message):
                assert strategies.resolves(stored, path), (path, verdict.message)
        else:
            outcomes["schema"] = outcomes.get("schema", 0) + 1
            assert SCHEMA_FIELD.search(result.stderr), result.stderr
        assert served.process.poll() is None, served.log()[-3000:]

    applied()
    assert set(outcomes) == {"let in", "webhook", "schema"}, outcomes

    # The operator judges what gets in as the webhook did: Accepted=True, or False with a
    # reason of its own (a tier no node reports is not the spec's fault).
    for index, (kind, spec) in enumerate(let_in[:2]):
        where = ["-n", namespace] if kind == "DamonScheme" else []
        name = f"{served.labels['damon.io/test-stack']}-real-{index}"
        kubectl(
            "apply", *where, "-f", "-", input=json.dumps(_body(kind, name, spec, served.labels))
        )
        try:
            condition = wait_for(
                lambda kind=kind, name=name, where=where: _accepted(kubectl, kind, name, where),
                what=f"the operator's Accepted condition on {kind} {name}",
            )
            assert condition["status"] == "True" or condition["reason"] == "TierUnavailable", (
                condition
            )
        finally:
            kubectl("patch", kind.lower(), name, *where, "--type=merge", "-p",
                    '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
            kubectl("delete", kind.lower(), name, *where, "--wait=false", check=False)

    assert served.process.poll() is None and served.process.pid == pid
    assert "Traceback" not in served.log(), served.log()[-3000:]
