"""Guest side of bench/vm_accuracy.py: sparse hot spots, monitored at two sets of defaults.

A worker maps ``map_mib`` of anonymous memory (base pages, never touched but for the
spots) and writes one word of every page of each spot in a loop. For each variant the
agent's kernel path (``KernelDamon``, vaddr, snapshots from the sysfs tried regions)
monitors the worker; after the warm-up, one snapshot a second is scored inside the
mapping against the spots. DAMON_STAT, on at boot from 6.17, is turned off first: this
guest is ours.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import guest_lib

from damon_agent.api import schemes as api_schemes
from damon_agent.core import attrs
from damon_agent.ops import sim
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.schemes import conversion

WORKER = """
import ctypes, json, mmap, sys
import numpy as np
size, spot, spacing, status = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0x4000)
buf = mmap.mmap(-1, size, flags=flags)
buf.madvise(mmap.MADV_NOHUGEPAGE)  # base pages: a spot is its own pages only
view = np.frombuffer(buf, dtype=np.uint8)
start = ctypes.addressof(ctypes.c_char.from_buffer(buf))
spots = [k * spacing + spacing - spot for k in range(size // spacing)]
with open(status + ".tmp", "w") as out:
    json.dump({"start": start, "spots": spots}, out)
import os
os.rename(status + ".tmp", status)
while True:
    for offset in spots:
        view[offset : offset + spot : 4096] += 1
"""

MiB = 1 << 20
FLOOR_FILE = Path(
    "/sys/kernel/mm/damon/admin/kdamonds/0/contexts/0/monitoring_attrs/nr_regions/min"
)


def main() -> None:
    params: dict[str, Any] = json.loads(Path("params.json").read_text())
    guest_lib.damon_stat_off()
    Path("/proc/sys/kernel/numa_balancing").write_text("0")
    # 4 GiB mapped in a 2 GiB guest: never touched but for the spots (the guest is ours).
    Path("/proc/sys/vm/overcommit_memory").write_text("1")
    size = params["map_mib"] * MiB
    spot = params["spot_mib"] * MiB
    status = Path("/tmp/spots.json")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WORKER,
            str(size),
            str(spot),
            str(params["spacing_mib"] * MiB),
            str(status),
        ]
    )
    deadline = time.monotonic() + 120
    while not status.exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise guest_lib.GuestError("the worker did not report its mapping")
        time.sleep(0.1)
    layout = json.loads(status.read_text())
    low, high = layout["start"], layout["start"] + size
    spots = [(low + offset, low + offset + spot) for offset in layout["spots"]]
    truth = spot * len(spots)

    variants = [
        ("kernel", attrs.MonitoringAttrs()),
        ("agent", conversion.monitoring_attrs(api_schemes.MonitoringSpec())),
    ]
    results = []
    span = kernel_damon.vaddr_span(worker.pid, Path("/proc"))
    try:
        for name, monitoring in variants:
            engine = kernel_damon.KernelDamon.on_host(Path(f"/tmp/damon-accuracy-{name}"))
            context = kernel_damon.KdamondContext(
                key=name, monitoring=monitoring, operations="vaddr", pids=(worker.pid,)
            )
            engine.apply([context])
            try:
                floor = int(FLOOR_FILE.read_text())
                time.sleep(params["warmup_s"])
                score = sim.HotSetScore()  # pooled over the snapshots, as the sim bench
                regions: list[int] = []
                for _ in range(params["seconds"]):
                    time.sleep(1.0)
                    (target,) = engine.snapshots()[name].targets
                    regions.append(len(target.start))
                    seen = [
                        (max(int(s), low), min(int(e), high))
                        for s, e, n in zip(
                            target.start, target.end, target.nr_accesses, strict=True
                        )
                        if n > 0 and e > low and s < high
                    ]
                    hit = sim.overlap_bytes(seen, spots)
                    predicted = sim.total_bytes(seen)
                    score = score + sim.HotSetScore(
                        hit,
                        predicted - hit,
                        truth - hit,
                        predicted,
                        truth,
                        1,
                        abs(predicted - truth) / truth,
                    )
            finally:
                engine.stop()
            results.append(
                {
                    "name": name,
                    "floor": floor,
                    "regions": sum(regions) / len(regions),
                    "precision": score.precision,
                    "recall": score.recall,
                    "f1": score.f1,
                    "wss_error": score.wss_error,
                }
            )
    finally:
        worker.kill()
        worker.wait()
    guest_lib.write_json(
        "result.json",
        {
            "release": platform.release(),
            "params": params,
            "spots": layout["spots"],
            "span_bytes": span,
            "variants": results,
            "kdamonds_left": guest_lib.nr_kdamonds(),
        },
    )


main()
