from __future__ import annotations

import pytest

from damon_agent.reports import units


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.000 KiB"),
        (4 * 1024**2, "4.000 MiB"),
        (1024**3 - 1, "1024.000 MiB"),
        (1024**3, "1.000 GiB"),
        (int(1.5 * 1024**4), "1.500 TiB"),
        (-2048, "-2.000 KiB"),
    ],
)
def test_format_bytes(nbytes: int, text: str) -> None:
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
        (192_000_000, "3 m 12 s"),
        (3_600_000_000 + 61_000_000, "1 h 1 m"),
    ],
)
def test_format_duration(us: int, text: str) -> None:
    assert units.format_duration_us(us) == text


@pytest.mark.parametrize(
    ("share", "text"), [(0.0, "0 %"), (0.005, "0.5 %"), (0.12, "12 %"), (1.0, "100 %")]
)
def test_format_percent(share: float, text: str) -> None:
    assert units.format_percent(share) == text


def test_format_seconds_keeps_three_decimals() -> None:
    assert units.format_seconds(12_300_000) == "12.300 s"
