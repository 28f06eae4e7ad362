"""The operator's in-memory picture of the cluster, fed by watch events; pure data.

kopf's event handlers call ``Index.put_*``/``remove_*`` with the objects they see. Each
call returns what became stale: the nodes whose DamonNode spec must be recomputed and the
schemes whose status must be re-aggregated. The controller acts on those sets; nothing
here does I/O, so the bookkeeping is tested without a cluster.

Keeping the picture in memory is what makes aggregation cheap at scale: a DamonNode status
update is parsed once, when it arrives, and a scheme's status is then a walk over its
targeted nodes' parsed statuses, not a LIST of a thousand objects.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

import pydantic

from damon_agent.api import resources
from damon_operator import validation


@dataclasses.dataclass
class SchemeEntry:
    kind: str
    namespace: str | None
    name: str
    uid: str
    generation: int
    deleting: bool
    spec: validation.SchemeSpecModel | None
    verdict: validation.Verdict
    # Set by the status aggregation: whether some targeted node has the tiers it needs.
    tier_accepted: bool = True

    @property
    def key(self) -> str:
        return resources.scheme_key(self.kind, self.namespace, self.name)

    @property
    def assignable(self) -> bool:
        """Whether nodes should run it (accepted and not being deleted)."""
        return (
            self.spec is not None
            and self.verdict.accepted
            and self.tier_accepted
            and not self.deleting
        )


@dataclasses.dataclass
class NodeEntry:
    name: str
    labels: dict[str, str]
    uid: str = ""


@dataclasses.dataclass
class DamonNodeEntry:
    name: str
    spec: dict[str, Any]
    status: resources.DamonNodeStatus | None
    status_error: str | None = None

    def lists(self, key: str) -> bool:
        """Whether the node still has ``key`` in its spec or reports it in its status."""
        in_spec = any(_assigned_key(a) == key for a in self.spec.get("schemes", []))
        in_status = self.status is not None and self.status.scheme(key) is not None
        return in_spec or in_status

    def heartbeat_age(self, now: datetime.datetime) -> float | None:
        if self.status is None or self.status.heartbeat is None:
            return None
        return (now - self.status.heartbeat).total_seconds()


def _assigned_key(assigned: Mapping[str, Any]) -> str:
    return resources.scheme_key(
        str(assigned.get("kind", "")), assigned.get("namespace"), str(assigned.get("name", ""))
    )


@dataclasses.dataclass(frozen=True)
class Stale:
    """What an update made stale."""

    nodes: frozenset[str] = frozenset()
    all_nodes: bool = False
    schemes: frozenset[str] = frozenset()
    all_schemes: bool = False


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = body.get("metadata") or {}
    return meta if isinstance(meta, Mapping) else {}


class Index:
    """Nodes, namespaces, DamonNodes and schemes as last seen."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeEntry] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.damon_nodes: dict[str, DamonNodeEntry] = {}
        self.schemes: dict[str, SchemeEntry] = {}

    # -- nodes and namespaces -----------------------------------------------------------

    def put_node(self, body: Mapping[str, Any]) -> Stale:
        meta = _meta(body)
        name = str(meta["name"])
        labels = dict(meta.get("labels") or {})
        previous = self.nodes.get(name)
        if meta.get("deletionTimestamp"):
            return self.remove_node(name)
        self.nodes[name] = NodeEntry(name, labels, str(meta.get("uid") or ""))
        if previous is not None and previous.labels == labels:
            return Stale()
        return Stale(nodes=frozenset({name}), all_schemes=True)

    def remove_node(self, name: str) -> Stale:
        if self.nodes.pop(name, None) is None:
            return Stale()
        return Stale(nodes=frozenset({name}), all_schemes=True)

    def put_namespace(self, body: Mapping[str, Any]) -> Stale:
        meta = _meta(body)
        name = str(meta["name"])
        labels = dict(meta.get("labels") or {})
        if self.namespaces.get(name) == labels:
            return Stale()
        self.namespaces[name] = labels
        return Stale(all_nodes=True)

    def remove_namespace(self, name: str) -> Stale:
        if self.namespaces.pop(name, None) is None:
            return Stale()
        return Stale(all_nodes=True)

    # -- DamonNodes -----------------------------------------------------------------------

    def put_damon_node(self, body: Mapping[str, Any]) -> Stale:
        name = str(_meta(body)["name"])
        spec = dict(body.get("spec") or {})
        raw_status = body.get("status")
        status: resources.DamonNodeStatus | None = None
        error = None
        if raw_status:
            try:
                status = resources.DamonNodeStatus.model_validate(raw_status)
            except pydantic.ValidationError as err:
                error = resources.describe(err)
        previous = self.damon_nodes.get(name)
        entry = DamonNodeEntry(name, spec, status, error)
        self.damon_nodes[name] = entry
        touched = {_assigned_key(a) for a in spec.get("schemes", [])}
        if status is not None:
            touched |= {s.key for s in status.schemes}
        if previous is not None:
            touched |= {_assigned_key(a) for a in previous.spec.get("schemes", [])}
            if previous.status is not None:
                touched |= {s.key for s in previous.status.schemes}
        tiers_changed = previous is None or _tiers(previous) != _tiers(entry)
        return Stale(
            nodes=frozenset({name}) if previous is None or previous.spec != spec else frozenset(),
            schemes=frozenset(touched),
            # A node's tiers feed every scheme's tier check.
            all_schemes=tiers_changed,
        )

    def remove_damon_node(self, name: str) -> Stale:
        previous = self.damon_nodes.pop(name, None)
        if previous is None:
            return Stale()
        return Stale(nodes=frozenset({name}), all_schemes=True)

    # -- schemes --------------------------------------------------------------------------

    def put_scheme(self, kind: str, body: Mapping[str, Any]) -> Stale:
        meta = _meta(body)
        spec, verdict = validation.judge(kind, body.get("spec"))
        entry = SchemeEntry(
            kind=kind,
            namespace=meta.get("namespace"),
            name=str(meta["name"]),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            deleting=bool(meta.get("deletionTimestamp")),
            spec=spec,
            verdict=verdict,
        )
        previous = self.schemes.get(entry.key)
        if previous is not None:
            entry.tier_accepted = previous.tier_accepted
        self.schemes[entry.key] = entry
        nodes_stale = previous is None or (
            previous.generation,
            previous.uid,
            previous.deleting,
            previous.verdict.accepted,
        ) != (entry.generation, entry.uid, entry.deleting, entry.verdict.accepted)
        return Stale(all_nodes=nodes_stale, schemes=frozenset({entry.key}))

    def remove_scheme(self, key: str) -> Stale:
        if self.schemes.pop(key, None) is None:
            return Stale()
        return Stale(all_nodes=True)


def _tiers(entry: DamonNodeEntry) -> frozenset[str] | None:
    return node_tiers(entry)


def node_tiers(entry: DamonNodeEntry | None) -> frozenset[str] | None:
    """The memory tiers a node reported, or ``None`` before it reported any NUMA node."""
    if entry is None or entry.status is None or not entry.status.numa:
        return None
    return frozenset(n.tier for n in entry.status.numa if n.tier is not None)
