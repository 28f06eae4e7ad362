"""The generated CRDs in the real kube-apiserver: install, accept examples, reject bad CRs."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.kube


def test_crds_are_established_with_names_and_status_subresource(kubectl: Any, crds: list[str]):
    assert {"damonschemes.damon.io", "clusterdamonschemes.damon.io", "damonnodes.damon.io"} <= set(
        crds
    )
    resources = kubectl("api-resources", "--api-group=damon.io", "-o", "wide").stdout
    for short, kind in (
        ("dsc", "DamonScheme"),
        ("cdsc", "ClusterDamonScheme"),
        ("dn", "DamonNode"),
    ):
        line = next(line for line in resources.splitlines() if f" {kind} " in f" {line} ")
        assert f" {short} " in f" {line} ", line
        assert "damon" in line  # category
    crd = kubectl.json("crd", "damonnodes.damon.io")
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["scope"] == "Cluster"


def test_examples_apply_and_show_printer_columns(kubectl: Any, apply: Any, namespace: str):
    apply("reclaim-cold.yaml", namespace)
    apply("tiering.yaml")
    header = kubectl("get", "damonschemes", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "ACTION", "NODES-READY", "APPLIED", "SAVED", "AGE"]
    stored = kubectl.json("damonscheme", "-n", namespace, "reclaim-cold")
    # Human units are kept as written; integers are accepted where units are (int-or-string).
    assert stored["spec"]["schemes"][0]["accessPattern"]["age"]["min"] == "2m"
    listed = kubectl("get", "damon", "-n", namespace, "-o", "name").stdout
    assert "damonscheme.damon.io/reclaim-cold" in listed


def test_bare_numbers_are_accepted_for_unit_fields(apply: Any, namespace: str, kubectl: Any):
    body = {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "DamonScheme",
        "metadata": {"name": "numbers"},
        "spec": {
            "podSelector": {},
            "schemes": [{"name": "s", "action": "stat", "accessPattern": {"size": {"min": 4096}}}],
        },
    }
    apply(body, namespace)
    stored = kubectl.json("damonscheme", "-n", namespace, "numbers")
    assert stored["spec"]["schemes"][0]["accessPattern"]["size"]["min"] == 4096


def test_schema_rejects_an_unknown_action_with_a_clear_message(apply: Any, namespace: str):
    result = apply("bad-enum.yaml", namespace, check=False)
    assert result.returncode != 0
    assert 'spec.schemes.action: Unsupported value: "evict"' in result.stderr
    assert '"pageout"' in result.stderr  # the message lists what is allowed


def test_schema_rejects_out_of_bound_numbers(apply: Any, namespace: str):
    body = {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "DamonScheme",
        "metadata": {"name": "too-many-regions"},
        "spec": {
            "podSelector": {},
            "monitoring": {"regions": {"min": 1, "max": 10}},
            "schemes": [{"name": "s", "action": "stat"}],
        },
    }
    result = apply(body, namespace, check=False)
    assert result.returncode != 0
    assert "spec.monitoring.regions.min" in result.stderr
    assert "greater than or equal to 3" in result.stderr


def test_namespaced_scheme_has_no_namespace_field_to_widen(apply: Any, namespace: str):
    # A tenant cannot name other namespaces: the DamonScheme schema has no such field.
    body = {
        "apiVersion": "damon.io/v1alpha1",
        "kind": "DamonScheme",
        "metadata": {"name": "greedy"},
        "spec": {
            "podSelector": {},
            "namespaceSelector": {},
            "schemes": [{"name": "s", "action": "stat"}],
        },
    }
    result = apply(body, namespace, check=False)
    assert result.returncode != 0
    assert "namespaceSelector" in result.stderr
