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
        "scheme        action   tried  tried bytes  applied  applied bytes"
        "  filter-passed bytes  qt_exceeds     applied/s",
        "reclaim-cold  pageout     41  164.000 MiB       40    160.000 MiB"
        "                  n/a           3  40.000 MiB/s",
        "#1            stat         7    2.000 MiB        0            0 B"
        "                  n/a           0         0 B/s",
        "n/a: filter-passed bytes not counted (the recording carries no sz_ops_filter_passed)",
    ]


def test_rate_needs_elapsed_time() -> None:
    text = schemes.render([(5, [{"name": "a", "sz_applied": 10}])], start_us=5)
    assert text.splitlines()[2].endswith(" -")  # the row; a footnote follows


def test_no_records() -> None:
    with pytest.raises(errors.SelectionError, match="no scheme stats"):
        schemes.render([])


def _filtered_stat(passed: int) -> list[tuple[int, list[dict[str, object]]]]:
    """One record of a stat scheme with an anon filter and one pageout without filters."""
    return [
        (
            2_000_000,
            [
                {"name": "anon-cold", "action": "stat", "nr_tried": 9, "sz_tried": 64 * MiB,
                 "sz_ops_filter_passed": passed},
                {"name": "reclaim", "action": "pageout", "nr_tried": 3, "sz_tried": 8 * MiB,
                 "nr_applied": 3, "sz_applied": 8 * MiB, "sz_ops_filter_passed": 8 * MiB},
            ],
        )
    ]  # fmt: skip


def _filter_column(text: str) -> list[str]:
    """The filter-passed cell of each scheme row (header and footnote left out)."""
    lines = text.splitlines()
    start = lines[1].index("filter-passed bytes")
    end = start + len("filter-passed bytes")
    return [line[start:end].strip() for line in lines[2:4]]


def test_filter_passed_bytes_shown_where_the_kernel_counts_them_and_zero_is_a_count() -> None:
    meta = {"backend": "kernel", "kernel_release": "6.18.44-fc-v657"}
    text = schemes.render(_filtered_stat(12 * MiB), meta=meta)
    assert _filter_column(text) == ["12.000 MiB", "8.000 MiB"]
    assert "n/a" not in text
    # Counted and none passed: 0 B, not n/a.
    assert _filter_column(schemes.render(_filtered_stat(0), meta=meta)) == ["0 B", "8.000 MiB"]


def test_filter_passed_bytes_are_na_on_a_kernel_before_6_14_whatever_the_recording_says() -> None:
    text = schemes.render(
        _filtered_stat(0), meta={"backend": "kernel", "kernel_release": "6.12.0-55"}
    )
    assert _filter_column(text) == ["n/a", "n/a"]
    assert text.splitlines()[-1] == (
        "n/a: filter-passed bytes not counted "
        "(Linux 6.12.0-55 has no sz_ops_filter_passed; it came with 6.14)"
    )


@pytest.mark.parametrize("backend", ["sim", "userspace"])
def test_filter_passed_bytes_are_na_on_the_in_process_backends(backend: str) -> None:
    text = schemes.render(_filtered_stat(5 * MiB), meta={"backend": backend})
    assert _filter_column(text) == ["n/a", "n/a"]
    assert f"the {backend} backend evaluates no per-page (ops) filters" in text


def test_filter_passed_counting_trusts_a_recording_that_names_no_version() -> None:
    assert schemes.filter_passed_counting({}).counted
    assert schemes.filter_passed_counting({"backend": "kernel", "kernel_release": "x"}).counted
    assert schemes.filter_passed_counting({"backend": "kernel"}).counted
    assert schemes.filter_passed_counting({"backend": "kernel", "kernel_release": "6.14.0"}).counted
    assert not schemes.filter_passed_counting(
        {"backend": "kernel", "kernel_release": "6.13.9"}
    ).counted
