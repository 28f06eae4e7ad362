"""Configuration to sysfs, as a pure function: ``kdamond_writes(kdamond)`` -> ordered writes.

The writes are relative to one ``kdamonds/N`` directory and stage the whole configuration
in it; the applier then writes ``on`` (start) or ``commit`` (online update) to ``state``.
Tests compare the result against golden logs (``format_log``), so a change in what reaches
the kernel shows up as a diff in review.

Ordering rules, and why:

- ``nr_*`` before the children it creates: writing ``nr_X`` removes every child
  directory and creates fresh ones with the kernel's defaults. Writing
  ``contexts/nr_contexts`` first therefore gives a clean tree below it every time, for a
  first start and for an online commit alike: nothing stale from an earlier
  configuration survives.
- Because every directory is fresh, a file is written only when its value differs from
  the default of a fresh directory (a list ``nr_*`` only when non-empty; ``None`` fields
  never). A configuration that does not use a newer feature therefore never touches that
  feature's files, and applies unchanged on a kernel without them.
- Two exceptions are always written: ``action`` and the six ``access_pattern`` bounds,
  because a fresh scheme's 0..0 ranges match nothing; and the monitoring attributes, so
  the log states the intervals in force.
- A filter's ``type`` before its other files: the type decides which of them apply and,
  in ``core_filters``/``ops_filters``, the kernel validates it against the directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from damon_agent.ops.kernel import model


@dataclass(frozen=True)
class Write:
    """Write ``value`` to the file at ``path`` (relative to a ``kdamonds/N`` directory)."""

    path: str
    value: str

    def __str__(self) -> str:
        return f"{self.path} {self.value}"


def kdamond_writes(kdamond: model.Kdamond) -> list[Write]:
    """Every write that stages ``kdamond`` (validated first), in order."""
    model.validate(kdamond)
    return list(_kdamond(kdamond))


def format_log(writes: list[Write]) -> str:
    """The golden-log form: one ``path value`` line per write."""
    return "".join(f"{w}\n" for w in writes)


def _kdamond(kdamond: model.Kdamond) -> Iterator[Write]:
    yield Write("contexts/nr_contexts", str(len(kdamond.contexts)))
    for index, context in enumerate(kdamond.contexts):
        yield from _context(f"contexts/{index}", context)


def _context(base: str, context: model.Context) -> Iterator[Write]:
    yield Write(f"{base}/operations", context.operations)
    if context.addr_unit is not None:
        yield Write(f"{base}/addr_unit", str(context.addr_unit))
    attrs = context.monitoring_attrs
    intervals = f"{base}/monitoring_attrs/intervals"
    yield Write(f"{intervals}/sample_us", str(attrs.intervals.sample_us))
    yield Write(f"{intervals}/aggr_us", str(attrs.intervals.aggr_us))
    yield Write(f"{intervals}/update_us", str(attrs.intervals.update_us))
    goal = attrs.intervals.intervals_goal
    if goal is not None:
        for name in ("access_bp", "aggrs", "min_sample_us", "max_sample_us"):
            yield Write(f"{intervals}/intervals_goal/{name}", str(getattr(goal, name)))
    yield Write(f"{base}/monitoring_attrs/nr_regions/min", str(attrs.nr_regions.min))
    yield Write(f"{base}/monitoring_attrs/nr_regions/max", str(attrs.nr_regions.max))

    yield Write(f"{base}/targets/nr_targets", str(len(context.targets)))
    for t_index, target in enumerate(context.targets):
        t_base = f"{base}/targets/{t_index}"
        if target.pid_target is not None:
            yield Write(f"{t_base}/pid_target", str(target.pid_target))
        if target.obsolete:
            # Only ever "Y": writing nr_targets above made every target afresh, with "N".
            yield Write(f"{t_base}/obsolete_target", "Y")
        if target.regions:
            yield Write(f"{t_base}/regions/nr_regions", str(len(target.regions)))
        for r_index, region in enumerate(target.regions):
            yield Write(f"{t_base}/regions/{r_index}/start", str(region.start))
            yield Write(f"{t_base}/regions/{r_index}/end", str(region.end))

    yield Write(f"{base}/schemes/nr_schemes", str(len(context.schemes)))
    for s_index, scheme in enumerate(context.schemes):
        yield from _scheme(f"{base}/schemes/{s_index}", scheme)


def _scheme(base: str, scheme: model.Scheme) -> Iterator[Write]:
    yield Write(f"{base}/action", scheme.action)
    if scheme.target_nid is not None:
        yield Write(f"{base}/target_nid", str(scheme.target_nid))
    if scheme.apply_interval_us is not None:
        yield Write(f"{base}/apply_interval_us", str(scheme.apply_interval_us))
    pattern = scheme.access_pattern
    for name in ("sz", "nr_accesses", "age"):
        bounds: model.Range = getattr(pattern, name)
        yield Write(f"{base}/access_pattern/{name}/min", str(bounds.min))
        yield Write(f"{base}/access_pattern/{name}/max", str(bounds.max))

    quotas = scheme.quotas
    for name in ("ms", "bytes", "reset_interval_ms"):
        value = getattr(quotas, name)
        if value:
            yield Write(f"{base}/quotas/{name}", str(value))
    for name in ("sz_permil", "nr_accesses_permil", "age_permil"):
        value = getattr(quotas.weights, name)
        if value:
            yield Write(f"{base}/quotas/weights/{name}", str(value))
    if quotas.goal_tuner is not None:
        yield Write(f"{base}/quotas/goal_tuner", quotas.goal_tuner)
    if quotas.goals:
        yield Write(f"{base}/quotas/goals/nr_goals", str(len(quotas.goals)))
    for g_index, goal in enumerate(quotas.goals):
        g_base = f"{base}/quotas/goals/{g_index}"
        yield Write(f"{g_base}/target_metric", goal.target_metric)
        yield Write(f"{g_base}/target_value", str(goal.target_value))
        if goal.current_value:
            yield Write(f"{g_base}/current_value", str(goal.current_value))
        if goal.nid is not None:
            yield Write(f"{g_base}/nid", str(goal.nid))
        if goal.path is not None:
            yield Write(f"{g_base}/path", goal.path)

    marks = scheme.watermarks
    if marks != model.Watermarks():
        yield Write(f"{base}/watermarks/metric", marks.metric)
        for name in ("interval_us", "high", "mid", "low"):
            yield Write(f"{base}/watermarks/{name}", str(getattr(marks, name)))

    for directory in ("filters", "core_filters", "ops_filters"):
        filters: tuple[model.Filter, ...] = getattr(scheme, directory)
        if filters:
            yield Write(f"{base}/{directory}/nr_filters", str(len(filters)))
        for f_index, one in enumerate(filters):
            yield from _filter(f"{base}/{directory}/{f_index}", one)

    if scheme.dests:
        yield Write(f"{base}/dests/nr_dests", str(len(scheme.dests)))
    for d_index, dest in enumerate(scheme.dests):
        yield Write(f"{base}/dests/{d_index}/id", str(dest.id))
        yield Write(f"{base}/dests/{d_index}/weight", str(dest.weight))


def _filter(base: str, one: model.Filter) -> Iterator[Write]:
    yield Write(f"{base}/type", one.type)
    yield Write(f"{base}/matching", _flag(one.matching))
    # A fresh filter rejects; ``allow`` (6.14) is written only to allow, so reject filters
    # still apply on kernels that predate the file.
    if one.allow:
        yield Write(f"{base}/allow", _flag(one.allow))
    if one.memcg_path is not None:
        yield Write(f"{base}/memcg_path", one.memcg_path)
    if one.addr_start is not None:
        yield Write(f"{base}/addr_start", str(one.addr_start))
    if one.addr_end is not None:
        yield Write(f"{base}/addr_end", str(one.addr_end))
    if one.min is not None:
        yield Write(f"{base}/min", str(one.min))
    if one.max is not None:
        yield Write(f"{base}/max", str(one.max))
    if one.damon_target_idx is not None:
        yield Write(f"{base}/damon_target_idx", str(one.damon_target_idx))


def _flag(value: bool) -> str:
    return "Y" if value else "N"
