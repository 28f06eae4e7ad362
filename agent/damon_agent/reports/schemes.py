"""The schemes report: what each DAMOS scheme tried and applied over a recording.

``scheme_stats`` records carry cumulative counters (as the kernel's ``schemes/N/stats``
do), so the last record holds the totals. Schemes are matched across records by position;
a scheme's label is its ``name`` when the recording gives one. The applied-bytes rate is
the final ``sz_applied`` over the time from the recording's start to the last record.

Filter-passed bytes (``sz_ops_filter_passed``: bytes the scheme's operations-layer
filters let through, e.g. "anonymous and cold") are shown only where they were counted,
and ``n/a`` elsewhere, so that a 0 always means "counted, none passed". Only the kernel
counts them, since Linux 6.14 (``ops.kernel.capabilities.FEATURE_SINCE``); the
in-process engines (sim, userspace) evaluate no per-page filter. A writer may still put
a 0 in a recording from a backend that does not count, so what the recording's ``meta``
says of its backend and kernel is trusted over the entry (``filter_passed_counting``);
an entry without the counter is not counted either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from damon_agent.api import units as api_units
from damon_agent.ops.kernel import capabilities as kernel_caps
from damon_agent.reports import errors, units

COLUMNS = (
    "scheme",
    "action",
    "tried",
    "tried bytes",
    "applied",
    "applied bytes",
    "filter-passed bytes",
    "qt_exceeds",
    "applied/s",
)
NOT_COUNTED: Final = "n/a"
FILTER_PASSED_FEATURE: Final = "sz_ops_filter_passed"
# Backends whose DAMOS engine is the project's own: they drop per-page (ops) filters, so
# nothing is counted as having passed one.
IN_PROCESS_BACKENDS: Final = frozenset({"sim", "userspace"})


@dataclass(frozen=True)
class FilterPassedCounting:
    """Whether a recording's backend counted filter-passed bytes; if not, why not."""

    counted: bool
    reason: str = ""


def filter_passed_counting(meta: Mapping[str, object]) -> FilterPassedCounting:
    """What the recording's ``meta`` says of its backend counting ``sz_ops_filter_passed``.

    A recording that does not name its backend (written by hand, or by another tool) is
    trusted: its entries' counters are shown where present.
    """
    backend = meta.get("backend")
    if backend in IN_PROCESS_BACKENDS:
        return FilterPassedCounting(
            False, f"the {backend} backend evaluates no per-page (ops) filters"
        )
    release = meta.get("kernel_release")
    if backend == "kernel" and isinstance(release, str):
        since = kernel_caps.FEATURE_SINCE[FILTER_PASSED_FEATURE]
        version = kernel_caps.parse_version(release)
        # (0, 0): a release string that names no version; trust the entries then.
        if version != (0, 0) and version < kernel_caps.parse_version(since):
            return FilterPassedCounting(
                False, f"Linux {release} has no {FILTER_PASSED_FEATURE}; it came with {since}"
            )
    return FilterPassedCounting(True)


def _counter(entry: Mapping[str, object], name: str) -> int:
    value = entry.get(name, 0)
    return value if isinstance(value, int) else 0


def _filter_passed(entry: Mapping[str, object], counting: FilterPassedCounting) -> str:
    value = entry.get(FILTER_PASSED_FEATURE)
    if not counting.counted or not isinstance(value, int) or isinstance(value, bool):
        return NOT_COUNTED
    return api_units.format_bytes(value)


def render(
    scheme_stats: Sequence[tuple[int, Sequence[Mapping[str, object]]]],
    *,
    start_us: int = 0,
    meta: Mapping[str, object] | None = None,
) -> str:
    """A table with one row per scheme of the last ``scheme_stats`` record.

    ``meta``: the recording's header, which says whether filter-passed bytes were counted
    (module docstring); without it, the entries are trusted.
    """
    if not scheme_stats:
        raise errors.SelectionError(
            "the recording holds no scheme stats (record with damon-agent run --scheme FILE)"
        )
    counting = filter_passed_counting(meta or {})
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
                _filter_passed(entry, counting),
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
        return "\n".join([header, "(no schemes)"])
    filter_column = COLUMNS.index("filter-passed bytes")
    if any(row[filter_column] == NOT_COUNTED for row in rows[1:]):
        # Say why once, so that n/a is never read as "none passed".
        why = counting.reason or f"the recording carries no {FILTER_PASSED_FEATURE}"
        table.append(f"{NOT_COUNTED}: filter-passed bytes not counted ({why})")
    return "\n".join([header, *table])
