"""What each kernel's DAMON offers, as the README's table and as one node's listing.

The table's columns are kernels (a series such as ``6.18``), its rows every feature the
capability tables of ``ops.kernel.capabilities`` know: named sysfs features, operations
sets, actions, filter types and quota goal metrics, as a probe of that kernel found them,
plus one row per operations set for the actions it carries out there (from the kernel's
documentation: the sysfs interface accepts any action on any set). A column of ``None``
is a kernel without DAMON at all.

The reports serialise to and from JSON (``to_json``/``from_json``), so that the probes of
the VM's kernel matrix can be kept in docs/capabilities/ and the README's table rendered
from them and checked against them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from damon_agent.ops.kernel import capabilities

YES = "✓"
NO = "–"


def to_json(report: capabilities.CapabilityReport) -> dict[str, Any]:
    return {
        "kernel_release": report.kernel_release,
        "method": report.method,
        "operations": list(report.operations),
        "actions": list(report.actions),
        "filter_types": list(report.filter_types),
        "goal_metrics": list(report.goal_metrics),
        "features": dict(sorted(report.features.items())),
    }


def from_json(data: Mapping[str, Any]) -> capabilities.CapabilityReport:
    return capabilities.CapabilityReport(
        kernel_release=str(data["kernel_release"]),
        method=str(data["method"]),
        operations=tuple(data["operations"]),
        actions=tuple(data["actions"]),
        filter_types=tuple(data["filter_types"]),
        goal_metrics=tuple(data["goal_metrics"]),
        features={str(k): bool(v) for k, v in data["features"].items()},
    )


def _carried_out(report: capabilities.CapabilityReport, operations: str) -> str:
    if operations not in report.operations:
        return NO
    table = (
        capabilities.OPS_ACTIONS
        if report.has("filter_allow")
        else capabilities.REJECT_ONLY_OPS_ACTIONS
    )
    actions = [a for a in report.actions if a in table.get(operations, frozenset())]
    return " ".join(actions) or NO


def markdown_table(columns: Mapping[str, capabilities.CapabilityReport | None]) -> str:
    """The capability table, one column per kernel series, in the given order."""
    known = capabilities.from_version_table("0.0").table()  # every row, with its "since"
    found = {
        key: {} if report is None else {name: have for name, have, _ in report.table()}
        for key, report in columns.items()
    }
    header = ["feature", "since", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, _, version in known:
        cells = [YES if found[key].get(name) else NO for key in columns]
        lines.append(f"| `{name}` | {version} | " + " | ".join(cells) + " |")
    for operations in ("vaddr", "paddr"):
        cells = [
            NO if report is None else _carried_out(report, operations)
            for report in columns.values()
        ]
        lines.append(f"| actions on `{operations}` | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def listing(report: capabilities.CapabilityReport) -> str:
    """One kernel's features as aligned text (``damon-agent probe``)."""
    how = (
        "probed with a scratch kdamond"
        if report.method == "probed"
        else "from the version table (DAMON is in use, so nothing was probed)"
    )
    rows = report.table()
    width = max(len(name) for name, _, _ in rows)
    lines = [f"kernel {report.kernel_release}: {how}"]
    lines += [
        f"  {name:<{width}}  {'yes' if have else 'no ':<3}  (Linux {version})"
        for name, have, version in rows
    ]
    for operations in report.operations:
        lines.append(f"  actions on {operations}: {_carried_out(report, operations)}")
    return "\n".join(lines) + "\n"
