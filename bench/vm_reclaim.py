"""Proactive reclaim in the VM: our pageout scheme vs no reclaim vs the kernel's DAMON_RECLAIM.

Boots the test guest once (tests/support/harness.py; assets from scripts/vm-assets.sh) and
runs tests/vm/scenarios/bench_reclaim.py there: one hot/cold workload in a kubelet-shaped
container cgroup goes through each variant in turn. Emulation slows everything, so the
table reports ratios against the baselines of the same run: throughput relative to no
reclaim (the mean of a baseline run first and one run last), memory saved relative to
the workload's cold bytes.

    .venv/bin/python bench/vm_reclaim.py --quick        # < 1 minute
    .venv/bin/python bench/vm_reclaim.py --json out.json
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import vm_common

MIB = 1 << 20


def params(quick: bool) -> dict[str, Any]:
    # DAMON_RECLAIM at its defaults waits 120 s before it calls memory cold: in a quick
    # run it can only show zero, so only the full run includes it. The baseline runs
    # first and last: the hot loop speeds up over a run (seen: every variant after a
    # single first baseline looked 10-40 % faster), so ratios use the mean of both.
    variants = ["none", "ours", "damon_reclaim_scheme"]
    if not quick:
        variants.append("damon_reclaim")
    variants.append("none")
    return {
        "hot_mib": 32,
        "cold_mib": 64 if quick else 256,
        "seconds": 7 if quick else 20,
        "min_age_s": 1 if quick else 2,
        "variants": variants,
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    page = result["page"]
    cold_bytes = result["cold_pages"] * page
    measured = []
    for one in result["results"]:
        before, after = one["before"], one["after"]
        elapsed = after["t"] - before["t"]
        measured.append(
            {
                "variant": one["variant"],
                "saved_mib": (before["memory"] - after["memory"]) / MIB,
                "node_freed_mib": (after["node_free"] - before["node_free"]) / MIB,
                "cold_reclaimed": (before["cold_resident"] - after["cold_resident"])
                * page
                / cold_bytes,
                "hot_resident_after": after["hot_resident"],
                "loops_per_s": (after["loops"] - before["loops"]) / elapsed,
                "stall_ms_per_s": (after["stall_us"] - before["stall_us"]) / elapsed / 1000,
                "scheme": after["scheme"],
                "module_tried_regions": int(after["damon_reclaim"]["nr_reclaim_tried_regions"])
                - int(before["damon_reclaim"]["nr_reclaim_tried_regions"]),
            }
        )
    return vm_common.with_throughput_vs_none(measured)


def cells(m: dict[str, Any]) -> list[str]:
    return [
        f"{m['saved_mib']:.0f}",
        f"{m['node_freed_mib']:.0f}",
        f"{m['cold_reclaimed']:.0%}",
        vm_common.ratio_text(m["throughput_vs_none"]),
        f"{m['stall_ms_per_s']:.1f}",
    ]


def notes(measured: list[dict[str, Any]]) -> Iterator[str]:
    for m in measured:
        if m["scheme"]:
            tried, applied = m["scheme"]["sz_tried"] / MIB, m["scheme"]["sz_applied"] / MIB
            yield (
                f"{m['variant']}: scheme tried {tried:.0f} MiB, paged out {applied:.0f} MiB, "
                f"quota exceeded {m['scheme']['qt_exceeds']} times"
            )
    module = [m for m in measured if m["variant"] == "damon_reclaim"]
    if module:
        yield (
            f"DAMON_RECLAIM module: {module[0]['module_tried_regions']} regions tried "
            "(on 6.12 its parameters commit drops its scheme; see bench_reclaim.py)"
        )


BENCH = vm_common.Bench(
    doc=__doc__ or "",
    scenario="bench_reclaim",
    params=params,
    rows=rows,
    columns=(
        "variant",
        "pod memory saved (MiB)",
        "node memory freed (MiB)",
        "cold bytes reclaimed",
        "throughput vs none",
        "pod memory stall (ms/s)",
    ),
    cells=cells,
    notes=notes,
)

if __name__ == "__main__":
    sys.exit(BENCH.main())
