"""Report-only units: times on a report's axis in seconds, shares in %.

Sizes and durations are formatted by ``damon_agent.api.units`` (``format_bytes``,
``format_duration_us``), one formatter each for every layer; parsing what people type
("20s", "128Mi") is that module's job too.
"""

from __future__ import annotations


def format_seconds(us: int | float) -> str:
    """A time on a report's axis, always in seconds with 3 decimals: ``"12.300 s"``."""
    return f"{us / 1_000_000:.3f} s"


def format_percent(share: float) -> str:
    """``0.12`` -> ``"12 %"``; a share below 1 % but above 0 keeps one decimal: ``"0.5 %"``."""
    percent = share * 100
    if 0 < percent < 1:
        return f"{percent:.1f} %"
    return f"{round(percent)} %"
