"""The schemes report: what each DAMOS scheme tried and applied over a recording.

``scheme_stats`` records carry cumulative counters (as the kernel's ``schemes/N/stats``
do), so the last record holds the totals. Schemes are matched across records by position;
a scheme's label is its ``name`` when the recording gives one. The applied-bytes rate is
the final ``sz_applied`` over the time from the recording's start to the last record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from damon_agent.api import units as api_units
from damon_agent.reports import errors, units

COLUMNS = (
    "scheme",
    "action",
    "tried",
    "tried bytes",
    "applied",
    "applied bytes",
    "qt_exceeds",
    "applied/s",
)


def _counter(entry: Mapping[str, object], name: str) -> int:
    value = entry.get(name, 0)
    return value if isinstance(value, int) else 0


def render(
    scheme_stats: Sequence[tuple[int, Sequence[Mapping[str, object]]]], *, start_us: int = 0
) -> str:
    """A table with one row per scheme of the last ``scheme_stats`` record."""
    if not scheme_stats:
        raise errors.SelectionError(
            "the recording holds no scheme stats (record with damon-agent run --scheme FILE)"
        )
    last_us, last = scheme_stats[-1]
    elapsed_s = (last_us - start_us) / 1e6
    rows = [COLUMNS]
    for index, entry in enumerate(last):
        name = entry.get("name")
        action = entry.get("action")
        sz_applied = _counter(entry, "sz_applied")
        rate = api_units.format_bytes(sz_applied / elapsed_s) + "/s" if elapsed_s > 0 else "-"
        rows.append(
            (
                name if isinstance(name, str) and name else f"#{index}",
                action if isinstance(action, str) else "-",
                str(_counter(entry, "nr_tried")),
                api_units.format_bytes(_counter(entry, "sz_tried")),
                str(_counter(entry, "nr_applied")),
                api_units.format_bytes(sz_applied),
                str(_counter(entry, "qt_exceeds")),
                rate,
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(COLUMNS))]
    text_columns = {0, 1}
    table = [
        "  ".join(
            cell.ljust(widths[c]) if c in text_columns else cell.rjust(widths[c])
            for c, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    header = (
        f"scheme stats at {units.format_seconds(last_us - start_us)}"
        f" ({len(scheme_stats)} record{'' if len(scheme_stats) == 1 else 's'})"
    )
    if not last:
        table = ["(no schemes)"]
    return "\n".join([header, *table])
