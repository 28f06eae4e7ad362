"""The HTTP endpoints against a small fake agent view, on a real aiohttp server."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import prometheus_client

from damon_agent.api import resources
from damon_agent.core import snapshots
from damon_agent.reports import access, node_stat
from damon_agent.runtime import errors, http, metrics, planning, snapshot_client, wire
from damon_agent.schemes.stats import SchemeCounters


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

    def node_stat(self) -> node_stat.NodeStat | None:
        return self.stat


async def _serve(view: FakeView) -> tuple[aiohttp.web.AppRunner, str]:
    registry = metrics.registry_for(view)
    runner = await http.serve(http.make_app(view, registry), "127.0.0.1", 0)
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
        entries = await asyncio.to_thread(snapshot_client.fetch_entries, base)
        assert [e.scheme for e in entries] == [
            "DamonScheme/shop/cold/pageout",
            "ClusterDamonScheme/node/stat",
        ]
        snap = await asyncio.to_thread(snapshot_client.fetch_pod_snapshot, base, "shop/a")
        assert [t.target_id for t in snap.targets] == [0, 2]
        assert snap.targets[1].end.tolist() == [4096 * 3, 4096 * 5]
        assert snap.aggr_us == 100_000
        text = access.render(snap)  # what `damonctl report access --agent` prints
        assert text.splitlines()[1] == "target 0" and "target 2" in text
        only_b = await asyncio.to_thread(snapshot_client.fetch_pod_snapshot, base, "shop/b")
        assert [t.target_id for t in only_b.targets] == [1]
        try:
            await asyncio.to_thread(snapshot_client.fetch_pod_snapshot, base, "bank/x")
        except errors.SnapshotFetchError as err:
            assert "no snapshot of pod bank/x" in str(err)
        else:
            raise AssertionError("a pod no scheme selects must be an error")
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
