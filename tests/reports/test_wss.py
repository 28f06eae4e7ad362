from __future__ import annotations

import pytest
from reports_support import make_snapshot

from damon_agent.reports import errors, wss

MiB = 1 << 20


def test_wss_counts_accessed_regions_of_every_target() -> None:
    snap = make_snapshot(0, [(0, MiB, 1, 0), (MiB, 5 * MiB, 0, 3)], [(0, 2 * MiB, 7, 0)])
    assert wss.working_set_size(snap) == 3 * MiB


def test_report() -> None:
    # WSS over time: 1, 4, 2, 3 MiB -> sorted 1 2 3 4.
    snaps = [
        make_snapshot((i + 1) * 100_000, [(0, n * MiB, 1, 0), (n * MiB, 10 * MiB, 0, 0)])
        for i, n in enumerate((1, 4, 2, 3))
    ]
    assert wss.render(snaps).splitlines() == [
        "working set size over 4 snapshots (0.100 s .. 0.400 s)",
        "percentile           wss",
        "         0     1.000 MiB",
        "        25     1.000 MiB",
        "        50     2.000 MiB",
        "        75     3.000 MiB",
        "       100     4.000 MiB",
        "   average     2.500 MiB",
    ]


def test_no_snapshot_is_an_error() -> None:
    with pytest.raises(errors.SelectionError, match="no snapshot"):
        wss.render([])
