"""The endpoints' guard without an API server: parsing, decisions, the cache, sharing."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from damon_agent.runtime import errors, guard

SNAPSHOT = guard.snapshot_access("node-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reviewer:
    """Counts the reviews; ``allowed`` users pass the access review, ``gate`` holds them."""

    def __init__(self, allowed: set[str] | None = None) -> None:
        self.allowed = allowed if allowed is not None else {"alice"}
        self.tokens: list[str] = []
        self.accesses: list[tuple[guard.User, guard.Access]] = []
        self.fail_token = False
        self.fail_access = False
        self.gate: asyncio.Event | None = None
        self.running = 0
        self.most_running = 0

    async def review_token(self, token: str) -> Mapping[str, Any]:
        self.tokens.append(token)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_token:
                raise errors.KubeError("POST tokenreviews: HTTP 500: etcd timeout")
        finally:
            self.running -= 1
        name = token.removeprefix("token-")
        if name == token:
            return {"authenticated": False, "error": "invalid bearer token"}
        return {
            "authenticated": True,
            "user": {
                "username": name,
                "uid": f"uid-{name}",
                "groups": ["system:authenticated"],
                "extra": {"scopes": ["a", "b"]},
            },
        }

    async def review_access(self, user: guard.User, access: guard.Access) -> Mapping[str, Any]:
        self.accesses.append((user, access))
        if self.fail_access:
            raise errors.KubeError("POST subjectaccessreviews: timed out")
        return {"allowed": user.name in self.allowed}


def _guard(reviewer: Reviewer, clock: Clock, **cache: Any) -> guard.Guard:
    return guard.Guard(reviewer, cache=guard.DecisionCache(clock=clock, **cache))


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("  BEARER   abc  ", "abc"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("Bearer a b", None),
        ("Bearer " + "x" * (guard.MAX_TOKEN_CHARS + 1), None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert guard.bearer_token(header) == token


def test_review_bodies_name_the_node_subresource_or_a_path() -> None:
    assert SNAPSHOT.attributes() == {
        "resourceAttributes": {
            "verb": "get",
            "group": "damon.io",
            "resource": "damonnodes",
            "subresource": "snapshot",
            "name": "node-1",
        }
    }
    assert guard.metrics_access("n").attributes()["resourceAttributes"]["subresource"] == "metrics"
    assert SNAPSHOT.describe() == "get damonnodes/snapshot 'node-1'"
    path = guard.Access(verb="get", path="/metrics")
    assert path.attributes() == {"nonResourceAttributes": {"verb": "get", "path": "/metrics"}}
    assert path.describe() == "get /metrics"


def test_token_review_status_to_user() -> None:
    user = guard.authenticated_user(
        {
            "authenticated": True,
            "user": {
                "username": "system:serviceaccount:ns:sa",
                "uid": "u1",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
            },
        }
    )
    assert user == guard.User(
        name="system:serviceaccount:ns:sa",
        uid="u1",
        groups=("system:serviceaccounts", "system:authenticated"),
        extra=(("authentication.kubernetes.io/pod-name", ("p",)),),
    )
    # Everything the reviews said about the user goes into the access review.
    assert user.review_subject() == {
        "user": "system:serviceaccount:ns:sa",
        "uid": "u1",
        "groups": ["system:serviceaccounts", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
    }
    for refused in (
        {},
        {"authenticated": False, "user": {"username": "x"}},
        {"authenticated": "true", "user": {"username": "x"}},
        {"authenticated": True},
        {"authenticated": True, "user": {"username": ""}},
        {"authenticated": True, "user": {"username": 7}},
    ):
        assert guard.authenticated_user(refused) is None, refused


def test_only_an_explicit_allow_allows() -> None:
    alice = guard.User("alice")
    assert guard.access_decision(alice, {"allowed": True}, SNAPSHOT).code == 200
    for status in (
        {},
        {"allowed": False},
        {"allowed": "true"},
        {"allowed": False, "evaluationError": "webhook down"},
        {"allowed": False, "denied": True, "reason": "no"},
    ):
        decision = guard.access_decision(alice, status, SNAPSHOT)
        assert decision.code == 403 and decision.reason == "Forbidden", status
        assert decision.message == "user 'alice' may not get damonnodes/snapshot 'node-1'"


async def test_checks_answer_401_403_200_and_pass_the_user_on() -> None:
    reviewer, clock = Reviewer(), Clock()
    check = _guard(reviewer, clock).check
    assert (await check(None, SNAPSHOT)).code == 401
    assert (await check("Bearer garbage", SNAPSHOT)).code == 401
    assert reviewer.accesses == []  # a refused token is never asked about access
    denied = await check("Bearer token-bob", SNAPSHOT)
    assert (denied.code, denied.user) == (403, "bob")
    allowed = await check("Bearer token-alice", SNAPSHOT)
    assert allowed.allowed and allowed.user == "alice"
    user, access = reviewer.accesses[-1]
    assert access == SNAPSHOT
    assert (user.uid, user.groups, user.extra) == (
        "uid-alice",
        ("system:authenticated",),
        (("scopes", ("a", "b")),),
    )
    assert reviewer.tokens == ["garbage", "token-bob", "token-alice"]


async def test_decisions_are_cached_briefly_allowed_longer_than_denied() -> None:
    reviewer, clock = Reviewer(), Clock()
    check = _guard(reviewer, clock, allowed_ttl_s=30, denied_ttl_s=10).check
    for _ in range(50):  # a scrape storm: one review per token
        assert (await check("Bearer token-alice", SNAPSHOT)).code == 200
        assert (await check("Bearer token-bob", SNAPSHOT)).code == 403
        assert (await check("Bearer garbage", SNAPSHOT)).code == 401
    assert len(reviewer.tokens) == 3
    # Another access is another question, even with the same token.
    assert (await check("Bearer token-alice", guard.metrics_access("node-1"))).code == 200
    assert len(reviewer.tokens) == 4
    clock.now += 10  # the refusals expire...
    reviewer.allowed = {"bob"}  # ...and a changed binding shows
    assert (await check("Bearer token-bob", SNAPSHOT)).code == 200
    assert (await check("Bearer garbage", SNAPSHOT)).code == 401
    assert (await check("Bearer token-alice", SNAPSHOT)).code == 200  # still cached
    assert len(reviewer.tokens) == 6
    clock.now += 20
    assert (await check("Bearer token-alice", SNAPSHOT)).code == 403  # revoked, now seen
    assert len(reviewer.tokens) == 7


async def test_review_failures_answer_503_and_are_never_cached() -> None:
    reviewer, clock = Reviewer(), Clock()
    check = _guard(reviewer, clock).check
    reviewer.fail_token = True
    failed = await check("Bearer token-alice", SNAPSHOT)
    assert failed.code == 503 and failed.reason == "Service Unavailable"
    assert "could not review the token" in failed.message
    reviewer.fail_token, reviewer.fail_access = False, True
    failed = await check("Bearer token-alice", SNAPSHOT)
    assert failed.code == 503 and "could not review the access" in failed.message
    reviewer.fail_access = False
    assert (await check("Bearer token-alice", SNAPSHOT)).code == 200
    assert len(reviewer.tokens) == 3


def test_cache_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    cache = guard.DecisionCache(max_entries=3, clock=clock)
    keys = [(guard.token_digest(f"t{i}"), SNAPSHOT) for i in range(4)]
    for key in keys[:3]:
        cache.put(key, guard.Decision(200, user="u"))
    assert cache.get(keys[0]) is not None  # used: t1 is now the oldest
    cache.put(keys[3], guard.Decision(403))
    assert len(cache) == 3
    assert cache.get(keys[1]) is None
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    cache.put((guard.token_digest("t9"), SNAPSHOT), guard.Decision(503))
    assert len(cache) == 3  # a failure is not a decision worth keeping
    assert guard.token_digest("secret") != "secret" and len(guard.token_digest("s")) == 64


async def test_concurrent_requests_share_one_review_and_reviews_are_limited() -> None:
    reviewer, clock = Reviewer(), Clock()
    access_guard = guard.Guard(reviewer, cache=guard.DecisionCache(clock=clock), max_concurrent=2)
    reviewer.gate = asyncio.Event()
    same = [
        asyncio.create_task(access_guard.check("Bearer token-alice", SNAPSHOT)) for _ in range(20)
    ]
    others = [
        asyncio.create_task(access_guard.check(f"Bearer token-u{i}", SNAPSHOT)) for i in range(6)
    ]
    await asyncio.sleep(0.05)
    assert reviewer.running == 2  # the rest wait for a slot
    reviewer.gate.set()
    decided = await asyncio.gather(*same, *others)
    assert [d.code for d in decided] == [200] * 20 + [403] * 6
    assert reviewer.tokens.count("token-alice") == 1
    assert reviewer.most_running == 2


async def test_too_many_reviews_waiting_answer_503_at_once() -> None:
    reviewer, clock = Reviewer(), Clock()
    access_guard = guard.Guard(
        reviewer, cache=guard.DecisionCache(clock=clock), max_concurrent=1, max_waiting=3
    )
    reviewer.gate = asyncio.Event()
    waiting = [
        asyncio.create_task(access_guard.check(f"Bearer token-u{i}", SNAPSHOT)) for i in range(3)
    ]
    await asyncio.sleep(0.01)
    flooded = await access_guard.check("Bearer token-alice", SNAPSHOT)
    assert flooded.code == 503 and "too many token reviews waiting" in flooded.message
    shared = asyncio.create_task(access_guard.check("Bearer token-u0", SNAPSHOT))
    reviewer.gate.set()
    assert [d.code for d in await asyncio.gather(*waiting, shared)] == [403] * 4  # joined
    assert (await access_guard.check("Bearer token-alice", SNAPSHOT)).code == 200


async def test_a_client_leaving_does_not_cancel_a_shared_review() -> None:
    reviewer, clock = Reviewer(), Clock()
    access_guard = _guard(reviewer, clock)
    reviewer.gate = asyncio.Event()
    first = asyncio.create_task(access_guard.check("Bearer token-alice", SNAPSHOT))
    second = asyncio.create_task(access_guard.check("Bearer token-alice", SNAPSHOT))
    await asyncio.sleep(0.01)
    first.cancel()
    reviewer.gate.set()
    assert (await second).code == 200
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(reviewer.tokens) == 1
