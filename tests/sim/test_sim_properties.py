"""The sim's interval bookkeeping against a page-by-page model (small sizes only)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from damon_agent.core import clock, snapshots
from damon_agent.ops import sim, workloads

PAGE = workloads.PAGE_SIZE
NR_PAGES = 64


def _cold_sim() -> sim.SimOperations:
    workload = workloads.parse_workload(
        {
            "targets": [
                {
                    "start": 0,
                    "ranges": [
                        {"name": "a", "size": 16 * PAGE},
                        {"name": "b", "size": 32 * PAGE, "node": 1},
                        {"name": "c", "size": 16 * PAGE},
                    ],
                    "phases": [{"duration": "1h"}],
                }
            ]
        }
    )
    return sim.SimOperations(workload, clock=clock.SimClock(), rng=np.random.default_rng(0))


actions = st.lists(
    st.tuples(
        st.sampled_from(["pageout", "migrate_hot", "migrate_cold"]),
        st.integers(0, NR_PAGES - 1),
        st.integers(1, NR_PAGES),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(steps=actions)
def test_pageouts_and_migrations_match_a_page_by_page_model(
    steps: list[tuple[str, int, int]],
) -> None:
    ops = _cold_sim()
    resident = np.ones(NR_PAGES, dtype=bool)
    node = np.zeros(NR_PAGES, dtype=np.int64)
    node[16:48] = 1
    for action, first, length in steps:
        last = min(NR_PAGES, first + length)
        nid = 0 if action == "migrate_hot" else 1
        applied = ops.apply_action(0, first * PAGE, last * PAGE, action, nid)
        if action == "pageout":
            expected = int(resident[first:last].sum())
            resident[first:last] = False
        else:
            expected = int((node[first:last] != nid).sum())
            node[first:last] = nid
        assert applied == expected * PAGE
        counters = ops.counters(0)
        assert counters.resident_bytes == int(resident.sum()) * PAGE
        assert counters.node_bytes == (int((node == 0).sum()) * PAGE, int(node.sum()) * PAGE)


def test_many_small_pageouts_stay_cheap() -> None:
    workload = workloads.parse_workload(
        {"targets": [{"ranges": [{"name": "a", "size": "64Gi"}], "phases": [{"duration": "1h"}]}]}
    )
    ops = sim.SimOperations(workload, clock=clock.SimClock(), rng=np.random.default_rng(0))
    base = workloads.DEFAULT_START
    for i in range(0, 20_000, 2):  # every other 1 MiB: nothing coalesces
        ops.apply_action(0, base + i * (1 << 20), base + (i + 1) * (1 << 20), "pageout", None)
    assert ops.counters(0).nonresident_bytes == 10_000 * (1 << 20)


def test_score_of_a_snapshot_against_the_truth() -> None:
    workload = workloads.parse_workload(
        {
            "targets": [
                {
                    "start": 0,
                    "ranges": [
                        {"name": "hot", "size": 8 * PAGE},
                        {"name": "cold", "size": 8 * PAGE},
                    ],
                    "phases": [{"duration": "1h", "access": {"hot": "hot"}}],
                }
            ]
        }
    )
    ops = sim.SimOperations(workload, clock=clock.SimClock(), rng=np.random.default_rng(0))
    target = snapshots.TargetSnapshot(
        0,
        start=np.array([0, 6 * PAGE, 10 * PAGE], np.int64),
        end=np.array([6 * PAGE, 10 * PAGE, 16 * PAGE], np.int64),
        nr_accesses=np.array([20, 10, 0], np.int64),
        age=np.zeros(3, np.int64),
    )
    score = sim.score_snapshot(ops, snapshots.Snapshot(100_000, 5_000, 100_000, (target,)))
    # Predicted hot: pages 0..10; truly hot: 0..8.
    assert score.true_positive_bytes == 8 * PAGE
    assert score.false_positive_bytes == 2 * PAGE
    assert score.false_negative_bytes == 0
    assert score.precision == 0.8 and score.recall == 1.0
    assert abs(score.f1 - 2 * 0.8 / 1.8) < 1e-12
    assert score.wss_error == 0.25  # 10 pages estimated for 8 touched
    both = score + score
    assert both.precision == 0.8 and both.snapshots == 2 and both.wss_error == 0.25
