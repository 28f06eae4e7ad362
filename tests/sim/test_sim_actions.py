"""DAMOS actions on the sim: pageout and refaults, cold, migrations, stat, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from damon_agent.core import clock
from damon_agent.ops import sim, workloads

MiB = 1 << 20
PAGE = workloads.PAGE_SIZE


def make_sim(
    access: dict[str, Any], seed: int = 0, **costs: float
) -> tuple[sim.SimOperations, clock.SimClock]:
    spec: dict[str, Any] = {
        "targets": [
            {
                "start": 0,
                "ranges": [
                    {"name": "hot", "size": "4Mi", "node": 1},
                    {"name": "cold", "size": "12Mi"},
                ],
                "phases": [{"duration": "1h", "access": access}],
            }
        ]
    }
    if costs:
        spec["costs"] = costs
    sim_clock = clock.SimClock()
    ops = sim.SimOperations(
        workloads.parse_workload(spec), clock=sim_clock, rng=np.random.default_rng(seed)
    )
    return ops, sim_clock


def test_pageout_of_cold_memory_saves_bytes_without_refaults() -> None:
    ops, sim_clock = make_sim({"hot": "hot"})
    applied = ops.apply_action(0, 4 * MiB, 16 * MiB, "pageout", None)
    assert applied == 12 * MiB
    assert ops.apply_action(0, 4 * MiB, 16 * MiB, "pageout", None) == 0  # already out
    sim_clock.sleep_us(10_000_000)
    counters = ops.counters(0)
    assert counters.resident_bytes == 4 * MiB
    assert counters.cold_nonresident_bytes == counters.cold_total_bytes == 12 * MiB
    assert counters.refaults == 0
    assert counters.pageout_bytes == 12 * MiB


def test_paged_out_hot_pages_refault_with_their_cost() -> None:
    ops, sim_clock = make_sim({"hot": {"probability": 0.5}}, refault_ns=1000.0)
    assert ops.apply_action(0, 0, 4 * MiB, "pageout", None) == 4 * MiB
    sim_clock.sleep_us(5_000)
    after_one = ops.counters(0)
    # Each page survives one interval with probability 0.5: about half refault.
    assert after_one.refaults == pytest.approx(512, abs=80)
    sim_clock.sleep_us(200_000)
    after_many = ops.counters(0)
    assert after_many.refaults == 1024
    assert after_many.resident_bytes == 16 * MiB
    assert after_many.refault_cost_ns == 1024 * 1000.0


def test_partial_pageouts_count_only_resident_pages() -> None:
    ops, _ = make_sim({})
    assert ops.apply_action(0, 4 * MiB, 8 * MiB, "pageout", None) == 4 * MiB
    assert ops.apply_action(0, 6 * MiB, 10 * MiB, "pageout", None) == 2 * MiB
    assert ops.counters(0).nonresident_bytes == 6 * MiB


def test_sequential_sweep_refaults_exactly_the_pages_it_passes() -> None:
    ops, sim_clock = make_sim({"cold": {"probability": 0.25, "pattern": "sequential"}})
    ops.apply_action(0, 4 * MiB, 16 * MiB, "pageout", None)
    sim_clock.sleep_us(5_000)  # a quarter of the sweep
    assert ops.counters(0).refaults == 768
    sim_clock.sleep_us(15_000)
    assert ops.counters(0).refaults == 3072
    assert ops.counters(0).resident_bytes == 16 * MiB


def test_cold_action_is_counted() -> None:
    ops, _ = make_sim({})
    assert ops.apply_action(0, 4 * MiB, 8 * MiB, "cold", None) == 4 * MiB
    assert ops.counters(0).cold_bytes == 4 * MiB


def test_migrations_move_bytes_between_tiers_and_change_the_access_cost() -> None:
    ops, sim_clock = make_sim({"hot": "hot"}, fast_access_ns=100.0, slow_access_ns=300.0)
    start = ops.counters(0)
    assert start.node_bytes == (12 * MiB, 4 * MiB)
    assert start.hot_node_bytes == (0, 4 * MiB)
    sim_clock.sleep_us(1_000_000)
    assert ops.counters(0).average_access_cost_ns == pytest.approx(300.0)
    assert ops.apply_action(0, 0, 4 * MiB, "migrate_hot", 0) == 4 * MiB
    assert ops.apply_action(0, 0, 4 * MiB, "migrate_hot", 0) == 0  # already there
    assert ops.apply_action(0, 8 * MiB, 16 * MiB, "migrate_cold", 1) == 8 * MiB
    moved = ops.counters(0)
    assert moved.hot_node_bytes == (4 * MiB, 0)
    assert moved.hot_fast_share == 1.0
    assert moved.node_bytes == (8 * MiB, 8 * MiB)
    assert moved.migrated_bytes == 12 * MiB
    sim_clock.sleep_us(1_000_000)
    # Half the accesses at 300 ns, half at 100 ns.
    assert ops.counters(0).average_access_cost_ns == pytest.approx(200.0)


def test_stat_does_nothing() -> None:
    ops, _ = make_sim({})
    before = ops.counters(0)
    assert ops.apply_action(0, 0, 16 * MiB, "stat", None) == 0
    assert ops.counters(0) == before


def test_actions_outside_the_mapping_apply_to_nothing() -> None:
    ops, _ = make_sim({})
    assert ops.apply_action(0, 100 * MiB, 200 * MiB, "pageout", None) == 0
    assert ops.apply_action(0, 14 * MiB, 200 * MiB, "pageout", None) == 2 * MiB


@pytest.mark.parametrize(
    ("action", "nid", "message"),
    [
        ("willneed", None, "'willneed' is not supported"),
        ("lru_prio", None, "supported: pageout, cold, migrate_hot, migrate_cold, stat"),
        ("migrate_hot", None, "needs target_nid"),
        ("migrate_cold", 7, "needs target_nid"),
    ],
)
def test_unsupported_actions_raise_a_clear_error(
    action: str, nid: int | None, message: str
) -> None:
    ops, _ = make_sim({})
    with pytest.raises(sim.ActionError, match=message):
        ops.apply_action(0, 0, MiB, action, nid)


def test_unknown_target_is_refused() -> None:
    ops, _ = make_sim({})
    with pytest.raises(sim.UnknownTargetError, match="target id 3"):
        ops.target_ranges(3)


def test_counters_are_reproducible_under_a_seed() -> None:
    def run(seed: int) -> int:
        ops, sim_clock = make_sim({"hot": {"probability": 0.1}}, seed=seed)
        ops.apply_action(0, 0, 4 * MiB, "pageout", None)
        sim_clock.sleep_us(7_000)
        return ops.counters(0).refaults

    assert run(3) == run(3)
    assert len({run(s) for s in range(5)}) > 1
