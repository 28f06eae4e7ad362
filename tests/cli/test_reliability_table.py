"""bench/reliability_table.py: JUnit results into the table of docs/reliability.md."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from typing import Any

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
