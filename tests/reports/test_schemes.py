from __future__ import annotations

import pytest

from damon_agent.reports import errors, schemes

MiB = 1 << 20


def test_table_from_the_last_record() -> None:
    records: list[tuple[int, list[dict[str, object]]]] = [
        (
            1_000_000,
            [
                {
                    "name": "reclaim-cold",
                    "action": "pageout",
                    "nr_tried": 1,
                    "sz_tried": MiB,
                    "nr_applied": 1,
                    "sz_applied": MiB,
                    "qt_exceeds": 0,
                }
            ],
        ),
        (
            4_000_000,
            [
                {
                    "name": "reclaim-cold",
                    "action": "pageout",
                    "nr_tried": 41,
                    "sz_tried": 164 * MiB,
                    "nr_applied": 40,
                    "sz_applied": 160 * MiB,
                    "qt_exceeds": 3,
                },
                {"action": "stat", "nr_tried": 7, "sz_tried": 2 * MiB},
            ],
        ),
    ]
    assert schemes.render(records).splitlines() == [
        "scheme stats at 4.000 s (2 records)",
        "scheme        action   tried  tried bytes  applied  applied bytes  qt_exceeds"
        "     applied/s",
        "reclaim-cold  pageout     41  164.000 MiB       40    160.000 MiB           3"
        "  40.000 MiB/s",
        "#1            stat         7    2.000 MiB        0            0 B           0"
        "         0 B/s",
    ]


def test_rate_needs_elapsed_time() -> None:
    text = schemes.render([(5, [{"name": "a", "sz_applied": 10}])], start_us=5)
    assert text.splitlines()[-1].endswith(" -")


def test_no_records() -> None:
    with pytest.raises(errors.SelectionError, match="no scheme stats"):
        schemes.render([])
