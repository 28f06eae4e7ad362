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
quantity      a Kubernetes quantity: ``128Mi``, ``1G``,         bytes (rounded up)
              ``129e6``, ``1500m`` (pods' memory requests)
============  ==============================================  ===================

``max`` means "no upper bound" and maps to ``UNBOUNDED`` (the largest int64, so it can be
compared with numpy int64 arrays without overflow).

The way back, for people (reports, printer columns, logs, benches), is one formatter per
kind: ``format_bytes`` ("4.000 MiB") and ``format_duration_us`` ("150 ms", "3 m 12 s").
They round, so their output is for reading, not for parsing again; ``format_bp`` and
``format_permil`` are exact.

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
            "(units: Ki, Mi, Gi, Ti, Pi, K, M, G, T, P, or none for bytes)"
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


_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(nbytes: int | float) -> str:
    """For people: ``4194304`` -> ``"4.000 MiB"``; under 1 KiB whole bytes, ``"512 B"``.

    Always three decimals above bytes, so that a column of sizes lines up.
    """
    sign = "-" if nbytes < 0 else ""
    scaled = abs(float(nbytes))
    if round(scaled) < 1024:
        return f"{sign}{round(scaled)} B"
    scaled /= 1024
    unit = 1
    # Move up on the rounded value: 1 GiB less a byte is "1.000 GiB", not "1024.000 MiB".
    while round(scaled, 3) >= 1024 and unit < len(_BYTE_UNITS) - 1:
        scaled /= 1024
        unit += 1
    return f"{sign}{scaled:.3f} {_BYTE_UNITS[unit]}"


def format_duration_us(us: int | float) -> str:
    """For people, three significant digits: ``"250 us"``, ``"150 ms"``, ``"1.2 s"``.

    From a minute on, whole seconds (``"3 m 12 s"``); from an hour on, whole minutes
    (``"1 h 1 m"``); a zero second or minute part is left out (``"2 m"``, ``"1 h"``).
    """
    if us < 0:
        return "-" + format_duration_us(-us)
    if us == 0:
        return "0 s"
    if us < 1_000:
        return f"{_three_digits(us)} us"
    if us < 1_000_000:
        return f"{_three_digits(us / 1_000)} ms"
    if us < 60_000_000:
        return f"{_three_digits(us / 1_000_000)} s"
    total_s = round(us / 1_000_000)
    if total_s < 3600:
        (big, small), names = divmod(total_s, 60), ("m", "s")
    else:
        (big, small), names = divmod(total_s // 60, 60), ("h", "m")
    return f"{big} {names[0]}" + (f" {small} {names[1]}" if small else "")


def _three_digits(value: float) -> str:
    """150, 12.3, 1.2, 0.05: three significant digits, no trailing zeros (values < 1000)."""
    text = f"{value:.3g}"
    return f"{value:.0f}" if "e" in text else text


def format_bp(bp: int) -> str:
    """5 -> ``"0.05%"``; 400 -> ``"4%"``."""
    whole, frac = divmod(bp, 100)
    return f"{whole}%" if frac == 0 else f"{whole}.{frac:02d}".rstrip("0") + "%"


def format_permil(permil: int) -> str:
    """500 -> ``"50%"``; 5 -> ``"0.5%"``."""
    whole, frac = divmod(permil, 10)
    return f"{whole}%" if frac == 0 else f"{whole}.{frac}%"


# Kubernetes resource quantities (``resources.requests.memory`` of a pod's containers):
# binary and decimal suffixes, milli, and decimal exponents, as the apiserver keeps them.
_QUANTITY = re.compile(
    r"^([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[mkMGTPE])?$"
)
_QUANTITY_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
}


def parse_quantity_bytes(value: str | int) -> int:
    """A Kubernetes quantity of memory in whole bytes, rounded up as the kubelet does:
    ``"128Mi"`` -> 134217728, ``"1G"``, ``"129e6"``, ``"0.5Gi"``, ``"1500m"`` -> 2."""
    text = _text(value, "quantity").strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise UnitError(f"{text!r} is not a Kubernetes quantity (e.g. 128Mi, 1G, 129e6)")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix not in _QUANTITY_SUFFIXES:  # a decimal exponent: e3, E+6
        scaled = number.scaleb(int(suffix[1:]))
    else:
        scaled = number * _QUANTITY_SUFFIXES[suffix]
    whole = int(scaled.to_integral_value(rounding="ROUND_CEILING"))
    if whole > UNBOUNDED:
        raise UnitError(f"{text!r} is too large a quantity")
    return whole
