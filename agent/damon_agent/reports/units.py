"""Human units in reports: bytes in B/KiB/MiB/GiB/..., times in us/ms/s/m/h, shares in %.

Output only, for people: three significant digits where that is enough, sizes with three
decimals so columns line up. Parsing what people type ("20s", "128Mi") is
``damon_agent.api.units``' job, shared with scheme files and custom resources.
"""

from __future__ import annotations

import math
from typing import Final

_BYTE_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(nbytes: int | float) -> str:
    """``4194304`` -> ``"4.000 MiB"``; below 1 KiB exact bytes: ``"512 B"``."""
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


def format_duration_us(us: int | float) -> str:
    """``1_200_000`` -> ``"1.2 s"``, ``150_000`` -> ``"150 ms"``, ``192e6`` -> ``"3 m 12 s"``."""
    value = float(us)
    if value < 0:
        return "-" + format_duration_us(-value)
    if value == 0:
        return "0 s"
    if value < 1_000:
        return f"{_sig3(value)} us"
    if value < 1_000_000:
        return f"{_sig3(value / 1_000)} ms"
    if value < 60_000_000:
        return f"{_sig3(value / 1_000_000)} s"
    total_s = round(value / 1_000_000)
    if total_s < 3600:
        return f"{total_s // 60} m {total_s % 60} s"
    total_m = total_s // 60
    return f"{total_m // 60} h {total_m % 60} m"


def format_seconds(us: int | float) -> str:
    """A time on a report's axis, always in seconds with 3 decimals: ``"12.300 s"``."""
    return f"{us / 1_000_000:.3f} s"


def format_percent(share: float) -> str:
    """``0.12`` -> ``"12 %"``; a share below 1 % but above 0 keeps one decimal: ``"0.5 %"``."""
    percent = share * 100
    if 0 < percent < 1:
        return f"{percent:.1f} %"
    return f"{round(percent)} %"


def _sig3(value: float) -> str:
    """Three significant digits without a trailing ".0": 150, 12.3, 1.2, 0.05."""
    text = f"{value:.3g}"
    if "e" in text:  # only for values >= 1000, which callers have already scaled away
        text = f"{value:.0f}"
    return text
