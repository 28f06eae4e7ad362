"""The heatmap: spans of the monitored space, exact cell values, text and PNG."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
from reports_support import make_snapshot

from damon_agent.reports import errors, heatmap

MiB = 1 << 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_spans_merge_touching_regions_and_leave_out_gaps() -> None:
    snaps = [
        # target 0: [0, 2 MiB) then a gap then [10, 12 MiB); target 1 far away.
        make_snapshot(
            1,
            [(0, MiB, 0, 0), (MiB, 2 * MiB, 0, 0), (10 * MiB, 12 * MiB, 0, 0)],
            [(1 << 40, (1 << 40) + MiB, 0, 0)],
        ),
        # Later the first span grows to 3 MiB; overlapping unions are merged.
        make_snapshot(2, [(0, 3 * MiB, 0, 0), (10 * MiB, 11 * MiB, 0, 0)], []),
    ]
    spans = heatmap.monitored_spans(snaps)
    assert [(s.target_id, s.start, s.end, s.offset) for s in spans] == [
        (0, 0, 3 * MiB, 0),
        (0, 10 * MiB, 12 * MiB, 3 * MiB),
        (1, 1 << 40, (1 << 40) + MiB, 5 * MiB),
    ]


def test_cells_are_coverage_weighted_rates() -> None:
    # max_nr_accesses 20. Target 0: [0,1) MiB at 20/20, [1,4) MiB at 0; target 1: 4 MiB
    # at 5/20 after a huge gap. Four columns of 2 MiB each over 8 monitored MiB.
    snap = make_snapshot(
        100_000,
        [(0, MiB, 20, 0), (MiB, 4 * MiB, 0, 0)],
        [(1 << 40, (1 << 40) + 4 * MiB, 5, 0)],
    )
    hm = heatmap.build([snap], rows=10, columns=4)
    assert hm.rates.shape == (1, 4)
    np.testing.assert_allclose(hm.rates[0], [0.5, 0.0, 0.25, 0.25])
    assert hm.total_bytes == 8 * MiB
    assert hm.row_times_us.tolist() == [100_000]


def test_unmonitored_cells_are_nan_and_blank() -> None:
    snaps = [
        make_snapshot(100_000, [(0, 2 * MiB, 20, 0)]),
        make_snapshot(200_000, [(0, MiB, 20, 0)]),  # the second MiB went away
    ]
    hm = heatmap.build(snaps, rows=10, columns=2)
    assert hm.rates[0].tolist() == [1.0, 1.0]
    assert hm.rates[1, 0] == 1.0
    assert math.isnan(hm.rates[1, 1])
    lines = heatmap.render_text(hm).splitlines()
    assert lines[2:4] == ["0.100 s |99|", "0.200 s |9 |"]


def test_rows_bucket_time_when_there_are_more_snapshots() -> None:
    # 4 snapshots over 0.1..0.4 s into 2 rows: (0.1, 0.2) and (0.3, 0.4); rates 0, 1, 1, 1.
    snaps = [
        make_snapshot(t, [(0, MiB, nr, 0)])
        for t, nr in ((100_000, 0), (200_000, 20), (300_000, 20), (400_000, 20))
    ]
    hm = heatmap.build(snaps, rows=2, columns=1, start_us=100_000)
    assert hm.rates[:, 0].tolist() == [0.5, 1.0]
    assert hm.row_times_us.tolist() == [0, 200_000]


def test_text_report() -> None:
    snaps = [
        make_snapshot(
            100_000,
            [(0x1000000, 0x1400000, 20, 0), (0x1400000, 0x1800000, 0, 0)],
            [(0x7F0000000000, 0x7F0000800000, 2, 0)],
        ),
        make_snapshot(
            200_000,
            [(0x1000000, 0x1400000, 0, 0), (0x1400000, 0x1800000, 10, 0)],
            [(0x7F0000000000, 0x7F0000800000, 0, 0)],
        ),
    ]
    text = heatmap.render(snaps, columns=8, target_names={0: "app"})
    assert text.splitlines() == [
        "access heatmap: rows = time, columns = monitored address space (8 columns of 2.000 MiB)",
        "digits: access rate, 0 = no access seen .. 9 = every sample; blank = not monitored",
        "0.100 s |99001111|",
        "0.200 s |00550000|",
        "address axis, left to right:",
        "  columns   0..3   target 0 (app)  0x1000000-0x1800000 (8.000 MiB)",
        "  columns   4..7   target 1  0x7f0000000000-0x7f0000800000 (8.000 MiB)",
    ]


@pytest.mark.parametrize(
    ("rate", "char"),
    [(math.nan, " "), (0.0, "0"), (1e-6, "1"), (0.5, "5"), (1 / 3, "3"), (1.0, "9")],
)
def test_cell_digit(rate: float, char: str) -> None:
    assert heatmap.cell_digit(rate) == char


def test_errors() -> None:
    with pytest.raises(errors.SelectionError, match="no snapshot"):
        heatmap.build([])
    with pytest.raises(errors.SelectionError, match="no region"):
        heatmap.build([make_snapshot(1, [])])
    with pytest.raises(errors.SelectionError, match="at least 1 row"):
        heatmap.build([make_snapshot(1, [(0, 4096, 0, 0)])], rows=0)


def test_png_is_a_valid_image(tmp_path: pathlib.Path) -> None:
    snaps = [
        make_snapshot(
            t * 100_000,
            [(0, 4 * MiB, t % 20, 0), (8 * MiB, 9 * MiB, 0, 3)],
            [(1 << 40, (1 << 40) + MiB, 20, 1)],
        )
        for t in range(1, 30)
    ]
    out = tmp_path / "heat.png"
    heatmap.write_png(snaps, out, title="test", target_names={0: "app"})
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    # IHDR: width and height (big endian) of the drawn figure, 11 x 6.5 inches at 100 dpi.
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1100, 650)


def test_png_to_unwritable_path(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.OutputError, match="cannot write"):
        heatmap.write_png([make_snapshot(1, [(0, 4096, 0, 0)])], tmp_path / "no" / "x.png")
