"""Clocks: virtual time for simulation, wall time for real operations sets."""

from __future__ import annotations

import time


class SimClock:
    """Virtual time that only moves when the monitor sleeps: runs are fast and reproducible."""

    def __init__(self, start_us: int = 0) -> None:
        self._now_us = start_us

    def now_us(self) -> int:
        return self._now_us

    def sleep_us(self, duration_us: int) -> None:
        self._now_us += max(0, duration_us)


class WallClock:
    """Monotonic wall time."""

    def now_us(self) -> int:
        return time.monotonic_ns() // 1_000

    def sleep_us(self, duration_us: int) -> None:
        if duration_us > 0:
            time.sleep(duration_us / 1e6)
