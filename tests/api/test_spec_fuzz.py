"""Scheme specs drawn from the CRDs' schemas, right and wrong, through ``validation.judge``.

``judge`` is the one verdict on a spec (the operator's ``Accepted`` condition and the
admission webhook's answer at ``kubectl apply``). Whatever it is given it must answer,
never raise, and a refusal must say where: every ``path: reason`` part of the message
names a field the document has (or, for a field that is missing, one whose parent it
has). A spec broken in one known place (spec_strategies.MUTATIONS) is refused naming
that place: the models are at least as strict as the CRDs generated from them.

Derandomized and database-less: the same hundred-odd examples per test on every run, a few
seconds in all. tests/kube/test_spec_fuzz_apiserver.py sends a smaller draw through a
real ``kubectl apply``.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
import spec_strategies as strategies
from hypothesis import example, given, settings
from hypothesis import strategies as st

from damon_operator import validation

KINDS: tuple[strategies.Kind, ...] = ("DamonScheme", "ClusterDamonScheme")
REASONS = {"Valid", "InvalidSpec", "UnsupportedAction", "UnsupportedGoal"}
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None)


def _verdict(kind: str, spec: dict[str, Any]) -> validation.Verdict:
    model, verdict = validation.judge(kind, spec)
    assert verdict.reason in REASONS, verdict
    assert verdict.accepted == (verdict.reason == "Valid"), verdict
    assert (model is None) == (verdict.reason == "InvalidSpec"), verdict
    return verdict


def test_every_int_or_string_field_has_a_known_unit() -> None:
    for kind in KINDS:
        fields = strategies.int_or_string_paths(strategies.crd_spec_schema(kind))
        assert len(fields) >= 20, kind
        for path in fields:
            assert strategies.unit_of(path) in strategies.UNIT_OF.values()


def test_paths_read_back_as_written() -> None:
    path: strategies.PathT = ("schemes", 1, "quota", "goals", 0, "target")
    assert strategies.field_path(path) == "schemes[1].quota.goals[0].target"
    assert strategies.parse_field_path(strategies.field_path(path)) == path
    assert strategies.parse_field_path("(top level)") == ()
    assert strategies.named_paths(
        "schemes[0] (cold-1): action cold needs vaddr; (top level): x"
    ) == [
        ("schemes", 0),
        (),
    ]
    assert strategies.resolves({"a": {"b": [1]}}, ("a", "b", 0))
    assert strategies.resolves({"a": {}}, ("a", "missing"))
    assert not strategies.resolves({"a": {}}, ("a", "missing", "deeper"))
    assert not strategies.resolves({"a": [1]}, ("a", 1))


@pytest.mark.parametrize("kind", KINDS)
def test_judge_answers_every_spec_of_the_schemas_shape_naming_real_fields(kind: str) -> None:
    seen: collections.Counter[str] = collections.Counter()

    @FUZZ
    @given(spec=strategies.specs(kind))  # type: ignore[arg-type]
    @example(
        spec={
            "podSelector": {},
            "schemes": [
                {
                    "name": "s",
                    "action": "pageout",
                    "accessPattern": {"age": {"min": "2m", "max": "1m"}},
                }
            ],
        }
    )
    @example(
        spec={
            "podSelector": {},
            "schemes": [{"name": "s", "action": "pageout", "quota": {"size": "10 parsecs"}}],
        }
    )
    @example(
        spec={
            "podSelector": {},
            "monitoring": {"mode": "paddr"},
            "schemes": [{"name": "s", "action": "cold"}],
        }
    )
    @example(spec={"podSelector": {"matchLabels": {"app": "web"}}, "schemes": [
        {"name": "s", "action": "pageout", "accessPattern": {"age": {"min": "2m"}}}]})  # fmt: skip
    def judged(spec: dict[str, Any]) -> None:
        verdict = _verdict(kind, spec)
        seen[verdict.reason] += 1
        if verdict.accepted:
            return
        for path in strategies.named_paths(verdict.message):
            assert strategies.resolves(spec, path), (
                strategies.field_path(path),
                verdict.message,
                spec,
            )

    judged()
    # Each kind of answer is reached (the examples make sure of it; most draws are
    # refused: a spec has a dozen unit fields and cross-field rules to get right).
    assert seen["Valid"] >= 1 and seen["InvalidSpec"] >= 30, seen
    assert seen["UnsupportedAction"] >= 1, seen


@pytest.mark.parametrize("kind", KINDS)
def test_a_spec_broken_in_one_place_is_refused_naming_that_place(kind: str) -> None:
    seen: collections.Counter[str] = collections.Counter()

    @FUZZ
    @given(case=strategies.mutated(kind))  # type: ignore[arg-type]
    def judged(case: tuple[dict[str, Any], str, strategies.PathT]) -> None:
        spec, mutation, path = case
        seen[mutation] += 1
        verdict = _verdict(kind, spec)
        assert not verdict.accepted, (mutation, strategies.field_path(path), spec)
        named = strategies.named_paths(verdict.message)
        for found in named:
            assert strategies.resolves(spec, found), (strategies.field_path(found), verdict.message)
        at = (*path, strategies.UNKNOWN_FIELD) if mutation == "unknown-field" else path
        # A goal's target is read by the goal, which knows the metric it is measured in.
        goal_target = mutation == "unit" and path[-1] == "target"
        assert at in named or (goal_target and path[:-1] in named), (
            mutation,
            strategies.field_path(at),
            verdict.message,
        )

    judged()
    assert set(seen) == set(strategies.MUTATIONS), seen


@FUZZ
@given(spec=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=12,
))  # fmt: skip
def test_judge_never_raises_on_json_of_any_shape(spec: Any) -> None:
    # What reaches judge is a mapping (the apiserver's structural schema says so), or None.
    verdict = _verdict("ClusterDamonScheme", spec if isinstance(spec, dict) else {"x": spec})
    assert not verdict.accepted
