"""``damonctl whatif`` and ``reports.whatif`` on recordings made by the sim backend.

The recordings are real: ``damon-agent run --backend sim`` over the example workloads
(hot-cold: 128 MiB hot, 896 MiB never touched; phase-change: the hot set moves every 5 s
across four 256 MiB ranges), recorded without schemes. The what-if is then checked
against what the workloads' ground truth says, and against a live sim run of the same
scheme on the same seed.
"""

from __future__ import annotations

import json
import pathlib
import re
import textwrap

import numpy as np
import pytest
import yaml

from damon_agent.api import schemes as api_schemes
from damon_agent.cli import agent, damonctl
from damon_agent.reports import errors, recording, whatif

REPO = pathlib.Path(__file__).resolve().parents[2]
MiB = 1 << 20
COLD_BYTES = 896 * MiB
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

COLD_PAGEOUT = """\
schemes:
  - name: cold
    action: pageout
    accessPattern:
      accessRate: {min: 0%, max: 0%}
      age: {min: 5s, max: max}
"""


def _record(
    directory: pathlib.Path, workload: str, scheme: pathlib.Path | None = None
) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{workload}.jsonl"
    argv = [
        "run",
        "--backend",
        "sim",
        "--workload",
        str(REPO / "examples" / "workloads" / f"{workload}.yaml"),
        "--duration",
        "20s",
        "--record",
        str(out),
        "--state-dir",
        str(directory / "state"),
        "--quiet",
    ]
    if scheme is not None:
        argv += ["--scheme", str(scheme)]
    assert agent.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def hot_cold(tmp_path_factory: pytest.TempPathFactory) -> recording.Recording:
    return recording.read_recording(_record(tmp_path_factory.mktemp("hot-cold"), "hot-cold"))


@pytest.fixture(scope="module")
def hot_cold_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return _record(tmp_path_factory.mktemp("hot-cold-cli"), "hot-cold")


@pytest.fixture(scope="module")
def phase_change(tmp_path_factory: pytest.TempPathFactory) -> recording.Recording:
    return recording.read_recording(
        _record(tmp_path_factory.mktemp("phase-change"), "phase-change")
    )


def _schemes(text: str) -> tuple[list[whatif.model.Scheme], list[str]]:
    return whatif.prepare_schemes(api_schemes.parse_scheme_file(yaml.safe_load(text)))


def _run(rec: recording.Recording, text: str) -> whatif.WhatIfResult:
    schemes, notes = _schemes(text)
    return whatif.simulate(rec.snapshots, schemes, start_us=rec.start_us, notes=notes)


def test_pageout_of_idle_regions_takes_the_cold_set_and_not_the_hot(
    hot_cold: recording.Recording,
) -> None:
    (cold,) = _run(hot_cold, COLD_PAGEOUT).schemes
    # Every cold byte is paged out, once; the hot 128 MiB never is.
    assert cold.total_applied == COLD_BYTES
    assert all(i.touched_wss_bytes == 0 for i in cold.intervals)
    assert all(i.wss_bytes > 0 for i in cold.intervals)
    # Nothing is old enough before 5 s.
    early = [i for i in cold.intervals if i.time_us - hot_cold.start_us < 5_000_000]
    assert early and sum(i.tried_bytes for i in early) == 0
    # Live, an acted-on region's age restarts: the cold set is tried again only after
    # another 5 s, not at every snapshot (at most once per 5 s of the 15 s left).
    assert cold.total_tried <= 4 * COLD_BYTES


def test_refaults_are_zero_when_the_cold_set_stays_cold(hot_cold: recording.Recording) -> None:
    (cold,) = _run(hot_cold, COLD_PAGEOUT).schemes
    assert cold.estimates_refaults
    assert cold.total_refaults == 0


def test_refaults_count_paged_out_memory_of_a_moving_hot_set(
    phase_change: recording.Recording,
) -> None:
    (cold,) = _run(phase_change, COLD_PAGEOUT).schemes
    # Ranges b, c and d sit idle for 5 s and are paged out; b turns hot at 5 s, c and d
    # at 10 s: all of them are read back in. a, hot again from 15 s, was paged out too.
    assert cold.total_refaults >= 512 * MiB
    refaults_at = {i.time_us - phase_change.start_us: i.refault_bytes for i in cold.intervals}
    before_first_move = sum(v for t, v in refaults_at.items() if t < 5_000_000)
    assert before_first_move == 0
    # A refaulted byte is counted once per time it was paged out.
    assert cold.total_refaults <= cold.total_applied


def test_size_quota_limits_applied_bytes_per_reset_interval(hot_cold: recording.Recording) -> None:
    # 32 MiB a second for the 15 s after the age: less than the 896 MiB cold range.
    quota = COLD_PAGEOUT + "    quota: {size: 32Mi, resetInterval: 1s}\n"
    (limited,) = _run(hot_cold, quota).schemes
    (free,) = _run(hot_cold, COLD_PAGEOUT).schemes
    windows: dict[int, int] = {}
    for interval in limited.intervals:
        second = (interval.time_us - hot_cold.start_us - 1) // 1_000_000
        windows[second] = windows.get(second, 0) + interval.tried_bytes
    assert max(windows.values()) <= 32 * MiB
    assert max(i.applied_bytes for i in free.intervals) > 32 * MiB
    assert 0 < limited.total_applied < free.total_applied
    assert limited.qt_exceeds > 0


def test_prediction_matches_a_live_sim_run_of_the_scheme(
    hot_cold: recording.Recording, tmp_path: pathlib.Path
) -> None:
    text = COLD_PAGEOUT + "    quota: {size: 64Mi, resetInterval: 1s}\n"
    scheme_path = tmp_path / "s.yaml"
    scheme_path.write_text(text)
    live = recording.read_recording(_record(tmp_path, "hot-cold", scheme_path))
    _, (actual,) = live.scheme_stats[-1]
    (predicted,) = _run(hot_cold, text).schemes
    for name, value in (
        ("sz_tried", predicted.total_tried),
        ("sz_applied", predicted.total_applied),
    ):
        measured = actual[name]
        assert isinstance(measured, int)
        assert abs(value - measured) <= 0.1 * measured, (name, value, measured)


def test_tiering_prediction_matches_a_live_sim_run(tmp_path: pathlib.Path) -> None:
    # Hot memory starts on the slow node; promotions and demotions move each range once
    # until the other direction moves it back, so applied stays far below tried.
    scheme_path = REPO / "examples" / "schemes" / "tiering.yaml"
    recorded = recording.read_recording(_record(tmp_path / "plain", "tiering"))
    live = recording.read_recording(_record(tmp_path / "live", "tiering", scheme_path))
    schemes, notes = whatif.prepare_schemes(api_schemes.load_scheme_file(scheme_path))
    result = whatif.simulate(recorded.snapshots, schemes, start_us=recorded.start_us)
    assert any("which node memory starts on" in note for note in notes)
    _, actual = live.scheme_stats[-1]
    by_name = {str(entry["name"]): entry for entry in actual}
    for predicted in result.schemes:
        measured = by_name[predicted.name]["sz_applied"]
        assert isinstance(measured, int)
        assert abs(predicted.total_applied - measured) <= 0.1 * measured, predicted.name
        assert predicted.total_applied < predicted.total_tried


def test_addr_filter_is_evaluated_from_the_recorded_addresses(
    hot_cold: recording.Recording,
) -> None:
    last = hot_cold.snapshots[-1].targets[0]
    cold_start = int(last.start[last.nr_accesses > 0].max())
    cold_start = int(last.end[last.start == cold_start][0])
    text = COLD_PAGEOUT + textwrap.indent(
        f"filters:\n  - {{type: addr, allow: true, addrStart: '{cold_start:#x}', "
        f"addrEnd: '{cold_start + 256 * MiB:#x}'}}\n",
        "    ",
    )
    (cold,) = _run(hot_cold, text).schemes
    assert cold.total_applied == 256 * MiB


def test_what_a_recording_cannot_tell_is_noted() -> None:
    schemes, notes = _schemes(
        textwrap.dedent(
            """\
            schemes:
              - name: anon-cold
                action: pageout
                dryRun: true
                filters: [{type: anon, allow: true}, {type: addr, addrStart: '0', addrEnd: 4Mi}]
                watermarks: {high: 50%, mid: 40%, low: 5%}
                quota:
                  size: 1Gi
                  goals:
                    - {metric: some_mem_psi_us, target: 1ms}
                    - {metric: active_mem_bp, target: 30%}
            """
        )
    )
    (scheme,) = schemes
    assert [f.type for f in scheme.filters] == ["addr"]
    text = "\n".join(notes)
    assert "filter anon cannot be evaluated" in text
    assert "watermarks (free_mem_rate)" in text
    assert "some_mem_psi_us: no recorded signal stands in; its current value is held at 0" in text
    assert "active_mem_bp is fed" in text
    assert "dryRun is ignored" in text


def test_wss_touched_share_of_a_hot_scheme(hot_cold: recording.Recording) -> None:
    text = """\
schemes:
  - name: hot
    action: stat
    accessPattern: {accessRate: {min: 5%, max: 100%}}
"""
    (hot,) = _run(hot_cold, text).schemes
    last = hot.intervals[-1]
    assert last.touched_wss_bytes == last.wss_bytes
    assert hot.total_applied == 0  # stat applies nothing
    assert not hot.estimates_refaults


# ---------------------------------------------------------------------------------------
# The command


def _scheme_file(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_command_prints_a_table_per_scheme(
    hot_cold_path: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scheme = _scheme_file(tmp_path, COLD_PAGEOUT)
    png = tmp_path / "w.png"
    argv = ["whatif", "-i", str(hot_cold_path), "-s", str(scheme), "--png", str(png)]
    assert damonctl.main([*argv, "--rows", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "what-if of 1 scheme over 100 snapshots (0.200 s .. 20.000 s)"
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("time"))
    assert lines[header - 1].startswith("scheme cold (pageout): tried")
    assert "applied 896.000 MiB, refaults 0 B" in lines[header - 1]
    columns = re.split(r"\s{2,}", lines[header].strip())
    rows = [
        dict(zip(columns, re.split(r"\s{2,}", line.strip()), strict=True))
        for line in lines[header + 1 : header + 5]
    ]
    assert [row["time"] for row in rows] == ["5.000 s", "10.000 s", "15.000 s", "20.000 s"]
    assert {row["refaults total"] for row in rows} == {"0 B"}
    assert rows[-1]["applied total"] == "896.000 MiB"
    assert {row["wss touched"] for row in rows} == {"0 %"}
    assert lines[-1] == f"wrote {png}"
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_command_json_has_every_interval(
    hot_cold_path: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scheme = _scheme_file(tmp_path, COLD_PAGEOUT)
    assert damonctl.main(["whatif", "-i", str(hot_cold_path), "-s", str(scheme), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (entry,) = data["schemes"]
    assert len(entry["intervals"]) == 100  # 20 s of 200 ms aggregations
    assert entry["total_applied_bytes"] == COLD_BYTES
    assert sum(i["applied_bytes"] for i in entry["intervals"]) == COLD_BYTES
    assert np.all(np.diff([i["time_us"] for i in entry["intervals"]]) > 0)


@pytest.mark.parametrize(
    ("scheme_text", "expected"),
    [
        (None, "cannot read"),
        ("schemes: [name: x\n", "line 2, column 1"),
        (
            "schemes:\n  - {name: cold, action: pageout, accessPattern: {age: {min: soon}}}\n",
            "schemes[0].accessPattern.age.min",
        ),
        ("schemes:\n  - {name: cold, action: pageout, colour: blue}\n", "schemes[0].colour"),
        ("monitoring: {}\n", "has no schemes"),
    ],
)
def test_bad_scheme_file_is_one_line_naming_the_field(
    hot_cold_path: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    scheme_text: str | None,
    expected: str,
) -> None:
    scheme = tmp_path / "s.yaml"
    if scheme_text is not None:
        scheme.write_text(scheme_text)
    assert damonctl.main(["whatif", "-i", str(hot_cold_path), "-s", str(scheme)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert err.startswith("damonctl: ")


def test_recording_cut_mid_line_is_refused_naming_the_line(
    hot_cold_path: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = hot_cold_path.read_text()
    torn = tmp_path / "torn.jsonl"
    torn.write_text(text[: len(text) - 40])
    line = text.count("\n")  # the cut line is the file's last one
    scheme = _scheme_file(tmp_path, COLD_PAGEOUT)
    argv = ["whatif", "-i", str(torn), "-s", str(scheme)]
    assert damonctl.main(argv) == 2
    err = capsys.readouterr().err
    assert f"line {line}: incomplete" in err
    assert "Traceback" not in err

    assert damonctl.main([*argv, "--allow-torn-tail"]) == 0
    captured = capsys.readouterr()
    assert "over 99 snapshots" in captured.out
    assert "warning" in captured.err


def test_bad_recording_line_is_refused_naming_line_and_field(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "r.jsonl"
    rec.write_text(
        '{"format":"damon-k8s-recording","version":1,"meta":{}}\n'
        '{"type":"snapshot","time_us":100000,"sample_us":5000,"aggr_us":100000,'
        '"targets":[{"target_id":0,"start":[0],"end":[4096],"nr_accesses":["x"],"age":[0]}]}\n'
    )
    scheme = _scheme_file(tmp_path, COLD_PAGEOUT)
    assert damonctl.main(["whatif", "-i", str(rec), "-s", str(scheme)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "nr_accesses" in err
    assert damonctl.main(["whatif", "-i", str(tmp_path / "nope"), "-s", str(scheme)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_simulate_refuses_an_empty_recording() -> None:
    schemes, _ = _schemes(COLD_PAGEOUT)
    with pytest.raises(errors.SelectionError, match="no snapshot"):
        whatif.simulate([], schemes, start_us=0)


def test_snapshot_with_impossible_intervals_is_refused(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "r.jsonl"
    rec.write_text(
        '{"format":"damon-k8s-recording","version":1,"meta":{"start_us":0}}\n'
        '{"type":"snapshot","time_us":100000,"sample_us":200000,"aggr_us":100000,'
        '"targets":[{"target_id":0,"start":[0],"end":[4096],"nr_accesses":[0],"age":[0]}]}\n'
    )
    scheme = _scheme_file(tmp_path, COLD_PAGEOUT)
    assert damonctl.main(["whatif", "-i", str(rec), "-s", str(scheme)]) == 2
    err = capsys.readouterr().err
    assert "snapshot at 0.100 s: aggr_us: 100000 is shorter than sample_us" in err
