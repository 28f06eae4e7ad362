"""The admission webhooks' logic without a cluster: the scheme verdict (the index's), agent
confinement against a fake pod reader, kopf registration and the operator's flags."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import kopf
import pytest

from damon_operator import admission, index, kube, main, validation

AGENT = admission.ServiceAccount("damon-system", "damon-agent")
BACKWARDS = {"age": {"min": "30s", "max": "1s"}}
BAD = {
    "podSelector": {},
    "schemes": [{"name": "s", "action": "pageout", "accessPattern": BACKWARDS}],
}
GOOD = {"podSelector": {}, "schemes": [{"name": "s", "action": "pageout"}]}


def test_the_webhook_and_the_index_give_the_same_verdict() -> None:
    spec, verdict = admission.scheme_verdict("DamonScheme", "CREATE", BAD, None)
    assert spec is None and not verdict.accepted
    entry_stale = index.Index()
    entry_stale.put_scheme(
        "DamonScheme", {"metadata": {"name": "x", "namespace": "a"}, "spec": BAD}
    )
    (entry,) = entry_stale.schemes.values()
    assert entry.verdict == verdict == validation.judge("DamonScheme", BAD)[1]
    assert verdict.message == "schemes[0].accessPattern.age: min 30s is greater than max 1s"


def test_updates_are_judged_only_when_the_spec_changes() -> None:
    # An object stored before the webhook existed stays manageable (finalizers, labels).
    assert admission.scheme_verdict("DamonScheme", "UPDATE", BAD, BAD)[1].accepted
    assert not admission.scheme_verdict("DamonScheme", "UPDATE", BAD, GOOD)[1].accepted
    spec, verdict = admission.scheme_verdict("DamonScheme", "UPDATE", GOOD, BAD)
    assert verdict.accepted and spec is not None


class FakePods:
    def __init__(self, pods: dict[tuple[str, str], kube.PodPlacement]) -> None:
        self.pods = pods
        self.asked: list[tuple[str, str]] = []
        self.fail = False

    async def placement(self, namespace: str, name: str) -> kube.PodPlacement | None:
        self.asked.append((namespace, name))
        if self.fail:
            raise RuntimeError("apiserver: connection refused")
        return self.pods.get((namespace, name))


def agent(pod: str | None = "agent-x1", uid: str | None = "u1") -> dict[str, Any]:
    extra: dict[str, list[str]] = {}
    if pod is not None:
        extra[admission.POD_NAME_KEY] = [pod]
    if uid is not None:
        extra[admission.POD_UID_KEY] = [uid]
    return {"username": AGENT.username, "groups": ["system:serviceaccounts"], "extra": extra}


@pytest.fixture
def pods() -> FakePods:
    return FakePods(
        {
            ("damon-system", "agent-x1"): kube.PodPlacement("u1", "node-1"),
            ("damon-system", "agent-pending"): kube.PodPlacement("u3", ""),
        }
    )


async def test_an_agent_writes_its_own_node_only(pods: FakePods) -> None:
    confinement = admission.NodeConfinement(AGENT, pods)
    assert await confinement.refusal(agent(), "node-1") is None
    refused = await confinement.refusal(agent(), "node-2")
    assert refused == (
        "agent pod damon-system/agent-x1 runs on node node-1: it may write the status of "
        "DamonNode node-1 only, not of node-2"
    )
    # The placement is cached by pod UID: one lookup for all of these.
    assert pods.asked == [("damon-system", "agent-x1")]


async def test_other_users_are_left_to_rbac(pods: FakePods) -> None:
    confinement = admission.NodeConfinement(AGENT, pods)
    for user in (
        {"username": "system:serviceaccount:damon-system:damon-operator"},
        {"username": "admin", "groups": ["system:masters"]},
        # The same pod-bound token shape, another account: not an agent.
        {**agent(), "username": "system:serviceaccount:other:damon-agent"},
    ):
        assert await confinement.refusal(user, "node-9") is None
    assert pods.asked == []


@pytest.mark.parametrize(
    ("user", "words"),
    [
        (agent(pod=None, uid=None), "this token names no pod"),
        (agent(uid=None), "this token names no pod"),
        (
            agent(pod="agent-gone", uid="u2"),
            "pod damon-system/agent-gone (uid u2) no longer exists",
        ),
        (agent(uid="u-old"), "pod damon-system/agent-x1 (uid u-old) no longer exists"),
        (agent(pod="agent-pending", uid="u3"), "agent-pending is not scheduled to a node"),
    ],
)
async def test_an_agent_that_cannot_prove_its_node_is_refused(
    pods: FakePods, user: dict[str, Any], words: str
) -> None:
    refused = await admission.NodeConfinement(AGENT, pods).refusal(user, "node-1")
    assert refused is not None and words in refused


async def test_a_lookup_that_fails_refuses_and_is_retried(pods: FakePods) -> None:
    confinement = admission.NodeConfinement(AGENT, pods)
    pods.fail = True
    refused = await confinement.refusal(agent(), "node-1")
    assert refused is not None and "cannot tell which node" in refused
    pods.fail = False
    assert await confinement.refusal(agent(), "node-1") is None  # nothing bad was cached


async def test_the_placement_cache_is_bounded(pods: FakePods) -> None:
    for i in range(5):
        pods.pods[("damon-system", f"p{i}")] = kube.PodPlacement(f"uid{i}", f"n{i}")
    confinement = admission.NodeConfinement(AGENT, pods, cache_size=2)
    for i in range(5):
        assert await confinement.refusal(agent(f"p{i}", f"uid{i}"), f"n{i}") is None
    assert confinement.lookups == 5
    assert await confinement.refusal(agent("p4", "uid4"), "n4") is None  # cached
    assert await confinement.refusal(agent("p0", "uid0"), "n0") is None  # evicted: asked again
    assert confinement.lookups == 6


async def test_handlers_refuse_with_kopf_admission_errors(pods: FakePods) -> None:
    memo = kopf.Memo(confinement=admission.NodeConfinement(AGENT, pods))
    body = kopf.Body({"metadata": {"name": "node-2"}})
    with pytest.raises(kopf.AdmissionError) as raised:
        await admission.confine_damon_node_status(userinfo=agent(), body=body, memo=memo)
    assert raised.value.code == 403
    await admission.confine_damon_node_status(userinfo=agent(), body=kopf.Body(
        {"metadata": {"name": "node-1"}}), memo=memo)  # fmt: skip
    warnings: list[str] = []
    with pytest.raises(kopf.AdmissionError) as raised:
        await admission.validate_damon_scheme(
            operation="CREATE", new=kopf.Body({"spec": BAD}), old=None, memo=kopf.Memo(),
            warnings=warnings,
        )  # fmt: skip
    assert raised.value.code == 422
    assert str(raised.value) == validation.judge("DamonScheme", BAD)[1].message


def test_registration_puts_one_handler_per_webhook_id() -> None:
    registry = kopf.OperatorRegistry()
    admission.register(when=lambda **_: True, registry=registry)
    handlers = {h.id: h for h in registry._webhooks.get_all_handlers()}
    assert set(handlers) == {hook.id for hook in admission.WEBHOOKS}
    for hook in admission.WEBHOOKS:
        assert handlers[hook.id].subresource == hook.subresource
        assert list(handlers[hook.id].operations or []) == list(hook.operations)
    assert [h.path for h in admission.WEBHOOKS] == [
        "/validate-damonschemes",
        "/validate-clusterdamonschemes",
        "/confine-damonnode-status",
    ]
    assert admission.DAMON_NODE_STATUS.resource == "damonnodes/status"


def test_operator_flags() -> None:
    p = main.parser()
    args = p.parse_args(
        ["--webhook-listen", "0.0.0.0:9443", "--webhook-cert", "c", "--webhook-key", "k",
         "--agent-service-account", "damon-system:damon-agent"]
    )  # fmt: skip
    config = main._webhook(p, args)
    assert config == admission.Config("0.0.0.0", 9443, Path("c"), Path("k"), AGENT)
    assert main._webhook(p, p.parse_args([])) is None
    assert p.parse_args(["--webhook-listen", "[::]:9443"]).webhook_listen == ("::", 9443)
    for bad in (
        ["--webhook-listen", "0.0.0.0"],
        ["--webhook-listen", "0.0.0.0:99999"],
        ["--agent-service-account", "damon-agent"],
    ):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    for incomplete in (
        ["--webhook-listen", "0.0.0.0:9443"],
        ["--webhook-cert", "c", "--webhook-key", "k"],
    ):
        with pytest.raises(SystemExit):
            main._webhook(p, p.parse_args(incomplete))


def _record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


def test_the_log_drops_per_call_successes_and_keeps_refusals_as_warnings() -> None:
    quiet = main._QuietEventHandlers()
    for noisy in (
        "Webhook 'confine-damonnode-status' succeeded.",
        "Handler 'node_event' succeeded.",
    ):
        assert not quiet.filter(_record(logging.INFO, noisy))
    assert quiet.filter(_record(logging.INFO, "Handler 'damon_scheme_deleted' succeeded."))
    refused = _record(logging.ERROR, "Webhook 'validate-damonschemes' failed permanently: x: y")
    assert quiet.filter(refused) and refused.levelname == "WARNING"
    failed = _record(logging.ERROR, "Handler 'damon_scheme_deleted' failed permanently: boom")
    assert quiet.filter(failed) and failed.levelname == "ERROR"
