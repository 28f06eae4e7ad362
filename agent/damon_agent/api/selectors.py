"""Kubernetes label selectors: the model and the matching rule, pure.

Both the operator (which nodes and namespaces a scheme targets) and the agent (which pods
on its node a scheme targets) match labels, so the rule lives here, in the lowest layer,
once. Semantics follow ``metav1.LabelSelector``: ``matchLabels`` and every
``matchExpressions`` entry must all hold; an empty selector matches everything; ``In`` and
``NotIn`` need values, ``Exists`` and ``DoesNotExist`` take none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import pydantic

from damon_agent.api import base

# Mutable field defaults are safe: pydantic copies them for every instance. Ruff knows
# that of pydantic.BaseModel subclasses but cannot follow base.ApiModel to it.
# ruff: noqa: RUF012

MAX_LABELS = 64
LabelKey = Annotated[str, pydantic.Field(min_length=1, max_length=317)]
LabelValue = Annotated[str, pydantic.Field(max_length=63)]


class LabelSelectorRequirement(base.ApiModel):
    """One expression: ``key`` ``operator`` ``values``."""

    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Annotated[list[LabelValue], pydantic.Field(max_length=MAX_LABELS)] = []

    @pydantic.model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # NotIn


class LabelSelector(base.ApiModel):
    """A label query; the empty selector ``{}`` matches every object."""

    match_labels: Annotated[dict[LabelKey, LabelValue], pydantic.Field(max_length=MAX_LABELS)] = {}
    match_expressions: Annotated[
        list[LabelSelectorRequirement], pydantic.Field(max_length=MAX_LABELS)
    ] = []

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        return all(requirement.matches(labels) for requirement in self.match_expressions)


def matches(selector: LabelSelector | None, labels: Mapping[str, str] | None) -> bool:
    """An absent selector matches everything (as an empty one does)."""
    return selector is None or selector.matches(labels)
