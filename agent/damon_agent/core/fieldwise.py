"""Counters that add up field by field: one sum for every counters dataclass.

Stats, footprints and simulation counters are dataclasses of numbers (and tuples of
numbers, one per NUMA node); two of them add up field by field, tuples element by
element. Writing each ``__add__`` by hand let a field added later be forgotten in the sum.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def add[T](left: T, right: T) -> T:
    """The field-by-field sum of two instances of one dataclass."""
    if (
        type(left) is not type(right)
        or not dataclasses.is_dataclass(left)
        or isinstance(left, type)
    ):
        raise TypeError(f"cannot add {type(left).__name__} and {type(right).__name__}")
    summed: dict[str, Any] = {}
    for one in dataclasses.fields(left):
        a, b = getattr(left, one.name), getattr(right, one.name)
        summed[one.name] = (
            tuple(x + y for x, y in zip(a, b, strict=True)) if isinstance(a, tuple) else a + b
        )
    return dataclasses.replace(left, **summed)
