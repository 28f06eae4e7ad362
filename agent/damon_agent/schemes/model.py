"""Canonical DAMOS schemes: integers in one unit each (bytes, us, bp, permil), no strings
with units. Built from the api models by ``conversion``; read by the engine and by the
operations sets that program the kernel.

``None`` for a quota means "no limit"; ``UNBOUNDED`` (the largest int64) is the upper end
of an open range, as ``max`` at the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from damon_agent.api import units

UNBOUNDED = units.UNBOUNDED

# Actions prioritised by coldness (the coldest first when the quota cannot cover all) and
# by hotness, as the kernel's paddr operations score them; any other action gives every
# region the maximum score, so the quota is charged in address order.
COLD_FIRST_ACTIONS = frozenset({"pageout", "cold", "lru_deprio", "migrate_cold"})
HOT_FIRST_ACTIONS = frozenset({"migrate_hot", "lru_prio"})
MIGRATION_ACTIONS = frozenset({"migrate_hot", "migrate_cold"})
CORE_FILTER_TYPES = frozenset({"addr", "target"})


@dataclass(frozen=True)
class AccessPattern:
    """Closed ranges; a region matches when its size, access rate and age all fall in."""

    min_size: int = 0
    max_size: int = UNBOUNDED
    min_rate_bp: int = 0
    max_rate_bp: int = 10_000
    min_age_us: int = 0
    max_age_us: int = UNBOUNDED


@dataclass(frozen=True)
class Weights:
    """Prioritization weights. ``size`` is kept for the kernel's sysfs file, but the kernel's
    score functions (and so ours) use only ``access_rate`` and ``age``."""

    size: int = 0
    access_rate: int = 1000
    age: int = 1000


@dataclass(frozen=True)
class QuotaGoal:
    """Tune the quota so that ``metric`` reaches ``target`` (in the metric's unit)."""

    metric: str
    target: int
    nid: int | None = None
    path: str | None = None
    initial_current: int = 0


@dataclass(frozen=True)
class Quota:
    """Per ``reset_interval_us``: at most ``time_us`` of action time and ``size_bytes`` of
    memory acted on (0: no such limit), tuned by ``goals`` with ``tuner``."""

    time_us: int = 0
    size_bytes: int = 0
    reset_interval_us: int = 1_000_000
    weights: Weights = Weights()
    goals: tuple[QuotaGoal, ...] = ()
    tuner: str = "consist"

    @property
    def limits(self) -> bool:
        """Whether anything limits the scheme (the kernel skips quota work otherwise)."""
        return bool(self.time_us or self.size_bytes or self.goals)


@dataclass(frozen=True)
class Watermarks:
    """Activation by free memory rate (per thousand), checked every ``interval_us``."""

    metric: str = "free_mem_rate"
    interval_us: int = 5_000_000
    high: int = 1000
    mid: int = 1000
    low: int = 0


@dataclass(frozen=True)
class Filter:
    """A DAMOS filter; ``allow`` False rejects what it selects (see ``filters``)."""

    type: str
    allow: bool = False
    matching: bool = True
    memcg_path: str | None = None
    addr_start: int | None = None
    addr_end: int | None = None
    target_index: int | None = None
    min_size: int | None = None
    max_size: int | None = None

    @property
    def is_core(self) -> bool:
        return self.type in CORE_FILTER_TYPES


# Basis points of a whole (100%).
WHOLE_BP = 10_000


@dataclass(frozen=True)
class Fill:
    """Goal-driven tiering (the spec's ``fill``): the fill, in basis points of a DRAM NUMA
    node, that a tier migration steers that node toward; ``pod_share_bp`` the share of it
    one pod's memory may take. Not run as such: ``goals`` turns it into quota goals once
    the DRAM node of the migration is known (the planner, per node; the engine run
    directly, at its ``dram`` node).

    A promotion (``migrate_hot``) fills the DRAM node it moves to: its quota grows while
    the node is used below ``dram_bp`` (``node_mem_used_bp``). A demotion (``migrate_cold``)
    empties the DRAM node it moves from: its quota grows while that node has less than
    ``WHOLE_BP - dram_bp`` free (``node_mem_free_bp``), so the two meet at the same fill.
    The pod share works the same way on the pod's memory cgroup (``node_memcg_*_bp``).
    """

    dram_bp: int
    pod_share_bp: int | None = None

    def goals(
        self, action: str, dram_nids: Sequence[int], memcg_path: str | None = None
    ) -> tuple[QuotaGoal, ...]:
        """The quota goals of a migration ``action`` whose DRAM side is ``dram_nids``; the
        pod share's goals too where ``memcg_path`` names the pod's memory cgroup."""
        used = action == "migrate_hot"
        node_metric, memcg_metric = (
            ("node_mem_used_bp", "node_memcg_used_bp")
            if used
            else ("node_mem_free_bp", "node_memcg_free_bp")
        )
        goals = [
            QuotaGoal(node_metric, self.dram_bp if used else WHOLE_BP - self.dram_bp, nid=nid)
            for nid in dram_nids
        ]
        if memcg_path is not None and self.pod_share_bp is not None:
            share = self.pod_share_bp if used else WHOLE_BP - self.pod_share_bp
            goals.extend(
                QuotaGoal(memcg_metric, share, nid=nid, path=memcg_path) for nid in dram_nids
            )
        return tuple(goals)


@dataclass(frozen=True)
class Dest:
    """One destination of a migration to several NUMA nodes at once (the kernel's
    ``dests``, Linux 6.17, vaddr): the node and its weight among the others."""

    nid: int
    weight: int


@dataclass(frozen=True)
class Scheme:
    """One DAMOS scheme in canonical units.

    ``apply_interval_us`` 0 means every aggregation interval. A ``tier`` is a memory tier
    the scheme's migration targets instead of ``target_nid``; the runtime's planner
    resolves it to the node's NUMA node (the engine resolves it itself when run
    directly, with ``tier_nids``). A user's ``dryRun`` is not carried here: the planner
    writes it as the action ``stat``. ``fill`` (goal-driven tiering) becomes quota goals
    where the tier is resolved (``with_fill_goals``). ``dests``: where a migration goes to
    several nodes of a tier at once (vaddr on 6.17+), weighted; ``target_nid`` is then the
    first of them.
    """

    name: str
    action: str
    pattern: AccessPattern = AccessPattern()
    target_nid: int | None = None
    tier: str | None = None
    apply_interval_us: int = 0
    quota: Quota | None = None
    watermarks: Watermarks | None = None
    filters: tuple[Filter, ...] = field(default=())
    fill: Fill | None = None
    dests: tuple[Dest, ...] = ()

    @property
    def core_filters(self) -> tuple[Filter, ...]:
        return tuple(f for f in self.filters if f.is_core)

    @property
    def ops_filters(self) -> tuple[Filter, ...]:
        return tuple(f for f in self.filters if not f.is_core)


def with_fill_goals(
    scheme: Scheme, dram_nids: Sequence[int], memcg_path: str | None = None
) -> Scheme:
    """``scheme`` with its ``fill`` written as quota goals after the user's own (a
    scheme without a quota gets one with no limit but the goals), and ``fill`` cleared."""
    if scheme.fill is None:
        return scheme
    quota = scheme.quota or Quota()
    goals = scheme.fill.goals(scheme.action, dram_nids, memcg_path)
    return replace(scheme, quota=replace(quota, goals=(*quota.goals, *goals)), fill=None)
