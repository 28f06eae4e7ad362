"""Access pattern matching (closed ranges) and its kernel sysfs form."""

from __future__ import annotations

import numpy as np

from damon_agent.schemes import model, patterns


def _mask(
    pattern: model.AccessPattern, sizes: list[int], nr: list[int], age: list[int]
) -> list[bool]:
    return patterns.matches(
        pattern,
        np.array(sizes, dtype=np.int64),
        np.array(nr, dtype=np.int64),
        np.array(age, dtype=np.int64),
        max_nr_accesses=20,
        aggr_us=100_000,
    ).tolist()


def test_ranges_are_closed_at_both_ends() -> None:
    # access rate 5% .. 10% of 20 = 1 .. 2 accesses; age 1 s .. 2 s = 10 .. 20 intervals
    pattern = model.AccessPattern(
        min_size=4096, max_size=8192, min_rate_bp=500, max_rate_bp=1000,
        min_age_us=1_000_000, max_age_us=2_000_000,
    )  # fmt: skip
    assert _mask(pattern, [4096, 8192, 4095, 8193], [1, 2, 1, 1], [10, 20, 10, 10]) == [
        True, True, False, False,
    ]  # fmt: skip
    assert _mask(pattern, [4096, 4096, 4096, 4096], [0, 3, 1, 1], [10, 10, 9, 21]) == [
        False, False, False, False,
    ]  # fmt: skip


def test_rates_between_whole_accesses_compare_exactly() -> None:
    # 4% of 20 samples = 0.8 accesses: only 0 accesses is at or below it.
    pattern = model.AccessPattern(max_rate_bp=400)
    assert _mask(pattern, [4096, 4096], [0, 1], [0, 0]) == [True, False]
    # 0% .. 0%: never accessed only.
    assert _mask(model.AccessPattern(max_rate_bp=0), [4096, 4096], [0, 1], [5, 5]) == [True, False]


def test_scalar_form_agrees_with_the_vector_form() -> None:
    pattern = model.AccessPattern(min_rate_bp=500, max_age_us=1_500_000)
    rng = np.random.default_rng(3)
    nr = rng.integers(0, 21, 200)
    age = rng.integers(0, 30, 200)
    sizes = np.full(200, 4096, dtype=np.int64)
    vector = patterns.matches(pattern, sizes, nr, age, max_nr_accesses=20, aggr_us=100_000)
    scalar = [
        patterns.region_matches(pattern, 4096, int(n), int(a), max_nr_accesses=20, aggr_us=100_000)
        for n, a in zip(nr, age, strict=True)
    ]
    assert vector.tolist() == scalar
    assert 0 < sum(scalar) < 200


def test_kernel_bounds_round_inwards() -> None:
    pattern = model.AccessPattern(min_rate_bp=250, max_rate_bp=990, min_age_us=150_000)
    assert patterns.nr_accesses_bounds(pattern, 20) == (1, 1)  # 0.5 -> 1, 1.98 -> 1
    assert patterns.age_bounds(pattern, 100_000) == (2, model.UNBOUNDED)
    closed = model.AccessPattern(min_age_us=0, max_age_us=250_000)
    assert patterns.age_bounds(closed, 100_000) == (0, 2)
