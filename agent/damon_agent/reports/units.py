"""Report-only units: times on a report's axis in seconds, shares in %.

Sizes and durations are formatted by ``damon_agent.api.units`` (``format_bytes``,
``format_duration_us``), one formatter each for every layer; parsing what people type
("20s", "128Mi") is that module's job too.
"""

from __future__ import annotations

import math
from typing import Final

_BYTE_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(nbytes: int | float) -> str:
    """Superseded by ``api.units.format_bytes``: kept only until cli/agent.py moves to it."""
    value = float(nbytes)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1024:
        return f"{sign}{round(value)} B"
    exponent = min(int(math.log(value, 1024)), len(_BYTE_UNITS) - 1)
    scaled = value / 1024**exponent
    # log() can land just below an integer: keep 1024.000 KiB from appearing.
    if scaled >= 1024 and exponent < len(_BYTE_UNITS) - 1:
        exponent += 1
        scaled /= 1024
    return f"{sign}{scaled:.3f} {_BYTE_UNITS[exponent]}"


def format_seconds(us: int | float) -> str:
    """A time on a report's axis, always in seconds with 3 decimals: ``"12.300 s"``."""
    return f"{us / 1_000_000:.3f} s"


def format_percent(share: float) -> str:
    """``0.12`` -> ``"12 %"``; a share below 1 % but above 0 keeps one decimal: ``"0.5 %"``."""
    percent = share * 100
    if 0 < percent < 1:
        return f"{percent:.1f} %"
    return f"{round(percent)} %"
