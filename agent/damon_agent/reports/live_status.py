"""``damonctl status``: a node's or a scheme's outcome, as a person wants to read it.

Pure: the DamonNode and scheme statuses (``api.resources``), as the apiserver holds them,
-> text. A node shows its backend and readiness, the kernel's own tiering settings (NUMA
balancing, demotion), its kdamonds' CPU and snapshot ages,
one short table per assigned scheme object (per DAMOS scheme: effective quota, goals as
current / target, applied bytes), and its pods (memory PSI, memory and swap now, what
they saved and the refaults since). A scheme shows its aggregated status (readiness over
its nodes, applied, saved), the same per-scheme table with one row per node, and its
pods on every node.

Goal values are in their metric's unit: stall time per reset interval for ``*_psi_us``,
a percentage for ``*_bp``, a number for ``user_input``; ``?`` where the engine does not
show the current value (the kernel computes its own metrics and keeps them).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from damon_agent.api import conditions, resources, units
from damon_agent.api import schemes as api_schemes

NONE = "-"


def format_goal_value(metric: str, value: int | None) -> str:
    if value is None:
        return "?"
    if metric in api_schemes.DURATION_METRICS:
        return units.format_duration_us(value)
    if metric in api_schemes.PERCENT_METRICS:
        return units.format_bp(value)
    return str(value)


def format_goals(goals: Sequence[resources.GoalStatus]) -> str:
    """``pod_mem_psi_us 2.5 ms / 10 ms`` per goal, ``; ``-separated (``-`` without)."""
    if not goals:
        return NONE
    return "; ".join(
        f"{g.metric} {format_goal_value(g.metric, g.current)} / "
        f"{format_goal_value(g.metric, g.target)}"
        for g in goals
    )


def format_kernel_tiering(found: resources.KernelTiering | None) -> str:
    """``numa_balancing=2 (tiering), demotion_enabled=true``, or what is missing."""
    if found is None:
        return "not reported"
    if found.numa_balancing is None:
        balancing = "no NUMA balancing"
    else:
        modes = ", ".join(found.numa_balancing_modes) or "off"
        balancing = f"numa_balancing={found.numa_balancing} ({modes})"
    if found.demotion_enabled is None:
        demotion = "no demotion"
    else:
        demotion = f"demotion_enabled={'true' if found.demotion_enabled else 'false'}"
    return f"{balancing}, {demotion}" + (f" (unreadable: {found.error})" if found.error else "")


def _ago(at: datetime.datetime | None, now: datetime.datetime) -> str:
    if at is None:
        return NONE
    return units.format_duration_us(max(0.0, (now - at).total_seconds()) * 1e6) + " ago"


def _quota(value: int | None) -> str:
    return "no limit" if value is None else units.format_bytes(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


def _condition(conds: Sequence[conditions.Condition], kind: str) -> str:
    found = conditions.find(list(conds), kind)
    if found is None:
        return f"{kind} unknown"
    text = f"{kind}={found.status} ({found.reason})"
    return text + (f": {found.message}" if found.message else "")


def _scheme_rows(report: resources.NodeSchemeStatus, node: str | None = None) -> list[list[str]]:
    rows = []
    for one in report.stats:
        row = [] if node is None else [node]
        row += [
            one.name,
            _quota(one.effective_quota_bytes) if one.goals or one.effective_quota_bytes else NONE,
            format_goals(one.goals),
            units.format_bytes(one.applied_bytes),
            str(one.qt_exceeds),
        ]
        rows.append(row)
    return rows


SCHEME_HEADER = ("SCHEME", "QUOTA", "GOALS (CURRENT / TARGET)", "APPLIED", "QUOTA-HITS")
POD_HEADER = ("POD", "PSI-SOME-10S", "STALLED", "MEMORY", "SWAP", "SAVED", "REFAULTS", "SINCE")


def _pod_row(pod: resources.PodStatus, now: datetime.datetime) -> list[str]:
    psi = pod.psi
    return [
        pod.key,
        f"{psi.some_avg10:.2f}%" if psi else NONE,
        units.format_duration_us(psi.some_total_us) if psi else NONE,
        units.format_bytes(pod.memory_bytes),
        units.format_bytes(pod.swap_bytes),
        units.format_bytes(pod.saved_bytes),
        str(pod.refaults),
        _ago(pod.since, now),
    ]


def render_node(name: str, status: resources.DamonNodeStatus | None, now: datetime.datetime) -> str:
    """One node: its backend, contexts, schemes and pods."""
    if status is None or status.heartbeat is None:
        return f"DamonNode {name}: its agent has not reported yet"
    caps = status.capabilities
    backend = status.backend or "no"
    release = f" (Linux {caps.kernel_release})" if caps.kernel_release else ""
    lines = [
        f"DamonNode {name}: {backend} backend{release}, heartbeat {_ago(status.heartbeat, now)}",
        "  " + _condition(status.conditions, "Ready"),
        f"  memory PSI some {status.psi.some_avg10:.2f}% (10 s), "
        f"saved {units.format_bytes(status.saved_bytes)} "
        f"over {len(status.pods) + status.pods_omitted} pod(s)"
        + (f", kdamond CPU {status.kdamond_cpu} of one CPU" if status.kdamond_cpu else ""),
        "  kernel tiering: " + format_kernel_tiering(status.kernel_tiering),
    ]
    if status.contexts:
        rows = [
            [
                str(index),
                c.operations,
                str(c.kdamond_pid) if c.kdamond_pid is not None else NONE,
                f"{c.cpu_percent:.2f}%" if c.cpu_percent is not None else NONE,
                f"{c.cpu_seconds:.2f} s" if c.cpu_seconds is not None else NONE,
                (
                    units.format_duration_us(c.snapshot_age_seconds * 1e6) + " ago"
                    if c.snapshot_age_seconds is not None
                    else "none yet"
                ),
                str(len(c.schemes)),
            ]
            for index, c in enumerate(status.contexts)
        ]
        header = ("CONTEXT", "OPS", "KDAMOND", "CPU", "CPU-TIME", "SNAPSHOT", "SCHEMES")
        lines += ["", "contexts:", _table(header, rows)]
    for report in status.schemes:
        where = f"{report.namespace}/{report.name}" if report.namespace else report.name
        lines += [
            "",
            f"{report.kind} {where}: {_condition(report.conditions, 'Ready')}",
            f"  saved {units.format_bytes(report.saved_bytes)} over {report.targets} pod(s), "
            f"{report.refaults} refault(s)",
        ]
        if report.stats:
            lines.append(_table(SCHEME_HEADER, _scheme_rows(report)))
    if status.pods:
        lines += ["", "pods:", _table(POD_HEADER, [_pod_row(p, now) for p in status.pods])]
        if status.pods_omitted:
            lines.append(
                f"  ... and {status.pods_omitted} more pod(s) (the status lists the "
                f"{resources.MAX_POD_STATUSES} most pressed, then those that saved most)"
            )
    return "\n".join(lines)


def render_scheme(
    kind: str,
    namespace: str | None,
    name: str,
    *,
    status: resources.SchemeStatus,
    nodes: Sequence[tuple[str, resources.DamonNodeStatus]],
    now: datetime.datetime,
) -> str:
    """One scheme object: its aggregated status, then its schemes and pods per node."""
    key = resources.scheme_key(kind, namespace, name)
    where = f"{namespace}/{name}" if namespace else name
    lines = [
        f"{kind} {where}: nodes ready {status.nodes_ready or '0/0'}, "
        f"applied {status.applied or units.format_bytes(status.applied_bytes)}, "
        f"saved {status.saved or units.format_bytes(status.saved_bytes)}",
        "  " + _condition(status.conditions, "Accepted"),
        "  " + _condition(status.conditions, "Ready"),
    ]
    degraded = conditions.find(list(status.conditions), "Degraded")
    if degraded is not None and degraded.status == "True":
        lines.append("  " + _condition(status.conditions, "Degraded"))
    rows: list[list[str]] = []
    pods: list[list[str]] = []
    for node, node_status in nodes:
        report = node_status.scheme(key)
        if report is None:
            continue
        rows += _scheme_rows(report, node)
        pods += [
            [*_pod_row(p, now)[:1], node, *_pod_row(p, now)[1:]]
            for p in node_status.pods
            if key in p.schemes
        ]
    if rows:
        lines += ["", _table(("NODE", *SCHEME_HEADER), rows)]
    else:
        lines += ["", "  no node reports this scheme yet"]
    if pods:
        header = (POD_HEADER[0], "NODE", *POD_HEADER[1:])
        lines += ["", "pods:", _table(header, pods)]
    return "\n".join(lines)
