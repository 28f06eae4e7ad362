"""Hypothesis strategies for DamonScheme and ClusterDamonScheme specs, drawn from the CRDs.

The CRDs in crds/ (generated from the pydantic models) give the shape: objects, their
properties and required fields, arrays and their item schemas, enums, integer bounds,
string patterns and lengths. ``specs(kind)`` walks that schema and draws documents of
that shape; ``mutated(kind)`` draws one of those and breaks it in one place, in one of
the ways ``MUTATIONS`` lists (a wrong type, a number out of bounds, a value outside an
enum, a bad unit, an unknown field, a required field taken away), and says where.

What the CRD cannot say is which unit an ``x-kubernetes-int-or-string`` field carries:
``UNIT_OF`` names it per field (a test checks it covers every such field), and values
are drawn from that unit's forms, with a few wrong ones mixed in ("10 parsecs", a size
where a duration belongs), so both accepted and refused specs come out.

Paths are tuples of keys and list indexes; ``field_path`` writes one the way the
verdicts do (``schemes[0].accessPattern.age``). Drawn keys and free text never hold
``.``, ``[`` or ``;``, so the paths named in a verdict can be read back unambiguously.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = {
    "DamonScheme": REPO / "crds" / "damon.io_damonschemes.yaml",
    "ClusterDamonScheme": REPO / "crds" / "damon.io_clusterdamonschemes.yaml",
}
Kind = Literal["DamonScheme", "ClusterDamonScheme"]
PathT = tuple[str | int, ...]
Unit = Literal["duration", "size", "percent", "address", "goal-target"]

# The unit of every int-or-string field, by its last two path components ("*" for any
# parent). The CRD says only "int or string"; the models say which unit they parse.
UNIT_OF: dict[tuple[str, str], Unit] = {
    ("intervals", "*"): "duration",
    ("intervalsGoal", "access"): "percent",
    ("intervalsGoal", "minSample"): "duration",
    ("intervalsGoal", "maxSample"): "duration",
    ("*", "applyInterval"): "duration",
    ("size", "*"): "size",
    ("accessRate", "*"): "percent",
    ("age", "*"): "duration",
    ("quota", "time"): "duration",
    ("quota", "size"): "size",
    ("quota", "resetInterval"): "duration",
    ("protection", "minimum"): "size",
    ("fill", "*"): "percent",
    ("*", "target"): "goal-target",
    ("watermarks", "interval"): "duration",
    ("watermarks", "high"): "percent",
    ("watermarks", "mid"): "percent",
    ("watermarks", "low"): "percent",
    ("*", "addrStart"): "address",
    ("*", "addrEnd"): "address",
    ("*", "minSize"): "size",
    ("*", "maxSize"): "size",
}

_FORMS: dict[Unit, list[Any]] = {
    "duration": ["0", 0, "250us", "5ms", "100ms", "1s", "1.5s", "2m", "1h", "max"],
    "size": ["0", 0, 4096, "4Ki", "2Mi", "128Mi", "1Gi", "10M", "max"],
    "percent": ["0%", "0.05%", "4%", "30%", "50%", "100%"],
    "address": ["0", 4096, "4Ki", "0x7f0000000000", "0x7f0000100000", "1Gi"],
    "goal-target": ["10ms", "1ms", "5%", "0.5%", "100", 100, 1],
}
# Wrong in any unit's field. "99.." is longer than every field's maxLength.
BAD_UNITS: list[Any] = ["10 parsecs", "", "-1s", "ms", "1..5s", "101%", "5 parsecs", "9" * 40, "∞"]

TEXT = st.text(alphabet="abcxyz-_/0189", min_size=1, max_size=12)
KEYS = st.text(alphabet="abcdefghxyz", min_size=1, max_size=8)
UNKNOWN_FIELD = "bogusField"


@functools.cache
def crd_spec_schema(kind: Kind) -> dict[str, Any]:
    """The openAPIV3Schema of ``spec`` in the kind's CRD."""
    crd = yaml.safe_load(CRD_FILES[kind].read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def unit_of(path: PathT) -> Unit:
    """The unit of the int-or-string field at ``path``; KeyError when ``UNIT_OF`` lacks it."""
    names = [p for p in path if isinstance(p, str)]
    parent, name = (names[-2] if len(names) > 1 else ""), names[-1]
    for key in ((parent, name), ("*", name), (parent, "*")):
        if key in UNIT_OF:
            return UNIT_OF[key]
    raise KeyError(f"no unit known for {field_path(path)}")


def int_or_string_paths(schema: Mapping[str, Any], path: PathT = ()) -> list[PathT]:
    """Every int-or-string field of ``schema`` (list items as index 0)."""
    found: list[PathT] = []
    if schema.get("x-kubernetes-int-or-string"):
        found.append(path)
    for name, sub in schema.get("properties", {}).items():
        found += int_or_string_paths(sub, (*path, name))
    if "items" in schema:
        found += int_or_string_paths(schema["items"], (*path, 0))
    return found


def field_path(path: PathT) -> str:
    """``("schemes", 0, "quota")`` -> ``schemes[0].quota``; ``()`` -> ``(top level)``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


_PATH_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def parse_field_path(text: str) -> PathT:
    """The inverse of ``field_path`` (``(top level)`` -> ``()``)."""
    if text == "(top level)":
        return ()
    parts: list[str | int] = []
    for match in _PATH_TOKEN.finditer(text):
        index, name = match.groups()
        parts.append(int(index) if index is not None else name)
    return tuple(parts)


def named_paths(message: str) -> list[PathT]:
    """The field paths a refusal names: one per ``path: reason`` part.

    A part starts with the path, possibly followed by the scheme's name in parentheses
    (``schemes[0] (cold): ...``, the operations-set checks); pydantic names a map's key
    that failed as ``map.key.[key]``.
    """
    paths = []
    for part in message.split("; "):
        head, colon, _ = part.partition(": ")
        assert colon, f"{part!r} does not start with 'field.path: '"
        head = re.sub(r" \([^)]*\)$", "", head).removesuffix(".[key]")
        assert " " not in head or head == "(top level)", f"{head!r} is not a field path"
        paths.append(parse_field_path(head))
    return paths


def resolves(document: Any, path: PathT) -> bool:
    """Whether ``path`` is in ``document``, or is a field missing from an object it has."""
    here = document
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(part, int):
            if not isinstance(here, list) or part >= len(here):
                return False
        elif not isinstance(here, dict) or part not in here:
            return last and isinstance(here, dict)
        here = here[part]
    return True


# -- documents of the schema's shape --------------------------------------------------------


def _value(schema: Mapping[str, Any], path: PathT) -> st.SearchStrategy[Any]:
    if schema.get("x-kubernetes-int-or-string"):
        right = st.sampled_from(_FORMS[unit_of(path)])
        wrong = st.sampled_from(BAD_UNITS)
        # One in twelve wrong: a spec has a dozen such fields, and some should all be right.
        return st.integers(0, 11).flatmap(lambda n: wrong if n == 0 else right)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        return _object(schema, path)
    if kind == "array":
        return st.lists(
            _value(schema["items"], (*path, 0)), max_size=min(2, schema.get("maxItems", 2))
        )
    if kind == "integer":
        low = schema.get("minimum", -(2**31))
        high = schema.get("maximum", 2**62)
        return st.one_of(st.sampled_from([low, high]), st.integers(low, min(high, low + 5_000)))
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        if "pattern" in schema:
            longest = schema.get("maxLength", 63)
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: len(s) <= min(longest, 20) and "." not in s
            )
        return TEXT if schema.get("minLength", 0) else st.one_of(st.just(""), TEXT)
    raise AssertionError(f"{field_path(path)}: schema type {kind!r} is not drawn yet")


def _object(schema: Mapping[str, Any], path: PathT) -> st.SearchStrategy[dict[str, Any]]:
    if "additionalProperties" in schema:  # a map, as matchLabels
        return st.dictionaries(KEYS, _value(schema["additionalProperties"], path), max_size=2)
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {n: _value(s, (*path, n)) for n, s in properties.items() if n in required},
        optional={n: _value(s, (*path, n)) for n, s in properties.items() if n not in required},
    )


def prune(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` without the fields ``schema`` does not have, as the apiserver stores it
    (a structural schema prunes unknown fields)."""
    if isinstance(value, dict) and "properties" in schema:
        known = schema["properties"]
        return {k: prune(v, known[k]) for k, v in value.items() if k in known}
    if isinstance(value, list) and "items" in schema:
        return [prune(v, schema["items"]) for v in value]
    return value


def specs(kind: Kind) -> st.SearchStrategy[dict[str, Any]]:
    """Specs of the CRD's shape: every field of the right type, within its bounds, though
    units, cross-field rules and the operations set may still make them invalid.

    Half of them have a scheme: the models need one, and without it nothing else is
    judged (the model's rules run only on a spec whose fields all parsed)."""
    shaped = _object(crd_spec_schema(kind), ())
    return st.one_of(shaped, shaped.filter(lambda spec: bool(spec.get("schemes"))))


# -- one break in a document ----------------------------------------------------------------

MUTATIONS = ("type", "bounds", "enum", "unit", "unknown-field", "missing-required")
# Wrong types that no lax conversion turns into the right one (pydantic reads True as 1 and
# "5" as 5 for an integer; the apiserver refuses both, so these are left out).
_WRONG_TYPE: dict[str, list[Any]] = {
    "object": ["x", [1]],
    "array": ["x", {"a": 1}],
    "integer": ["ten", [1], {"a": 1}, 1.5],
    "boolean": ["maybe", 7, [True]],
    "string": [[1], {"a": 1}, 7],
    "int-or-string": [[1], {"a": 1}, 1.5, True],
}


def _schema_at(schema: Mapping[str, Any], path: PathT) -> Mapping[str, Any]:
    for part in path:
        if isinstance(part, int):
            schema = schema["items"]
        elif "additionalProperties" in schema:
            schema = schema["additionalProperties"]
        else:
            schema = schema["properties"][part]
    return schema


def _walk(value: Any, path: PathT = ()) -> list[tuple[PathT, Any]]:
    found = [(path, value)]
    if isinstance(value, dict):
        for key, sub in value.items():
            found += _walk(sub, (*path, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            found += _walk(sub, (*path, index))
    return found


def _type_of(schema: Mapping[str, Any]) -> str:
    return "int-or-string" if schema.get("x-kubernetes-int-or-string") else schema["type"]


def _candidates(kind: Kind, doc: dict[str, Any]) -> list[tuple[str, PathT, Mapping[str, Any], Any]]:
    """Every (mutation, path, schema there, value there) the document allows."""
    root = crd_spec_schema(kind)
    found: list[tuple[str, PathT, Mapping[str, Any], Any]] = []
    for path, value in _walk(doc):
        schema = _schema_at(root, path)
        if path:  # the spec itself is an object whatever is sent: judge takes a mapping
            found.append(("type", path, schema, value))
        if "enum" in schema:
            found.append(("enum", path, schema, value))
        if schema.get("x-kubernetes-int-or-string"):
            found.append(("unit", path, schema, value))
        elif "minimum" in schema or "maximum" in schema or "maxLength" in schema:
            found.append(("bounds", path, schema, value))
        if isinstance(value, dict) and "properties" in schema:
            found.append(("unknown-field", path, schema, value))
            found += [("missing-required", (*path, name), schema, value)
                      for name in schema.get("required", []) if name in value]  # fmt: skip
    return found


def _set(doc: dict[str, Any], path: PathT, value: Any) -> None:
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value


def _delete(doc: dict[str, Any], path: PathT) -> None:
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]


@st.composite
def mutated(draw: st.DrawFn, kind: Kind) -> tuple[dict[str, Any], str, PathT]:
    """A spec of the CRD's shape broken in one place: ``(spec, mutation, path)``.

    ``path`` is where the break is: the field changed or taken away, or the object that
    got an unknown field (whose path is then ``path + (UNKNOWN_FIELD,)``).
    """
    doc = draw(specs(kind))
    wanted = draw(st.sampled_from(MUTATIONS))
    candidates = _candidates(kind, doc)
    # Each kind of break as often as the others (objects outnumber the rest), when this
    # document has a place for it.
    candidates = [c for c in candidates if c[0] == wanted] or candidates
    mutation, path, schema, _ = draw(st.sampled_from(candidates))
    broken = copy.deepcopy(doc)
    if mutation == "missing-required":
        _delete(broken, path)
    elif mutation == "unknown-field":
        _set(broken, (*path, UNKNOWN_FIELD), draw(st.sampled_from([1, "x", {}])))
    else:
        if mutation == "type":
            bad = draw(st.sampled_from(_WRONG_TYPE[_type_of(schema)]))
        elif mutation == "enum":
            bad = draw(st.sampled_from(["bogus", schema["enum"][0].upper() + "x"]))
        elif mutation == "unit":
            bad = draw(st.sampled_from([b for b in BAD_UNITS if b != ""]))
        else:  # bounds
            bad = draw(st.sampled_from(_out_of_bounds(schema)))
        _set(broken, path, bad)
    return broken, mutation, path


def _out_of_bounds(schema: Mapping[str, Any]) -> list[Any]:
    if schema.get("type") == "integer":
        bounds = []
        if "minimum" in schema:
            bounds.append(schema["minimum"] - 1)
        if "maximum" in schema:
            bounds.append(schema["maximum"] + 1)
        return bounds
    too_long = "a" * (schema["maxLength"] + 1)
    return [too_long, ""] if schema.get("minLength") else [too_long]
