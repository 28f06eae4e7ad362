from __future__ import annotations

import pytest

from damon_agent.reports import units


@pytest.mark.parametrize(
    ("share", "text"), [(0.0, "0 %"), (0.005, "0.5 %"), (0.12, "12 %"), (1.0, "100 %")]
)
def test_format_percent(share: float, text: str) -> None:
    assert units.format_percent(share) == text


def test_format_seconds_keeps_three_decimals() -> None:
    assert units.format_seconds(12_300_000) == "12.300 s"
