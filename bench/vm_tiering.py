"""CXL tiering in the VM: our schemes vs no tiering vs the kernel's NUMA-balancing tiering.

Boots the test guest once (tests/support/harness.py; assets from scripts/vm-assets.sh) and
runs tests/vm/scenarios/bench_tiering.py there: one workload whose memory starts on the
CPU-less, lower-tier node 1 goes through each variant, reset to node 1 before each.

Reported per variant: the share of the hot array on the DRAM node over time (and the
seconds until 80 % of it got there), the cold array's share left on the CXL node, and the
hot loop's throughput relative to no tiering in the same run (the mean of a baseline run
first and one run last). Under QEMU's emulation both
nodes are equally fast, so throughput does not show the benefit real CXL latency would;
placement is the figure that carries over.

    .venv/bin/python bench/vm_tiering.py --quick        # < 1 minute
    .venv/bin/python bench/vm_tiering.py --json out.json
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import vm_common


def params(quick: bool) -> dict[str, Any]:
    return {
        "hot_mib": 32,
        "cold_mib": 32 if quick else 192,
        "seconds": 6 if quick else 30,
        # The baseline first and last: ratios against the mean of both (the hot loop's
        # speed drifts over a run).
        "variants": ["none", "ours", "numa_balancing", "none"],
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    measured = []
    for one in result["results"]:
        series = one["series"]
        first, last = series[0], series[-1]
        elapsed = last["t"] - first["t"]
        reached = next((s["t"] for s in series if s["hot_on_dram"] >= 0.8), None)
        measured.append(
            {
                "variant": one["variant"],
                "hot_on_dram_start": first["hot_on_dram"],
                "hot_on_dram_end": last["hot_on_dram"],
                "seconds_to_80pct": reached,
                "cold_on_cxl_end": last["cold_on_cxl"],
                "cold_on_cxl_min": min(s["cold_on_cxl"] for s in series),
                "loops_per_s": (last["loops"] - first["loops"]) / elapsed if elapsed else 0.0,
                "hot_on_dram_series": [round(s["hot_on_dram"], 2) for s in series],
                "vmstat_delta": {
                    name: last["vmstat"][name] - first["vmstat"][name] for name in first["vmstat"]
                },
            }
        )
    return vm_common.with_throughput_vs_none(measured)


def cells(m: dict[str, Any]) -> list[str]:
    reached = "never" if m["seconds_to_80pct"] is None else f"{m['seconds_to_80pct']:.0f}"
    return [
        f"{m['hot_on_dram_start']:.0%} -> {m['hot_on_dram_end']:.0%}",
        reached,
        f"{m['cold_on_cxl_end']:.0%}, {m['cold_on_cxl_min']:.0%}",
        vm_common.ratio_text(m["throughput_vs_none"]),
    ]


def notes(measured: list[dict[str, Any]]) -> Iterator[str]:
    for m in measured:
        yield f"{m['variant']}: hot on node 0 each second: {m['hot_on_dram_series']}"
        yield f"{m['variant']}: /proc/vmstat deltas: {m['vmstat_delta']}"


BENCH = vm_common.Bench(
    doc=__doc__ or "",
    scenario="bench_tiering",
    params=params,
    rows=rows,
    columns=(
        "variant",
        "hot on node 0 (start -> end)",
        "s to 80 % hot on node 0",
        "cold kept on node 1 (end, min)",
        "throughput vs none",
    ),
    cells=cells,
    notes=notes,
)

if __name__ == "__main__":
    sys.exit(BENCH.main())
