from __future__ import annotations

import pytest

from damon_agent.reports import percentiles


def test_percentiles_pick_observed_values_lower_rank() -> None:
    # Sorted: 10 20 30 40; p25 -> index floor(0.75) = 0, p50 -> 1, p75 -> floor(2.25) = 2.
    assert percentiles.percentiles([40, 10, 30, 20]) == {0: 10, 25: 10, 50: 20, 75: 30, 100: 40}


def test_single_value_is_every_percentile() -> None:
    assert set(percentiles.percentiles([7]).values()) == {7}


def test_average() -> None:
    assert percentiles.average([1, 2, 6]) == pytest.approx(3.0)


def test_no_values_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentiles.percentiles([])
    with pytest.raises(ValueError, match="no values"):
        percentiles.average([])
