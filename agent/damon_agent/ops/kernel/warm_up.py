"""A goal-tuned quota's warm-up: short quota resets for the first seconds of a kdamond.

The kernel's default goal tuner (``consist``) starts a scheme's effective quota at one
byte and at most doubles it per quota reset while its goals are unmet, and it offers no
way to start higher (the effective size it keeps, ``esz_bp``, is not writable). At the
API's 1 s reset interval a quota needs 28 resets, about half a minute, to reach 256 MiB:
that long, a PSI-goal pageout or a DRAM-fill tiering scheme does next to nothing (measured
in the VM benches: 0 bytes reclaimed in 20 s; 26-28 s to the first 80 % of a hot set).

So a kdamond the agent starts runs its goal-tuned schemes with a reset interval
``WARM_UP_FACTOR`` times shorter, and size and time quotas shortened alike, so that the
pace they allow per second stays the user's. The warm-up ends when the effective quota
the kernel reports has reached the shortened size quota (``WARM_UP_BYTES`` shortened
alike without one: the examples' pace), or at the latest after twice the time the
doublings take at the written intervals (a busy or emulated kdamond applies its schemes
less often than written); then the agent commits the user's resets into the same kdamond.
A commit keeps the tuner's state (``esz_bp``), so the quota goes on from a tenth of its
pace, a few doublings short of all of it, instead of from one byte. The tuner steers
throughout, only ten times more often during the warm-up: a goal reached early stops the
growth as it would later.

A reset can come no more often than the scheme is applied (its apply interval, else the
aggregation interval), so a shorter reset than that gains nothing; a scheme whose reset
interval is already that short is left as it is. The ``temporal`` tuner starts at the
full quota and needs none of this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from damon_agent.ops.kernel import model

WARM_UP_FACTOR = 10
# Where the quota of a scheme without a size quota is grown to: the examples' pace.
WARM_UP_BYTES = 256 << 20


@dataclass(frozen=True)
class WarmUp:
    """The schemes to start with; per scheme the effective quota (bytes) at which it is
    warm (None: it does not warm up); the time (us) after which the warm-up ends anyway
    (0: no scheme warms up)."""

    schemes: tuple[model.Scheme, ...]
    warm_bytes: tuple[int | None, ...]
    duration_us: int

    def done(self, effective: Sequence[int | None]) -> bool:
        """Whether every warming scheme's effective quota has reached its warm size
        (``effective`` by scheme index; None: not known)."""
        return all(
            warm is None or (now is not None and now >= warm)
            for warm, now in zip(self.warm_bytes, effective, strict=False)
        )


def warm_up(schemes: Sequence[model.Scheme], aggr_us: int) -> WarmUp:
    """``schemes`` as a newly started kdamond runs them first (module docstring)."""
    warmed = []
    warm_bytes: list[int | None] = []
    duration_us = 0
    for scheme in schemes:
        one, warm, seconds_us = _warmed(scheme, aggr_us)
        warmed.append(one)
        warm_bytes.append(warm)
        duration_us = max(duration_us, seconds_us)
    return WarmUp(tuple(warmed), tuple(warm_bytes), duration_us)


def _warmed(scheme: model.Scheme, aggr_us: int) -> tuple[model.Scheme, int | None, int]:
    quotas = scheme.quotas
    if not quotas.goals or quotas.goal_tuner not in (None, "consist"):
        return scheme, None, 0
    reset_us = quotas.reset_interval_ms * 1000
    applied_every_us = scheme.apply_interval_us or aggr_us
    short_ms = max(1, quotas.reset_interval_ms // WARM_UP_FACTOR)
    step_us = max(short_ms * 1000, applied_every_us)
    if step_us >= reset_us:
        return scheme, None, 0
    short = replace(
        quotas,
        reset_interval_ms=short_ms,
        bytes=_scaled(quotas.bytes, short_ms, quotas.reset_interval_ms),
        ms=_scaled(quotas.ms, short_ms, quotas.reset_interval_ms),
    )
    warm = short.bytes or _scaled(WARM_UP_BYTES, short_ms, quotas.reset_interval_ms)
    # Doublings from one byte to the warm size, plus the window that starts the tuner;
    # twice that at the written intervals.
    resets = math.ceil(math.log2(warm)) + 1
    return replace(scheme, quotas=short), warm, 2 * resets * step_us


def _scaled(limit: int, short_ms: int, reset_ms: int) -> int:
    """A per-reset limit (0: none) for a reset of ``short_ms``: the same pace, never 0."""
    if not limit:
        return 0
    return max(1, math.ceil(limit * short_ms / reset_ms))
