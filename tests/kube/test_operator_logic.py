"""The operator's logic without a cluster: validation, targeting, aggregation, and the
controller's coalesced writes (through the in-package fake writer), including a
1,000-node aggregation run."""

from __future__ import annotations

import asyncio
import datetime
import statistics
import time
from typing import Any

import pytest

from damon_agent.api import conditions
from damon_operator import aggregation, controller, index, kube, targeting, validation

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def scheme_body(
    name: str = "cold",
    namespace: str | None = "shop",
    spec: dict[str, Any] | None = None,
    generation: int = 1,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "generation": generation}
    if namespace:
        meta["namespace"] = namespace
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    default = {
        "podSelector": {"matchLabels": {"app": "cart"}},
        "schemes": [{"name": "s", "action": "pageout"}],
    }
    return {"metadata": meta, "spec": spec if spec is not None else default}


def node_status(
    reports: list[dict[str, Any]] | None = None,
    heartbeat: datetime.datetime = NOW,
    tiers: list[str] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"heartbeat": heartbeat.isoformat(), "schemes": reports or []}
    if tiers is not None:
        status["numa"] = [{"nid": i, "tier": t} for i, t in enumerate(tiers)]
    return status


def report(
    key_kind: str,
    name: str,
    *,
    ready: bool | None = True,
    generation: int = 1,
    applied: int = 0,
    reason: str = "Applied",
    namespace: str | None = None,
) -> dict[str, Any]:
    conds = []
    if ready is not None:
        conds.append(
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": reason,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        )
    out = {
        "kind": key_kind,
        "name": name,
        "uid": f"uid-{name}",
        "observedGeneration": generation,
        "conditions": conds,
        "stats": [{"name": "s", "appliedBytes": applied}],
    }
    if namespace:
        out["namespace"] = namespace
    return out


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "spec", "reason", "words"),
    [
        (
            "ClusterDamonScheme",
            {"wholeNode": True, "schemes": [{"name": "s", "action": "cold"}]},
            "UnsupportedAction",
            "action cold needs virtual address monitoring",
        ),
        (
            "DamonScheme",
            {
                "podSelector": {},
                "monitoring": {"mode": "vaddr"},
                "schemes": [{"name": "s", "action": "lru_prio"}],
            },
            "UnsupportedAction",
            "works on physical memory only",
        ),
        (
            "ClusterDamonScheme",
            {
                "wholeNode": True,
                "schemes": [
                    {
                        "name": "s",
                        "action": "pageout",
                        "quota": {
                            "size": "1Gi",
                            "goals": [{"metric": "pod_mem_psi_us", "target": "1ms", "path": "/x"}],
                        },
                    }
                ],
            },
            "UnsupportedGoal",
            "measures a pod",
        ),
        (
            "ClusterDamonScheme",
            {
                "wholeNode": True,
                "schemes": [
                    {
                        "name": "s",
                        "action": "migrate_hot",
                        "tier": "dram",
                        "fill": {"dram": "99.7%", "podShare": "20%"},
                    }
                ],
            },
            "UnsupportedGoal",
            "fill.podShare is a pod's share",
        ),
        (
            "DamonScheme",
            {
                "podSelector": {},
                "schemes": [
                    {
                        "name": "s",
                        "action": "pageout",
                        "accessPattern": {"size": {"min": "1Gi", "max": "4Ki"}},
                    }
                ],
            },
            "InvalidSpec",
            "schemes[0].accessPattern.size: min 1Gi is greater than max 4Ki",
        ),
        (
            "DamonScheme",
            {"podSelector": {}, "schemes": [{"name": "s", "action": "migrate_cold"}]},
            "InvalidSpec",
            "needs exactly one of targetNid or tier",
        ),
        (
            "ClusterDamonScheme",
            {
                "wholeNode": True,
                "schemes": [
                    {"name": "up", "action": "migrate_hot", "tier": "dram"},
                    {"name": "s", "action": "pageout", "kernelTiering": "Refuse"},
                ],
            },
            "InvalidSpec",
            "schemes[1].kernelTiering: only for migrate_hot and migrate_cold",
        ),
    ],
)
def test_verdicts_name_the_problem(kind: str, spec: dict[str, Any], reason: str, words: str):
    parsed = validation.parse(kind, spec)
    verdict = parsed if isinstance(parsed, validation.Verdict) else validation.check_actions(parsed)
    assert (verdict.accepted, verdict.reason) == (False, reason)
    assert words in verdict.message


def test_a_paddr_pod_scheme_may_use_lru_actions_and_auto_mode_is_judged_per_node():
    for mode in ("paddr", "auto"):
        parsed = validation.parse(
            "DamonScheme",
            {
                "podSelector": {},
                "monitoring": {"mode": mode},
                "schemes": [{"name": "s", "action": "lru_prio"}],
            },
        )
        assert not isinstance(parsed, validation.Verdict)
        assert validation.check_actions(parsed).accepted


def test_tier_check_waits_for_reports_then_requires_some_node_with_the_tier():
    parsed = validation.parse(
        "ClusterDamonScheme",
        {"wholeNode": True, "schemes": [{"name": "s", "action": "migrate_cold", "tier": "cxl"}]},
    )
    assert not isinstance(parsed, validation.Verdict)
    assert validation.check_tiers(parsed, [None, None]).accepted
    refused = validation.check_tiers(parsed, [frozenset({"dram"}), None])
    assert (refused.accepted, refused.reason) == (False, "TierUnavailable")
    assert validation.check_tiers(
        parsed, [frozenset({"dram"}), frozenset({"dram", "cxl"})]
    ).accepted


# -- targeting --------------------------------------------------------------------------


def test_desired_spec_confines_namespaced_schemes_and_resolves_namespace_selectors():
    cluster = index.Index()
    cluster.put_node({"metadata": {"name": "n1", "labels": {"pool": "a"}}})
    for name, labels in (("shop", {"team": "web"}), ("bank", {"team": "pay"})):
        cluster.put_namespace({"metadata": {"name": name, "labels": labels}})
    cluster.put_scheme(
        "DamonScheme",
        scheme_body(
            "cold", "shop", {"podSelector": {}, "schemes": [{"name": "s", "action": "pageout"}]}
        ),
    )
    cluster.put_scheme(
        "ClusterDamonScheme",
        scheme_body(
            "web",
            None,
            {
                "namespaceSelector": {"matchLabels": {"team": "web"}},
                "podSelector": {},
                "nodeSelector": {"matchLabels": {"pool": "a"}},
                "schemes": [{"name": "s", "action": "stat"}],
            },
        ),
    )
    cluster.put_scheme(
        "ClusterDamonScheme",
        scheme_body(
            "elsewhere",
            None,
            {
                "wholeNode": True,
                "nodeSelector": {"matchLabels": {"pool": "b"}},
                "schemes": [{"name": "s", "action": "stat"}],
            },
        ),
    )
    spec = targeting.desired_spec(cluster.nodes["n1"], cluster.schemes.values(), cluster.namespaces)
    by_name = {s["name"]: s for s in spec["schemes"]}
    assert set(by_name) == {"cold", "web"}
    assert by_name["cold"]["namespaces"] == ["shop"]
    assert by_name["web"]["namespaces"] == ["shop"]
    assert by_name["cold"]["generation"] == 1 and by_name["cold"]["uid"] == "uid-cold"


def test_the_pod_scope_travels_to_the_nodes_as_written():
    cluster = index.Index()
    cluster.put_node({"metadata": {"name": "n1"}})
    cluster.put_namespace({"metadata": {"name": "shop"}})
    scope = {
        "qosClasses": ["Guaranteed"],
        "containers": ["app"],
        "protection": {"floor": "requests", "minimum": "64Mi"},
    }
    cluster.put_scheme(
        "DamonScheme",
        scheme_body(
            "cold",
            "shop",
            {"podSelector": {}, "schemes": [{"name": "s", "action": "pageout"}]} | scope,
        ),
    )
    cluster.put_scheme(
        "ClusterDamonScheme",
        scheme_body(
            "web",
            None,
            {"podSelector": {}, "schemes": [{"name": "s", "action": "pageout"}]} | scope,
        ),
    )
    spec = targeting.desired_spec(cluster.nodes["n1"], cluster.schemes.values(), cluster.namespaces)
    assert [s["name"] for s in spec["schemes"]] == ["web", "cold"]
    for assigned in spec["schemes"]:
        assert {k: assigned[k] for k in scope} == scope


def test_index_reports_what_became_stale():
    cluster = index.Index()
    first = cluster.put_node({"metadata": {"name": "n1", "labels": {"a": "1"}}})
    assert first.nodes == {"n1"} and first.all_schemes
    assert cluster.put_node({"metadata": {"name": "n1", "labels": {"a": "1"}}}) == index.Stale()
    stale = cluster.put_scheme("DamonScheme", scheme_body())
    assert stale.all_nodes and stale.schemes == {"DamonScheme/shop/cold"}
    heartbeat_only = cluster.put_damon_node(
        {"metadata": {"name": "n1"}, "spec": {}, "status": node_status()}
    )
    assert heartbeat_only.nodes == {"n1"}  # first sight: its spec must be checked
    again = cluster.put_damon_node(
        {
            "metadata": {"name": "n1"},
            "spec": {},
            "status": node_status([report("DamonScheme", "cold", namespace="shop")]),
        }
    )
    assert again.nodes == frozenset() and again.schemes == {"DamonScheme/shop/cold"}


# -- aggregation ------------------------------------------------------------------------


def test_aggregation_counts_ready_failing_and_pending_nodes():
    cluster = index.Index()
    cluster.put_scheme(
        "ClusterDamonScheme",
        scheme_body(
            "t",
            None,
            {"wholeNode": True, "schemes": [{"name": "s", "action": "pageout"}]},
            generation=3,
        ),
    )
    entry = cluster.schemes["ClusterDamonScheme/t"]
    statuses = {
        "ok": node_status([report("ClusterDamonScheme", "t", generation=3, applied=100)]),
        "broken": node_status(
            [
                report(
                    "ClusterDamonScheme",
                    "t",
                    generation=3,
                    ready=False,
                    reason="KdamondFailed",
                    applied=5,
                )
            ]
        ),
        "old": node_status([report("ClusterDamonScheme", "t", generation=2)]),
        "silent": node_status([], heartbeat=NOW - datetime.timedelta(minutes=10)),
    }
    for name, status in statuses.items():
        cluster.put_damon_node({"metadata": {"name": name}, "spec": {}, "status": status})
    outcomes = [
        aggregation.node_outcome(
            entry, n, cluster.damon_nodes.get(n), now=NOW, heartbeat_timeout_s=60
        )
        for n in [*statuses, "missing"]
    ]
    assert [o.state for o in outcomes] == ["ready", "failing", "pending", "failing", "pending"]
    status = aggregation.aggregate(
        entry,
        outcomes,
        aggregation.previous_status(None),
        tier_verdict=validation.ACCEPTED,
        now=NOW,
    )
    assert status.nodes_ready == "1/5" and status.nodes.degraded == 2
    assert status.applied_bytes == 105
    degraded = conditions.find(status.conditions, "Degraded")
    assert degraded is not None and degraded.status == "True"
    assert (
        "broken: KdamondFailed" in degraded.message
        and "silent: NodeUnresponsive" in degraded.message
    )
    assert {c.observed_generation for c in status.conditions} == {3}
    assert status.observed_generation == 3


# -- controller ---------------------------------------------------------------------------


class Stop:
    def __init__(self) -> None:
        self.stopped = False

    def __bool__(self) -> bool:
        return self.stopped


def make_controller(
    config: controller.Config | None = None,
) -> tuple[controller.Controller, kube.RecordingWriter]:
    writer = kube.RecordingWriter()
    ctl = controller.Controller(
        index.Index(),
        writer,
        config or controller.Config(coalesce_s=0.01, settle_s=0),
        clock=lambda: NOW,
    )
    return ctl, writer


async def test_node_specs_are_written_once_and_deleted_only_when_the_node_is_gone():
    ctl, writer = make_controller()
    ctl.note(ctl.index.put_node({"metadata": {"name": "n1"}}))
    ctl.note(ctl.index.put_scheme("DamonScheme", scheme_body()))
    await ctl.sync_node_specs()
    assert writer.writes == [("create", "n1")]
    assert writer.specs["n1"]["schemes"][0]["namespaces"] == ["shop"]
    ctl.note(ctl.index.put_scheme("DamonScheme", scheme_body()))  # same generation
    ctl.note(index.Stale(all_nodes=True))
    await ctl.sync_node_specs()
    assert writer.writes == [("create", "n1")], "an unchanged spec must not be written"
    ctl.note(ctl.index.remove_node("n1"))
    writer.existing_nodes.add("n1")  # the index lags behind the API: do not delete
    await ctl.sync_node_specs()
    assert ("delete", "n1") not in writer.writes
    writer.existing_nodes.clear()
    ctl.note(index.Stale(nodes=frozenset({"n1"})))
    await ctl.sync_node_specs()
    assert writer.writes[-1] == ("delete", "n1")


def test_deletion_is_blocked_only_by_live_nodes():
    ctl, _ = make_controller(controller.Config(heartbeat_timeout_s=60))
    key = "DamonScheme/shop/cold"
    listing = node_status([report("DamonScheme", "cold", namespace="shop")])
    for name, status in (
        ("live", listing),
        ("silent", {**listing, "heartbeat": "2025-12-31T00:00:00Z"}),
        ("nodeless", listing),
        ("done", node_status([])),
    ):
        ctl.index.put_damon_node({"metadata": {"name": name}, "spec": {}, "status": status})
    for name in ("live", "silent", "done"):
        ctl.index.put_node({"metadata": {"name": name}})
    assert ctl.blocking_nodes(key) == ["live"]


async def test_a_deletion_the_index_finds_unblocked_is_confirmed_against_the_apiserver():
    # A replica that has just started (after a crash, say) runs a pending deletion before
    # its index has listed a single DamonNode: the apiserver's view decides.
    ctl, writer = make_controller(controller.Config(heartbeat_timeout_s=60))
    key = "DamonScheme/shop/cold"
    listing = node_status([report("DamonScheme", "cold", namespace="shop")])
    writer.damon_nodes = [
        {"metadata": {"name": name}, "spec": {}, "status": status}
        for name, status in (
            ("live", listing),
            ("silent", {**listing, "heartbeat": "2025-12-31T00:00:00Z"}),
            ("nodeless", listing),
            ("done", node_status([])),
        )
    ]
    writer.existing_nodes = {"live", "silent", "done"}
    assert ctl.blocking_nodes(key) == []
    assert await ctl.confirmed_blocking_nodes(key) == ["live"]
    writer.damon_nodes[0]["status"] = node_status([])  # torn down
    assert await ctl.confirmed_blocking_nodes(key) == []
    assert writer.writes == [], "confirming is a read"


async def test_a_thousand_nodes_aggregate_fast_with_few_writes():
    """1,000 DamonNodes whose agents report: status changes reach the scheme within the
    coalescing window (p99 far below 5 s) and heartbeats alone cause no writes."""
    ctl, writer = make_controller(
        controller.Config(coalesce_s=0.2, settle_s=0, resync_s=30, totals_interval_s=10)
    )
    nodes = [f"n{i:04d}" for i in range(1000)]
    for name in nodes:
        ctl.note(ctl.index.put_node({"metadata": {"name": name}}))
    ctl.note(
        ctl.index.put_scheme(
            "ClusterDamonScheme",
            scheme_body(
                "fleet", None, {"wholeNode": True, "schemes": [{"name": "s", "action": "pageout"}]}
            ),
        )
    )
    key = "ClusterDamonScheme/fleet"

    def agent(name: str, ready: bool = True) -> None:
        body = {
            "metadata": {"name": name},
            "spec": {},
            "status": node_status(
                [
                    report(
                        "ClusterDamonScheme",
                        "fleet",
                        ready=ready,
                        reason="Applied" if ready else "KdamondFailed",
                    )
                ]
            ),
        }
        ctl.note(ctl.index.put_damon_node(body))

    stop = Stop()
    daemon = asyncio.create_task(ctl.scheme_daemon(key, lambda: writer.statuses.get(key), stop))
    started = time.monotonic()
    for name in nodes:
        agent(name)
    report_s = time.monotonic() - started

    async def written(predicate: Any, timeout: float = 10.0) -> float:
        begun = time.monotonic()
        while not (key in writer.statuses and predicate(writer.statuses[key])):
            await asyncio.sleep(0.01)
            assert time.monotonic() - begun < timeout, writer.statuses.get(key)
        return time.monotonic() - begun

    await written(lambda s: s.get("nodesReady") == "1000/1000")
    writes_after_rollout = len(writer.writes)
    latencies = []
    for i in range(0, 1000, 100):  # ten nodes fail and recover, one at a time
        agent(nodes[i], ready=False)
        latencies.append(await written(lambda s: s.get("nodesReady") == "999/1000"))
        agent(nodes[i])
        latencies.append(await written(lambda s: s.get("nodesReady") == "1000/1000"))
    writes_for_changes = len(writer.writes) - writes_after_rollout
    for name in nodes:  # a round of heartbeats changes nothing the scheme shows
        agent(name)
    await asyncio.sleep(0.5)
    heartbeat_writes = len(writer.writes) - writes_after_rollout - writes_for_changes
    stop.stopped = True
    await daemon
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(
        f"\n1000 nodes: reports parsed in {report_s:.2f} s; change->status p50 "
        f"{statistics.median(latencies):.2f} s p99 {p99:.2f} s; {writes_after_rollout} "
        f"write(s) for the rollout, {writes_for_changes} for 20 changes, "
        f"{heartbeat_writes} for 1000 heartbeats"
    )
    assert p99 <= 5.0
    assert writes_after_rollout <= 3
    assert writes_for_changes <= 20
    assert heartbeat_writes == 0


async def test_a_status_arriving_during_a_spec_write_is_kept():
    ctl, writer = make_controller()
    listing = node_status([report("DamonScheme", "cold", namespace="shop")])

    class AgentReportsMeanwhile(kube.RecordingWriter):
        async def put_damon_node_spec(self, name: str, spec: dict[str, Any], **kw: Any) -> None:
            await super().put_damon_node_spec(name, spec, **kw)
            # The watch delivers the new object and the agent's first status mid-write.
            ctl.index.put_damon_node({"metadata": {"name": name}, "spec": spec, "status": listing})

    ctl.writer = AgentReportsMeanwhile()
    ctl.note(ctl.index.put_node({"metadata": {"name": "n1"}}))
    ctl.note(ctl.index.put_scheme("DamonScheme", scheme_body()))
    await ctl.sync_node_specs()
    entry = ctl.index.damon_nodes["n1"]
    assert entry.status is not None and entry.lists("DamonScheme/shop/cold")
    ctl.note(ctl.index.put_scheme("DamonScheme", scheme_body(deleting=True)))
    assert ctl.blocking_nodes("DamonScheme/shop/cold") == ["n1"]
    assert writer.writes == []


async def test_a_failed_spec_write_is_retried_not_lost():
    ctl, _ = make_controller()

    class Refusing(kube.RecordingWriter):
        async def put_damon_node_spec(self, name: str, spec: dict[str, Any], **kw: Any) -> None:
            raise RuntimeError("apiserver said no")

    ctl.writer = Refusing()
    ctl.note(ctl.index.put_node({"metadata": {"name": "n1"}}))
    assert await ctl.sync_node_specs() == 1
    ctl.writer = recorder = kube.RecordingWriter()
    assert await ctl.sync_node_specs() == 0  # the failed node stayed stale
    assert recorder.writes == [("create", "n1")]


def test_aggregation_sums_what_the_nodes_saved_and_writes_it_only_with_the_rest():
    cluster = index.Index()
    cluster.put_scheme("DamonScheme", scheme_body(generation=2))
    entry = cluster.schemes["DamonScheme/shop/cold"]
    saved = {"n1": 3 << 20, "n2": 1 << 30, "n3": 7}
    for name, amount in saved.items():
        one = report("DamonScheme", "cold", namespace="shop", generation=2, applied=1)
        one["savedBytes"] = amount
        if name == "n3":  # an older report: pending, its savings not counted
            one["observedGeneration"] = 1
        cluster.put_damon_node(
            {"metadata": {"name": name}, "spec": {}, "status": node_status([one])}
        )
    outcomes = [
        aggregation.node_outcome(entry, n, cluster.damon_nodes[n], now=NOW, heartbeat_timeout_s=60)
        for n in saved
    ]
    status = aggregation.aggregate(
        entry,
        outcomes,
        aggregation.previous_status(None),
        tier_verdict=validation.ACCEPTED,
        now=NOW,
    )
    assert status.saved_bytes == (3 << 20) + (1 << 30)
    assert status.saved == "1.003 GiB"
    dumped = aggregation.dump_status(status)
    moved = dict(dumped, savedBytes=0, saved="0 B")
    assert not aggregation.differs_beyond_totals(dumped, moved)  # a counter, not a change
