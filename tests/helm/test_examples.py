"""The top-level examples: accepted by the API server's CRD schemas (server-side dry run),
by the API models and by the operator's own checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from damon_agent.api import resources
from damon_operator import validation

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "reclaim-cold.yaml": "DamonScheme",
    "reclaim-cold-protected.yaml": "DamonScheme",
    "cxl-tiering.yaml": "ClusterDamonScheme",
    "stat-dry-run.yaml": "DamonScheme",
}


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())
    return loaded


@pytest.mark.parametrize(("name", "kind"), sorted(EXAMPLES.items()))
def test_example_is_valid_for_the_models_and_the_operator(name: str, kind: str) -> None:
    example = _load(name)
    assert example["kind"] == kind
    assert "namespace" not in example["metadata"], "examples are applied with -n"
    parsed = validation.parse(kind, example["spec"])
    assert not isinstance(parsed, validation.Verdict), parsed
    assert validation.check_actions(parsed) == validation.ACCEPTED
    spec = resources.DamonSchemeSpec if kind == "DamonScheme" else resources.ClusterDamonSchemeSpec
    assert spec.model_validate(example["spec"]).schemes


def test_examples_are_what_the_readme_explains() -> None:
    readme = (REPO / "examples" / "README.md").read_text()
    top_level = sorted(p.name for p in (REPO / "examples").glob("*.yaml"))
    assert top_level == sorted(EXAMPLES)
    for name in EXAMPLES:
        assert f"## {name}" in readme
    tiering = _load("cxl-tiering.yaml")["spec"]
    assert {s["action"] for s in tiering["schemes"]} == {"migrate_hot", "migrate_cold"}
    assert tiering["wholeNode"] is True
    dry = _load("stat-dry-run.yaml")["spec"]["schemes"]
    assert all(s["action"] == "stat" or s.get("dryRun") for s in dry)
    goals = _load("reclaim-cold.yaml")["spec"]["schemes"][0]["quota"]["goals"]
    assert any(g["metric"].endswith("psi_us") for g in goals)
    protected = _load("reclaim-cold-protected.yaml")["spec"]
    assert (
        protected["protection"]["floor"] == "requests"
        and "Guaranteed" not in protected["qosClasses"]
    )


@pytest.fixture(scope="module")
def crds_installed(kubectl: Any) -> None:
    kubectl("apply", "-f", str(REPO / "crds"))
    names = kubectl("get", "-f", str(REPO / "crds"), "-o", "name").stdout.split()
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


@pytest.mark.kube
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_passes_server_side_validation(
    kubectl: Any, crds_installed: None, name: str
) -> None:
    path = REPO / "examples" / name
    result = kubectl("apply", "--dry-run=server", "-n", "default", "-f", str(path))
    assert "(server dry run)" in result.stdout


@pytest.mark.kube
def test_server_side_dry_run_does_reject_a_broken_example(
    kubectl: Any, crds_installed: None
) -> None:
    broken = _load("reclaim-cold.yaml")
    broken["spec"]["schemes"][0]["action"] = "evict"
    result = kubectl(
        "apply", "--dry-run=server", "-n", "default", "-f", "-",
        input=json.dumps(broken), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "action" in result.stderr and "evict" in result.stderr
