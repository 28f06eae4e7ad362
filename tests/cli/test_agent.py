"""damon-agent: the sim run end to end, its recording rendered by damonctl, and errors."""

from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys
import types

import pytest

import damon_agent.cli
from damon_agent.cli import agent
from damon_agent.reports import recording
from damon_agent.runtime import standalone
from damon_agent.schemes.stats import SchemeCounters

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MiB = 1 << 20

BAD_WORKLOAD = """\
name: bad
targets:
  - name: app
    ranges:
      - {name: hot, size: 12Q}
    phases:
      - {duration: 1s, access: {hot: hot}}
"""
BAD_SCHEME = """\
schemes:
  - name: oops
    action: explode
"""


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = agent.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sim_run_prints_final_snapshot_and_records(
    repo: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "r.jsonl"
    workload = repo / "examples/workloads/hot-cold.yaml"
    code, out, err = _run(
        ["run", "--workload", str(workload), "--duration", "3s", "--record", str(out_path)],
        capsys,
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "time 3.000 s  (sampling 5 ms, aggregation 200 ms)"
    assert lines[1] == "target 0 (app)"
    total = next(line for line in lines if line.startswith("total "))
    assert total.startswith("total 1.000 GiB in ")
    # The workload's hot range is 128 MiB of its 1 GiB; the monitor finds about that much.
    accessed_mib = float(total.split("accessed ")[1].split()[0])
    assert 100 <= accessed_mib <= 160
    assert f"recorded 15 snapshots to {out_path}" in out  # 3 s of 200 ms aggregations
    # Progress without a TTY: a line every 2 simulated seconds, and the last one.
    progress = [line for line in err.splitlines() if "simulated" in line]
    assert progress[0].startswith("damon-agent: 0.200 s / 3.000 s simulated, ")
    assert progress[-1].startswith("damon-agent: 3.000 s / 3.000 s simulated, ")

    rec = recording.read_recording(out_path)
    assert len(rec.snapshots) == 15
    assert rec.meta["backend"] == "sim"
    assert rec.meta["seed"] == 0
    assert recording.target_names(rec.meta) == {0: "app"}
    assert rec.snapshots[-1].time_us - rec.start_us == 3_000_000


def test_same_seed_same_recording(
    repo: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workload = str(repo / "examples/workloads/phase-change.yaml")
    paths = [tmp_path / name for name in ("a.jsonl", "b.jsonl", "c.jsonl")]
    for path, seed in zip(paths, ("5", "5", "6"), strict=True):
        argv = ["run", "--workload", workload, "--duration", "1s", "--record", str(path)]
        assert _run([*argv, "--seed", seed, "--quiet"], capsys)[0] == 0
    a, b, c = (path.read_text() for path in paths)
    assert a == b
    assert a.splitlines()[1:] != c.splitlines()[1:]


def test_quiet_prints_no_progress(repo: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    workload = str(repo / "examples/workloads/hot-cold.yaml")
    code, out, err = _run(["run", "--workload", workload, "--duration", "1s", "-q"], capsys)
    assert code == 0
    assert err == ""
    assert "recorded" not in out


def test_sim_run_with_schemes_prints_and_records_stats(
    repo: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "s.jsonl"
    code, out, err = _run(
        [
            "run",
            "--workload",
            str(repo / "examples/workloads/hot-cold.yaml"),
            "--scheme",
            str(repo / "examples/schemes/stat.yaml"),
            "--duration",
            "2s",
            "--record",
            str(out_path),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    table = out.split("scheme stats at 2.000 s")[1].splitlines()
    assert table[1].split()[:2] == ["scheme", "action"]
    name, action, tried = table[2].split()[:3]
    assert (name, action) == ("stat-all", "stat")
    assert int(tried) > 0
    rec = recording.read_recording(out_path)
    assert len(rec.scheme_stats) == len(rec.snapshots) == 20
    last = rec.scheme_stats[-1][1][0]
    assert last["name"] == "stat-all"
    assert last["nr_tried"] == int(tried)
    assert "tried_regions" not in last


def test_bad_workload_names_field_and_exits_2(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_WORKLOAD)
    code, _, err = _run(["run", "--workload", str(path), "--duration", "1s"], capsys)
    assert code == 2
    assert "targets[0].ranges[0].size" in err
    assert "Traceback" not in err


def test_bad_scheme_names_field_and_exits_2(
    repo: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad-scheme.yaml"
    path.write_text(BAD_SCHEME)
    workload = str(repo / "examples/workloads/hot-cold.yaml")
    code, _, err = _run(["run", "--workload", workload, "--scheme", str(path)], capsys)
    assert code == 2
    assert "schemes[0].action" in err
    assert "'explode'" in err


def test_scheme_the_sim_cannot_run_exits_2(
    repo: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("schemes:\n  - {name: thp, action: hugepage}\n")
    workload = str(repo / "examples/workloads/hot-cold.yaml")
    code, _, err = _run(["run", "--workload", workload, "--scheme", str(path)], capsys)
    assert code == 2
    assert "scheme thp: action hugepage is not available on paddr" in err


def test_missing_workload_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["run", "--workload", str(tmp_path / "none.yaml")], capsys)
    assert code == 2
    assert "none.yaml" in err
    assert "cannot read" in err


def test_unwritable_record_exits_1(
    repo: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workload = str(repo / "examples/workloads/hot-cold.yaml")
    record = str(tmp_path / "no-such-dir" / "r.jsonl")
    code, _, err = _run(["run", "--workload", workload, "--record", record, "-q"], capsys)
    assert code == 1
    assert "cannot write recording" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--backend", "sim"], "the sim backend needs --workload"),
        (["run", "--workload", "w.yaml", "--duration", "soon"], "--duration: 'soon'"),
        (["run", "--workload", "w.yaml", "--duration", "0"], "needs a positive time"),
        (["run", "--workload", "w.yaml", "--pid", "1"], "--pid and --cgroup need a real node"),
        (["run", "--pid", "1", "--cgroup", "/a"], "not allowed with argument --pid"),
        (["run", "--backend", "kernel", "--workload", "w.yaml"], "--workload is for the sim"),
        (["run", "--backend", "vm"], "invalid choice: 'vm'"),
        ([], "required: COMMAND"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        agent.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_interrupt_exits_130(
    repo: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(agent.standalone, "run", interrupted)
    workload = str(repo / "examples/workloads/hot-cold.yaml")
    code, _, err = _run(["run", "--workload", workload, "--record", "/tmp/x.jsonl"], capsys)
    assert code == 130
    assert "interrupted" in err
    assert "holds what was monitored so far" in err


def test_daemon_gets_the_rest_of_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("damon_agent.cli.daemon")

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "damon_agent.cli.daemon", fake)
    monkeypatch.setattr(damon_agent.cli, "daemon", fake, raising=False)
    assert agent.main(["daemon", "--node-name", "n1", "--help"]) == 7
    assert seen == [["--node-name", "n1", "--help"]]


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        agent.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("damon-agent 0.")
    with pytest.raises(SystemExit):
        agent.main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--workload W.yaml" in out
    assert "examples:" in out


def test_end_to_end_console_scripts(
    repo: pathlib.Path, tmp_path: pathlib.Path, console_script: pathlib.Path
) -> None:
    """The README's first command, then the three reports on its recording."""
    record = tmp_path / "r.jsonl"
    run = subprocess.run(
        [
            console_script / "damon-agent",
            "run",
            "--workload",
            repo / "examples/workloads/hot-cold.yaml",
            "--duration",
            "20s",
            "--record",
            record,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "recorded 100 snapshots" in run.stdout  # 20 s of 200 ms aggregations
    assert "20.000 s / 20.000 s simulated" in run.stderr

    def damonctl(*args: object) -> str:
        done = subprocess.run(
            [console_script / "damonctl", "report", *args, "--input", record],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    access = damonctl("access")
    assert "total 1.000 GiB in " in access
    wss = damonctl("wss").splitlines()
    median = next(line for line in wss if line.split()[0] == "50")
    # The hot range is 128 MiB: once converged the monitor reports about that.
    value, unit = median.split()[1:]
    assert unit == "MiB"
    assert 120 <= float(value) <= 136
    png = tmp_path / "heat.png"
    heat = damonctl("heatmap", "--output", png)
    assert heat.splitlines()[2].split("|")[1][0] in "123456789"  # hot range starts the map
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    assert len(data) > 10_000


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress(elapsed_s: int) -> standalone.Progress:
    return standalone.Progress(
        elapsed_us=elapsed_s * 1_000_000,
        duration_us=20_000_000,
        nr_regions=42,
        nr_snapshots=elapsed_s * 10,
        wss_bytes=128 * MiB,
        schemes=(
            standalone.SchemeTotals(
                "cold", "pageout", SchemeCounters(sz_tried=4 * MiB, sz_applied=2 * MiB)
            ),
        ),
    )


def test_progress_bar_on_a_terminal() -> None:
    terminal = _Terminal()
    reporter = agent._ProgressReporter(terminal, quiet=False)
    reporter.update(_progress(5))
    reporter.update(_progress(10))
    reporter.finish()
    frames = terminal.getvalue().split("\r")[1:]
    assert len(frames) == 2
    assert frames[1].startswith("[" + "#" * 15 + "." * 15 + "] 10.000 s / 20.000 s simulated")
    assert "42 regions, wss 128.000 MiB; cold: tried 4.000 MiB, applied 2.000 MiB" in frames[1]
    assert terminal.getvalue().endswith("\n")


def test_progress_lines_without_a_terminal_every_two_seconds() -> None:
    stream = io.StringIO()
    reporter = agent._ProgressReporter(stream, quiet=False)
    for second in range(21):
        reporter.update(_progress(second))
    reporter.finish()
    times = [line.split()[1] for line in stream.getvalue().splitlines()]
    assert times == [f"{t}.000" for t in range(0, 21, 2)]


def test_probe_on_a_kernel_without_damon_answers_and_exits_0(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "no-damon-admin")
    assert agent.main(["probe", "--json", "--admin", missing]) == 0
    assert json.loads(capsys.readouterr().out) == {"damon": False}
    assert agent.main(["probe", "--admin", missing]) == 0
    assert "this kernel has no DAMON" in capsys.readouterr().out
