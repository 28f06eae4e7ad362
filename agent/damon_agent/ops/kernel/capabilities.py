"""Feature probing: what the running kernel's DAMON sysfs interface can do.

``probe(fs, kernel_release)`` returns a ``CapabilityReport``: operations sets, DAMOS
actions, filter types, quota goal metrics, and named features (intervals goal, addr_unit,
online commit, ...). Each feature carries the kernel version that brought it
(``FEATURE_SINCE``, ``ACTION_SINCE``, ...), so a missing one is reported as "lacks X; it
came with Linux V" (``CapabilityReport.require`` raises ``FeatureMissingError``).

How it probes, and why that way:

- The tree only shows a feature's files once a kdamond, context, scheme, goal and filter
  exist, and enumerated values (actions, filter types, metrics) are only known by writing
  them and seeing EINVAL. So when no kdamond exists at all (``nr_kdamonds`` is 0), the
  probe builds a scratch kdamond with one of each, writes every known name, looks at which
  files exist, and sets ``nr_kdamonds`` back to 0, also on failure. Nothing runs.
- When kdamonds exist, the probe must not resize the list (that would wipe them, see
  ``ownership``), so it falls back to the kernel version and the tables below
  (``method == "kernel-version"``), reading only ``avail_operations`` of an existing
  context if there is one.
- Which action each operations set carries out is not visible in sysfs at all (the kernel
  accepts ``willneed`` on a paddr scheme and silently does nothing); ``OPS_ACTIONS``
  records it from the documentation. Kernels without allow filters (before 6.14) carry
  out and filter less on vaddr: ``REJECT_ONLY_OPS_ACTIONS`` and
  ``REJECT_ONLY_OPS_FILTER_TYPES`` say what.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Final

from damon_agent.ops.kernel import errors, model
from damon_agent.ops.kernel import sysfs as sysfs_io

# Named features: the sysfs file (relative to a scratch kdamond) that shows it, and the
# Linux version that brought it.
FEATURE_SINCE: Final[dict[str, str]] = {
    "sysfs": "5.18",
    "online_commit": "5.19",
    "filters": "6.3",
    "tried_regions": "6.2",
    "tried_bytes": "6.5",
    "apply_interval": "6.7",
    "quota_goals": "6.8",
    "effective_quotas": "6.9",
    "target_nid": "6.11",
    "filter_allow": "6.14",
    "sz_ops_filter_passed": "6.14",
    "intervals_goal": "6.15",
    "core_ops_filters": "6.15",
    "goal_nid": "6.16",
    "dests": "6.17",
    "refresh_ms": "6.17",
    "addr_unit": "6.18",
    "goal_path": "6.19",
    "goal_tuner": "6.19",
    "obsolete_target": "6.19",
}

FEATURE_FILE: Final[dict[str, str]] = {
    "filters": "0/contexts/0/schemes/0/filters/nr_filters",
    "tried_regions": "0/contexts/0/schemes/0/tried_regions",
    "tried_bytes": "0/contexts/0/schemes/0/tried_regions/total_bytes",
    "apply_interval": "0/contexts/0/schemes/0/apply_interval_us",
    "quota_goals": "0/contexts/0/schemes/0/quotas/goals/nr_goals",
    "effective_quotas": "0/contexts/0/schemes/0/quotas/effective_bytes",
    "target_nid": "0/contexts/0/schemes/0/target_nid",
    "filter_allow": "0/contexts/0/schemes/0/filters/0/allow",
    "sz_ops_filter_passed": "0/contexts/0/schemes/0/stats/sz_ops_filter_passed",
    "intervals_goal": "0/contexts/0/monitoring_attrs/intervals/intervals_goal/access_bp",
    "core_ops_filters": "0/contexts/0/schemes/0/core_filters/nr_filters",
    "goal_nid": "0/contexts/0/schemes/0/quotas/goals/0/nid",
    "dests": "0/contexts/0/schemes/0/dests/nr_dests",
    "refresh_ms": "0/refresh_ms",
    "addr_unit": "0/contexts/0/addr_unit",
    "goal_path": "0/contexts/0/schemes/0/quotas/goals/0/path",
    "goal_tuner": "0/contexts/0/schemes/0/quotas/goal_tuner",
    "obsolete_target": "0/contexts/0/targets/0/obsolete_target",
}

OPERATIONS_SINCE: Final[dict[str, str]] = {"vaddr": "5.15", "paddr": "5.16", "fvaddr": "5.18"}

ACTION_SINCE: Final[dict[str, str]] = {
    "willneed": "5.16",
    "cold": "5.16",
    "pageout": "5.16",
    "hugepage": "5.16",
    "nohugepage": "5.16",
    "stat": "5.16",
    "lru_prio": "6.0",
    "lru_deprio": "6.0",
    "migrate_hot": "6.11",
    "migrate_cold": "6.11",
}

FILTER_TYPE_SINCE: Final[dict[str, str]] = {
    "anon": "6.3",
    "memcg": "6.3",
    "addr": "6.6",
    "target": "6.6",
    "young": "6.10",
    "hugepage_size": "6.15",
    "unmapped": "6.15",
    "active": "6.15",
}

GOAL_METRIC_SINCE: Final[dict[str, str]] = {
    "user_input": "6.8",
    "some_mem_psi_us": "6.9",
    "node_mem_used_bp": "6.16",
    "node_mem_free_bp": "6.16",
    "node_memcg_used_bp": "6.19",
    "node_memcg_free_bp": "6.19",
    "active_mem_bp": "7.0",
    "inactive_mem_bp": "7.0",
}

# Which operations set carries out which action (Documentation/admin-guide/mm/damon/
# usage.rst); the sysfs interface accepts any action on any set.
OPS_ACTIONS: Final[dict[str, frozenset[str]]] = {
    "vaddr": frozenset(
        {
            "willneed",
            "cold",
            "pageout",
            "hugepage",
            "nohugepage",
            "migrate_hot",
            "migrate_cold",
            "stat",
        }
    ),
    "fvaddr": frozenset(
        {
            "willneed",
            "cold",
            "pageout",
            "hugepage",
            "nohugepage",
            "migrate_hot",
            "migrate_cold",
            "stat",
        }
    ),
    "paddr": frozenset(
        {"pageout", "lru_prio", "lru_deprio", "migrate_hot", "migrate_cold", "stat"}
    ),
}
# Page-granularity filters are the operations set's business: vaddr has only anon (and
# the core layer's addr/target); paddr has them all.
OPS_FILTER_TYPES: Final[dict[str, frozenset[str]]] = {
    "vaddr": frozenset({"anon", "addr", "target"}),
    "fvaddr": frozenset({"anon", "addr", "target"}),
    "paddr": frozenset(model.FILTER_TYPES),
}
# Kernels before allow filters (6.14): vaddr cannot migrate yet (migrate_hot/cold are
# paddr-only there; vaddr's came with 6.17).
REJECT_ONLY_OPS_ACTIONS: Final[dict[str, frozenset[str]]] = {
    ops: actions - {"migrate_hot", "migrate_cold"} if ops != "paddr" else actions
    for ops, actions in OPS_ACTIONS.items()
}
# Before allow filters (6.14) every filter rejects, and vaddr applies only the core layer's
# filters (6.12's vaddr has no page filtering); paddr applies its page filters (anon,
# memcg, young) and the core's, though it sees addr and target as "not matching" in its
# own pass (so a non-matching addr filter rejects every page there).
REJECT_ONLY_OPS_FILTER_TYPES: Final[dict[str, frozenset[str]]] = {
    "vaddr": frozenset(model.CORE_FILTER_TYPES),
    "fvaddr": frozenset(model.CORE_FILTER_TYPES),
    "paddr": frozenset(model.FILTER_TYPES),
}


def parse_version(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as ``6.18.44-fc-v657``."""
    match = re.match(r"(\d+)\.(\d+)", release)
    if match is None:
        return (0, 0)
    return (int(match.group(1)), int(match.group(2)))


def _at_least(release: str, since: str) -> bool:
    return parse_version(release) >= parse_version(since)


@dataclass(frozen=True)
class CapabilityReport:
    kernel_release: str
    method: str  # "probed" or "kernel-version"
    operations: tuple[str, ...]
    actions: tuple[str, ...]
    filter_types: tuple[str, ...]
    goal_metrics: tuple[str, ...]
    features: dict[str, bool] = field(default_factory=dict)

    def has(self, feature: str) -> bool:
        return self.features.get(feature, False)

    def require(self, feature: str, detail: str = "") -> None:
        if not self.has(feature):
            raise errors.FeatureMissingError(feature, FEATURE_SINCE.get(feature, "?"), detail)

    def require_operations(self, operations: str) -> None:
        if operations not in self.operations:
            raise errors.FeatureMissingError(
                f"the {operations} operations set",
                OPERATIONS_SINCE.get(operations, "?"),
                f"available: {', '.join(self.operations) or 'none'}",
            )

    def require_action(self, action: str, operations: str) -> None:
        if action not in self.actions:
            raise errors.FeatureMissingError(f"DAMOS action {action}", ACTION_SINCE[action])
        table = OPS_ACTIONS if self.has("filter_allow") else REJECT_ONLY_OPS_ACTIONS
        carried_out = table.get(operations, frozenset())
        if action not in carried_out:
            raise errors.FeatureMissingError(
                f"DAMOS action {action} on {operations}",
                ACTION_SINCE[action],
                f"{operations} carries out only {', '.join(sorted(carried_out))}",
            )

    def require_filter(self, filter_type: str, operations: str) -> None:
        if filter_type not in self.filter_types:
            raise errors.FeatureMissingError(
                f"DAMOS filter type {filter_type}", FILTER_TYPE_SINCE[filter_type]
            )
        applied = (
            OPS_FILTER_TYPES if self.has("filter_allow") else REJECT_ONLY_OPS_FILTER_TYPES
        ).get(operations, frozenset())
        if filter_type not in applied:
            raise errors.FeatureMissingError(
                f"DAMOS filter type {filter_type} on {operations}",
                FILTER_TYPE_SINCE[filter_type],
            )

    def require_goal_metric(self, metric: str) -> None:
        if metric not in self.goal_metrics:
            raise errors.FeatureMissingError(
                f"quota goal metric {metric}", GOAL_METRIC_SINCE.get(metric, "?")
            )

    def table(self) -> list[tuple[str, bool, str]]:
        """(name, available, since) rows for every known feature, for status and docs."""
        rows = [(name, self.has(name), since) for name, since in FEATURE_SINCE.items()]
        for ops, since in OPERATIONS_SINCE.items():
            rows.append((f"operations:{ops}", ops in self.operations, since))
        for action, since in ACTION_SINCE.items():
            rows.append((f"action:{action}", action in self.actions, since))
        for kind, since in FILTER_TYPE_SINCE.items():
            rows.append((f"filter:{kind}", kind in self.filter_types, since))
        for metric, since in GOAL_METRIC_SINCE.items():
            rows.append((f"goal:{metric}", metric in self.goal_metrics, since))
        return rows

    def check(self, kdamond: model.Kdamond) -> None:
        """Raise ``FeatureMissingError`` for the first thing ``kdamond`` needs and lacks."""
        for context in kdamond.contexts:
            self.require_operations(context.operations)
            if context.addr_unit is not None and context.addr_unit != 1:
                self.require("addr_unit")
            if context.monitoring_attrs.intervals.intervals_goal is not None:
                self.require("intervals_goal")
            if any(target.obsolete for target in context.targets):
                self.require("obsolete_target")
            for scheme in context.schemes:
                self._check_scheme(scheme, context.operations)

    def _check_scheme(self, scheme: model.Scheme, operations: str) -> None:
        self.require_action(scheme.action, operations)
        if scheme.apply_interval_us is not None:
            self.require("apply_interval")
        if scheme.target_nid is not None:
            self.require("target_nid")
        if scheme.quotas.goals:
            self.require("quota_goals")
        if scheme.quotas.goal_tuner is not None:
            self.require("goal_tuner")
        for goal in scheme.quotas.goals:
            self.require_goal_metric(goal.target_metric)
            if goal.nid is not None:
                self.require("goal_nid")
            if goal.path is not None:
                self.require("goal_path")
        if scheme.filters:
            self.require("filters")
        if scheme.core_filters or scheme.ops_filters:
            self.require("core_ops_filters")
        for one in (*scheme.filters, *scheme.core_filters, *scheme.ops_filters):
            self.require_filter(one.type, operations)
            if one.allow:
                self.require("filter_allow")
        if scheme.dests:
            self.require("dests")


def probe(fs: sysfs_io.SysfsIO, kernel_release: str) -> CapabilityReport:
    """Probe the tree under ``fs`` (see the module docstring for how)."""
    if not fs.exists("kdamonds/nr_kdamonds"):
        raise errors.FeatureMissingError(
            "the DAMON sysfs interface", FEATURE_SINCE["sysfs"], f"no {fs.root}/kdamonds"
        )
    if sysfs_io.read_int(fs, "kdamonds/nr_kdamonds") == 0:
        return _probe_scratch(fs, kernel_release)
    return _from_version(fs, kernel_release)


def _probe_scratch(fs: sysfs_io.SysfsIO, kernel_release: str) -> CapabilityReport:
    base = "kdamonds/0"
    fs.write("kdamonds/nr_kdamonds", "1")
    try:
        ctx = f"{base}/contexts/0"
        scheme = f"{ctx}/schemes/0"
        fs.write(f"{base}/contexts/nr_contexts", "1")
        fs.write(f"{ctx}/schemes/nr_schemes", "1")
        fs.write(f"{ctx}/targets/nr_targets", "1")
        for optional in (f"{scheme}/quotas/goals/nr_goals", f"{scheme}/filters/nr_filters"):
            if fs.exists(optional):
                fs.write(optional, "1")
        operations = tuple(
            op for op in fs.read(f"{ctx}/avail_operations").split() if op in model.OPERATIONS
        )
        actions = _accepted(fs, f"{scheme}/action", model.ACTIONS)
        filter_types = (
            _accepted(fs, f"{scheme}/filters/0/type", model.FILTER_TYPES)
            if fs.exists(f"{scheme}/filters/0/type")
            else ()
        )
        goal_metrics = (
            _accepted(fs, f"{scheme}/quotas/goals/0/target_metric", model.QUOTA_GOAL_METRICS)
            if fs.exists(f"{scheme}/quotas/goals/0/target_metric")
            else ()
        )
        features = {"sysfs": True}
        for name, path in FEATURE_FILE.items():
            features[name] = fs.exists(f"kdamonds/{path}")
        # ``commit`` has no file of its own; every kernel with filters (6.3) has it.
        features["online_commit"] = features["filters"] or _at_least(
            kernel_release, FEATURE_SINCE["online_commit"]
        )
    finally:
        fs.write("kdamonds/nr_kdamonds", "0")
    return CapabilityReport(
        kernel_release=kernel_release,
        method="probed",
        operations=operations,
        actions=actions,
        filter_types=filter_types,
        goal_metrics=goal_metrics,
        features=features,
    )


def _accepted(fs: sysfs_io.SysfsIO, path: str, names: tuple[str, ...]) -> tuple[str, ...]:
    accepted = []
    for name in names:
        try:
            fs.write(path, name)
        except errors.SysfsInvalidError:
            continue
        accepted.append(name)
    return tuple(accepted)


def from_version_table(kernel_release: str) -> CapabilityReport:
    """What the tables above say ``kernel_release`` has (the README's capability table)."""
    return CapabilityReport(
        kernel_release=kernel_release,
        method="kernel-version",
        operations=_known_since(OPERATIONS_SINCE, kernel_release),
        actions=_known_since(ACTION_SINCE, kernel_release),
        filter_types=_known_since(FILTER_TYPE_SINCE, kernel_release),
        goal_metrics=_known_since(GOAL_METRIC_SINCE, kernel_release),
        features={name: _at_least(kernel_release, since) for name, since in FEATURE_SINCE.items()},
    )


def _from_version(fs: sysfs_io.SysfsIO, kernel_release: str) -> CapabilityReport:
    """The version table, with the operations a configured kdamond lists where one does."""
    table = from_version_table(kernel_release)
    for name in sorted(fs.listdir("kdamonds")):
        path = f"kdamonds/{name}/contexts/0/avail_operations"
        if name.isdigit() and fs.exists(path):
            operations = tuple(op for op in fs.read(path).split() if op in model.OPERATIONS)
            return dataclasses.replace(table, operations=operations)
    return table


def _known_since(table: dict[str, str], release: str) -> tuple[str, ...]:
    return tuple(name for name, since in table.items() if _at_least(release, since))
