"""Human units at the boundary, canonical integers inside.

Scheme files and custom resources carry values a person can read ("5ms", "2m", "128Mi",
"0.05%", "max"); the rest of the agent works on integers in one canonical unit each:

============  ==============================================  ===================
kind          accepted forms                                  canonical
============  ==============================================  ===================
duration      ``0``, ``250us``, ``5ms``, ``1.5s``, ``2m``,    microseconds
              ``1h``, ``max``
size          ``4096``, ``4Ki``, ``128Mi``, ``1.5Gi``,        bytes
              ``2Ti``, ``10M``/``1G`` (SI), ``max``
percentage    ``0%``, ``0.05%``, ``4%``, ``100%``             basis points (1/10000)
              (or per-thousand with ``parse_percent_permil``)
address       ``0x7f0000``, ``4096``, ``4Ki``                  bytes
============  ==============================================  ===================

``max`` means "no upper bound" and maps to ``UNBOUNDED`` (the largest int64, so it can be
compared with numpy int64 arrays without overflow).

Errors: every parser raises ``UnitError`` (a ``ValueError``, so pydantic reports it as a
field error) whose message quotes the value and says why it was refused::

    ValueError
     └── UnitError
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

UNBOUNDED = 2**63 - 1
"""Canonical value of ``max``: the largest int64."""

_DURATION_UNITS_US: dict[str, int] = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
}
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "B": 1,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "K": 10**3,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
}
_NUMBER_WITH_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z%]*)\s*$")


class UnitError(ValueError):
    """A value at the boundary could not be read in the unit its field expects."""


def _split(value: str, kind: str) -> tuple[Decimal, str]:
    match = _NUMBER_WITH_UNIT.match(value)
    if match is None:
        raise UnitError(f"{value!r} is not a {kind}: expected a non-negative number and a unit")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as err:  # the regex admits only digits, so this is defensive
        raise UnitError(f"{value!r} is not a {kind}: bad number") from err
    return number, match.group(2)


def _whole(number: Decimal, value: str, kind: str, unit_name: str) -> int:
    if number != number.to_integral_value():
        raise UnitError(f"{value!r} is not a whole number of {unit_name} (the {kind} resolution)")
    if number > UNBOUNDED:
        raise UnitError(f"{value!r} is too large for a {kind} (use 'max' for no bound)")
    return int(number)


def _text(value: str | int, kind: str) -> str:
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a {kind}")
    return str(value)


def parse_duration_us(value: str | int) -> int:
    """``"5ms"`` -> 5000. A bare ``0`` is allowed; any other number needs a unit."""
    text = _text(value, "duration")
    if text.strip() == "max":
        return UNBOUNDED
    number, unit = _split(text, "duration")
    if unit == "":
        if number == 0:
            return 0
        raise UnitError(
            f"{text!r} has no unit: write e.g. '{text}ms' or '{text}s' (units: us, ms, s, m, h)"
        )
    if unit not in _DURATION_UNITS_US:
        raise UnitError(f"{text!r} has unknown duration unit {unit!r} (units: us, ms, s, m, h)")
    return _whole(number * _DURATION_UNITS_US[unit], text, "duration", "microseconds")


def parse_size_bytes(value: str | int) -> int:
    """``"128Mi"`` -> 134217728; a bare number is bytes."""
    text = _text(value, "size")
    if text.strip() == "max":
        return UNBOUNDED
    number, unit = _split(text, "size")
    if unit not in _SIZE_UNITS:
        raise UnitError(
            f"{text!r} has unknown size unit {unit!r} "
            "(units: Ki, Mi, Gi, Ti, Pi; K, M, G, T, P; or none for bytes)"
        )
    return _whole(number * _SIZE_UNITS[unit], text, "size", "bytes")


def parse_address(value: str | int) -> int:
    """An address: ``0x``-prefixed hex, or a size (``4096``, ``4Ki``)."""
    text = _text(value, "address").strip()
    if text.lower().startswith("0x"):
        try:
            return int(text, 16)
        except ValueError as err:
            raise UnitError(f"{text!r} is not a hexadecimal address") from err
    return parse_size_bytes(text)


def _parse_percent(value: str | int, scale: int, unit_name: str) -> int:
    text = _text(value, "percentage")
    number, unit = _split(text, "percentage")
    if unit != "%":
        if unit == "" and number == 0:
            return 0
        raise UnitError(f"{text!r} is not a percentage: write it with '%', e.g. '5%'")
    if number > 100:
        raise UnitError(f"{text!r} is more than 100%")
    return _whole(number * scale / 100, text, "percentage", unit_name)


def parse_percent_bp(value: str | int) -> int:
    """``"0.05%"`` -> 5 basis points; resolution 0.01%."""
    return _parse_percent(value, 10_000, "basis points (0.01%)")


def parse_percent_permil(value: str | int) -> int:
    """``"50%"`` -> 500 per thousand; resolution 0.1% (the kernel's watermark unit)."""
    return _parse_percent(value, 1_000, "per-thousand (0.1%)")


def parse_count(value: str | int) -> int:
    """A plain non-negative integer, e.g. a user_input goal value."""
    text = _text(value, "count").strip()
    if not text.isdigit():
        raise UnitError(f"{text!r} is not a non-negative integer")
    return int(text)


def _format(number: int, units: list[tuple[str, int]]) -> str:
    for name, factor in units:
        if number >= factor and number % factor == 0:
            return f"{number // factor}{name}"
    return f"{number}{units[-1][0]}"


def format_duration_us(us: int) -> str:
    """5000 -> ``"5ms"``; the largest unit that divides exactly."""
    if us >= UNBOUNDED:
        return "max"
    if us == 0:
        return "0"
    return _format(us, [("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000),
                        ("ms", 1_000), ("us", 1)])  # fmt: skip


def format_size_bytes(size: int) -> str:
    """134217728 -> ``"128Mi"``; the largest binary unit that divides exactly."""
    if size >= UNBOUNDED:
        return "max"
    if size == 0:
        return "0"
    return _format(size, [("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20),
                          ("Ki", 1 << 10), ("", 1)])  # fmt: skip


def format_bp(bp: int) -> str:
    """5 -> ``"0.05%"``; 400 -> ``"4%"``."""
    whole, frac = divmod(bp, 100)
    return f"{whole}%" if frac == 0 else f"{whole}.{frac:02d}".rstrip("0") + "%"


def format_permil(permil: int) -> str:
    """500 -> ``"50%"``; 5 -> ``"0.5%"``."""
    whole, frac = divmod(permil, 10)
    return f"{whole}%" if frac == 0 else f"{whole}.{frac}%"
