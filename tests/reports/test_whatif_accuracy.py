"""``bench/whatif_accuracy.py``: the parts its figures rest on.

- the sim backend it builds to log actions records exactly what the stock sim backend
  (``damon-agent run --backend sim``) records;
- its live refault count follows the what-if's definition (bytes given to a cold-like
  action, later seen accessed, once per action);
- a short run of a steady workload logs every action the engine counted.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

from damon_agent.api import schemes as api_schemes
from damon_agent.core import snapshots

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import whatif_accuracy as bench  # noqa: E402

MiB = 1 << 20
HOT_COLD = REPO / "examples" / "workloads" / "hot-cold.yaml"


def _snap(time_us: int, bounds: list[int], accessed: list[int]) -> snapshots.Snapshot:
    start = np.array(bounds[:-1], dtype=np.int64)
    return snapshots.Snapshot(
        time_us=time_us,
        sample_us=5_000,
        aggr_us=100_000,
        targets=(
            snapshots.TargetSnapshot(
                target_id=0,
                start=start,
                end=np.array(bounds[1:], dtype=np.int64),
                nr_accesses=np.array(accessed, dtype=np.int64),
                age=np.zeros(start.size, dtype=np.int64),
            ),
        ),
    )


def test_live_refaults_count_acted_bytes_later_seen_accessed_once() -> None:
    bounds = [0, 4 * MiB, 8 * MiB, 12 * MiB]
    snaps = [
        _snap(100_000, bounds, [0, 0, 5]),
        _snap(200_000, bounds, [3, 0, 5]),  # the first 4 MiB comes back
        _snap(300_000, bounds, [3, 0, 5]),  # ... and counts once
        _snap(400_000, [0, 2 * MiB, 12 * MiB], [0, 1]),  # half of the second range
    ]
    actions = [
        bench.Action(100_000, 0, 0, 8 * MiB, "pageout", 8 * MiB),
        bench.Action(100_000, 0, 8 * MiB, 12 * MiB, "migrate_hot", 4 * MiB),  # other action
        bench.Action(400_000, 0, 0, 2 * MiB, "pageout", 2 * MiB),  # not seen again
    ]
    maps = bench.page_maps(snaps)
    refaults = bench.live_refaults(snaps, actions, "pageout", maps)
    assert refaults.tolist() == [0, 4 * MiB, 0, 4 * MiB]


def test_logging_sim_records_what_the_stock_sim_records(tmp_path: pathlib.Path) -> None:
    monitor_only = api_schemes.SchemeFile()
    _, plain = bench.run_on(
        bench.stock_sim(HOT_COLD, 3, tmp_path / "state"),
        monitor_only,
        name="record",
        seconds=2.0,
        out=tmp_path / "plain.jsonl",
        meta={},
    )
    assert len(plain.snapshots) == 10  # 2 s of 200 ms aggregations
    bench.check_logging_sim(
        HOT_COLD, plain=plain, monitor_only=monitor_only, seed=3, seconds=2.0, work=tmp_path
    )
    # A different seed is told apart.
    with pytest.raises(AssertionError, match="does not record what the stock"):
        bench.check_logging_sim(
            HOT_COLD, plain=plain, monitor_only=monitor_only, seed=4, seconds=2.0, work=tmp_path
        )


def test_steady_workload_run_logs_every_action_and_predicts_it(tmp_path: pathlib.Path) -> None:
    case = next(c for c in bench.cases() if c.workload == "hot-cold")
    seconds, runs = bench.run_case(case, [1], 8.0, tmp_path, lambda message: None)
    assert seconds == 8.0
    for per_seed in runs.values():
        (scheme,) = per_seed[0].schemes
        for field in ("tried", "applied"):
            predicted, live = scheme.predicted.total(field), scheme.live.total(field)
            assert predicted is not None and live is not None and live > 0
            assert abs(predicted - live) <= 0.1 * live, (scheme.name, field, predicted, live)
        # Hot-cold's cold set never comes back.
        assert scheme.sim_fault_bytes is not None and scheme.sim_fault_bytes < MiB
