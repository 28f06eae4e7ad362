"""Admission webhooks the operator serves (kopf): bad schemes are refused at ``kubectl
apply``, and each agent may write only its own node's DamonNode status.

Three validating webhooks. Each is a kopf handler whose id is the URL path that the
ValidatingWebhookConfiguration calls; ``WEBHOOKS`` holds their names, paths, resources
and operations, and the chart's template (checked against it by tests/helm) and the tests'
configurations are built from them:

================================= ============================= ==========================
path                              resource                      operations
================================= ============================= ==========================
``/validate-damonschemes``        damonschemes                  CREATE, UPDATE
``/validate-clusterdamonschemes`` clusterdamonschemes           CREATE, UPDATE
``/confine-damonnode-status``     damonnodes/status             UPDATE (a PATCH is one)
================================= ============================= ==========================

Schemes: the verdict is ``validation.judge``, the function whose verdict the operator
writes into the ``Accepted`` condition, so a refusal (HTTP 422) says word for word what
``Accepted=False`` would say. The operator keeps judging every scheme it sees: it is the
second line when the webhook was down or bypassed. An update that leaves the spec as it
was (finalizers, labels, annotations) always passes, so an object stored before the webhook
existed can still be finalized and deleted. The tier check depends on what nodes report,
which changes as nodes come and go: it never refuses here, but when this replica already
knows that no targeted node has the tier, the answer carries a warning (``kubectl`` prints
it) and ``Accepted=False, TierUnavailable`` follows from the operator.

DamonNode status: RBAC lets the agents' one ServiceAccount write every DamonNode's status.
A bound service-account token (the token projected into a pod; Kubernetes 1.21 and later
mount one by default) names its pod in the user's extra
(``authentication.kubernetes.io/pod-name`` and ``pod-uid``). The webhook looks up that
pod's ``spec.nodeName`` and lets the agent write only the DamonNode of that name (a
DamonNode is named after its node). Other users (the operator, admins, anything RBAC lets
write) are left to RBAC. Refused with HTTP 403 and a message naming the pod, its node and
the DamonNode: a token that names no pod (a legacy Secret token: the node is unknown), a
pod that is gone or was replaced (another UID), a pod not scheduled yet, another node's
DamonNode, and a pod the API server cannot tell about (the agent retries its status). A
pod's node never changes and UIDs are never reused, so placements are cached by pod UID;
the API server itself stops accepting a bound token once its pod is deleted.

Handlers are registered (``register``) only when the operator serves webhooks: kopf
refuses to start with admission handlers and no server.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import kopf

from damon_agent.api import resources
from damon_operator import kube, validation

logger = logging.getLogger(__name__)

POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
HTTP_FORBIDDEN = 403
HTTP_UNPROCESSABLE = 422
PLACEMENT_CACHE_SIZE = 4096
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]


@dataclasses.dataclass(frozen=True)
class Webhook:
    """One webhook: its kopf handler id (the URL path) and what it is configured for."""

    id: str
    name: str  # the webhook's name in the ValidatingWebhookConfiguration
    plural: str
    subresource: str | None
    operations: tuple[Operation, ...]

    @property
    def path(self) -> str:
        return f"/{self.id}"

    @property
    def resource(self) -> str:
        """The resource as a webhook rule names it (``plural`` or ``plural/subresource``)."""
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural


SCHEMES = Webhook(
    "validate-damonschemes",
    "damonschemes.validate.damon.io",
    resources.PLURALS["DamonScheme"],
    None,
    ("CREATE", "UPDATE"),
)
CLUSTER_SCHEMES = Webhook(
    "validate-clusterdamonschemes",
    "clusterdamonschemes.validate.damon.io",
    resources.PLURALS["ClusterDamonScheme"],
    None,
    ("CREATE", "UPDATE"),
)
DAMON_NODE_STATUS = Webhook(
    "confine-damonnode-status",
    "damonnodes-status.confine.damon.io",
    resources.PLURALS["DamonNode"],
    "status",
    ("UPDATE",),
)
WEBHOOKS = (SCHEMES, CLUSTER_SCHEMES, DAMON_NODE_STATUS)


@dataclasses.dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> ServiceAccount:
        """``NAMESPACE:NAME``; ``ValueError`` otherwise."""
        namespace, _, name = text.partition(":")
        if not namespace or not name or ":" in name:
            raise ValueError(f"{text!r} is not NAMESPACE:NAME")
        return cls(namespace, name)


@dataclasses.dataclass(frozen=True)
class Config:
    """Where the webhooks are served (HTTPS) and whose DamonNode writes are confined."""

    addr: str
    port: int
    certfile: Path
    keyfile: Path
    agent: ServiceAccount | None = None


def server(config: Config) -> kopf.WebhookServer:
    """kopf's HTTPS server with the given certificate. kopf re-reads the files when they
    change (a renewed Secret reaches a pod's volume without a restart)."""
    return kopf.WebhookServer(
        addr=config.addr,
        port=config.port,
        certfile=str(config.certfile),
        pkeyfile=str(config.keyfile),
    )


# -- schemes ------------------------------------------------------------------------------


def scheme_verdict(
    kind: str,
    operation: str | None,
    new_spec: Mapping[str, Any] | None,
    old_spec: Mapping[str, Any] | None,
) -> tuple[validation.SchemeSpecModel | None, validation.Verdict]:
    """The spec model and verdict of a create or update; an update that keeps the spec as
    it was is accepted as it is (``None``: not judged)."""
    if operation == "UPDATE" and new_spec == old_spec:
        return None, validation.ACCEPTED
    return validation.judge(kind, new_spec)


def _spec_of(body: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if body is None:
        return None
    spec = body.get("spec")
    return spec if isinstance(spec, Mapping) else None


async def _validate_scheme(
    kind: str,
    *,
    operation: str | None,
    new: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None,
    memo: kopf.Memo,
    warnings: list[str],
) -> None:
    spec, verdict = scheme_verdict(kind, operation, _spec_of(new), _spec_of(old))
    if not verdict.accepted:
        raise kopf.AdmissionError(verdict.message, code=HTTP_UNPROCESSABLE)
    ctl = memo.get("controller")
    if spec is not None and ctl is not None:
        tiers: validation.Verdict = ctl.tier_verdict(spec)
        if not tiers.accepted:
            warnings.append(
                f"{tiers.message}: the operator assigns the scheme once a targeted node "
                "reports that tier"
            )


async def validate_damon_scheme(
    operation: str | None,
    new: kopf.Body | None,
    old: kopf.Body | None,
    memo: kopf.Memo,
    warnings: list[str],
    **_: Any,
) -> None:
    await _validate_scheme(
        "DamonScheme", operation=operation, new=new, old=old, memo=memo, warnings=warnings
    )


async def validate_cluster_damon_scheme(
    operation: str | None,
    new: kopf.Body | None,
    old: kopf.Body | None,
    memo: kopf.Memo,
    warnings: list[str],
    **_: Any,
) -> None:
    await _validate_scheme(
        "ClusterDamonScheme", operation=operation, new=new, old=old, memo=memo, warnings=warnings
    )


# -- DamonNode status: each agent its own node --------------------------------------------


class PodReader(Protocol):
    async def placement(self, namespace: str, name: str) -> kube.PodPlacement | None: ...


def _one(extra: Mapping[str, Any], key: str) -> str | None:
    values = extra.get(key)
    if isinstance(values, list) and len(values) == 1 and isinstance(values[0], str):
        return values[0]
    return None


class NodeConfinement:
    """Lets ``agent``'s writes through only to the DamonNode of its pod's node."""

    def __init__(
        self, agent: ServiceAccount, pods: PodReader, *, cache_size: int = PLACEMENT_CACHE_SIZE
    ) -> None:
        self.agent = agent
        self._pods = pods
        self._cache_size = cache_size
        self._nodes: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.lookups = 0

    async def refusal(self, userinfo: Mapping[str, Any], damon_node: str) -> str | None:
        """Why this user may not write ``damon_node``'s status, or ``None`` when it may."""
        username = userinfo.get("username")
        if username != self.agent.username:
            return None  # not an agent: RBAC decides
        extra = userinfo.get("extra") or {}
        pod = _one(extra, POD_NAME_KEY)
        uid = _one(extra, POD_UID_KEY)
        if pod is None or uid is None:
            return (
                f"{username} may write DamonNode status only with a service-account token "
                "bound to its pod (a projected token names the pod, and so the node): this "
                f"token names no pod, so which node it writes for is unknown (DamonNode "
                f"{damon_node})"
            )
        where = f"{self.agent.namespace}/{pod}"
        node = self._nodes.get(uid)
        if node is None:
            try:
                found = await self._pods.placement(self.agent.namespace, pod)
            except Exception as err:  # the API server did not answer: refuse, the agent retries
                logger.warning("admission: cannot look up pod %s: %s", where, err)
                return f"cannot tell which node agent pod {where} runs on: {err}"
            self.lookups += 1
            if found is None or found.uid != uid:
                return f"the token's pod {where} (uid {uid}) no longer exists"
            if not found.node_name:
                return f"the token's pod {where} is not scheduled to a node"
            node = found.node_name
            self._remember(uid, node)
        if node != damon_node:
            return (
                f"agent pod {where} runs on node {node}: it may write the status of DamonNode "
                f"{node} only, not of {damon_node}"
            )
        return None

    def _remember(self, uid: str, node: str) -> None:
        self._nodes[uid] = node
        while len(self._nodes) > self._cache_size:
            self._nodes.popitem(last=False)


async def confine_damon_node_status(
    userinfo: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    confinement: NodeConfinement | None = memo.get("confinement")
    if confinement is None:
        return
    refusal = await confinement.refusal(userinfo, str(body.metadata.name))
    if refusal is not None:
        raise kopf.AdmissionError(refusal, code=HTTP_FORBIDDEN)


# -- registration ---------------------------------------------------------------------------


def register(when: Callable[..., bool], registry: Any = None) -> None:
    """Register the three handlers with kopf (filtered by ``when``, e.g. the instance)."""
    handlers: list[tuple[Webhook, Callable[..., Any]]] = [
        (SCHEMES, validate_damon_scheme),
        (CLUSTER_SCHEMES, validate_cluster_damon_scheme),
        (DAMON_NODE_STATUS, confine_damon_node_status),
    ]
    for webhook, fn in handlers:
        kopf.on.validate(
            resources.GROUP,
            resources.VERSION,
            webhook.plural,
            id=webhook.id,
            operations=list(webhook.operations),
            subresource=webhook.subresource,
            when=when,
            registry=registry,
        )(fn)
