"""The README's capability table is the one docs/capabilities/ renders to.

docs/capabilities/<series>.json are the probes of the VM's kernel matrix
(scripts/capability-table writes them and the table; the kernel suites check each file
against a fresh probe in its guest). Here: the committed table is not stale, and the
rendering says what each cell means.
"""

from __future__ import annotations

import json
from pathlib import Path

from damon_agent.ops.kernel import capabilities
from damon_agent.reports import capabilities as table

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "capabilities"
MATRIX = ("6.1", "6.12", "6.18", "7.3")
BEGIN, END = "<!-- capabilities:begin -->", "<!-- capabilities:end -->"


def test_readme_table_is_rendered_from_the_kept_probes() -> None:
    kept = {s: json.loads((DOCS / f"{s}.json").read_text()) for s in MATRIX}
    columns = {
        s: None if data.get("damon") is False else table.from_json(data) for s, data in kept.items()
    }
    readme = (REPO / "README.md").read_text()
    assert BEGIN in readme and END in readme, "README.md lacks the capability table markers"
    committed = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")
    assert committed == table.markdown_table(columns).strip("\n"), (
        "README's capability table is stale: run scripts/capability-table"
    )


def test_a_kernel_without_damon_is_a_column_of_dashes() -> None:
    rendered = table.markdown_table(
        {"6.1": None, "6.18": capabilities.from_version_table("6.18.15")}
    )
    row = next(line for line in rendered.splitlines() if line.startswith("| `filter_allow`"))
    assert row == f"| `filter_allow` | 6.14 | {table.NO} | {table.YES} |"
    vaddr = next(line for line in rendered.splitlines() if "actions on `vaddr`" in line)
    cells = [cell.strip() for cell in vaddr.strip("|").split("|")]
    assert cells[2] == table.NO and "migrate_cold" in cells[3]


def test_reports_survive_json() -> None:
    report = capabilities.from_version_table("6.12.117")
    assert table.from_json(json.loads(json.dumps(table.to_json(report)))) == report
