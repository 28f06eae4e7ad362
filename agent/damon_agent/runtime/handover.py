"""Whether a stopping agent leaves its kdamonds running for the pod that replaces it.

A DaemonSet's agent pod is replaced when it is deleted, evicted or rolled to a new
template: the successor comes up on the same node within seconds, with the same state
directory (a hostPath). Turning the kdamonds off at SIGTERM would throw away what they
learned (regions, ages, the quotas' tuned state) and leave the node unmanaged meanwhile,
so the agent hands them over: it stops without turning them off, and the successor adopts
them (``runtime.backends.kernel``: same threads, the first plan commits into them).

A successor comes only while the DaemonSet that owns the pod still exists, is not being
deleted, and still selects this node. Anything else (``helm uninstall``, the DaemonSet's
node selector changed, the Node going away, or an apiserver that cannot say) turns them
off: a kdamond left with nobody to adopt it would page out memory on a node no agent
watches any more. Only ``nodeSelector`` is checked against the node's labels; a
DaemonSet that places its pods by node affinity alone is taken to select every node.

``decide`` is pure; ``ask`` reads the two objects from the apiserver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from damon_agent.api.names import NamespacedName
from damon_agent.runtime import errors, kube

log = logging.getLogger(__name__)

# The agent is stopping (its pod has a grace period to spend): a short answer or none.
ASK_TIMEOUT_S = 5.0


# The DaemonSet an agent pod belongs to (``--owner-daemonset NAMESPACE/NAME``).
Owner = NamespacedName


@dataclass(frozen=True)
class Decision:
    hand_over: bool
    reason: str


def decide(owner: Owner, daemonset: dict[str, Any] | None, node: dict[str, Any] | None) -> Decision:
    """Hand over only while ``daemonset`` (None: gone) will place a successor on ``node``."""
    if daemonset is None:
        return Decision(False, f"DaemonSet {owner} is gone")
    if daemonset.get("metadata", {}).get("deletionTimestamp"):
        return Decision(False, f"DaemonSet {owner} is being deleted")
    if node is None:
        return Decision(False, "this node's Node object is gone")
    node_meta = node.get("metadata", {})
    if node_meta.get("deletionTimestamp"):
        return Decision(False, "this node's Node object is being deleted")
    template = daemonset.get("spec", {}).get("template", {}).get("spec", {})
    selector: dict[str, str] = template.get("nodeSelector") or {}
    labels: dict[str, str] = node_meta.get("labels") or {}
    unmet = sorted(k for k, v in selector.items() if labels.get(k) != v)
    if unmet:
        return Decision(
            False, f"DaemonSet {owner} no longer selects this node (nodeSelector {unmet[0]})"
        )
    return Decision(True, f"DaemonSet {owner} will start a successor on this node")


async def ask(client: kube.Client, owner: Owner, node_name: str) -> Decision:
    """``decide`` on the apiserver's objects; an apiserver that cannot answer: no handover."""
    try:
        daemonset = await _get_or_none(
            client, f"/apis/apps/v1/namespaces/{owner.namespace}/daemonsets/{owner.name}"
        )
        node = await _get_or_none(client, f"/api/v1/nodes/{node_name}")
    except errors.KubeError as err:
        return Decision(False, f"cannot tell whether a successor comes ({err})")
    return decide(owner, daemonset, node)


async def _get_or_none(client: kube.Client, path: str) -> dict[str, Any] | None:
    try:
        return await client.request("GET", path, timeout_s=ASK_TIMEOUT_S)
    except errors.KubeError as err:
        if err.code == 404:
            return None
        raise
