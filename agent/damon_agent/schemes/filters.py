"""Core-layer DAMOS filters: address range and target.

A filter *selects* a region when its condition (inside the address range / is the target
at ``target_index``) equals ``matching``. Filters are evaluated in order; the first that
selects the region decides: allow it (``allow``) or reject it. When none selects it, the
default applies: if the scheme has ops-layer filters, the region is passed on to them
(the operations set decides per page); otherwise it is rejected when the last core filter
was an allow filter (an allow-list) and allowed when it was a reject filter.

An address filter whose range covers only part of a region splits the region first, at
the range boundary (aligned down to the minimum region size), so that the decision holds
for the whole of the first part; the evaluation then goes on with that part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from damon_agent.schemes import model


@dataclass(frozen=True)
class CoreVerdict:
    """``allowed``: act on [start, end). ``explicitly_allowed``: an allow filter selected it
    (the ops-layer filters are then skipped). ``end``: the region's end after any split."""

    allowed: bool
    explicitly_allowed: bool
    end: int


def _selects(
    f: model.Filter, target_index: int, start: int, end: int, min_region_bytes: int
) -> tuple[bool, int]:
    """Whether ``f`` selects [start, end), and the end after a split (``end`` if none)."""
    if f.type == "target":
        matched = target_index == f.target_index
    elif f.type == "addr":
        assert f.addr_start is not None and f.addr_end is not None
        low = f.addr_start - f.addr_start % min_region_bytes
        high = f.addr_end - f.addr_end % min_region_bytes
        if low <= start and end <= high:
            matched = True
        elif end <= low or high <= start:
            matched = False
        elif start < low:
            matched, end = False, low
        else:
            matched, end = True, high
    else:
        return False, end  # an ops-layer filter: not the core's to evaluate
    return matched == f.matching, end


def default_allows(core: Sequence[model.Filter], has_ops_filters: bool) -> bool:
    if has_ops_filters or not core:
        return True
    return not core[-1].allow


def evaluate(
    core: Sequence[model.Filter],
    *,
    has_ops_filters: bool,
    target_index: int,
    start: int,
    end: int,
    min_region_bytes: int,
) -> CoreVerdict:
    for f in core:
        selected, end = _selects(f, target_index, start, end, min_region_bytes)
        if selected:
            return CoreVerdict(allowed=f.allow, explicitly_allowed=f.allow, end=end)
    return CoreVerdict(
        allowed=default_allows(core, has_ops_filters), explicitly_allowed=False, end=end
    )
