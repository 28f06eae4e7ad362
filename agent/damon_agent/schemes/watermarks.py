"""Watermarks: turn a scheme on and off by the free memory rate (per thousand).

Transitions (the kernel's ``damos_wmark_wait_us``), evaluated every ``interval_us``:

- metric above ``high`` or below ``low``: off;
- metric in [mid, high] and the scheme is off: stays off (hysteresis);
- otherwise (in [low, mid), or in [mid, high] while on): on.

So a reclaim scheme with high 50%, mid 40%, low 5% starts when free memory falls below
40%, keeps going up to 50%, and stops below 5% (leaving the last memory to the kernel's
own reclaim). A scheme starts on (as the kernel creates it) and is first checked at the
first call. Metric ``none``: always on. If the metric cannot be read, the state is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from damon_agent.schemes import errors, model, tuners


def next_activation(wmarks: model.Watermarks, metric_value: int, activated: bool) -> bool:
    """Whether the scheme is on after a check that read ``metric_value``."""
    if metric_value > wmarks.high or metric_value < wmarks.low:
        return False
    in_hysteresis_band = wmarks.mid <= metric_value <= wmarks.high
    return activated or not in_hysteresis_band


@dataclass
class WatermarkState:
    activated: bool = True
    next_check_us: int | None = None
    last_value: int | None = None

    def update(
        self, wmarks: model.Watermarks | None, metrics: tuners.MetricSource, now_us: int
    ) -> bool:
        """Check if due; return whether the scheme is on."""
        if wmarks is None or wmarks.metric == "none":
            self.activated = True
            return True
        if self.next_check_us is not None and now_us < self.next_check_us:
            return self.activated
        self.next_check_us = now_us + wmarks.interval_us
        try:
            self.last_value = metrics.read(wmarks.metric)
        except errors.MetricUnavailableError:
            return self.activated
        self.activated = next_activation(wmarks, self.last_value, self.activated)
        return self.activated
