"""Proactive reclaim in the VM: our pageout scheme vs no reclaim vs the kernel's DAMON_RECLAIM.

Boots the test guest once (tests/vm/harness.py; assets from scripts/vm-assets.sh) and
runs tests/vm/scenarios/bench_reclaim.py there: one hot/cold workload in a kubelet-shaped
container cgroup goes through each variant in turn. Emulation slows everything, so the
table reports ratios against the baselines of the same run: throughput relative to no
reclaim (the mean of a baseline run first and one run last), memory saved relative to
the workload's cold bytes.

    .venv/bin/python bench/vm_reclaim.py --quick        # < 1 minute
    .venv/bin/python bench/vm_reclaim.py --json out.json
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

MIB = 1 << 20


def run(quick: bool, accessed_bits: str = "faithful") -> dict[str, Any]:
    # DAMON_RECLAIM at its defaults waits 120 s before it calls memory cold: in a quick
    # run it can only show zero, so only the full run includes it. The baseline runs
    # first and last: the hot loop speeds up over a run (seen: every variant after a
    # single first baseline looked 10-40 % faster), so ratios use the mean of both.
    variants = ["none", "ours", "damon_reclaim_scheme"]
    if not quick:
        variants.append("damon_reclaim")
    variants.append("none")
    params = {
        "pod_uid": str(uuid.uuid4()),
        "container_id": secrets.token_hex(32),
        "hot_mib": 32,
        "cold_mib": 64 if quick else 256,
        "seconds": 7 if quick else 20,
        "min_age_s": 1 if quick else 2,
        "variants": variants,
    }
    with tempfile.TemporaryDirectory(prefix="vm-bench-") as work_dir:
        runner = harness.Runner(harness.VmAssets.from_cache(), Path(work_dir))
        config = harness.VmConfig(faithful_accessed_bits=accessed_bits == "faithful")
        guest = runner.scenario("bench_reclaim", params, config=config)
        result: dict[str, Any] = guest.json()
    result["params"] = params
    result["boot"] = {"wall_s": round(guest.wall_s, 1), "guest_boot_s": guest.guest_boot_s}
    return result


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
    baselines = [m["loops_per_s"] for m in measured if m["variant"] == "none"]
    baseline = sum(baselines) / len(baselines)
    for m in measured:
        m["throughput_vs_none"] = m["loops_per_s"] / baseline if baseline else None
    return measured


def table(measured: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | pod memory saved (MiB) | node memory freed (MiB) | cold bytes reclaimed "
        "| throughput vs none | pod memory stall (ms/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in measured:
        ratio = m["throughput_vs_none"]
        lines.append(
            f"| {m['variant']} | {m['saved_mib']:.0f} | {m['node_freed_mib']:.0f} "
            f"| {m['cold_reclaimed']:.0%} "
            f"| {'n/a' if ratio is None else f'{ratio:.2f}'} | {m['stall_ms_per_s']:.1f} |"
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
        if m["scheme"]:
            tried, applied = m["scheme"]["sz_tried"] / MIB, m["scheme"]["sz_applied"] / MIB
            print(
                f"{m['variant']}: scheme tried {tried:.0f} MiB, paged out {applied:.0f} MiB, "
                f"quota exceeded {m['scheme']['qt_exceeds']} times"
            )
    module = [m for m in measured if m["variant"] == "damon_reclaim"]
    if module:
        print(
            f"DAMON_RECLAIM module: {module[0]['module_tried_regions']} regions tried "
            "(on 6.12 its parameters commit drops its scheme; see bench_reclaim.py)"
        )
    if args.json:
        args.json.write_text(json.dumps({"raw": result, "rows": measured}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
