"""The goal-tuned quotas' warm-up (``ops.kernel.warm_up``) on the kernel under test.

The kernel's tuner grows a quota from one byte, doubling it at most once per quota reset:
at a 1 s reset, 256 MiB takes about 28 s. The warm-up starts the kdamond with 100 ms
resets, then commits the 1 s reset into the same kdamond; this test shows that the
kernel keeps the tuner's state across that commit, so the quota is large within seconds.

One scheme: ``stat`` (it changes nothing) with a 256 MiB size quota and a ``user_input``
goal whose current value stays 0, so the tuner grows the quota at every reset. Bounded:
20 s.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import pytest

from damon_agent.core import attrs
from damon_agent.ops.kernel import damon, driver, sysfs
from damon_agent.schemes import model as schemes

pytestmark = pytest.mark.kernel

DEADLINE_S = 20.0
SIZE_QUOTA = 256 << 20
# Without the warm-up, 20 s of 1 s resets reach 2**20 bytes at the most.
GROWN = 128 << 20


def test_a_goal_tuned_quota_warms_up_within_seconds(
    kernel_damon: Path, host_state_dir: Path
) -> None:
    engine = damon.KernelDamon(
        driver=driver.KdamondDriver(sysfs.HostSysfs(kernel_damon), host_state_dir),
        kernel_release=platform.release(),
    )
    quota = schemes.Quota(size_bytes=SIZE_QUOTA, goals=(schemes.QuotaGoal("user_input", 1000),))
    context = damon.KdamondContext(
        key="warm",
        monitoring=attrs.MonitoringAttrs(),
        operations="paddr",
        schemes=(damon.KdamondScheme("src/warm", schemes.Scheme("warm", "stat", quota=quota)),),
    )
    reset = kernel_damon / "kdamonds/0/contexts/0/schemes/0/quotas/reset_interval_ms"
    readings: list[tuple[float, int | None, str]] = []
    ended_s = None
    try:
        engine.apply([context])
        started = time.monotonic()
        assert reset.read_text().strip() == "100"
        while time.monotonic() - started < DEADLINE_S:
            time.sleep(0.5)
            if engine.end_warm_ups():
                ended_s = round(time.monotonic() - started, 1)
            effective = engine.tuning()["src/warm"].effective_bytes
            readings.append(
                (round(time.monotonic() - started, 1), effective, reset.read_text().strip())
            )
            if ended_s is not None and effective is not None and effective >= GROWN:
                break
    finally:
        engine.stop()
    assert ended_s is not None, f"the warm-up never ended: (s, effective bytes, reset) {readings}"
    assert readings[-1][2] == "1000", f"the user's reset was not committed: {readings}"
    effective = readings[-1][1]
    assert effective is not None and effective >= GROWN, (
        f"warm-up ended at {ended_s} s, yet the quota did not grow past {GROWN} bytes in "
        f"{DEADLINE_S} s: (s, effective bytes, reset) {readings}"
    )
