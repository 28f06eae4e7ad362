"""Who may read the agent's endpoints: bearer tokens, checked by the Kubernetes API.

The agent delegates both questions to the API server, as the kubelet and kube-rbac-proxy
do for their endpoints:

1. *Who is this?* A ``TokenReview`` of the request's ``Authorization: Bearer <token>``
   gives the user name, uid, groups and extra attributes the token stands for (a
   ServiceAccount token, an OIDC token, a token file's entry: whatever the API server
   accepts).
2. *May they?* A ``SubjectAccessReview`` asks the API server's authorizers (RBAC) whether
   that user may do the named ``Access``:

   ==================  ===========================================================
   ``/v1/snapshot``,   ``get`` on ``damonnodes/snapshot`` (group ``damon.io``), the
   ``/v1/snapshots``   agent's node as the resource name
   ``/metrics``        ``get`` on ``damonnodes/metrics``, likewise; only with the
                       daemon's ``--metrics-auth``
   ==================  ===========================================================

   Subresources of the agent's own DamonNode, like the kubelet's ``nodes/metrics`` and
   ``nodes/proxy``: a ClusterRole grants them in words that say what they give
   (``resources: ["damonnodes/snapshot"], verbs: ["get"]``), ``resourceNames`` can narrow
   a grant to some nodes, and reading DamonNodes (``get damonnodes``) does not imply
   reading pods' memory layouts. A nonResourceURL (``/metrics``) would also grant the
   API server's own ``/metrics`` and every other component's that checks the same way.

Answers (``Decision.code``): 401 without a token or when the API server does not accept
it; 403 when the SubjectAccessReview does not allow the access; 503 when a review could
not be made (API server unreachable, slow, or refusing the agent's own review requests).
kube-rbac-proxy answers 401 to a failed TokenReview and 500 to a failed
SubjectAccessReview; the agent answers 503 to both because neither says anything about
the caller: 401 would tell a client its token is bad when it is not, and 503 (with
``Retry-After``) tells a client and Prometheus that the agent will answer again once the
API server does. Nothing is ever served without both reviews saying yes.

Caching: a scrape storm must not become a review storm on the API server. Decisions
(allowed, 401 and 403) are kept per (token digest, access) for ``allowed_ttl_s`` (30 s)
or ``denied_ttl_s`` (10 s) in a bounded LRU (1024 entries): a revoked RoleBinding or a
deleted ServiceAccount stops working within 30 s. Failed reviews are never cached.
Concurrent requests with the same token and access share one review in flight, and at
most ``max_concurrent`` reviews (4) run at once, so a flood of made-up tokens queues
here rather than at the API server (and leaves the agent's own watches their
connections); beyond ``max_waiting`` (256) distinct reviews queued, a request is
answered 503 at once. The cache keys on a SHA-256 of the token, never the token itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from damon_agent.api import resources
from damon_agent.runtime import errors, kube

log = logging.getLogger(__name__)

Obj = dict[str, Any]

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
REVIEW_TIMEOUT_S = 5.0
# Longer than any real token (ServiceAccount JWTs are about 1 KiB); a bigger one is
# refused without asking the API server.
MAX_TOKEN_CHARS = 16384


@dataclass(frozen=True)
class Access:
    """What a request asks to do, in the terms of a SubjectAccessReview."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""  # a non-resource URL instead of a resource

    def attributes(self) -> Obj:
        """The ``resourceAttributes`` or ``nonResourceAttributes`` of a review's spec."""
        if self.path:
            return {"nonResourceAttributes": {"verb": self.verb, "path": self.path}}
        wanted = {
            "verb": self.verb,
            "group": self.group,
            "resource": self.resource,
            "subresource": self.subresource,
            "name": self.name,
        }
        return {"resourceAttributes": {k: v for k, v in wanted.items() if v}}

    def describe(self) -> str:
        """``get damonnodes/snapshot "node-1"`` or ``get /metrics``: for messages."""
        if self.path:
            return f"{self.verb} {self.path}"
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        named = f" {self.name!r}" if self.name else ""
        return f"{self.verb} {what}{named}"


def _node_subresource(node: str, subresource: str) -> Access:
    plural = resources.PLURALS["DamonNode"]
    return Access(
        verb="get", group=resources.GROUP, resource=plural, subresource=subresource, name=node
    )


def snapshot_access(node: str) -> Access:
    """What ``/v1/snapshot`` of the agent on ``node`` needs."""
    return _node_subresource(node, "snapshot")


def metrics_access(node: str) -> Access:
    """What ``/metrics`` of the agent on ``node`` needs (with ``--metrics-auth``)."""
    return _node_subresource(node, "metrics")


@dataclass(frozen=True)
class User:
    """Who a TokenReview says a token stands for."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def review_subject(self) -> Obj:
        """The user fields of a SubjectAccessReview's spec."""
        subject: Obj = {"user": self.name, "groups": list(self.groups)}
        if self.uid:
            subject["uid"] = self.uid
        if self.extra:
            subject["extra"] = {key: list(values) for key, values in self.extra}
        return subject


@dataclass(frozen=True)
class Decision:
    """The answer to one request: ``code`` 200 lets it through; anything else is sent."""

    code: int
    message: str = ""
    user: str = ""

    @property
    def allowed(self) -> bool:
        return self.code == 200

    @property
    def reason(self) -> str:
        """The HTTP reason phrase of ``code``."""
        return _REASONS.get(self.code, "Error")

    def body(self) -> Obj:
        """What the agent answers a refused request with (JSON)."""
        return {"code": self.code, "reason": self.reason, "message": self.message}


_REASONS = {
    200: "OK",
    401: "Unauthorized",
    403: "Forbidden",
    503: "Service Unavailable",
}


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None if there is none.

    The scheme is matched case-insensitively (RFC 7235); anything but one token after
    it (nothing, two words, a token too long to be real) counts as no token.
    """
    if not header:
        return None
    parts = header.strip().split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    token = parts[1]
    return token if len(token) <= MAX_TOKEN_CHARS else None


def token_digest(token: str) -> str:
    """The cache's key for a token: its SHA-256, so no token is kept past its request."""
    return hashlib.sha256(token.encode()).hexdigest()


def authenticated_user(status: Mapping[str, Any]) -> User | None:
    """The user of a TokenReview's ``status``, or None when the token was not accepted."""
    if status.get("authenticated") is not True:
        return None
    user = status.get("user")
    if not isinstance(user, Mapping) or not isinstance(user.get("username"), str):
        return None
    if not user["username"]:
        return None
    groups = user.get("groups") or []
    extra = user.get("extra") or {}
    return User(
        name=user["username"],
        uid=str(user.get("uid") or ""),
        groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
        extra=tuple(
            sorted(
                (str(key), tuple(str(v) for v in values))
                for key, values in extra.items()
                if isinstance(values, list)
            )
        )
        if isinstance(extra, Mapping)
        else (),
    )


def no_token(access: Access) -> Decision:
    return Decision(
        401,
        "no bearer token: send 'Authorization: Bearer <token>' with a Kubernetes token "
        f"(e.g. a ServiceAccount's) whose user may {access.describe()}",
    )


def token_refused() -> Decision:
    return Decision(
        401,
        "the Kubernetes API did not accept the bearer token (expired, revoked, or not a "
        "token of this cluster)",
    )


def access_decision(user: User, status: Mapping[str, Any], access: Access) -> Decision:
    """Allowed (200) or forbidden (403) from a SubjectAccessReview's ``status``.

    Only ``allowed: true`` allows; a review with an evaluation error and no allow, or one
    that says nothing, is a denial (the authorizers had no opinion).
    """
    if status.get("allowed") is True:
        return Decision(200, user=user.name)
    return Decision(403, f"user {user.name!r} may not {access.describe()}", user=user.name)


def unavailable(what: str) -> Decision:
    return Decision(
        503,
        f"the agent could not {what} with the Kubernetes API (see the agent's log); "
        "try again later",
    )


class Reviewer(Protocol):
    """Asks the API server the two questions; raises ``errors.KubeError`` when it cannot."""

    async def review_token(self, token: str) -> Mapping[str, Any]:
        """A TokenReview's ``status``."""
        ...

    async def review_access(self, user: User, access: Access) -> Mapping[str, Any]:
        """A SubjectAccessReview's ``status``."""
        ...


class KubeReviewer:
    """``Reviewer`` through the agent's own API client (its ServiceAccount needs ``create``
    on ``tokenreviews`` and ``subjectaccessreviews``: the chart grants both)."""

    def __init__(self, client: kube.Client, timeout_s: float = REVIEW_TIMEOUT_S) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def review_token(self, token: str) -> Mapping[str, Any]:
        body: Obj = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        answer = await self._client.request(
            "POST", TOKEN_REVIEWS, body=body, timeout_s=self._timeout_s
        )
        return _status_of(answer)

    async def review_access(self, user: User, access: Access) -> Mapping[str, Any]:
        body: Obj = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {**user.review_subject(), **access.attributes()},
        }
        answer = await self._client.request(
            "POST", ACCESS_REVIEWS, body=body, timeout_s=self._timeout_s
        )
        return _status_of(answer)


def _status_of(answer: Obj) -> Mapping[str, Any]:
    status = answer.get("status")
    return status if isinstance(status, Mapping) else {}


_Key = tuple[str, Access]


@dataclass
class DecisionCache:
    """Recent decisions per (token digest, access): allowed ones for ``allowed_ttl_s``,
    refused ones (401, 403) for ``denied_ttl_s``, at most ``max_entries`` (least recently
    used go first). Other decisions (503) are not kept."""

    allowed_ttl_s: float = 30.0
    denied_ttl_s: float = 10.0
    max_entries: int = 1024
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[_Key, tuple[float, Decision]] = field(
        default_factory=OrderedDict, repr=False
    )

    def get(self, key: _Key) -> Decision | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, decision = found
        if self.clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return decision

    def put(self, key: _Key, decision: Decision) -> None:
        if decision.code not in (200, 401, 403):
            return
        ttl = self.allowed_ttl_s if decision.allowed else self.denied_ttl_s
        self._entries[key] = (self.clock() + ttl, decision)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Guard:
    """Decides requests: ``await guard.check(request's Authorization header, access)``."""

    def __init__(
        self,
        reviewer: Reviewer,
        *,
        cache: DecisionCache | None = None,
        max_concurrent: int = 4,
        max_waiting: int = 256,
    ) -> None:
        self._reviewer = reviewer
        self.cache = cache if cache is not None else DecisionCache()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_waiting = max_waiting
        self._in_flight: dict[_Key, asyncio.Task[Decision]] = {}

    async def check(self, authorization: str | None, access: Access) -> Decision:
        token = bearer_token(authorization)
        if token is None:
            return no_token(access)
        key = (token_digest(token), access)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        task = self._in_flight.get(key)
        if task is None:
            if len(self._in_flight) >= self._max_waiting:
                log.debug("%d token reviews waiting: refusing more", len(self._in_flight))
                return Decision(503, "too many token reviews waiting in the agent; try again later")
            task = asyncio.create_task(self._review(key, token, access))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # Shielded: a client that goes away must not cancel a review others wait for.
        return await asyncio.shield(task)

    async def _review(self, key: _Key, token: str, access: Access) -> Decision:
        async with self._slots:
            try:
                status = await self._reviewer.review_token(token)
            except errors.KubeError as err:
                log.warning("TokenReview failed, refusing %s: %s", access.describe(), err)
                return unavailable("review the token")
            user = authenticated_user(status)
            if user is None:
                decision = token_refused()
                # DEBUG: anyone can send made-up tokens, and each would be a line.
                log.debug("token refused for %s: %s", access.describe(), status.get("error"))
            else:
                try:
                    answer = await self._reviewer.review_access(user, access)
                except errors.KubeError as err:
                    log.warning(
                        "SubjectAccessReview failed, refusing %s to %s: %s",
                        access.describe(),
                        user.name,
                        err,
                    )
                    return unavailable("review the access")
                decision = access_decision(user, answer, access)
                if not decision.allowed:
                    log.info("denied: %s", decision.message)
        self.cache.put(key, decision)
        return decision
