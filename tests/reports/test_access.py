"""The access report on hand-made snapshots, line by line."""

from __future__ import annotations

import pytest
from reports_support import make_snapshot

from damon_agent.core import snapshots
from damon_agent.reports import access, errors

MiB = 1 << 20
GiB = 1 << 30


@pytest.fixture
def snap() -> snapshots.Snapshot:
    # max_nr_accesses = 100 ms / 5 ms = 20.
    return make_snapshot(
        12_000_000,
        [
            (0x400000, 0x800000, 20, 12),  # 4 MiB, every sample, 1.2 s old
            (0x800000, 0x1000000, 3, 5),  # 8 MiB, 15 %, 500 ms
            (0x1000000, 0x41000000, 0, 1920),  # 1 GiB, cold for 3 m 12 s
        ],
        [(0x1000, 0x2000, 1, 0)],  # target 1: 4 KiB, 5 %
    )


def test_simple_boxes(snap: snapshots.Snapshot) -> None:
    text = access.render(snap, target_names={0: "hot-cold"})
    # Box lengths: log2 sizes 22, 23, 30 and 12 scaled from 12..30 onto 1..30.
    assert text.splitlines() == [
        "time 12.000 s  (sampling 5 ms, aggregation 100 ms)",
        "target 0 (hot-cold)",
        "|99999999999999999|                4.000 MiB  100 %      1.2 s",
        "|2222222222222222222|              8.000 MiB   15 %     500 ms",
        "|000000000000000000000000000000|   1.000 GiB    0 %   3 m 12 s",
        "total 1.012 GiB in 3 regions, accessed 12.000 MiB (1 %)",
        "target 1",
        "|1|                                4.000 KiB    5 %        0 s",
        "total 4.000 KiB in 1 region, accessed 4.000 KiB (100 %)",
        "all targets 1.012 GiB in 4 regions, accessed 12.004 MiB (1 %)",
    ]


def test_detailed(snap: snapshots.Snapshot) -> None:
    lines = access.render(snap, style="detailed", start_us=2_000_000).splitlines()
    assert lines[0] == "time 10.000 s  (sampling 5 ms, aggregation 100 ms)"
    assert lines[1] == "target 0"
    assert lines[2].split() == [
        "#",
        "start",
        "end",
        "size",
        "nr_accesses",
        "rate",
        "age",
        "age",
        "time",
    ]
    assert lines[3] == (
        "0  0x0000000000400000  0x0000000000800000  4.000 MiB        20/20  100 %    12     1.2 s"
    )
    assert lines[5] == (
        "2  0x0000000001000000  0x0000000041000000  1.000 GiB         0/20    0 %  1920  3 m 12 s"
    )
    assert lines[6] == "total 1.012 GiB in 3 regions, accessed 12.000 MiB (1 %)"
    assert lines[9] == (
        "0  0x0000000000001000  0x0000000000002000  4.000 KiB         1/20   5 %    0       0 s"
    )


def test_equal_sizes_get_full_boxes() -> None:
    text = access.render(make_snapshot(0, [(0, MiB, 10, 0), (MiB, 2 * MiB, 0, 0)]))
    boxes = [line.split()[0] for line in text.splitlines()[2:4]]
    assert boxes == ["|" + "5" * 30 + "|", "|" + "0" * 30 + "|"]


def test_empty_target() -> None:
    lines = access.render(make_snapshot(0, [])).splitlines()
    assert lines[1:] == ["target 0", "(no regions)", "total 0 B in 0 regions, accessed 0 B (0 %)"]


@pytest.mark.parametrize(
    ("nr", "digit"), [(0, 0), (1, 1), (2, 1), (3, 2), (10, 5), (19, 9), (20, 9), (25, 9)]
)
def test_rate_digit_keeps_any_access_above_zero(nr: int, digit: int) -> None:
    assert access.rate_digit(nr, 20) == digit


def test_pick_snapshot() -> None:
    snaps = [make_snapshot(t, [(0, 4096, 0, 0)]) for t in (1_100_000, 1_200_000, 1_300_000)]
    assert access.pick_snapshot(snaps, 1_000_000, None).time_us == 1_300_000
    assert access.pick_snapshot(snaps, 1_000_000, 190_000).time_us == 1_200_000
    assert access.pick_snapshot(snaps, 1_000_000, 150_000).time_us == 1_100_000  # tie: earlier
    assert access.pick_snapshot(snaps, 1_000_000, 0).time_us == 1_100_000
    with pytest.raises(errors.SelectionError, match="past the recording's last snapshot"):
        access.pick_snapshot(snaps, 1_000_000, 5_000_000)
    with pytest.raises(errors.SelectionError, match="no snapshot"):
        access.pick_snapshot([], 0, None)


def _regions(snap: snapshots.Snapshot) -> list[tuple[int, int, int, int]]:
    (target,) = snap.targets
    return list(
        zip(
            target.start.tolist(),
            target.end.tolist(),
            target.nr_accesses.tolist(),
            target.age.tolist(),
            strict=True,
        )
    )


@pytest.fixture
def mixed() -> snapshots.Snapshot:
    return make_snapshot(
        0,
        [
            (0, MiB, 10, 2),
            (MiB, 2 * MiB, 12, 4),
            (2 * MiB, 3 * MiB, 0, 8),
            (4 * MiB, 5 * MiB, 0, 8),  # after a gap: never merged with the one before
        ],
    )


def test_merge_similar_weights_by_size(mixed: snapshots.Snapshot) -> None:
    merged = access.merge_similar(mixed, rate_tolerance=0.1)  # 2 of 20 samples
    assert _regions(merged) == [
        (0, 2 * MiB, 11, 3),
        (2 * MiB, 3 * MiB, 0, 8),
        (4 * MiB, 5 * MiB, 0, 8),
    ]
    assert merged.time_us == mixed.time_us
    assert len(_regions(access.merge_similar(mixed, rate_tolerance=0.05))) == 4


def test_fit_for_display_picks_the_smallest_tolerance(mixed: snapshots.Snapshot) -> None:
    shown, tolerance = access.fit_for_display(mixed, 10)
    assert (shown, tolerance) == (mixed, 0.0)
    shown, tolerance = access.fit_for_display(mixed, 3)
    assert tolerance == 0.1
    assert len(_regions(shown)) == 3
    # Gaps are never bridged: at most tolerance it still shows two regions.
    shown, tolerance = access.fit_for_display(mixed, 1)
    assert tolerance == 1.0
    assert _regions(shown) == [(0, 3 * MiB, 7, 5), (4 * MiB, 5 * MiB, 0, 8)]
