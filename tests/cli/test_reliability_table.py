"""bench/reliability_table.py: JUnit results into the table of docs/reliability.md."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from typing import Any

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "reliability_table", REPO / "bench" / "reliability_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["reliability_table"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


JUNIT = """<testsuites><testsuite>
<testcase classname="tests.a.test_x" name="test_one[p1]"/>
<testcase classname="tests.a.test_x" name="test_one[p2]"><failure message="boom"/></testcase>
<testcase classname="tests.a.test_x" name="test_two"/>
</testsuite></testsuites>"""


def test_rows_get_their_cases_results_or_where_they_run(tmp_path: pathlib.Path) -> None:
    table = _module()
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    results = table.read_junit(junit)
    rows = [
        table.Row("f1", "o1", ("tests/a/test_x.py::test_two",)),
        table.Row("f2", "o2", ("tests/a/test_x.py::test_one", "tests/a/test_x.py::test_two")),
        table.Row("f3", "a | b", ("tests/vm/test_y.py::test_z",), runs_in="vm"),
    ]
    lines = table.render(rows, results).splitlines()
    assert lines[2].endswith("| passed (1) |")
    assert lines[3].endswith("| FAILED (1 of 3) |")
    assert "a \\| b" in lines[4] and lines[4].endswith("| not run: vm (see CI) |")
    document = f"head\n{table.START}\nold\n{table.END}\ntail\n"
    assert table.rewrite(document, "new") == f"head\n{table.START}\nnew\n{table.END}\ntail\n"


def test_every_row_names_tests_that_exist() -> None:
    table = _module()
    for row in table.ROWS:
        for test in row.tests:
            path, name = test.split("::")
            assert f"def {name}(" in (REPO / path).read_text(), test


def test_kernel_suite_reports_count_beside_junit_and_a_cut_line_is_left_out(
    tmp_path: pathlib.Path,
) -> None:
    table = _module()
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    guest_612, guest_73 = tmp_path / "kernel-6.12.jsonl", tmp_path / "kernel-7.3.jsonl"
    line = '{{"nodeid": "tests/k/test_k.py::test_k[{p}]", "outcome": "{o}", "message": ""}}\n'
    guest_612.write_text(line.format(p=1, o="passed") + line.format(p=2, o="passed"))
    guest_73.write_text(line.format(p=1, o="passed") + '{"nodeid": "tests/k/test_k.py::te')
    rows = [
        table.Row("k", "o", ("tests/k/test_k.py::test_k",), runs_in="kernel"),
        table.Row("x", "o", ("tests/a/test_x.py::test_two",)),
    ]
    results = table.merge(
        table.read_junit(junit),
        table.read_suite_report(guest_612),
        table.read_suite_report(guest_73),
    )
    lines = table.render(rows, results).splitlines()
    assert lines[2].endswith("| passed (3) |"), lines
    assert lines[3].endswith("| passed (1) |"), lines
    guest_73.write_text(line.format(p=1, o="failed"))
    lines = table.render(rows, table.read_suite_report(guest_73)).splitlines()
    assert lines[2].endswith("| FAILED (1 of 1) |"), lines


def test_the_command_wants_results_or_run_and_names_a_missing_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _module()
    for argv in ([], ["--run", "--junit", str(tmp_path / "j.xml")]):
        with pytest.raises(SystemExit) as stop:
            table.main(argv)
        assert stop.value.code == 2, argv
        assert "either --run or results" in capsys.readouterr().err
    missing = tmp_path / "kernel-7.3.jsonl"
    with pytest.raises(SystemExit) as stop:
        table.main(["--suite-report", str(missing), "--check"])
    assert stop.value.code == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
