"""damonctl on recordings written with the real writer: output, exit codes, messages."""

from __future__ import annotations

import pathlib
import subprocess

import numpy as np
import pytest

from damon_agent.cli import damonctl
from damon_agent.core import snapshots
from damon_agent.reports import recording

MiB = 1 << 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _snapshot(time_us: int, hot_nr: int) -> snapshots.Snapshot:
    target = snapshots.TargetSnapshot(
        target_id=0,
        start=np.array([0x1000000, 0x1400000], dtype=np.int64),
        end=np.array([0x1400000, 0x5000000], dtype=np.int64),
        nr_accesses=np.array([hot_nr, 0], dtype=np.int64),
        age=np.array([1, time_us // 100_000], dtype=np.int64),
    )
    return snapshots.Snapshot(time_us, 5_000, 100_000, (target,))


@pytest.fixture
def rec(tmp_path: pathlib.Path) -> pathlib.Path:
    """Ten snapshots 0.1..1.0 s; the hot 4 MiB is accessed 2..20 times of 20."""
    path = tmp_path / "r.jsonl"
    meta = {"start_us": 0, "targets": [{"target_id": 0, "name": "app"}]}
    with recording.RecordingWriter(path, meta) as writer:
        for i in range(1, 11):
            writer.snapshot(_snapshot(i * 100_000, 2 * i))
            writer.scheme_stats(i * 100_000, [{"name": "s", "action": "stat", "nr_tried": i}])
            writer.footprint(i * 100_000, {"rss": i * MiB})
    return path


def test_access_last_and_at(rec: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert damonctl.main(["report", "access", "--input", str(rec)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "time 1.000 s  (sampling 5 ms, aggregation 100 ms)"
    assert lines[1] == "target 0 (app)"
    assert lines[2].split()[1:] == ["4.000", "MiB", "100", "%", "100", "ms"]

    assert damonctl.main(["report", "access", "-i", str(rec), "--at", "300ms"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("time 0.300 s")
    assert lines[2].split()[1:4] == ["4.000", "MiB", "30"]


def test_access_detailed(rec: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert damonctl.main(["report", "access", "-i", str(rec), "--style", "detailed"]) == 0
    out = capsys.readouterr().out
    assert "0x0000000001000000  0x0000000001400000" in out
    assert "20/20" in out


def test_access_max_regions_merges(rec: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert damonctl.main(["report", "access", "-i", str(rec), "--max-regions", "1"]) == 0
    out = capsys.readouterr().out
    assert "total 64.000 MiB in 1 region," in out
    assert "shown merged" in out


def test_wss(rec: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert damonctl.main(["report", "wss", "-i", str(rec)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "working set size over 10 snapshots (0.100 s .. 1.000 s)"
    assert lines[2].split() == ["0", "4.000", "MiB"]


def test_heatmap_text_and_png(
    rec: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "heat.png"
    assert (
        damonctl.main(["report", "heatmap", "-i", str(rec), "-o", str(png), "--columns", "16"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    # 64 MiB over 16 columns: the first column is the hot 4 MiB.
    assert lines[2] == "0.100 s |1000000000000000|"
    assert lines[11] == "1.000 s |9000000000000000|"
    assert lines[-1] == f"wrote {png}"
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_schemes_and_footprints(rec: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert damonctl.main(["report", "schemes", "-i", str(rec)]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[:3] == ["s", "stat", "10"]
    assert damonctl.main(["report", "footprints", "-i", str(rec)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["rss"].split()[1:3] == ["1.000", "MiB"]
    assert rows["wss"].split()[-2:] == ["4.000", "MiB"]


def test_missing_input_exits_2(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert damonctl.main(["report", "wss", "-i", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl does not exist" in capsys.readouterr().err


def test_bad_line_names_line_and_field(
    rec: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = rec.read_text().splitlines()
    # Line 5: the second snapshot (after the header and the first three records).
    lines[4] = lines[4].replace('"aggr_us":100000', '"aggr_us":"x"')
    rec.write_text("\n".join(lines) + "\n")
    assert damonctl.main(["report", "access", "-i", str(rec)]) == 2
    err = capsys.readouterr().err
    assert "line 5: field 'aggr_us': expected an integer" in err
    assert "Traceback" not in err


def test_unknown_version_exits_2(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "v9.jsonl"
    path.write_text('{"format":"damon-k8s-recording","version":9,"meta":{}}\n')
    assert damonctl.main(["report", "heatmap", "-i", str(path)]) == 2
    assert "unsupported recording version 9" in capsys.readouterr().err


def test_torn_tail_warns_but_renders(rec: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    with rec.open("a") as f:
        f.write('{"type":"snap')
    assert damonctl.main(["report", "wss", "-i", str(rec)]) == 0
    captured = capsys.readouterr()
    assert "last line is incomplete" in captured.err
    assert "over 10 snapshots" in captured.out


def test_bad_at(rec: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        damonctl.main(["report", "access", "-i", str(rec), "--at", "12q"])
    assert exit_info.value.code == 2
    assert "--at: '12q' has unknown duration unit" in capsys.readouterr().err
    assert damonctl.main(["report", "access", "-i", str(rec), "--at", "1m"]) == 2
    assert "past the recording's last snapshot" in capsys.readouterr().err


def test_png_to_unwritable_path_exits_1(
    rec: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "missing" / "h.png"
    assert damonctl.main(["report", "heatmap", "-i", str(rec), "-o", str(out)]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_recording_without_scheme_stats(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.jsonl"
    with recording.RecordingWriter(path, {}) as writer:
        writer.snapshot(_snapshot(100_000, 1))
    assert damonctl.main(["report", "schemes", "-i", str(path)]) == 2
    assert "no scheme stats" in capsys.readouterr().err


def test_scheme_stats_of_older_agents_with_dry_run_still_report(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Agents before the planner alone resolved dry runs wrote a ``dry_run`` flag per scheme.
    path = tmp_path / "old.jsonl"
    old = {"name": "reclaim", "action": "pageout", "dry_run": True, "nr_tried": 3}
    with recording.RecordingWriter(path, {"start_us": 0}) as writer:
        writer.snapshot(_snapshot(100_000, 1))
        writer.scheme_stats(100_000, [old])
    assert recording.read_recording(path).scheme_stats == [(100_000, [old])]
    assert damonctl.main(["report", "schemes", "-i", str(path)]) == 0
    assert "reclaim" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [[], ["report"], ["report", "access"], ["report", "nosuch", "-i", "x"]]
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        damonctl.main(argv)
    assert exit_info.value.code == 2


def test_console_script(rec: pathlib.Path, console_script: pathlib.Path) -> None:
    ok = subprocess.run(
        [console_script / "damonctl", "report", "wss", "--input", rec],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "working set size over 10 snapshots" in ok.stdout
    version = subprocess.run(
        [console_script / "damonctl", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert version.returncode == 0
    assert version.stdout.startswith("damonctl ")
    bad = subprocess.run(
        [console_script / "damonctl", "report", "access", "--input", rec.parent / "none"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
