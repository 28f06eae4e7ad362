"""A recording cut anywhere (the writer killed mid-line, a copy cut short, a full disk):
``damonctl report`` renders what is whole and warns of the torn line, or refuses the
file naming the line; it never fails with a traceback.

Every report reads the recording the same way (``read_recording``); each is run on cuts
drawn over the whole file, the ones just before and after each line's end included.
"""

from __future__ import annotations

import pathlib
import tempfile

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from damon_agent.cli import damonctl
from damon_agent.core import snapshots
from damon_agent.reports import recording

REPORTS = ["access", "wss", "heatmap", "schemes", "footprints"]


def _recording() -> bytes:
    """Four snapshots with their scheme stats and footprints, as the real writer writes."""
    path = pathlib.Path(tempfile.mkdtemp()) / "r.jsonl"
    with recording.RecordingWriter(path, {"start_us": 0}) as writer:
        for i in range(1, 5):
            target = snapshots.TargetSnapshot(
                target_id=0,
                start=np.array([0x1000000, 0x1400000], dtype=np.int64),
                end=np.array([0x1400000, 0x5000000], dtype=np.int64),
                nr_accesses=np.array([i, 0], dtype=np.int64),
                age=np.array([1, i], dtype=np.int64),
            )
            writer.snapshot(snapshots.Snapshot(i * 100_000, 5_000, 100_000, (target,)))
            writer.scheme_stats(i * 100_000, [{"name": "s", "action": "stat", "nr_tried": i}])
            writer.footprint(i * 100_000, {"rss": i << 20})
    return path.read_bytes()


WHOLE = _recording()
LINE_ENDS = [i for i, byte in enumerate(WHOLE) if byte == ord("\n")]
# Just before a newline (the line's text whole, its newline missing) and just after it.
BOUNDARY_CUTS = sorted({c for end in LINE_ENDS for c in (end, end + 1)})


@pytest.mark.parametrize("report", REPORTS)
def test_a_cut_recording_renders_or_is_refused_with_a_message(
    report: str, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path_factory.mktemp("cut")

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(cut=st.integers(0, len(WHOLE)))
    @example(cut=len(WHOLE) - 3)
    def cut_at(cut: int) -> None:
        path = directory / "cut.jsonl"
        path.write_bytes(WHOLE[:cut])
        code = damonctl.main(["report", report, "-i", str(path)])
        err = capsys.readouterr().err
        torn = cut > 0 and WHOLE[cut - 1] != ord("\n")
        if code == damonctl.EXIT_OK:
            # A line without its newline that is whole JSON is kept, not torn.
            assert ("last line is incomplete" in err) == (torn and cut not in LINE_ENDS), err
        else:
            assert code == damonctl.EXIT_BAD_INPUT, (cut, err)
            # Lines saying what is wrong (a line number, or that nothing whole is left),
            # after the torn line's warning if there was one.
            lines = err.splitlines()
            assert lines and all(line.startswith("damonctl: ") for line in lines), err
            assert "warning" not in lines[-1], err
        assert "Traceback" not in err

    for boundary in BOUNDARY_CUTS:
        cut_at = example(cut=boundary)(cut_at)
    cut_at()
