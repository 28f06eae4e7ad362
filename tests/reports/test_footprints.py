from __future__ import annotations

import pytest
from reports_support import make_snapshot

from damon_agent.reports import errors, footprints

MiB = 1 << 20


def test_table() -> None:
    snaps = [make_snapshot(t, [(0, n * MiB, 1, 0)]) for t, n in ((1, 2), (2, 4))]
    records = [
        (1, {"sys_used": 100 * MiB, "rss": 10 * MiB, "vsz": 50 * MiB, "swap": 0}),
        (2, {"sys_used": 300 * MiB, "rss": 30 * MiB, "vsz": 50 * MiB, "swap": 0}),
    ]
    assert footprints.render(snaps, records).splitlines() == [
        "                  0 %         25 %         50 %         75 %        100 %      average",
        "wss         2.000 MiB    2.000 MiB    2.000 MiB    2.000 MiB    4.000 MiB    3.000 MiB",
        "rss        10.000 MiB   10.000 MiB   10.000 MiB   10.000 MiB   30.000 MiB   20.000 MiB",
        "vsz        50.000 MiB   50.000 MiB   50.000 MiB   50.000 MiB   50.000 MiB   50.000 MiB",
        "sys_used  100.000 MiB  100.000 MiB  100.000 MiB  100.000 MiB  300.000 MiB  200.000 MiB",
        "swap              0 B          0 B          0 B          0 B          0 B          0 B",
    ]


def test_only_wss_adds_a_hint() -> None:
    lines = footprints.render([make_snapshot(1, [(0, MiB, 1, 0)])], []).splitlines()
    assert lines[1].split()[0] == "wss"
    assert "no footprint records" in lines[-1]


def test_nothing() -> None:
    with pytest.raises(errors.SelectionError, match="neither snapshots nor footprints"):
        footprints.render([], [])
