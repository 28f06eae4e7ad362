"""Guest side of bench/vm_reclaim.py: proactive reclaim variants, one after the other.

One workload (a container in a kubelet-shaped cgroup, hot and cold arrays) runs through
every variant; between variants it writes its cold array again, so each variant starts
with the cold bytes resident. Variants:

- ``none``: no reclaim (the baseline of throughput and pressure);
- ``ours``: the project's scheme through its kernel driver (paddr, ``pageout`` of regions
  idle for ``min_age_s``, memcg filter on the container);
- ``damon_reclaim``: the kernel's DAMON_RECLAIM module at its defaults (min_age 120 s,
  watermarks on free memory 50/40/20 %), given the same physical range as ours;
- ``damon_reclaim_scheme``: DAMON_RECLAIM's scheme built through the sysfs interface
  with the module's parameters (5 ms / 100 ms, 10-1000 regions, pageout of regions with
  no access, quota 10 ms and 128 MiB per second prioritised by age), our minimum age and
  no watermarks, over the same range. No memcg filter: the module reclaims node-wide.

- ``ours_agent``: the agent as a user runs it, ``damon-agent run --backend kernel
  --cgroup CONTAINER`` with a scheme file like examples/schemes/pageout-psi-goal.yaml (the
  quota tuned toward 1 ms of stall per second) at the same minimum age;
- ``damon_reclaim_tuned``: the module, from 6.17 where its parameters commit works, at
  our minimum age and with its watermarks open (always active), over the same range;
- ``senpai``: a PSI-driven ``memory.reclaim`` loop in the manner of Senpai (Meta's
  userspace reclaimer): every second, while the container's memory stall over the last
  second is under the same 1 ms target, it asks the kernel to reclaim a step of its memory
  (starting at 1 % of memory.current, doubled after each calm second, up to 10 %), and
  stops stepping for a second after a second over target, halving the step.

Why the module is also built as a scheme: in 6.12 (Debian 6.12.117) the module itself never acts.
``damon_reclaim_apply_parameters()`` in mm/damon/reclaim.c sets its scheme and
attributes on the running context, then calls ``damon_commit_ctx(ctx, param_ctx)`` with
a parameter context that holds neither, which destroys the scheme. The kdamond monitors
(its ``damon_aggregated`` trace shows regions idle for 100+ aggregations) but no
``damos_before_apply`` ever fires, and ``nr_reclaim_tried_regions`` stays 0. Upstream
fixed the function to stage both on the parameter context ("mm/damon/reclaim: use
parameter context correctly", July 2025); this Debian build does not have it. The module
variant is kept to show that; the scheme variant shows what the module would do.

Per variant: the container's memory before and after, the node's free memory, the cold
array's resident pages, the hot loop's rate, the container's memory stall time (PSI
``some``) and its refaults (``workingset_refault_*`` of its memory.stat).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import guest_lib

from damon_agent.node import cgroups, psi
from damon_agent.ops.kernel import driver as kernel_driver
from damon_agent.ops.kernel import model

sys.path.insert(0, os.path.join(os.environ["REPO"], "bench"))
import vm_common

RECLAIM_PARAMS = Path("/sys/module/damon_reclaim/parameters")

bench = vm_common.GuestBench()
app, driver = bench.app, bench.driver
min_age_us = int(bench.params["min_age_s"] * 1_000_000)
defaults = {p.name: p.read_text().strip() for p in RECLAIM_PARAMS.iterdir() if p.is_file()}


def module_stats() -> dict[str, str]:
    names = (
        "kdamond_pid",
        "nr_reclaim_tried_regions",
        "bytes_reclaim_tried_regions",
        "nr_reclaimed_regions",
        "bytes_reclaimed_regions",
        "nr_quota_exceeds",
    )
    return {name: (RECLAIM_PARAMS / name).read_text().strip() for name in names}


def node_free_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemFree:"):
            return int(line.split()[1]) * 1024
    raise guest_lib.GuestError("no MemFree in /proc/meminfo")


def sample() -> dict[str, Any]:
    return {
        "damon_reclaim": module_stats(),
        "scheme": scheme_stats(),
        "t": time.monotonic(),
        "memory": cgroups.memory_usage_bytes(bench.layout, bench.container),
        "node_free": node_free_bytes(),
        "cold_resident": guest_lib.resident_pages(app.pid, *app.cold),
        "hot_resident": guest_lib.resident_pages(app.pid, *app.hot),
        "loops": app.loops(),
        "stall_us": psi.read_cgroup(bench.layout, bench.container).some.total_us,
        "refaults": cgroups.refaults(cgroups.memory_stat(bench.layout, bench.container)),
    }


STALL_TARGET_US = 1_000  # per second: the PSI goal of examples/schemes/pageout-psi-goal.yaml
agents: list[subprocess.Popen[bytes]] = []


def agent_scheme() -> Path:
    """pageout-psi-goal.yaml at the bench's minimum age (its own 10 s would outlast a run)."""
    path = Path("/tmp/pageout-psi-goal.yaml")
    path.write_text(
        "monitoring:\n"
        "  intervals: {sample: 5ms, aggregation: 100ms, update: 1s}\n"
        "schemes:\n"
        "  - name: reclaim-under-psi\n"
        "    action: pageout\n"
        "    accessPattern:\n"
        "      accessRate: {min: 0%, max: 0%}\n"
        f"      age: {{min: {bench.params['min_age_s']}s, max: max}}\n"
        "    quota:\n"
        "      size: 512Mi\n"
        "      resetInterval: 1s\n"
        "      weights: {accessRate: 1000, age: 1000}\n"
        "      tuner: consist\n"
        "      goals:\n"
        "        - metric: some_mem_psi_us\n"
        f"          target: {STALL_TARGET_US}us\n"
    )
    return path


def start_agent() -> None:
    agents.append(bench.start_agent("ours_agent", agent_scheme()))
    bench.wait_for_kdamond(agents[0])


def stop_agent() -> None:
    bench.stop_agent("ours_agent", agents.pop())


class Senpai(threading.Thread):
    """The PSI-driven memory.reclaim loop (module docstring)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.halt = threading.Event()
        self.asked = 0  # bytes asked of memory.reclaim
        self.rounds = 0
        directory = bench.layout.unified
        assert directory is not None
        self.reclaim = directory.directory(bench.container) / "memory.reclaim"

    def run(self) -> None:
        share = 0.01
        stall = psi.read_cgroup(bench.layout, bench.container).some.total_us
        while not self.halt.wait(1.0):
            now = psi.read_cgroup(bench.layout, bench.container).some.total_us
            stalled, stall = now - stall, now
            self.rounds += 1
            if stalled > STALL_TARGET_US:
                share = max(0.01, share / 2)
                continue
            step = int(cgroups.memory_usage_bytes(bench.layout, bench.container) * share)
            step -= step % guest_lib.PAGE
            if step <= 0:
                continue
            # EAGAIN: the kernel could not reclaim all of it this time.
            with contextlib.suppress(OSError):
                self.reclaim.write_text(str(step))
            self.asked += step
            share = min(0.10, share * 2)


senpai: list[Senpai] = []


def ours() -> model.Kdamond:
    aggr_us = 200_000
    scheme = model.Scheme(
        action="pageout",
        access_pattern=model.AccessPattern(
            nr_accesses=model.Range(0, 0), age=model.Range(min_age_us // aggr_us, model.ULONG_MAX)
        ),
        filters=(model.Filter(type="memcg", matching=False, memcg_path=bench.memcg),),
    )
    return model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                monitoring_attrs=model.MonitoringAttrs(
                    intervals=model.Intervals(
                        sample_us=10_000, aggr_us=aggr_us, update_us=1_000_000
                    )
                ),
                targets=(model.Target(regions=(guest_lib.all_ram_region(model),)),),
                schemes=(scheme,),
            ),
        )
    )


def damon_reclaim_scheme() -> model.Kdamond:
    """DAMON_RECLAIM's context as mm/damon/reclaim.c builds it, minus the watermarks."""
    aggr_us = int(defaults["aggr_interval"])
    scheme = model.Scheme(
        action="pageout",
        access_pattern=model.AccessPattern(
            sz=model.Range(guest_lib.PAGE, model.ULONG_MAX),
            nr_accesses=model.Range(0, 0),
            age=model.Range(min_age_us // aggr_us, model.ULONG_MAX),
        ),
        quotas=model.Quotas(
            ms=int(defaults["quota_ms"]),
            bytes=int(defaults["quota_sz"]),
            reset_interval_ms=int(defaults["quota_reset_interval_ms"]),
            weights=model.Weights(age_permil=1),
        ),
    )
    intervals = model.Intervals(
        sample_us=int(defaults["sample_interval"]), aggr_us=aggr_us, update_us=1_000_000
    )
    nr_regions = model.Range(int(defaults["min_nr_regions"]), int(defaults["max_nr_regions"]))
    return model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                monitoring_attrs=model.MonitoringAttrs(intervals=intervals, nr_regions=nr_regions),
                targets=(model.Target(regions=(guest_lib.all_ram_region(model),)),),
                schemes=(scheme,),
            ),
        )
    )


def set_reclaim(values: dict[str, str]) -> None:
    for name, value in values.items():
        (RECLAIM_PARAMS / name).write_text(value)


def same_region_as_ours() -> dict[str, str]:
    region = guest_lib.all_ram_region(model)
    return {"monitor_region_start": str(region.start), "monitor_region_end": str(region.end)}


kdamonds: list[kernel_driver.KdamondHandle] = []


def scheme_stats() -> dict[str, int] | None:
    """The running kdamond's scheme stats (bytes tried and applied, quota exceeds)."""
    if not kdamonds:
        return None
    (stats,) = driver.schemes_stats(kdamonds[0])
    return {
        "sz_tried": stats.sz_tried,
        "sz_applied": stats.sz_applied,
        "qt_exceeds": stats.qt_exceeds,
    }


TUNED_RECLAIM = {
    "min_age": str(min_age_us),
    # Watermarks on free memory in permil: active below "mid", so always active here.
    "wmarks_high": "1000",
    "wmarks_mid": "999",
    "wmarks_low": "0",
}


def start(variant: str) -> None:
    if variant == "ours":
        kdamonds.append(driver.start(ours()))
    elif variant == "ours_agent":
        start_agent()
    elif variant in ("damon_reclaim", "damon_reclaim_tuned"):
        set_reclaim(same_region_as_ours())
        if variant == "damon_reclaim_tuned":
            set_reclaim(TUNED_RECLAIM)
        set_reclaim({"enabled": "Y"})
    elif variant == "damon_reclaim_scheme":
        kdamonds.append(driver.start(damon_reclaim_scheme()))
    elif variant == "senpai":
        senpai.append(Senpai())
        senpai[0].start()
    elif variant != "none":
        raise guest_lib.GuestError(f"unknown variant {variant!r}")


def stop(variant: str) -> None:
    if variant in ("ours", "damon_reclaim_scheme"):
        kdamonds.clear()
        driver.stop_all()
    elif variant == "ours_agent":
        stop_agent()
    elif variant in ("damon_reclaim", "damon_reclaim_tuned"):
        set_reclaim({"enabled": "N"})
        # Back to the module's defaults for whatever runs next.
        names = ("monitor_region_start", "monitor_region_end", *TUNED_RECLAIM)
        set_reclaim({name: defaults[name] for name in names})
    elif variant == "senpai":
        loop = senpai.pop()
        loop.halt.set()
        loop.join()
        print(f"senpai: {loop.rounds} rounds, asked {loop.asked >> 20} MiB", flush=True)


def measure(index: int, variant: str) -> dict[str, Any]:
    if index:
        app.retouch_cold()
        time.sleep(0.5)
    with vm_common.running(variant, start, stop):
        before = sample()  # once started: an agent's start under emulation is not its time
        time.sleep(bench.seconds)
        after = sample()
    return {"before": before, "after": after}


results = bench.run(measure, reset=lambda: set_reclaim({"enabled": "N"}))
bench.finish(
    results,
    cold_pages=(app.cold[1] - app.cold[0]) // guest_lib.PAGE,
    page=guest_lib.PAGE,
    damon_reclaim_defaults=defaults,
)
