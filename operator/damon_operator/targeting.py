"""Which nodes run which schemes, and the DamonNode spec each node should have; pure.

A scheme targets every node whose labels its ``nodeSelector`` matches (all nodes without
one). Each targeted node's DamonNode spec lists the scheme, resolved for the agent:

* a DamonScheme is confined to its own namespace — the assignment's ``namespaces`` is
  exactly ``[its namespace]``, whatever the spec says (and ``AssignedScheme`` refuses
  anything else), so a tenant's selector can never reach another namespace's pods;
* a ClusterDamonScheme's ``namespaceSelector`` is resolved here to the namespace names it
  matches now (the agent sees pods, not namespace labels); no selector means all;
* the scheme's UID and generation travel with it, so the agent reports against the exact
  version it runs and the operator can tell "done" from "not yet";
* its pod scope (``qosClasses``, ``containers``, ``protection``) travels as written: the
  agent sees the pods, their QoS classes, containers and memory use.

Specs are compared as the JSON the operator writes, so an unchanged spec is never written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from damon_agent.api import resources, selectors
from damon_operator import index, validation


def selects_node(spec: validation.SchemeSpecModel, node: index.NodeEntry) -> bool:
    """Whether the spec's ``nodeSelector`` (none: every node) matches the node."""
    return selectors.matches(spec.node_selector, node.labels)


def targets_node(entry: index.SchemeEntry, node: index.NodeEntry) -> bool:
    if entry.spec is None:
        return False
    return selects_node(entry.spec, node)


def targeted_nodes(entry: index.SchemeEntry, nodes: Iterable[index.NodeEntry]) -> list[str]:
    return sorted(node.name for node in nodes if targets_node(entry, node))


def assignment(
    entry: index.SchemeEntry, namespaces: Mapping[str, Mapping[str, str]]
) -> resources.AssignedScheme:
    """The scheme as one node's agent receives it."""
    spec = entry.spec
    if spec is None:
        raise ValueError(f"{entry.key} has no valid spec to assign")
    common: dict[str, Any] = {
        "kind": entry.kind,
        "name": entry.name,
        "uid": entry.uid,
        "generation": entry.generation,
        "spec": validation.scheme_file(spec),
    }
    # Which of the selected pods, and which of their memory: the agent applies these.
    scope: dict[str, Any] = {
        "qos_classes": spec.qos_classes,
        "containers": spec.containers,
        "protection": spec.protection,
    }
    if isinstance(spec, resources.DamonSchemeSpec):
        return resources.AssignedScheme(
            namespace=entry.namespace,
            namespaces=[entry.namespace] if entry.namespace else [],
            pod_selector=spec.pod_selector,
            **scope,
            **common,
        )
    if spec.whole_node:
        return resources.AssignedScheme(whole_node=True, **common)
    resolved: list[str] | None = None
    if spec.namespace_selector is not None:
        resolved = sorted(
            name for name, labels in namespaces.items() if spec.namespace_selector.matches(labels)
        )
    return resources.AssignedScheme(
        namespaces=resolved, pod_selector=spec.pod_selector, **scope, **common
    )


def desired_spec(
    node: index.NodeEntry,
    schemes: Iterable[index.SchemeEntry],
    namespaces: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """The DamonNode spec ``node`` should have, as the JSON the operator writes."""
    assigned = [
        assignment(entry, namespaces)
        for entry in sorted(schemes, key=lambda e: e.key)
        if entry.assignable and targets_node(entry, node)
    ]
    return dump_spec(resources.DamonNodeSpec(schemes=assigned))


def dump_spec(spec: resources.DamonNodeSpec) -> dict[str, Any]:
    return resources.to_api(spec)
