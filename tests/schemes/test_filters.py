"""Core filters: first selecting filter decides, matching/non-matching, the default after
the last filter, and address-range splits."""

from __future__ import annotations

import pytest

from damon_agent.schemes import filters, model

PAGE = 4096


def _verdict(
    fs: list[model.Filter], start: int = 0x10000, end: int = 0x20000, target_index: int = 0,
    ops: bool = False,
) -> filters.CoreVerdict:  # fmt: skip
    return filters.evaluate(
        fs,
        has_ops_filters=ops,
        target_index=target_index,
        start=start,
        end=end,
        min_region_bytes=PAGE,
    )


def _addr(start: int, end: int, *, allow: bool, matching: bool = True) -> model.Filter:
    return model.Filter("addr", allow=allow, matching=matching, addr_start=start, addr_end=end)


def _target(index: int, *, allow: bool, matching: bool = True) -> model.Filter:
    return model.Filter("target", allow=allow, matching=matching, target_index=index)


def test_no_filters_allow_everything() -> None:
    assert _verdict([]) == filters.CoreVerdict(True, False, 0x20000)


@pytest.mark.parametrize(
    ("fs", "target_index", "allowed"),
    [
        ([_target(0, allow=False)], 0, False),  # reject target 0
        ([_target(0, allow=False)], 1, True),  # not selected; last is reject: default allow
        ([_target(0, allow=True)], 0, True),
        ([_target(0, allow=True)], 1, False),  # allow-list: the rest is rejected
        ([_target(0, allow=False, matching=False)], 1, False),  # rejects all but target 0
        ([_target(0, allow=False, matching=False)], 0, True),
        # The first selecting filter wins: target 1 allowed before the reject-all.
        ([_target(1, allow=True), _target(1, allow=False, matching=False)], 1, True),
        ([_target(1, allow=True), _target(1, allow=False, matching=False)], 0, False),
        # Order matters: the same filters the other way round.
        ([_target(1, allow=False, matching=False), _target(1, allow=True)], 1, True),
        ([_target(0, allow=False), _target(2, allow=True)], 1, False),  # default: last allow
        ([_target(0, allow=True), _target(2, allow=False)], 1, True),  # default: last reject
    ],
)
def test_order_matching_and_default(
    fs: list[model.Filter], target_index: int, allowed: bool
) -> None:
    assert _verdict(fs, target_index=target_index).allowed is allowed


def test_with_ops_filters_the_core_default_passes_the_region_on() -> None:
    verdict = _verdict([_target(0, allow=True)], target_index=1, ops=True)
    assert verdict.allowed and not verdict.explicitly_allowed
    explicit = _verdict([_target(1, allow=True)], target_index=1, ops=True)
    assert explicit.allowed and explicit.explicitly_allowed


def test_address_filter_inside_outside_and_splits() -> None:
    inside = _addr(0x10000, 0x20000, allow=False)
    assert _verdict([inside]) == filters.CoreVerdict(False, False, 0x20000)
    outside = _addr(0x30000, 0x40000, allow=False)
    assert _verdict([outside]) == filters.CoreVerdict(True, False, 0x20000)
    # Range starts inside the region: the region is cut at the range start and the first
    # part (outside the range) is not selected.
    late = _addr(0x18000, 0x40000, allow=False)
    assert _verdict([late]) == filters.CoreVerdict(True, False, 0x18000)
    # Region starts inside the range and runs past its end: cut at the end, selected.
    early = _addr(0x0, 0x14000, allow=False)
    assert _verdict([early]) == filters.CoreVerdict(False, False, 0x14000)
    # Range bounds are aligned down to the minimum region size.
    unaligned = _addr(0x0, 0x14FFF, allow=True)
    assert _verdict([unaligned]) == filters.CoreVerdict(True, True, 0x14000)


def test_split_by_an_earlier_filter_carries_to_later_ones() -> None:
    fs = [_addr(0x18000, 0x40000, allow=True), _target(0, allow=False)]
    # First filter cuts to [0x10000, 0x18000) which it does not select; the target
    # filter then rejects that part.
    assert _verdict(fs) == filters.CoreVerdict(False, False, 0x18000)
