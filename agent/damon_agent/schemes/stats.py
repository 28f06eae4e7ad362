"""Per-scheme statistics, as the kernel's ``schemes/N/stats`` and ``tried_regions``.

``nr_tried`` / ``sz_tried``: regions (and bytes) the scheme tried to act on, i.e. that were
in the access pattern, above the quota's score threshold, within the quota and allowed by
the core filters. ``nr_applied`` / ``sz_applied``: those on which the action changed
something, and how many bytes (always 0 for ``stat``).
``sz_ops_filter_passed``: bytes that passed the operations-layer filters. ``qt_exceeds``:
charge windows that ended with the quota used up. ``tried_regions``: the regions tried in
the scheme's last apply, with the access count and age they had then.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from damon_agent.core import fieldwise


@dataclass(frozen=True)
class SchemeCounters:
    """A scheme's cumulative counters: what every layer hands the one above.

    The kernel's ``schemes/N/stats`` files, the DAMOS engine's ``SchemeStats`` and the
    runtime's per-scheme status all meet in this one type. Counters add up field by
    field (one planned scheme run as several kernel schemes; counters carried over when
    a scheme set is swapped).
    """

    nr_tried: int = 0
    sz_tried: int = 0
    nr_applied: int = 0
    sz_applied: int = 0
    sz_ops_filter_passed: int = 0
    qt_exceeds: int = 0

    def __add__(self, other: SchemeCounters) -> SchemeCounters:
        return fieldwise.add(self, other)


@dataclass(frozen=True)
class TriedRegion:
    target_id: int
    start: int
    end: int
    nr_accesses: int
    age: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class SchemeStats:
    name: str
    action: str
    nr_tried: int = 0
    sz_tried: int = 0
    nr_applied: int = 0
    sz_applied: int = 0
    sz_ops_filter_passed: int = 0
    qt_exceeds: int = 0
    nr_applies: int = 0
    """Apply passes the scheme took part in (due and switched on)."""
    activated: bool = True
    """The watermarks' verdict at the last check."""
    effective_quota: int | None = None
    """Bytes of the current charge window's effective size quota; None: no limit."""
    tried_regions: list[TriedRegion] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (for recordings and status reports)."""
        data = asdict(self)
        data["tried_regions"] = [asdict(r) for r in self.tried_regions]
        return data

    def counters(self) -> SchemeCounters:
        return SchemeCounters(
            nr_tried=self.nr_tried,
            sz_tried=self.sz_tried,
            nr_applied=self.nr_applied,
            sz_applied=self.sz_applied,
            sz_ops_filter_passed=self.sz_ops_filter_passed,
            qt_exceeds=self.qt_exceeds,
        )

    def copy(self) -> SchemeStats:
        return SchemeStats(**{**asdict(self), "tried_regions": list(self.tried_regions)})
