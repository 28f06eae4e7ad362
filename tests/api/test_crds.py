"""The CRD generator: committed YAML matches the models, and the schemas are structural."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from damon_agent.api import crds, resources

REPO = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models():
    stale = crds.stale_files(REPO)
    assert stale == [], (
        f"{[str(p) for p in stale]} differ from the models: run "
        "`.venv/bin/python -m damon_agent.api.crds` and commit the result"
    )


def test_check_mode_fails_on_a_hand_edited_copy(tmp_path: Path):
    crds.write(tmp_path)
    assert crds.main(["--check", "--root", str(tmp_path)]) == 0
    edited = tmp_path / "helm/damon-k8s/crds/damon.io_damonschemes.yaml"
    edited.write_text(edited.read_text().replace("shortNames", "shortnames"))
    assert crds.main(["--check", "--root", str(tmp_path)]) == 1


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _nodes(schema[key], f"{path}[]")


@pytest.mark.parametrize("kind", crds.KINDS, ids=lambda k: k.kind)
def test_schemas_are_structural(kind: crds.KindSpec):
    document = crds.crd(kind)
    schema = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(schema):
        assert "$ref" not in node and "$defs" not in node, path
        assert "anyOf" not in node or node.get("x-kubernetes-int-or-string"), path
        assert node.get("type") in {
            "object",
            "array",
            "string",
            "integer",
            "number",
            "boolean",
        } or (node.get("x-kubernetes-int-or-string") and "type" not in node), f"{path}: {node}"
        assert node.get("additionalProperties") is not False, path
        for bound in ("minimum", "maximum"):
            assert abs(node.get(bound, 0)) <= 2**53, f"{path}: {bound} beyond float precision"


def test_unit_fields_take_integers_and_enums_are_kept():
    schema = crds.crd(crds.KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    scheme = schema["properties"]["spec"]["properties"]["schemes"]["items"]["properties"]
    age_min = scheme["accessPattern"]["properties"]["age"]["properties"]["min"]
    assert age_min["x-kubernetes-int-or-string"] is True
    assert "pageout" in scheme["action"]["enum"]
    assert scheme["name"]["type"] == "string"  # plain strings stay strings


def test_status_subresource_columns_and_names():
    for kind in crds.KINDS:
        version = crds.crd(kind)["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        names = [c["name"] for c in version["additionalPrinterColumns"]]
        assert names[-1] == "Age"
    scheme_columns = crds.crd(crds.KINDS[0])["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in scheme_columns if not c.get("priority")] == [
        "Action", "Nodes-Ready", "Applied", "Saved", "Age",
    ]  # fmt: skip
    names = crds.crd(crds.KINDS[0])["spec"]["names"]
    assert "ds" not in names["shortNames"]  # DaemonSet's
    assert names["categories"] == ["damon"]


def test_computed_status_fields_are_in_the_schema_but_not_required():
    node = crds.crd(crds.KINDS[2])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = node["properties"]["status"]
    computed = {"tiers", "schemesReady", "applied", "saved", "kdamondCpu"}
    assert computed <= set(status["properties"])
    assert not computed & set(status.get("required", []))


def test_generated_yaml_round_trips():
    for name, text in crds.render().items():
        document = yaml.safe_load(text)
        assert document["kind"] == "CustomResourceDefinition", name
        assert text.startswith(crds.HEADER)
    assert resources.GROUP == "damon.io"


def test_unsupported_union_is_a_clear_error():
    with pytest.raises(crds.CrdError, match=r"\.x: a union of 2 types"):
        crds.structural(
            {"properties": {"x": {"anyOf": [{"type": "string"}, {"type": "boolean"}]}}}, {}
        )
