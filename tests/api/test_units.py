"""Human units at the boundary: parsing to canonical integers, formatting back, errors."""

from __future__ import annotations

import pytest

from damon_agent.api import units


@pytest.mark.parametrize(
    ("text", "us"),
    [
        ("0", 0),
        ("250us", 250),
        ("5ms", 5_000),
        ("1.5s", 1_500_000),
        ("2m", 120_000_000),
        ("1h", 3_600_000_000),
        (" 10s ", 10_000_000),
        (0, 0),
        ("max", units.UNBOUNDED),
    ],
)
def test_durations_parse_to_microseconds(text: str | int, us: int) -> None:
    assert units.parse_duration_us(text) == us


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("4096", 4096),
        (4096, 4096),
        ("4Ki", 4096),
        ("128Mi", 134_217_728),
        ("1Gi", 1_073_741_824),
        ("1.5Gi", 1_610_612_736),
        ("2Ti", 2 << 40),
        ("10M", 10_000_000),
        ("1G", 1_000_000_000),
        ("max", units.UNBOUNDED),
    ],
)
def test_sizes_parse_to_bytes(text: str | int, size: int) -> None:
    assert units.parse_size_bytes(text) == size


@pytest.mark.parametrize(
    ("text", "bp", "permil"),
    [("0%", 0, 0), ("0", 0, 0), ("0.1%", 10, 1), ("4%", 400, 40), ("50%", 5000, 500),
     ("100%", 10_000, 1000)],
)  # fmt: skip
def test_percentages_parse_to_basis_points_and_permil(text: str, bp: int, permil: int) -> None:
    assert units.parse_percent_bp(text) == bp
    assert units.parse_percent_permil(text) == permil


def test_percent_finer_than_a_basis_point_is_refused_but_bp_resolution_is_kept() -> None:
    assert units.parse_percent_bp("0.05%") == 5
    with pytest.raises(units.UnitError, match=r"'0\.005%' is not a whole number of basis"):
        units.parse_percent_bp("0.005%")
    with pytest.raises(units.UnitError, match="per-thousand"):
        units.parse_percent_permil("0.05%")


def test_addresses_take_hex_or_sizes() -> None:
    assert units.parse_address("0x7f0000000000") == 0x7F00_0000_0000
    assert units.parse_address("4Ki") == 4096
    with pytest.raises(units.UnitError, match="hexadecimal"):
        units.parse_address("0xzz")


@pytest.mark.parametrize(
    ("parse", "text", "reason"),
    [
        (units.parse_duration_us, "5", r"'5' has no unit"),
        (units.parse_duration_us, "5xs", r"'5xs' has unknown duration unit 'xs'"),
        (units.parse_duration_us, "-1ms", r"'-1ms' is not a duration"),
        (units.parse_duration_us, "0.5us", r"not a whole number of microseconds"),
        (units.parse_duration_us, True, r"True is not a duration"),
        (units.parse_size_bytes, "12Q", r"'12Q' has unknown size unit 'Q'"),
        (units.parse_size_bytes, "0.5", r"not a whole number of bytes"),
        (units.parse_size_bytes, "lots", r"'lots' is not a size"),
        (units.parse_percent_bp, "5", r"write it with '%'"),
        (units.parse_percent_bp, "101%", r"more than 100%"),
        (units.parse_count, "1.5", r"not a non-negative integer"),
        (units.parse_size_bytes, "99999999Pi", r"too large"),
    ],
)
def test_errors_quote_the_value_and_say_why(parse: object, text: object, reason: str) -> None:
    assert callable(parse)
    with pytest.raises(units.UnitError, match=reason):
        parse(text)


def test_unit_error_is_a_value_error() -> None:
    assert issubclass(units.UnitError, ValueError)


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1000, "1000 B"),
        (1023, "1023 B"),
        (1024, "1.000 KiB"),
        (1536, "1.500 KiB"),
        (4 * 1024**2, "4.000 MiB"),
        (1024**3 - 1, "1.000 GiB"),  # up a unit when the rounded figure reaches 1024
        (3 << 30, "3.000 GiB"),
        (int(37.25 * 2**30), "37.250 GiB"),
        (int(1.5 * 1024**4), "1.500 TiB"),
        (units.UNBOUNDED, "8.000 EiB"),
        (-2048, "-2.000 KiB"),
        (1536.0 / 3, "512 B"),
    ],
)
def test_bytes_format_for_people(nbytes: int | float, text: str) -> None:
    assert units.format_bytes(nbytes) == text


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (0, "0 s"),
        (250, "250 us"),
        (5_000, "5 ms"),
        (150_000, "150 ms"),
        (1_200_000, "1.2 s"),
        (12_345_678, "12.3 s"),
        (120_000_000, "2 m"),
        (192_000_000, "3 m 12 s"),
        (3_600_000_000, "1 h"),
        (3_600_000_000 + 61_000_000, "1 h 1 m"),
        (-5_000, "-5 ms"),
    ],
)
def test_durations_format_for_people(us: int, text: str) -> None:
    assert units.format_duration_us(us) == text


@pytest.mark.parametrize(("bp", "text"), [(0, "0%"), (5, "0.05%"), (10, "0.1%"), (400, "4%"),
                                          (1234, "12.34%"), (10_000, "100%")])  # fmt: skip
def test_basis_points_format_as_percentages(bp: int, text: str) -> None:
    assert units.format_bp(bp) == text
    assert units.parse_percent_bp(text) == bp


def test_permil_formats_as_percentages() -> None:
    assert units.format_permil(500) == "50%"
    assert units.format_permil(5) == "0.5%"
    assert units.parse_percent_permil(units.format_permil(123)) == 123
