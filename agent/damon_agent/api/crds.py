"""Generate the CustomResourceDefinitions from the pydantic models.

    python -m damon_agent.api.crds            # write crds/*.yaml and the chart's copy
    python -m damon_agent.api.crds --check    # exit 1 if a committed file differs

The models are the single source of truth; the YAML is derived. pydantic emits JSON Schema
(draft 2020-12 with ``$defs``/``$ref``, ``anyOf`` with ``null`` for optional fields, titles,
examples, ``additionalProperties: false``, ``const``); kube-apiserver wants a *structural*
OpenAPI v3 schema: every node typed, no references, no ``null`` type, logical junctors
only for value validation. ``structural`` rewrites one into the other:

* ``$ref`` is inlined (the models are not recursive);
* ``X | None`` becomes ``X`` — an absent field is how Kubernetes says "none";
* unit strings that also take a bare YAML number ("0", 4096) become
  ``x-kubernetes-int-or-string``, untyped as 1.20 wants it (detected by asking the
  field's before-validator whether it turns an integer into text, so no list of such
  fields has to be kept in sync);
* ``const`` becomes a one-value ``enum``; titles, examples, defaults and
  ``additionalProperties: false`` are dropped (pydantic applies the defaults; unknown
  fields are pruned by the server, refused by kubectl's validation);
* integers bounded beyond 2^53 get ``format: int64`` instead of that bound.

Errors: ``CrdError`` for a model the conversion cannot express::

    Exception
     └── CrdError
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pydantic
import pydantic.json_schema
import yaml
from pydantic_core import core_schema

from damon_agent.api import resources

HEADER = "# Generated from damon_agent.api by `python -m damon_agent.api.crds`. Do not edit.\n"
REPO_ROOT = Path(__file__).resolve().parents[3]
OUTPUT_DIRS = (Path("crds"), Path("helm/damon-k8s/crds"))
_INT_OR_STRING_MARK = "x-damon-int-or-string"
_DROPPED_KEYS = frozenset({"title", "default", "examples", "readOnly", "discriminator", "$defs"})
_FLOAT_EXACT_INT = 2**53


class CrdError(Exception):
    """A model's JSON schema has a construct a structural CRD schema cannot carry."""


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0


@dataclasses.dataclass(frozen=True)
class KindSpec:
    kind: str
    scope: str
    short_names: tuple[str, ...]
    spec_model: type[pydantic.BaseModel]
    status_model: type[pydantic.BaseModel]
    spec_required: bool
    columns: tuple[Column, ...]

    @property
    def plural(self) -> str:
        return resources.PLURALS[self.kind]


CATEGORIES = ("damon",)
_AGE = Column("Age", "date", ".metadata.creationTimestamp", "Time since creation")
_SCHEME_COLUMNS = (
    Column("Action", "string", ".status.actions", "DAMOS actions of the schemes"),
    Column("Nodes-Ready", "string", ".status.nodesReady", "Targeted nodes where it runs"),
    Column("Applied", "string", ".status.applied", "Bytes acted on, all nodes"),
    Column("Saved", "string", ".status.saved", "Memory its pods gave back, all nodes"),
    Column(
        "Accepted",
        "string",
        '.status.conditions[?(@.type=="Accepted")].status',
        "Whether the operator accepted the spec",
        priority=1,
    ),
    _AGE,
)

# Short names avoid "ds" (DaemonSet's) so that `kubectl get ds` stays unambiguous.
KINDS: tuple[KindSpec, ...] = (
    KindSpec(
        kind="DamonScheme",
        scope="Namespaced",
        short_names=("dsc",),
        spec_model=resources.DamonSchemeSpec,
        status_model=resources.SchemeStatus,
        spec_required=True,
        columns=_SCHEME_COLUMNS,
    ),
    KindSpec(
        kind="ClusterDamonScheme",
        scope="Cluster",
        short_names=("cdsc",),
        spec_model=resources.ClusterDamonSchemeSpec,
        status_model=resources.SchemeStatus,
        spec_required=True,
        columns=_SCHEME_COLUMNS,
    ),
    KindSpec(
        kind="DamonNode",
        scope="Cluster",
        short_names=("dn",),
        spec_model=resources.DamonNodeSpec,
        status_model=resources.DamonNodeStatus,
        spec_required=False,
        columns=(
            Column("Backend", "string", ".status.backend", "Engine: kernel, userspace or sim"),
            Column("Tiers", "string", ".status.tiers", "Memory tier of each NUMA node"),
            Column("PSI", "number", ".status.psi.someAvg10", "Memory PSI some avg10 (%)"),
            Column("Schemes", "string", ".status.schemesReady", "Ready/assigned schemes"),
            Column("Applied", "string", ".status.applied", "Bytes acted on by all schemes"),
            Column("Saved", "string", ".status.saved", "Memory the selected pods gave back"),
            Column(
                "Kdamond-CPU", "string", ".status.kdamondCpu", "The kdamonds' share of a CPU", 1
            ),
            Column("Heartbeat", "date", ".status.heartbeat", "Last agent heartbeat", 1),
            _AGE,
        ),
    ),
)


class _MarkIntOrString(pydantic.json_schema.GenerateJsonSchema):
    """pydantic's generator, marking strings whose before-validator also takes integers."""

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> pydantic.json_schema.JsonSchemaValue:
        generated = super().function_before_schema(schema)
        function = schema["function"]
        if (
            function["type"] == "no-info"
            and generated.get("type") == "string"
            and _turns_integers_into_text(function["function"])
        ):
            return {**generated, _INT_OR_STRING_MARK: True}
        return generated


def _turns_integers_into_text(validate: Callable[..., Any]) -> bool:
    try:
        return bool(validate(4096) == "4096")
    except Exception:  # any refusal means "does not take integers"
        return False


def json_schema(model: type[pydantic.BaseModel], mode: str) -> dict[str, Any]:
    """pydantic's JSON schema of ``model`` (``validation`` or ``serialization`` mode)."""
    return model.model_json_schema(
        mode=mode,  # type: ignore[arg-type]
        schema_generator=_MarkIntOrString,
        ref_template="#/$defs/{model}",
    )


def structural(
    schema: Mapping[str, Any], defs: Mapping[str, Any], path: str = ""
) -> dict[str, Any]:
    """A structural OpenAPI v3 schema equivalent to pydantic's ``schema``."""
    node = dict(schema)
    while "$ref" in node or "anyOf" in node:
        if "anyOf" in node:
            node = _without_null(node, path)
        else:
            name = node.pop("$ref").rsplit("/", 1)[-1]
            if name not in defs:
                raise CrdError(f"{path or '(root)'}: reference to unknown definition {name}")
            node = {**defs[name], **node}
    if node.pop(_INT_OR_STRING_MARK, False):
        return _int_or_string(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "additionalProperties" and value is False):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out["properties"] = {
                name: structural(sub, defs, f"{path}.{name}") for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties"):
            out[key] = structural(value, defs, f"{path}[]")
        elif key == "propertyNames":
            continue  # dict key constraints: not expressible; pydantic checks them
        else:
            out[key] = value
    if "type" not in out:
        if "enum" in out and all(isinstance(v, str) for v in out["enum"]):
            out["type"] = "string"
        elif "properties" in out:
            out["type"] = "object"
        else:
            raise CrdError(f"{path or '(root)'}: no type in {dict(node)}")
    if out["type"] == "integer" and any(
        abs(out.get(bound, 0)) > _FLOAT_EXACT_INT for bound in ("minimum", "maximum")
    ):
        # The apiserver holds bounds as float64: 2^63-1 rounds to 2^63 and overflows to
        # -2^63 when compared. int64 is the bound a value that large means anyway.
        out["format"] = "int64"
        for bound in ("minimum", "maximum"):
            if abs(out.get(bound, 0)) > _FLOAT_EXACT_INT:
                del out[bound]
    if "required" in out:
        # Computed fields (readOnly in pydantic's serialization schema) may be left out of
        # a write, e.g. when empty; they are never required.
        computed = {k for k, v in node.get("properties", {}).items() if v.get("readOnly")}
        out["required"] = [name for name in out["required"] if name not in computed]
        if not out["required"]:
            del out["required"]
    return out


def _without_null(node: dict[str, Any], path: str) -> dict[str, Any]:
    options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
    if len(options) != 1:
        raise CrdError(f"{path or '(root)'}: a union of {len(options)} types has no CRD form")
    return {**options[0], **node}


def _int_or_string(node: Mapping[str, Any]) -> dict[str, Any]:
    # kube-apiserver 1.20 accepts int-or-string only without typed anyOf branches; the
    # string constraints still apply to string values (validators skip other types).
    out: dict[str, Any] = {"x-kubernetes-int-or-string": True}
    for key in ("description", "maxLength", "minLength", "pattern"):
        if key in node:
            out[key] = node[key]
    return out


def _section(model: type[pydantic.BaseModel], mode: str) -> dict[str, Any]:
    raw = json_schema(model, mode)
    return structural(raw, raw.get("$defs", {}), "")


def crd(kind: KindSpec) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind, as a plain dict."""
    spec_schema = _section(kind.spec_model, "validation")
    status_schema = _section(kind.status_model, "serialization")
    root: dict[str, Any] = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if kind.spec_required:
        root["required"] = ["spec"]
    singular = kind.kind.lower()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{resources.GROUP}"},
        "spec": {
            "group": resources.GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": singular,
                "shortNames": list(kind.short_names),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": resources.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [_column(c) for c in kind.columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _column(column: Column) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": column.name,
        "type": column.type,
        "jsonPath": column.json_path,
        "description": column.description,
    }
    if column.priority:
        out["priority"] = column.priority
    return out


def peering_crd(scope: str) -> dict[str, Any]:
    """kopf's peering resource (``kopf.dev/v1``), through which operator replicas agree on
    which one acts. Its status is kopf's own bookkeeping, kept as is."""
    kind = "ClusterKopfPeering" if scope == "Cluster" else "KopfPeering"
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def _yaml(document: Mapping[str, Any]) -> str:
    return HEADER + yaml.safe_dump(dict(document), sort_keys=False, width=100)


def render() -> dict[str, str]:
    """File name -> YAML text, for every kind and kopf's peering kinds."""
    files = {f"{resources.GROUP}_{kind.plural}.yaml": _yaml(crd(kind)) for kind in KINDS}
    for scope in ("Cluster", "Namespaced"):
        document = peering_crd(scope)
        files[f"kopf.dev_{document['spec']['names']['plural']}.yaml"] = _yaml(document)
    return files


def stale_files(root: Path) -> list[Path]:
    """Files under ``root`` whose content differs from what the models generate."""
    rendered = render()
    stale = []
    for directory in OUTPUT_DIRS:
        for name, text in rendered.items():
            path = root / directory / name
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
    return stale


def write(root: Path) -> list[Path]:
    written = []
    for directory in OUTPUT_DIRS:
        (root / directory).mkdir(parents=True, exist_ok=True)
        for name, text in render().items():
            path = root / directory / name
            path.write_text(text)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m damon_agent.api.crds", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed files differ")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.root)
        for path in stale:
            sys.stderr.write(f"stale: {path} (run python -m damon_agent.api.crds)\n")
        return 1 if stale else 0
    for path in write(args.root):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
