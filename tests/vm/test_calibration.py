"""Calibration: each kernel of the VM's matrix sees a known hot set as hardware would.

A figure from the emulated guest counts only if the guest sees accesses: QEMU's software
TLB hides re-accesses from the accessed bit DAMON clears, unless the harness boots with
``faithful_accessed_bits`` (see tests/support/harness.py and docs/testbed.md). One boot per
kernel monitors workloads whose hot arrays are 4, 64 and 256 MiB, on base pages and on
THP, and asserts, over the steady part of each run (after a warm-up while the adaptive
regions converge): median recall of the hot set at least 0.9, and the median working set
found inside the two arrays within 10% of the hot array's size.
"""

from __future__ import annotations

import statistics
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.vm

MATRIX = ("6.12", "6.18", "7.3")
PARAMS = {"hot_mib": [4, 64, 256], "thp": [False, True], "cold_mib": 128, "seconds": 12}
WARMUP_SAMPLES = 4


def _steady(case: dict[str, Any], key: str) -> float:
    return statistics.median(s[key] for s in case["samples"][WARMUP_SAMPLES:])


@pytest.fixture(scope="module", params=MATRIX)
def calibration(request: pytest.FixtureRequest, vm: harness.Runner) -> dict[str, Any]:
    try:
        assets = harness.VmAssets.from_cache(series=request.param)
    except harness.VmAssetsMissingError as error:
        pytest.fail(str(error))
    runner = harness.Runner(assets, vm.work_dir)
    run = runner.scenario("calibration", PARAMS, config=harness.VmConfig(deadline_s=600))
    result: dict[str, Any] = run.json()
    figures = harness.Figures(f"{__name__}::{request.param}")
    figures.record_run(run)
    for case in result["cases"]:
        label = f"{case['hot_mib']}MiB{'-thp' if case['thp'] else ''}"
        figures.record(
            **{
                f"{label}_recall": round(_steady(case, "recall"), 2),
                f"{label}_wss_mib": round(_steady(case, "wss") / (1 << 20), 1),
            }
        )
        figures.record(**{f"{label}_huge_share": case["hot_huge_share"]})
    return result


def test_hot_sets_are_found(calibration: dict[str, Any]) -> None:
    misses = [
        (c["hot_mib"], c["thp"], round(_steady(c, "recall"), 2))
        for c in calibration["cases"]
        if _steady(c, "recall") < 0.9
    ]
    assert not misses, f"{calibration['release']}: (hot MiB, THP, recall) below 0.9: {misses}"


def test_working_set_size_within_ten_percent(calibration: dict[str, Any]) -> None:
    off = [
        (c["hot_mib"], c["thp"], round(_steady(c, "wss") / c["hot_bytes"], 3))
        for c in calibration["cases"]
        if abs(_steady(c, "wss") - c["hot_bytes"]) > 0.10 * c["hot_bytes"]
    ]
    assert not off, f"{calibration['release']}: (hot MiB, THP, WSS/hot) off by >10%: {off}"


def test_each_case_is_backed_as_it_says(calibration: dict[str, Any]) -> None:
    """THP cases: at least 90% of the hot array's mapping in huge pages; base pages: none.

    Until 2026-12-04 the THP arrays were shared anonymous mappings (shmem, never THP here)
    and the base-page ones numpy's, mostly THP: each case measured the other's backing.
    """
    wrong = [
        {
            "hot_mib": c["hot_mib"],
            "thp": c["thp"],
            "huge_share": c["hot_huge_share"],
            "free_2mib_blocks_before": c["free_huge_blocks_before"],
            **c["thp_events"],
        }
        for c in calibration["cases"]
        if (c["hot_huge_share"] < 0.9 if c["thp"] else c["hot_huge_share"] > 0)
    ]
    assert not wrong, f"{calibration['release']}: cases not backed as labelled: {wrong}"
