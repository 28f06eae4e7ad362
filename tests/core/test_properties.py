"""Property tests of the pure region operations: they never break the tiling."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from damon_agent.core import aggregation, regions, splitting, vaddr_layout

PAGE = regions.MIN_REGION_SIZE

region_lists = st.lists(
    st.tuples(st.integers(1, 2_000), st.integers(0, 3), st.integers(0, 20), st.integers(0, 50)),
    min_size=1,
    max_size=60,
)  # (size in pages, gap in pages before it, nr_accesses, age)


def _build(spec: list[tuple[int, int, int, int]]) -> regions.TargetRegions:
    starts, ends, address = [], [], 0
    for size, gap, _, _ in spec:
        address += gap * PAGE
        starts.append(address)
        address += size * PAGE
        ends.append(address)
    return regions.TargetRegions(
        0,
        start=np.array(starts, np.int64),
        end=np.array(ends, np.int64),
        nr_accesses=np.array([s[2] for s in spec], np.int64),
        age=np.array([s[3] for s in spec], np.int64),
    )


def _covered(target: regions.TargetRegions) -> list[tuple[int, int]]:
    return vaddr_layout.normalize_ranges(
        list(zip(target.start.tolist(), target.end.tolist(), strict=True))
    )


@settings(max_examples=100, deadline=None)
@given(spec=region_lists, threshold=st.integers(0, 10), limit_pages=st.integers(1, 5_000))
def test_merge_keeps_the_covered_ranges_sizes_and_bounds(
    spec: list[tuple[int, int, int, int]], threshold: int, limit_pages: int
) -> None:
    target = _build(spec)
    before = _covered(target)
    largest_before = int(target.sizes.max())
    aggregation.merge_regions_of(target, threshold, limit_pages * PAGE)
    assert _covered(target) == before
    assert np.all(target.end > target.start)
    assert np.all(target.start[1:] >= target.end[:-1])
    # A merged region never exceeds the limit (an unmerged one keeps its size).
    assert int(target.sizes.max()) <= max(largest_before, limit_pages * PAGE)
    assert target.nr_accesses.min() >= min(s[2] for s in spec)
    assert target.nr_accesses.max() <= max(s[2] for s in spec)


@settings(max_examples=100, deadline=None)
@given(spec=region_lists, nr_subs=st.sampled_from([2, 3]), seed=st.integers(0, 2**32 - 1))
def test_split_keeps_the_covered_ranges_and_page_alignment(
    spec: list[tuple[int, int, int, int]], nr_subs: int, seed: int
) -> None:
    target = _build(spec)
    before = _covered(target)
    count = len(target)
    splitting.split_regions_of(target, nr_subs, np.random.default_rng(seed))
    assert _covered(target) == before
    assert np.all(target.end > target.start)
    assert np.all(target.start % PAGE == 0)
    assert count <= len(target) <= count * nr_subs
