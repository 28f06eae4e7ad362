"""Acceptance of a scheme spec: what the CRD schema cannot say, as a verdict, never a crash.

The apiserver already enforced the structural schema (types, enums, bounds). What is left
needs code or cluster knowledge:

* the pydantic model's cross-field rules (min above max, a goal's metric without the nid
  or path it needs, watermarks out of order, migrate without a destination...);
* an action the targeted operations set cannot do: a whole node is physical memory
  (paddr), which cannot ``willneed``/``cold``/``hugepage``/``nohugepage``; ``vaddr``
  cannot ``lru_prio``/``lru_deprio``;
* a goal that needs a pod (``pod_mem_psi_us``) in a whole-node scheme;
* a destination tier that no targeted node has (judged only once at least one targeted
  node has reported its NUMA tiers; until then it is not known to be wrong).

A verdict is ``Verdict(accepted, reason, message)``; reasons are CamelCase as conditions
want. Nothing here raises for bad input.

``judge`` (parse, then check the actions) is the whole verdict on a spec by itself: the
operator's index and the admission webhook (``admission``) both call it. The tier check
needs the nodes' reports and stays the operator's (the webhook only warns with it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic

from damon_agent.api import resources
from damon_agent.api import schemes as api_schemes

VADDR_ONLY_ACTIONS = frozenset({"willneed", "cold", "hugepage", "nohugepage"})
PADDR_ONLY_ACTIONS = frozenset({"lru_prio", "lru_deprio"})
POD_METRICS = frozenset({"pod_mem_psi_us"})

SchemeSpecModel = resources.DamonSchemeSpec | resources.ClusterDamonSchemeSpec


@dataclasses.dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str
    message: str


ACCEPTED = Verdict(True, "Valid", "the spec is valid")


def parse(kind: str, raw_spec: Mapping[str, Any] | None) -> SchemeSpecModel | Verdict:
    """The validated spec model, or a rejecting verdict naming the fields at fault."""
    model: type[SchemeSpecModel] = (
        resources.DamonSchemeSpec if kind == "DamonScheme" else resources.ClusterDamonSchemeSpec
    )
    try:
        return model.model_validate(dict(raw_spec or {}))
    except pydantic.ValidationError as err:
        return Verdict(False, "InvalidSpec", resources.describe(err))


def judge(kind: str, raw_spec: Mapping[str, Any] | None) -> tuple[SchemeSpecModel | None, Verdict]:
    """The spec model (``None`` when it does not parse) and the verdict on it.

    The one judgement of a spec on its own: the index records it for every scheme it sees
    (``Accepted`` condition, assignment) and the admission webhook answers it at
    ``kubectl apply``, so both say the same words. Only ``check_tiers`` is left out: it
    depends on what nodes report, not on the spec.
    """
    parsed = parse(kind, raw_spec)
    if isinstance(parsed, Verdict):
        return None, parsed
    return parsed, check_actions(parsed)


def _whole_node(spec: SchemeSpecModel) -> bool:
    return isinstance(spec, resources.ClusterDamonSchemeSpec) and spec.whole_node


def check_actions(spec: SchemeSpecModel) -> Verdict:
    """Actions and goals the targeted operations set can carry out."""
    whole_node = _whole_node(spec)
    mode = "paddr" if whole_node else spec.monitoring.mode
    for index, scheme in enumerate(spec.schemes):
        where = f"schemes[{index}] ({scheme.name})"
        if mode == "paddr" and scheme.action in VADDR_ONLY_ACTIONS:
            target = "a whole node's physical memory" if whole_node else "mode paddr"
            return Verdict(
                False,
                "UnsupportedAction",
                f"{where}: action {scheme.action} needs virtual address monitoring (vaddr), but "
                f"{target} can only use pageout, lru_prio, lru_deprio, migrate_hot, "
                "migrate_cold or stat",
            )
        if mode == "vaddr" and scheme.action in PADDR_ONLY_ACTIONS:
            return Verdict(
                False,
                "UnsupportedAction",
                f"{where}: action {scheme.action} works on physical memory only (paddr), so "
                "use mode paddr or auto",
            )
        if whole_node and scheme.fill is not None and scheme.fill.pod_share is not None:
            return Verdict(
                False,
                "UnsupportedGoal",
                f"{where}: fill.podShare is a pod's share of DRAM, but the scheme targets "
                "whole nodes",
            )
        goals = scheme.quota.goals if scheme.quota else []
        for goal in goals:
            if whole_node and goal.metric in POD_METRICS:
                return Verdict(
                    False,
                    "UnsupportedGoal",
                    f"{where}: goal metric {goal.metric} measures a pod, but the scheme "
                    "targets whole nodes",
                )
    return ACCEPTED


def check_tiers(spec: SchemeSpecModel, node_tiers: Iterable[frozenset[str] | None]) -> Verdict:
    """Reject a destination tier that no targeted node has (``None``: not reported yet)."""
    reported = [tiers for tiers in node_tiers if tiers is not None]
    if not reported:
        return ACCEPTED
    available = frozenset().union(*reported)
    for index, scheme in enumerate(spec.schemes):
        if scheme.tier is not None and scheme.tier not in available:
            have = ", ".join(sorted(available)) or "none"
            return Verdict(
                False,
                "TierUnavailable",
                f"schemes[{index}] ({scheme.name}): no targeted node has a {scheme.tier} "
                f"memory tier (tiers reported: {have})",
            )
    return ACCEPTED


def actions_summary(spec: SchemeSpecModel) -> str:
    """Printer column: the actions in order, dry-run ones marked."""
    seen: list[str] = []
    for scheme in spec.schemes:
        label = f"{scheme.action}(dry-run)" if scheme.dry_run else scheme.action
        if label not in seen:
            seen.append(label)
    return ",".join(seen)


def scheme_file(spec: SchemeSpecModel) -> api_schemes.SchemeFile:
    """The scheme-file part of a spec, as nodes receive it."""
    return api_schemes.SchemeFile(monitoring=spec.monitoring, schemes=spec.schemes)
