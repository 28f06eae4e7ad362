"""The agent's ring of recent snapshots (``runtime.history``), alone and fed by the daemon.

Snapshots come from the real sim backend stepped in virtual time, so their regions, times
and sharing between the schemes of one context are what the agent really serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import numpy as np
import pytest

from damon_agent.api import resources
from damon_agent.cli import daemon as cli_daemon
from damon_agent.core import snapshots
from damon_agent.runtime import daemon, errors, history, planning, wire
from damon_agent.runtime.backends import inprocess, sim

WORKLOAD = Path(__file__).resolve().parents[2] / "examples" / "workloads" / "hot-cold.yaml"
POD = planning.PodFacts(namespace="shop", name="a", uid="ua", memcg_paths=("/sim/poda",))
STEP_US = 500_000


def _assigned(*schemes: dict[str, object]) -> resources.AssignedScheme:
    return resources.AssignedScheme.model_validate(
        {
            "kind": "DamonScheme",
            "namespace": "shop",
            "name": "s",
            "uid": "u",
            "generation": 1,
            "namespaces": ["shop"],
            "podSelector": {},
            "spec": {
                "monitoring": {"intervals": {"sample": "5ms", "aggregation": "100ms"}},
                "schemes": list(schemes),
            },
        }
    )


STAT = {"name": "all", "action": "stat"}
COLD = {
    "name": "cold",
    "action": "pageout",
    "accessPattern": {"accessRate": {"max": "0%"}, "age": {"min": "5s"}},
}


@pytest.fixture
def backend() -> Iterator[inprocess.InProcessBackend]:
    """The sim with two schemes in one context, stepped in virtual time."""
    adapter = sim.open_sim(WORKLOAD, pacing=inprocess.Pacing.STEPPED, seed=3)
    adapter.apply(planning.plan([_assigned(STAT, COLD)], [POD], adapter.info.capabilities))
    try:
        yield adapter
    finally:
        adapter.stop()


def _step(adapter: inprocess.InProcessBackend) -> list[wire.SnapshotEntry]:
    adapter.clock.sleep_us(STEP_US)
    return adapter.snapshots()


def test_one_context_is_held_once_for_its_schemes_and_repeats_are_skipped(
    backend: inprocess.InProcessBackend,
) -> None:
    ring = history.SnapshotHistory()
    entries = _step(backend)
    assert [e.scheme for e in entries] == ["DamonScheme/shop/s/all", "DamonScheme/shop/s/cold"]
    assert entries[0].snapshot is entries[1].snapshot  # the sharing the ring relies on
    assert ring.add(entries) == 2
    assert len(ring) == 1  # one snapshot for the two schemes
    regions = sum(len(t) for t in entries[0].snapshot.targets)
    assert ring.nbytes == (
        history.SNAPSHOT_OVERHEAD_BYTES + history.TARGET_OVERHEAD_BYTES + 32 * regions
    )
    assert ring.add(entries) == 0 and ring.add(backend.snapshots()) == 0  # read again
    assert len(ring) == 1
    ring.add(_step(backend))
    page = ring.page()
    assert [(e.snapshot.time_us, e.scheme.rsplit("/", 1)[-1]) for e in page.entries] == [
        (STEP_US, "all"),
        (STEP_US, "cold"),
        (2 * STEP_US, "all"),
        (2 * STEP_US, "cold"),
    ]
    assert (page.oldest_us, page.newest_us, page.more) == (STEP_US, 2 * STEP_US, False)
    later = ring.page(since_us=STEP_US, keep=lambda e: e.scheme.endswith("/cold"))
    assert [(e.snapshot.time_us, e.scheme) for e in later.entries] == [
        (2 * STEP_US, "DamonScheme/shop/s/cold")
    ]
    held = later.entries[0].snapshot
    assert (
        held.targets[0].start.tolist() == backend.snapshots()[0].snapshot.targets[0].start.tolist()
    )


def test_a_limit_cuts_between_times_never_within_one(backend: inprocess.InProcessBackend) -> None:
    ring = history.SnapshotHistory()
    for _ in range(3):
        ring.add(_step(backend))
    page = ring.page(limit=1)
    # Both schemes of the first time: asking again from it skips nothing.
    assert [e.snapshot.time_us for e in page.entries] == [STEP_US, STEP_US]
    assert page.more
    rest = ring.page(since_us=STEP_US, limit=5)
    assert [e.snapshot.time_us for e in rest.entries] == [2 * STEP_US] * 2 + [3 * STEP_US] * 2
    assert not rest.more


def test_the_window_drops_what_is_older_than_it_behind_the_newest(
    backend: inprocess.InProcessBackend,
) -> None:
    ring = history.SnapshotHistory(window_s=1.0)
    first = _step(backend)
    ring.add(first)
    for _ in range(9):  # 5 s of snapshots, half a second apart
        ring.add(_step(backend))
    times = sorted({e.snapshot.time_us for e in ring.page().entries})
    assert times == [4_000_000, 4_500_000, 5_000_000]
    # A dropped snapshot offered again is still older than its scheme's newest: skipped.
    assert ring.add(first) == 0 and len(ring) == 3


def test_the_byte_bound_holds_and_the_newest_snapshot_always_stays(
    backend: inprocess.InProcessBackend,
) -> None:
    first = _step(backend)
    one = history.SnapshotHistory()
    one.add(first)
    snapshot_bytes = one.nbytes
    ring = history.SnapshotHistory(max_bytes=3 * snapshot_bytes)
    sizes = []
    for _ in range(12):
        ring.add(_step(backend))
        sizes.append(ring.nbytes)
        assert ring.nbytes <= ring.max_bytes or len(ring) == 1
    assert 1 <= len(ring) <= 4  # region counts vary from one aggregation to the next
    assert ring.page().newest_us == 13 * STEP_US
    assert max(sizes) <= 3 * snapshot_bytes + max(
        history.SNAPSHOT_OVERHEAD_BYTES + 32 * 10_000, snapshot_bytes
    )
    tiny = history.SnapshotHistory(max_bytes=0)
    tiny.add(_step(backend))
    tiny.add(_step(backend))
    assert len(tiny) == 1 and tiny.page().entries[0].snapshot.time_us == 15 * STEP_US


def test_held_arrays_are_the_rings_own() -> None:
    buffer = np.arange(0, 4096 * 100, 4096, dtype=np.int64)
    target = snapshots.TargetSnapshot(
        target_id=0,
        start=buffer[10:12],
        end=buffer[11:13],
        nr_accesses=np.array([1, 2], dtype=np.int64),
        age=np.array([3, 4], dtype=np.int64),
    )
    snap = snapshots.Snapshot(time_us=1, sample_us=5_000, aggr_us=100_000, targets=(target,))
    ring = history.SnapshotHistory()
    ring.add([wire.SnapshotEntry(scheme="k", operations="paddr", pods=(), snapshot=snap)])
    buffer[10] = -1  # the caller's buffer changes: what the ring holds does not
    (held,) = ring.page().entries
    assert held.snapshot.targets[0].start.tolist() == [40960, 45056]
    assert held.snapshot.targets[0].start.base is None  # not a view of the 800-byte buffer
    with pytest.raises(ValueError, match="negative"):
        history.SnapshotHistory(window_s=-1)


def test_daemon_flags_size_the_ring() -> None:
    base = ["--node-name", "n1"]
    config = cli_daemon.parse_args(base)
    assert (config.snapshot_history_s, config.snapshot_history_bytes) == (300.0, 32 << 20)
    config = cli_daemon.parse_args(
        [*base, "--snapshot-history", "90s", "--snapshot-history-bytes", "8Mi"]
    )
    assert (config.snapshot_history_s, config.snapshot_history_bytes) == (90.0, 8 << 20)
    for flag, bad, words in (
        ("--snapshot-history", "5", "has no unit"),
        ("--snapshot-history", "max", "not max"),
        ("--snapshot-history-bytes", "lots", "not a size"),
        ("--snapshot-history-bytes", "max", "not max"),
    ):
        with pytest.raises(errors.ArgumentsError) as refused:
            cli_daemon.parse_args([*base, flag, bad])
        assert str(refused.value).startswith(flag + ":") and words in str(refused.value)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Any]:
    """The daemon's Agent with the real sim backend, no API server (status captured)."""
    config = cli_daemon.parse_args(
        ["--node-name", "n1", "--backend", "sim", "--sim-workload", str(WORKLOAD),
         "--state-dir", str(tmp_path), "--sys-root", str(tmp_path), "--proc-root", str(tmp_path),
         "--snapshot-history", "2s"]
    )  # fmt: skip
    cfg = kubernetes.client.Configuration()
    cfg.host = "http://127.0.0.1:1"
    the_agent = daemon.Agent(config, daemon.kube.Client(cfg))
    the_agent.node_backend = sim.open_sim(WORKLOAD, pacing=inprocess.Pacing.STEPPED, seed=3)
    the_agent.pods.synced.set()

    async def keep(built: resources.DamonNodeStatus) -> bool:
        the_agent.state.last_status = built
        return True

    the_agent.write_status = keep  # type: ignore[method-assign]
    try:
        yield the_agent
    finally:
        the_agent.node_backend.stop()
        await the_agent.client.close()


async def test_daemon_keeps_the_in_process_snapshots_at_each_status_build(agent: Any) -> None:
    agent.dnodes.items = {
        "n1": {
            "metadata": {"name": "n1", "generation": 1},
            "spec": {"schemes": [_assigned(STAT).model_dump(by_alias=True, mode="json")]},
        }
    }
    agent.pods.items = {
        "p": {"metadata": {"namespace": "shop", "name": "a", "uid": "ua"}, "status": {}}
    }
    await agent.tick()  # plans, applies; no snapshot yet at virtual time 0
    assert agent.state.outcome.applied and len(agent.snapshot_history) == 0
    ring_times = []
    for _ in range(6):
        agent.node_backend.clock.sleep_us(STEP_US)
        agent.throttle.forget()  # a status write due at each tick
        await agent.tick()
        ring_times = [e.snapshot.time_us for e in agent.snapshot_history.page().entries]
    # One snapshot a status build, 2 s of them (--snapshot-history 2s) kept.
    assert ring_times == [STEP_US * k for k in range(2, 7)]
    assert {e.scheme for e in agent.snapshot_history.page().entries} == {"DamonScheme/shop/s/all"}
