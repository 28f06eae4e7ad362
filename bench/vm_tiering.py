"""CXL tiering in the VM: our schemes vs no tiering vs the kernel's NUMA-balancing tiering.

Boots the test guest once (tests/vm/harness.py; assets from scripts/vm-assets.sh) and
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

import argparse
import json
import secrets
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "vm"))

import harness


def run(quick: bool, accessed_bits: str = "faithful") -> dict[str, Any]:
    params = {
        "pod_uid": str(uuid.uuid4()),
        "container_id": secrets.token_hex(32),
        "hot_mib": 32,
        "cold_mib": 32 if quick else 192,
        "seconds": 6 if quick else 30,
        # The baseline first and last: ratios against the mean of both (the hot loop's
        # speed drifts over a run).
        "variants": ["none", "ours", "numa_balancing", "none"],
    }
    with tempfile.TemporaryDirectory(prefix="vm-bench-") as work_dir:
        runner = harness.Runner(harness.VmAssets.from_cache(), Path(work_dir))
        config = harness.VmConfig(faithful_accessed_bits=accessed_bits == "faithful")
        guest = runner.scenario("bench_tiering", params, config=config)
        result: dict[str, Any] = guest.json()
    result["params"] = params
    result["boot"] = {"wall_s": round(guest.wall_s, 1), "guest_boot_s": guest.guest_boot_s}
    return result


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
    baselines = [m["loops_per_s"] for m in measured if m["variant"] == "none"]
    baseline = sum(baselines) / len(baselines)
    for m in measured:
        m["throughput_vs_none"] = m["loops_per_s"] / baseline if baseline else None
    return measured


def table(measured: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | hot on node 0 (start -> end) | s to 80 % hot on node 0 "
        "| cold kept on node 1 (end, min) | throughput vs none |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in measured:
        ratio = m["throughput_vs_none"]
        reached = "never" if m["seconds_to_80pct"] is None else f"{m['seconds_to_80pct']:.0f}"
        lines.append(
            f"| {m['variant']} | {m['hot_on_dram_start']:.0%} -> {m['hot_on_dram_end']:.0%} "
            f"| {reached} | {m['cold_on_cxl_end']:.0%}, {m['cold_on_cxl_min']:.0%} "
            f"| {'n/a' if ratio is None else f'{ratio:.2f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short variants, < 1 minute")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument(
        "--accessed-bits",
        choices=("faithful", "emulator"),
        default="faithful",
        help="faithful: the guest sees accesses as hardware does (the harness default); "
        "emulator: QEMU's own, which misses re-accesses (the figures before calibration)",
    )
    args = parser.parse_args(argv)
    result = run(args.quick, args.accessed_bits)
    print(f"accessed bits: {args.accessed_bits}")
    measured = rows(result)
    print(f"boot: {result['boot']}; params: {json.dumps(result['params'])}")
    print(table(measured))
    for m in measured:
        print(f"{m['variant']}: hot on node 0 each second: {m['hot_on_dram_series']}")
        print(f"{m['variant']}: /proc/vmstat deltas: {m['vmstat_delta']}")
    if args.json:
        args.json.write_text(json.dumps({"raw": result, "rows": measured}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
