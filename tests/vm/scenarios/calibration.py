"""Guest side of test_calibration: does this guest see a known hot set as hardware would?

For each case (hot-set size, base pages or THP) a workload touches one word of every page
of its hot array in a loop and never touches its cold array again; the project's kernel
driver monitors the process (vaddr, DAMON's default intervals) with a stat scheme, and
once a second the tried regions give: recall (the share of the hot array inside regions
seen accessed) and the working set inside the two arrays (bytes of accessed regions
within them). DAMON_STAT, on at boot from 6.17, is turned off first: this guest is ours.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import guest_lib

from damon_agent.ops.kernel import driver as kernel_driver
from damon_agent.ops.kernel import model, sysfs

params = json.loads(Path("params.json").read_text())
stat = Path("/sys/module/damon_stat/parameters/enabled")
if stat.exists() and stat.read_text().strip() == "Y":
    stat.write_text("N")


def overlap(regions: list[model.TriedRegion], start: int, end: int) -> int:
    return sum(max(0, min(r.end, end) - max(r.start, start)) for r in regions)


def vmstat(*keys: str) -> dict[str, int]:
    values = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return {key: int(values.get(key, 0)) for key in keys}


def free_huge_blocks() -> int:
    """Free blocks of order 9 or more (each holds a THP), over every zone of every node."""
    total = 0
    for line in Path("/proc/buddyinfo").read_text().splitlines():
        counts = [int(n) for n in line.split()[4:]]
        total += sum(n << (order - 9) for order, n in enumerate(counts) if order >= 9)
    return total


THP_EVENTS = ("thp_fault_alloc", "thp_fault_fallback", "thp_split_page", "thp_collapse_alloc")


drv = kernel_driver.KdamondDriver(sysfs.HostSysfs(), Path("/tmp/damon-calibration"))
cases = []
for hot_mib in params["hot_mib"]:
    for thp in params["thp"]:
        if thp:
            # A THP case needs free 2 MiB blocks: compact what earlier cases left scattered
            # (the guest is ours), and record why if the kernel still fell back.
            Path("/proc/sys/vm/compact_memory").write_text("1")
        huge_blocks = free_huge_blocks()
        events_before = vmstat(*THP_EVENTS)
        work = guest_lib.Workload.start(
            hot_mib=hot_mib, cold_mib=params["cold_mib"], thp=thp, name=f"cal-{hot_mib}-{thp}"
        )
        config = model.Kdamond(
            contexts=(
                model.Context(
                    operations="vaddr",
                    targets=(model.Target(pid_target=work.pid),),
                    schemes=(model.Scheme(action="stat"),),
                ),
            )
        )
        samples = []
        handle = drv.start(config)
        try:
            for _ in range(params["seconds"]):
                time.sleep(1.0)
                (tried,) = drv.tried_regions(handle)
                seen = [r for r in tried.regions if r.nr_accesses > 0]
                hot_seen = overlap(seen, *work.hot)
                samples.append(
                    {
                        "recall": hot_seen / (work.hot[1] - work.hot[0]),
                        "wss": hot_seen + overlap(seen, *work.cold),
                        "regions": len(tried.regions),
                    }
                )
            hot_huge = guest_lib.huge_page_share(work.pid, work.hot)
            events_after = vmstat(*THP_EVENTS)
        finally:
            drv.stop_all()
            work.stop()
        cases.append(
            {
                "hot_mib": hot_mib,
                "thp": thp,
                "hot_bytes": work.hot[1] - work.hot[0],
                "hot_huge_share": round(hot_huge, 3),
                "free_huge_blocks_before": huge_blocks,
                "thp_events": {k: events_after[k] - events_before[k] for k in THP_EVENTS},
                "samples": samples,
            }
        )
guest_lib.write_json("result.json", {"release": os.uname().release, "cases": cases})
