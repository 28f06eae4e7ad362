"""Scenario 6: PSI feedback; a quota goal on the pod's memory pressure steers the quota.

One boot. A pageout scheme (paddr, memcg filter on the workload's container) has a size
quota and one ``user_input`` quota goal whose target is a memory stall rate (stall
microseconds per second). Every half second the guest script plays the agent's feedback
step: it reads the container cgroup's ``memory.pressure`` through the project's
``node.psi``, feeds the stall rate of the last step as the goal's ``current_value``
(``commit_quota_goals``) and reads the quota the kernel derived from it
(``update_schemes_effective_quotas``), all through the project's kernel driver.

Three phases: calm (``memory.high`` unlimited), pressure (``memory.high`` below the hot
working set, so the workload stalls in reclaim), calm again. Expected: the effective
quota grows while the stall rate is below the target and shrinks while it is above.

Then the emergency brake, at the agent's defaults (a 1 s reset interval, the stall fed
once a second): the quota grown above 4 MiB in calm, a sudden squeeze must bring it to
1 MiB or less within two reset intervals of the first feed of the spike.
"""

from __future__ import annotations

import itertools
import secrets
import uuid
from typing import Any

import harness
import pytest

pytestmark = pytest.mark.vm

TARGET_STALL_US_PER_S = 10_000  # 1 % of the time stalled on memory
BRAKE_RESET_INTERVAL_MS = 1000  # the scheme API's default resetInterval


@pytest.fixture(scope="module")
def observed(vm: harness.Runner) -> dict[str, Any]:
    params = {
        "pod_uid": str(uuid.uuid4()),
        "container_id": secrets.token_hex(32),
        "target_stall_us_per_s": TARGET_STALL_US_PER_S,
        "brake_reset_interval_ms": BRAKE_RESET_INTERVAL_MS,
        "brake_from_bytes": 4 << 20,
    }
    run = vm.scenario("psi", params)
    harness.Figures(__name__ + "::boot").record_run(run)
    result: dict[str, Any] = run.json()
    return result


def _transitions(steps: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    """(stall rate fed, effective quota at a step, effective quota at the next step).

    Each step feeds its stall rate, then reads the quota; the kernel applies a fed value
    at its next quota reset (every 200 ms), which may come before the next step's
    reading or only after its own feed. So a change between two readings answers either
    rate, and only pairs of steps that agree (both above twice the target, or both
    without stall) say which way the quota must go; the rate given is the lower of the
    two.
    """
    return [
        (min(a["stall_us_per_s"], b["stall_us_per_s"]), a["effective_bytes"], b["effective_bytes"])
        for a, b in itertools.pairwise(steps)
        if (a["stall_us_per_s"] == 0) == (b["stall_us_per_s"] == 0)
    ]


def test_pressure_phase_stalls_above_target(
    observed: dict[str, Any], vm_figures: harness.Figures
) -> None:
    steps = observed["steps"]
    by_phase: dict[str, list[int]] = {}
    for step in steps:
        by_phase.setdefault(step["phase"], []).append(step["stall_us_per_s"])
    vm_figures.record(
        stall_us_per_s={phase: max(rates) for phase, rates in by_phase.items()},
        target_us_per_s=TARGET_STALL_US_PER_S,
    )
    assert observed["nr_kdamonds_left"] == 0
    # memory.high below the working set does create pressure, above the target.
    assert max(by_phase["pressure"]) > TARGET_STALL_US_PER_S, by_phase
    assert min(by_phase["calm"]) < TARGET_STALL_US_PER_S, by_phase


def test_effective_quota_follows_pressure(
    observed: dict[str, Any], vm_figures: harness.Figures
) -> None:
    steps = observed["steps"]
    transitions = _transitions(steps)
    above = [(b, a) for rate, b, a in transitions if rate > 2 * TARGET_STALL_US_PER_S]
    below = [(b, a) for rate, b, a in transitions if rate == 0]
    # Against the rule, expected none; one is tolerated (a quota reset between the
    # kernel's commit of a feed and the reading of the quota).
    grew_above = [(b, a) for b, a in above if a > b]
    shrank_below = [(b, a) for b, a in below if a < b]
    vm_figures.record(
        effective_mib_over_time=[
            (s["phase"][0], round(s["effective_bytes"] / (1 << 20), 3)) for s in steps
        ],
        steps_above_target=len(above),
        steps_without_stall=len(below),
        grew_above=grew_above,
        shrank_below=shrank_below,
        sz_applied_mib=observed["sz_applied"] >> 20,
    )
    detail = [(s["phase"], s["stall_us_per_s"], s["effective_bytes"]) for s in steps]
    assert above and below, detail
    # While the stall rate is above the target the quota shrinks (to the kernel's minimum
    # once the rate is twice the target); while nothing stalls it grows (up to the size
    # cap). The pageout itself may cause stalls in the calm phases (it pages out memory the
    # container touches again): those steps count as "above" too, and they should.
    assert len(grew_above) <= 1, detail
    # The collapse under pressure may land on the reading just before the stall shows in
    # a sample (the kernel feeds the goal between two readings), so judge it by phase: the
    # quota under pressure falls well below where the calm phase left it.
    last_calm = [s["effective_bytes"] for s in steps if s["phase"] == "calm"][-1]
    under_pressure = min(s["effective_bytes"] for s in steps if s["phase"] == "pressure")
    assert under_pressure <= 1 << 20 and under_pressure < last_calm, detail
    assert len(shrank_below) <= 1, detail
    assert sum(a - b for b, a in below) > 0, detail


def test_a_pressure_spike_brakes_the_quota_within_two_reset_intervals(
    observed: dict[str, Any], vm_figures: harness.Figures
) -> None:
    brake = observed["brake"]
    vm_figures.record(
        brake_effective_before_mib=round(brake["effective_before_bytes"] / (1 << 20), 1),
        brake_after_squeeze_s=brake.get("after_squeeze_s"),
        brake_after_feed_s=brake.get("after_feed_s"),
        brake_first_rate_us_per_s=brake.get("first_rate_above_twice_target"),
    )
    assert observed["nr_kdamonds_left"] == 0
    assert brake["effective_before_bytes"] > 1 << 20, f"the quota never grew: {brake}"
    assert "after_feed_s" in brake, f"no brake to 1 MiB within 10 s of the squeeze: {brake}"
    # From the feed, not the squeeze: the agent feeds once a second, so a spike reaches the
    # kernel up to a feedback period after it starts (after_squeeze_s shows the sum).
    assert brake["after_feed_s"] <= 2 * brake["reset_interval_s"], brake
