"""The HTTP endpoints against a small fake agent view, on a real aiohttp server.

Token checks go through the real ``guard`` with a fake reviewer standing in for the
API server (tests/kube/runtime/test_agent_access.py asks the real one).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import numpy as np
import prometheus_client
import pytest

from damon_agent.api import resources
from damon_agent.core import snapshots
from damon_agent.reports import access, node_stat
from damon_agent.runtime import errors, guard, http, metrics, planning, snapshot_client, wire
from damon_agent.schemes.stats import SchemeCounters

READER = "reader-token"  # may get damonnodes/snapshot
SCRAPER = "scraper-token"  # may get damonnodes/metrics
NOBODY = "nobody-token"  # a valid token whose user may do neither
READER_TOKEN = snapshot_client.Token(READER, "the test")


class FakeReviewer:
    """The API server's two reviews: tokens -> users, (user, subresource) -> allowed."""

    def __init__(self) -> None:
        self.users = {READER: "reader", SCRAPER: "scraper", NOBODY: "nobody"}
        self.grants = {("reader", "snapshot"), ("scraper", "metrics")}
        self.failing = False
        self.asked: list[tuple[str, str]] = []

    async def review_token(self, token: str) -> Mapping[str, Any]:
        self.asked.append(("token", token))
        if self.failing:
            raise errors.KubeError("POST tokenreviews: connection refused")
        name = self.users.get(token)
        if name is None:
            return {"authenticated": False, "error": "invalid bearer token"}
        return {"authenticated": True, "user": {"username": name, "groups": ["g"]}}

    async def review_access(self, user: guard.User, want: guard.Access) -> Mapping[str, Any]:
        self.asked.append(("access", user.name))
        return {"allowed": (user.name, want.subresource) in self.grants}


def _snap(target_ids: tuple[int, ...]) -> snapshots.Snapshot:
    return snapshots.Snapshot(
        time_us=5_000_000,
        sample_us=5_000,
        aggr_us=100_000,
        targets=tuple(
            snapshots.TargetSnapshot(
                target_id=t,
                start=np.array([0, 4096 * (t + 1)], dtype=np.int64),
                end=np.array([4096 * (t + 1), 4096 * (t + 3)], dtype=np.int64),
                nr_accesses=np.array([t, 20], dtype=np.int64),
                age=np.array([7, 0], dtype=np.int64),
            )
            for t in target_ids
        ),
    )


class FakeView:
    node_name = "n1"
    backend = "sim"

    def __init__(self) -> None:
        self.ready = False
        self.applied_bytes = 12345
        self.stat: node_stat.NodeStat | None = None

    def liveness(self) -> tuple[bool, str]:
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        return self.ready, "ok" if self.ready else "waiting for DamonNode n1"

    def snapshot_entries(self) -> list[wire.SnapshotEntry]:
        return [
            wire.SnapshotEntry(
                scheme="DamonScheme/shop/cold/pageout",
                operations="vaddr",
                pods=("shop/a", "shop/b"),
                snapshot=_snap((0, 1, 2)),
                target_pods={0: "shop/a", 1: "shop/b", 2: "shop/a"},
            ),
            wire.SnapshotEntry(
                scheme="ClusterDamonScheme/node/stat",
                operations="paddr",
                pods=(),
                snapshot=_snap((0,)),
            ),
        ]

    # metrics.MetricsSource
    def current_plan(self) -> planning.Plan:
        return planning.Plan()

    def current_stats(self) -> dict[str, SchemeCounters]:
        return {}

    def current_psi(self) -> resources.Psi:
        return resources.Psi(some_avg10=1.5, some_total_us=2_000_000)

    def loop_counters(self) -> metrics.LoopCounters:
        return metrics.LoopCounters(applies=3, status_writes=self.applied_bytes)

    def pod_placement(self) -> dict[str, dict[int, int]]:
        return {"shop/a": {0: 4096, 1: 8192}}

    def current_kernel_tiering(self) -> resources.KernelTiering | None:
        return None

    def current_dying_cgroups(self) -> int | None:
        return None

    def node_stat(self) -> node_stat.NodeStat | None:
        return self.stat

    def counts_filter_passed(self) -> bool:
        return False

    # The loop's outcome (tests/runtime/test_outcome_metrics.py exercises them).
    def current_tuning(self) -> dict[str, Any]:
        return {}

    def current_pods(self) -> list[Any]:
        return []

    def current_kdamond_cpu(self) -> dict[str, Any]:
        return {}

    def current_snapshot_ages(self) -> dict[str, float]:
        return {}


def make_app(
    view: FakeView, reviewer: FakeReviewer | None = None, *, metrics_auth: bool = False
) -> aiohttp.web.Application:
    access_guard = guard.Guard(reviewer or FakeReviewer())
    return http.make_app(view, metrics.registry_for(view), access_guard, metrics_auth=metrics_auth)


async def _serve(
    view: FakeView, reviewer: FakeReviewer | None = None, *, metrics_auth: bool = False
) -> tuple[aiohttp.web.AppRunner, str]:
    app = make_app(view, reviewer, metrics_auth=metrics_auth)
    runner = await http.serve(app, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def test_health_readiness_and_metrics_read_fresh() -> None:
    view = FakeView()
    runner, base = await _serve(view)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/healthz") as r:
                assert r.status == 200
            async with session.get(base + "/readyz") as r:
                assert r.status == 503
                assert "DamonNode n1" in await r.text()
            view.ready = True
            async with session.get(base + "/readyz") as r:
                assert r.status == 200
            async with session.get(base + "/metrics") as r:
                text = await r.text()
            assert 'damon_agent_info{backend="sim",node="n1"} 1.0' in text
            assert "damon_agent_status_writes_total 12345.0" in text
            view.applied_bytes = 999  # a second scrape sees the new value: read on scrape
            async with session.get(base + "/metrics") as r:
                assert "damon_agent_status_writes_total 999.0" in await r.text()
            assert "damon_node_memory_psi_some_seconds_total 2.0" in text
            assert 'damon_pod_memory_node_bytes{nid="1",pod="shop/a"} 8192.0' in text
            # DAMON_STAT's figures appear only while the agent stands in for it.
            assert "damon_node_memory_idle_seconds" not in text
            view.stat = node_stat.node_stat(_snap((0,)))
            async with session.get(base + "/metrics") as r:
                text = await r.text()
            # 4 KiB accessed 0 times for 7 aggregations (0.7 s idle), 8 KiB at 20 accesses
            # (accessed, for 0 aggregations).
            assert 'damon_node_memory_idle_seconds{percentile="0"} 0.0' in text
            assert 'damon_node_memory_idle_seconds{percentile="100"} 0.7' in text
            assert text.count("damon_node_memory_idle_seconds{") == 101
            # 8 KiB x 20 accesses per 0.1 s
            assert "damon_node_estimated_memory_bandwidth_bytes_per_second 1.6384e+06" in text
            assert "damon_node_stat_aggregation_interval_seconds 0.1" in text
    finally:
        await runner.cleanup()


async def test_snapshot_endpoint_and_client_narrow_to_the_pod() -> None:
    runner, base = await _serve(FakeView())
    try:
        entries = await asyncio.to_thread(snapshot_client.fetch_entries, base, token=READER_TOKEN)
        assert [e.scheme for e in entries] == [
            "DamonScheme/shop/cold/pageout",
            "ClusterDamonScheme/node/stat",
        ]
        snap = await asyncio.to_thread(
            snapshot_client.fetch_pod_snapshot, base, "shop/a", token=READER_TOKEN
        )
        assert [t.target_id for t in snap.targets] == [0, 2]
        assert snap.targets[1].end.tolist() == [4096 * 3, 4096 * 5]
        assert snap.aggr_us == 100_000
        text = access.render(snap)  # what `damonctl report access --agent` prints
        assert text.splitlines()[1] == "target 0" and "target 2" in text
        only_b = await asyncio.to_thread(
            snapshot_client.fetch_pod_snapshot, base, "shop/b", token=READER_TOKEN
        )
        assert [t.target_id for t in only_b.targets] == [1]
        try:
            await asyncio.to_thread(
                snapshot_client.fetch_pod_snapshot, base, "bank/x", token=READER_TOKEN
            )
        except errors.SnapshotFetchError as err:
            assert "no snapshot of pod bank/x" in str(err)
        else:
            raise AssertionError("a pod no scheme selects must be an error")
    finally:
        await runner.cleanup()


async def _get(
    session: aiohttp.ClientSession, url: str, token: str | None = None
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as r:
        text = await r.text()
        body = json.loads(text) if r.content_type == "application/json" else {"text": text}
        return r.status, body, r.headers


async def test_snapshot_needs_a_token_whose_user_may_get_the_snapshot() -> None:
    reviewer = FakeReviewer()
    runner, base = await _serve(FakeView(), reviewer)
    url = base + "/v1/snapshot"
    try:
        async with aiohttp.ClientSession() as session:
            code, body, headers = await _get(session, url)
            assert code == 401 and body["reason"] == "Unauthorized"
            assert "no bearer token" in body["message"]
            assert "get damonnodes/snapshot 'n1'" in body["message"]
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert reviewer.asked == []  # no token: the API server is not asked
            async with session.get(url, headers={"Authorization": f"Basic {READER}"}) as r:
                assert r.status == 401  # only bearer tokens
            code, body, _ = await _get(session, url, "garbage")
            assert code == 401 and "did not accept the bearer token" in body["message"]
            code, body, _ = await _get(session, url, NOBODY)
            assert code == 403 and body["reason"] == "Forbidden"
            assert body["message"] == "user 'nobody' may not get damonnodes/snapshot 'n1'"
            code, body, _ = await _get(session, url, SCRAPER)  # metrics only
            assert code == 403
            code, body, _ = await _get(session, url, READER)
            assert code == 200 and body["node"] == "n1"
            # Open: probes and, without metrics_auth, /metrics.
            for path in ("/healthz", "/metrics"):
                code, _, _ = await _get(session, base + path)
                assert code == 200, path
            # Decisions are cached: asking again does not review again.
            asked = len(reviewer.asked)
            for token in (READER, NOBODY, "garbage"):
                await _get(session, url, token)
            assert len(reviewer.asked) == asked
    finally:
        await runner.cleanup()


async def test_metrics_auth_guards_metrics_and_review_failures_answer_503() -> None:
    reviewer = FakeReviewer()
    runner, base = await _serve(FakeView(), reviewer, metrics_auth=True)
    try:
        async with aiohttp.ClientSession() as session:
            code, body, _ = await _get(session, base + "/metrics")
            assert code == 401 and "get damonnodes/metrics 'n1'" in body["message"]
            code, _, _ = await _get(session, base + "/metrics", READER)
            assert code == 403
            code, body, _ = await _get(session, base + "/metrics", SCRAPER)
            assert code == 200 and "damon_agent_info" in body["text"]
            assert (await _get(session, base + "/readyz"))[0] == 503  # open, just not ready
            reviewer.failing = True
            code, body, headers = await _get(session, base + "/v1/snapshot", READER)
            assert code == 503 and headers["Retry-After"] == "5"
            assert "could not review the token" in body["message"]
            reviewer.failing = False  # a failure is not cached: the next request is served
            code, _, _ = await _get(session, base + "/v1/snapshot", READER)
            assert code == 200
    finally:
        await runner.cleanup()


async def test_client_says_in_one_line_who_was_refused_and_how() -> None:
    runner, base = await _serve(FakeView())
    try:
        fetch = snapshot_client.fetch_entries
        cases = [
            (None, 401, "no token sent"),
            (snapshot_client.Token(None, "no token found: x"), 401, "[no token found: x]"),
            (snapshot_client.Token("garbage", "--token"), 401, "[token from --token]"),
            (snapshot_client.Token(NOBODY, "the test"), 403, "snapshot-reader"),
        ]
        for token, code, words in cases:
            with pytest.raises(errors.SnapshotAccessError) as raised:
                await asyncio.to_thread(fetch, base, token=token)
            assert raised.value.code == code
            message = str(raised.value)
            assert "\n" not in message and words in message, message
            assert message.startswith(f"{base}/v1/snapshot: the agent answered {code} ")
    finally:
        await runner.cleanup()


def test_client_names_unreachable_agent_and_bad_pod_argument() -> None:
    for pod, expected in (("nopod", "NAMESPACE/NAME"), ("a/b", "cannot reach the agent")):
        try:
            snapshot_client.fetch_pod_snapshot("127.0.0.1:1", pod, timeout_s=2)
        except errors.SnapshotFetchError as err:
            assert expected in str(err)
        else:
            raise AssertionError(f"{pod}: expected an error")


def test_wire_decode_names_the_bad_field() -> None:
    document = wire.encode("n1", "sim", FakeView().snapshot_entries())
    document["schemes"][0]["snapshot"]["targets"][1]["age"] = [1]  # type: ignore[index]
    try:
        wire.decode(document, source="agent")
    except errors.SnapshotFetchError as err:
        assert "schemes[0]: snapshot.targets[1]" in str(err)
        assert "differ in length" in str(err)
    else:
        raise AssertionError("mismatched columns must be refused")


def test_parse_listen() -> None:
    assert http.parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert http.parse_listen("[::1]:9") == ("::1", 9)
    for bad in ("8080", "host:http", "h:70000"):
        try:
            http.parse_listen(bad)
        except ValueError as err:
            assert bad in str(err)
        else:
            raise AssertionError(bad)


def test_registry_is_not_the_global_one() -> None:
    registry = metrics.registry_for(FakeView())
    assert registry is not prometheus_client.REGISTRY


def test_tokens_come_from_the_kubeconfig_context_or_a_file(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def kubeconfig(user: dict[str, Any]) -> str:
        path = tmp_path / f"config-{len(list(tmp_path.iterdir()))}"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                    "users": [{"name": "u", "user": user}],
                    "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "ctx",
                }
            )
        )
        return str(path)

    found = snapshot_client.kubeconfig_token(kubeconfig({"token": "abc"}))
    assert found == snapshot_client.Token("abc", "kubeconfig context 'ctx'")
    token_path = tmp_path / "token"
    token_path.write_text("from-a-file\n")
    assert snapshot_client.kubeconfig_token(kubeconfig({"tokenFile": str(token_path)})).value == (
        "from-a-file"
    )
    assert snapshot_client.token_file(token_path).value == "from-a-file"
    with pytest.raises(errors.SnapshotFetchError, match="cannot read"):
        snapshot_client.token_file(tmp_path / "missing")
    # A client certificate is no bearer token; nor is a missing kubeconfig.
    (tmp_path / "crt").write_text("x")
    certified = kubeconfig({"client-certificate": str(tmp_path / "crt")})
    missing = str(tmp_path / "nowhere")
    monkeypatch.setattr(snapshot_client, "IN_CLUSTER_TOKEN", tmp_path / "no-sa-token")
    for config, words in ((certified, "has no bearer token"), (missing, "no usable kubeconfig")):
        none = snapshot_client.default_token(config)
        assert none.value is None and words in none.source, none
    # ...then the in-cluster ServiceAccount's token, where the pod has one.
    (tmp_path / "sa-token").write_text("in-cluster\n")
    monkeypatch.setattr(snapshot_client, "IN_CLUSTER_TOKEN", tmp_path / "sa-token")
    assert snapshot_client.default_token(missing).value == "in-cluster"
    monkeypatch.setenv("KUBECONFIG", kubeconfig({"token": "env"}))
    assert snapshot_client.default_token().value == "env"
