"""Scenario 3: proactive reclaim of a pod's cold memory by a kernel DAMOS pageout scheme.

One boot. The workload runs in a kubelet-shaped container cgroup with a cold array it
touched once and a hot array it keeps touching. The project's kernel driver starts one
paddr kdamond over all of the guest's RAM with a ``pageout`` scheme for regions idle for
a few seconds, limited to the pod's container by a memcg filter (the path from
``node.cgroups``). The filter names the container's cgroup, not the pod's: the kernel
compares the memcg a page is charged to (the leaf) with the filter's, exactly, so a
filter on the pod slice matches none of the pod's pages (seen here on 6.12: nothing
applied). Page residency of both arrays comes from ``/proc/PID/pagemap``; the
pages leave to the zram swap device.

Expected: most of the cold bytes leave RAM, the hot array stays resident, and the hot
loop keeps running (its rate during reclaim is compared with its rate before).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.vm

HOT_MIB = 32
COLD_MIB = 256


@pytest.fixture(scope="module")
def observed(vm: harness.Runner) -> dict[str, Any]:
    params = {
        "pod_uid": str(uuid.uuid4()),
        "container_id": secrets.token_hex(32),
        "hot_mib": HOT_MIB,
        "cold_mib": COLD_MIB,
    }
    run = vm.scenario("reclaim", params)
    harness.Figures(__name__ + "::boot").record_run(run)
    result: dict[str, Any] = run.json()
    return result


def _rate(samples: list[dict[str, Any]], first: int, last: int) -> float:
    return (samples[last]["loops"] - samples[first]["loops"]) / (
        samples[last]["t"] - samples[first]["t"]
    )


def test_pageout_reclaims_most_cold_bytes_and_spares_hot(
    observed: dict[str, Any], vm_figures: harness.Figures
) -> None:
    samples = observed["samples"]
    before = samples[observed["reclaim_from"]]
    after = samples[-1]
    cold_pages = observed["cold_pages"]
    reclaimed = before["cold_resident"] - after["cold_resident"]
    page = observed["page"]
    mib = page / (1 << 20)
    vm_figures.record(
        cold_resident_mib_before=round(before["cold_resident"] * mib),
        cold_resident_mib_after=round(after["cold_resident"] * mib),
        hot_resident_mib_after=round(after["hot_resident"] * mib),
        pod_memory_mib_before=before["pod_memory"] >> 20,
        pod_memory_mib_after=after["pod_memory"] >> 20,
        sz_applied_mib=observed["sz_applied"] >> 20,
        swap_used_kib=observed["swap_used_kib"],
        cold_resident_over_time=[s["cold_resident"] for s in samples],
    )
    assert observed["nr_kdamonds_left"] == 0
    # The workload's cold array was fully resident before the scheme started.
    assert before["cold_resident"] >= 0.95 * cold_pages
    # Most of its cold bytes left RAM ...
    assert reclaimed >= 0.7 * cold_pages, (reclaimed, cold_pages)
    # ... for zram, and the pod's charged memory dropped by about as much.
    assert observed["swap_used_kib"] * 1024 >= 0.7 * reclaimed * page
    assert before["pod_memory"] - after["pod_memory"] >= 0.5 * cold_pages * page
    # The hot array stayed in RAM.
    assert after["hot_resident"] >= 0.9 * observed["hot_pages"]


def test_hot_loop_keeps_running_during_reclaim(
    observed: dict[str, Any], vm_figures: harness.Figures
) -> None:
    samples = observed["samples"]
    start = observed["reclaim_from"]
    baseline = _rate(samples, 0, start)
    during = _rate(samples, start, len(samples) - 1)
    vm_figures.record(
        loops_per_s_before=round(baseline, 1),
        loops_per_s_during=round(during, 1),
        slowdown=round(baseline / during, 2) if during else None,
    )
    assert baseline > 0
    # Emulation is noisy; what matters is that the loop was not stalled by reclaim.
    assert during >= 0.25 * baseline, (baseline, during)
    later = samples[start + 2 :]
    assert all(b["loops"] < a["loops"] for b, a in zip(samples[start:], later, strict=False))
