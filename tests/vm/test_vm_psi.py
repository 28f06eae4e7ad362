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


@pytest.fixture(scope="module")
def observed(vm: harness.Runner) -> dict[str, Any]:
    params = {
        "pod_uid": str(uuid.uuid4()),
        "container_id": secrets.token_hex(32),
        "target_stall_us_per_s": TARGET_STALL_US_PER_S,
    }
    run = vm.scenario("psi", params)
    harness.Figures(__name__ + "::boot").record_run(run)
    result: dict[str, Any] = run.json()
    return result


def _transitions(steps: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    """(stall rate fed at a step, effective quota then, effective quota at the next step).

    A step feeds its stall rate right before reading the quota; the kernel applies the
    goal at its next quota resets (every 200 ms), so the effect of a rate shows in the
    next step's reading.
    """
    return [
        (a["stall_us_per_s"], a["effective_bytes"], b["effective_bytes"])
        for a, b in itertools.pairwise(steps)
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
    phase = {
        name: [s for s in steps if s["phase"] == name] for name in ("calm", "pressure", "calm2")
    }
    effective = {name: [s["effective_bytes"] for s in group] for name, group in phase.items()}
    # Steps where the fed stall rate was far above the target and the quota still grew:
    # expected none; recorded rather than asserted one by one, since a feed and a quota
    # reset can straddle a reading.
    grew_under_pressure = [
        (rate, before, after)
        for rate, before, after in _transitions(steps)
        if rate > 2 * TARGET_STALL_US_PER_S and after > before
    ]
    vm_figures.record(
        effective_mib_over_time=[
            (s["phase"][0], round(s["effective_bytes"] / (1 << 20), 3)) for s in steps
        ],
        grew_under_pressure=grew_under_pressure,
        sz_applied_mib=observed["sz_applied"] >> 20,
    )
    detail = [(s["phase"], s["stall_us_per_s"], s["effective_bytes"]) for s in steps]
    # Calm: no stall, the quota grows from its minimum.
    assert effective["calm"][-1] > effective["calm"][0], detail
    # Pressure: the quota never rises above where the calm phase left it, and collapses.
    before_pressure = effective["calm"][-1]
    assert max(effective["pressure"]) <= before_pressure, detail
    assert min(effective["pressure"]) <= before_pressure / 100, detail
    # Calm again: it grows back.
    assert effective["calm2"][-1] > max(min(effective["pressure"]), effective["calm2"][0]), detail
    assert len(grew_under_pressure) <= 1, detail
