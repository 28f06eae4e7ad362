"""Prometheus metrics of the agent, read fresh on every scrape.

One ``prometheus_client`` custom collector (``AgentCollector``) asks its ``MetricsSource``
for current values when ``/metrics`` is scraped: the backend's per-scheme counters (on the
kernel backend that is an ``update_schemes_stats`` round trip, cheap and bounded by the
number of schemes), memory PSI read from the injected ``/proc`` root at that moment, and
the loop's own counters. Nothing is sampled in the background, so a scrape never shows a
value older than itself, and an idle agent does no metrics work at all.

Metric families (labels: ``scheme`` = the scheme object's key, ``name`` = the DAMOS
scheme's name inside it)::

    damon_agent_info{node,backend}                            1
    damon_agent_ready                                         0|1
    damon_scheme_tried_regions_total{scheme,name}             counter
    damon_scheme_tried_bytes_total{scheme,name}               counter
    damon_scheme_applied_regions_total{scheme,name}           counter
    damon_scheme_applied_bytes_total{scheme,name}             counter
    damon_scheme_filter_passed_bytes_total{scheme,name}       counter (bytes that passed
                                                              the scheme's ops filters;
                                                              only where counted: kernel
                                                              backend, Linux 6.14+)
    damon_scheme_quota_exceeds_total{scheme,name}             counter
    damon_agent_contexts                                      gauge
    damon_agent_selected_pods{scheme}                         gauge
    damon_scheme_problems{scheme,severity,reason}             gauge (the plan's problems
                                                              with a scheme object here:
                                                              its Degraded condition)
    damon_node_memory_psi_some_seconds_total                  counter
    damon_node_memory_psi_some_avg10_ratio                    gauge
    damon_pod_memory_node_bytes{pod,nid}                      gauge (pods of migrate_*
                                                              schemes: NUMA placement)
    damon_node_numa_balancing                                 gauge (kernel.numa_balancing,
                                                              a bit mask)
    damon_node_numa_balancing_mode{mode="normal"|"tiering"}   gauge 0|1 (its bits by name)
    damon_node_demotion_enabled                               gauge 0|1
    damon_node_cgroups_dying                                  gauge (removed cgroups the
                                                              kernel keeps: cgroup.stat's
                                                              nr_dying_descendants; where
                                                              cgroup v2 shows it)
    damon_agent_applies_total / _apply_errors_total           counter
    damon_agent_status_writes_total                           counter
    damon_agent_feedback_rounds_total                         counter

The loop's outcome (``outcome``; the same figures as the DamonNode status)::

    damon_scheme_effective_quota_bytes{scheme,name}           gauge (schemes with a size
                                                              limit in this window)
    damon_scheme_goal_target{scheme,name,goal,metric}         gauge (the metric's unit)
    damon_scheme_goal_current{scheme,name,goal,metric}        gauge (where the backend
                                                              shows it: not the kernel's
                                                              own metrics)
    damon_scheme_memory_saved_bytes{scheme}                   gauge (its pods, summed)
    damon_node_memory_saved_bytes                             gauge (every selected pod,
                                                              each once: the status'
                                                              savedBytes)
    damon_pod_memory_pressure_some_avg10_ratio{pod}           gauge (memory.pressure)
    damon_pod_memory_pressure_some_seconds_total{pod}         counter
    damon_pod_memory_bytes{pod} / _swap_bytes{pod}            gauge (now)
    damon_pod_memory_saved_bytes{pod}                         gauge (charged at first
                                                              sight minus now, >= 0)
    damon_pod_memory_refaults_total{pod}                      counter (since first sight)
    damon_pod_protected{pod}                                  gauge 0|1 (pods a scheme with
                                                              a reclaim floor selects: 1
                                                              while a pageout leaves it be)
    damon_pod_protection_floor_bytes{pod}                     gauge (its floor, where
                                                              readable)
    damon_agent_pods_omitted                                  gauge (pods beyond the cap)
    damon_kdamond_cpu_seconds_total{context,operations}       counter (kernel backend)
    damon_snapshot_age_seconds{context,operations}            gauge

The kernel's own tiering settings are read from the injected roots on each scrape; a
setting the kernel does not have (or whose file cannot be read) has no series, and on the
sim backend none do.

Filter-passed bytes are exported only where the source says its backend counts them
(``MetricsSource.counts_filter_passed``); elsewhere the family has no series, so that an
absent series means "not counted" and a 0 means "counted, none passed".

Cardinality is bounded: pods are the ones the node's schemes select, at most
``resources.MAX_POD_STATUSES`` of them (the most pressed, then those that saved the
most, as in the status); ``context`` is the index of the context in the running plan.

While the agent holds DAMON_STAT's place (``--take-over-damon-stat``), DAMON_STAT's own
figures, from the agent's kdamond over the node's physical memory (``reports.node_stat``;
read on scrape like the rest)::

    damon_node_memory_idle_seconds{percentile="0".."100"}     gauge (DAMON_STAT's
                                                              memory_idle_ms_percentiles,
                                                              in seconds; negative: memory
                                                              accessed, for that long)
    damon_node_estimated_memory_bandwidth_bytes_per_second    gauge (its
                                                              estimated_memory_bandwidth)
    damon_node_stat_aggregation_interval_seconds              gauge (its aggr_interval_us)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import prometheus_client
import prometheus_client.core
import prometheus_client.registry

from damon_agent.api import resources
from damon_agent.reports import node_stat
from damon_agent.runtime import backend as backend_mod
from damon_agent.runtime import outcome as loop_outcome
from damon_agent.runtime import planning
from damon_agent.schemes.stats import SchemeCounters


@dataclass
class LoopCounters:
    applies: int = 0
    apply_errors: int = 0
    status_writes: int = 0
    status_write_errors: int = 0
    feedback_rounds: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class MetricsSource(Protocol):
    @property
    def node_name(self) -> str: ...

    @property
    def backend(self) -> str: ...

    def readiness(self) -> tuple[bool, str]: ...

    def current_plan(self) -> planning.Plan: ...

    def current_stats(self) -> dict[str, SchemeCounters]: ...

    def current_psi(self) -> resources.Psi: ...

    def loop_counters(self) -> LoopCounters: ...

    def pod_placement(self) -> dict[str, dict[int, int]]: ...

    def current_kernel_tiering(self) -> resources.KernelTiering | None:
        """The kernel's NUMA balancing and demotion; None where not read (the sim)."""
        ...

    def current_dying_cgroups(self) -> int | None:
        """Removed cgroups the kernel still keeps; None where not read."""
        ...

    def node_stat(self) -> node_stat.NodeStat | None:
        """DAMON_STAT's figures while the agent stands in for it, else None."""
        ...

    def current_tuning(self) -> dict[str, backend_mod.SchemeTuning]: ...

    def current_pods(self) -> list[loop_outcome.PodOutcome]: ...

    def current_kdamond_cpu(self) -> dict[str, loop_outcome.CpuUse]:
        """By context key; only cumulative seconds are exported."""
        ...

    def current_snapshot_ages(self) -> dict[str, float]: ...

    def counts_filter_passed(self) -> bool:
        """Whether the backend counts filter-passed bytes (``status.counts_filter_passed``):
        where it does not, the counter's 0 is no figure and gets no series."""
        ...


class AgentCollector(prometheus_client.registry.Collector):
    def __init__(self, source: MetricsSource) -> None:
        self._source = source

    def collect(self) -> Iterator[prometheus_client.core.Metric]:
        core = prometheus_client.core
        src = self._source
        info = core.GaugeMetricFamily(
            "damon_agent_info", "The agent and its backend", labels=["node", "backend"]
        )
        info.add_metric([src.node_name, src.backend], 1)
        yield info
        ready = core.GaugeMetricFamily("damon_agent_ready", "1 once the agent applied its plan")
        ready.add_metric([], 1 if src.readiness()[0] else 0)
        yield ready

        plan = src.current_plan()
        stats = src.current_stats()
        families = {
            "nr_tried": core.CounterMetricFamily(
                "damon_scheme_tried_regions",
                "Regions a scheme was tried on",
                labels=["scheme", "name"],
            ),
            "sz_tried": core.CounterMetricFamily(
                "damon_scheme_tried_bytes", "Bytes a scheme was tried on", labels=["scheme", "name"]
            ),
            "nr_applied": core.CounterMetricFamily(
                "damon_scheme_applied_regions",
                "Regions a scheme's action was applied to",
                labels=["scheme", "name"],
            ),
            "sz_applied": core.CounterMetricFamily(
                "damon_scheme_applied_bytes",
                "Bytes a scheme's action was applied to",
                labels=["scheme", "name"],
            ),
            "qt_exceeds": core.CounterMetricFamily(
                "damon_scheme_quota_exceeds",
                "Times a scheme's quota was exceeded",
                labels=["scheme", "name"],
            ),
        }
        filter_passed = core.CounterMetricFamily(
            "damon_scheme_filter_passed_bytes",
            "Bytes that passed a scheme's operations-layer filters (the kernel's "
            "sz_ops_filter_passed, Linux 6.14+; no series where the backend does not count it)",
            labels=["scheme", "name"],
        )
        filter_passed_counted = src.counts_filter_passed()
        for scheme in plan.user_schemes():
            counters = stats.get(scheme.key, SchemeCounters())
            labels = [scheme.source, scheme.name]
            for attr, family in families.items():
                family.add_metric(labels, getattr(counters, attr))
            if filter_passed_counted:
                filter_passed.add_metric(labels, counters.sz_ops_filter_passed)
        yield from families.values()
        yield filter_passed

        contexts = core.GaugeMetricFamily("damon_agent_contexts", "Monitoring contexts running")
        contexts.add_metric([], len(plan.contexts))
        yield contexts
        pods = core.GaugeMetricFamily(
            "damon_agent_selected_pods", "Pods on this node a scheme selects", labels=["scheme"]
        )
        for summary in plan.sources:
            pods.add_metric([summary.key], len(summary.pods))
        yield pods
        yield _problems_family(plan)

        psi = src.current_psi()
        some_total = core.CounterMetricFamily(
            "damon_node_memory_psi_some_seconds",
            "Cumulative time some tasks stalled on memory (node)",
        )
        some_total.add_metric([], psi.some_total_us / 1e6)
        yield some_total
        some_avg10 = core.GaugeMetricFamily(
            "damon_node_memory_psi_some_avg10_ratio",
            "Share of the last 10 s some tasks stalled on memory (node)",
        )
        some_avg10.add_metric([], psi.some_avg10 / 100.0)
        yield some_avg10

        placement = core.GaugeMetricFamily(
            "damon_pod_memory_node_bytes",
            "Resident bytes of a pod per NUMA node (pods of migration schemes)",
            labels=["pod", "nid"],
        )
        for pod, per_node in sorted(src.pod_placement().items()):
            for nid, amount in sorted(per_node.items()):
                placement.add_metric([pod, str(nid)], amount)
        yield placement
        yield from _kernel_tiering_families(src.current_kernel_tiering())
        dying = core.GaugeMetricFamily(
            "damon_node_cgroups_dying",
            "Removed cgroups the kernel still keeps (cgroup.stat nr_dying_descendants); "
            "grows under pod churn where DAMON memcg filters pin memory cgroups",
        )
        count = src.current_dying_cgroups()
        if count is not None:
            dying.add_metric([], count)
        yield dying

        yield from _node_stat_families(src.node_stat())
        yield from _tuning_families(plan, src.current_tuning())
        yield from _pod_families(src.current_pods())
        yield from _context_families(plan, src.current_kdamond_cpu(), src.current_snapshot_ages())

        loop = src.loop_counters()
        for name, value, text in (
            ("damon_agent_applies", loop.applies, "Plans applied to the backend"),
            ("damon_agent_apply_errors", loop.apply_errors, "Plans the backend refused"),
            ("damon_agent_status_writes", loop.status_writes, "DamonNode status writes"),
            (
                "damon_agent_status_write_errors",
                loop.status_write_errors,
                "DamonNode status writes that failed",
            ),
            (
                "damon_agent_feedback_rounds",
                loop.feedback_rounds,
                "PSI feedback rounds (one a second while a backend runs)",
            ),
        ):
            family = core.CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family


def _node_stat_families(
    stat: node_stat.NodeStat | None,
) -> Iterator[prometheus_client.core.Metric]:
    core = prometheus_client.core
    idle = core.GaugeMetricFamily(
        "damon_node_memory_idle_seconds",
        "Per-byte idle time percentiles of the node's memory, as DAMON_STAT's "
        "memory_idle_ms_percentiles (negative: accessed, for that long)",
        labels=["percentile"],
    )
    bandwidth = core.GaugeMetricFamily(
        "damon_node_estimated_memory_bandwidth_bytes_per_second",
        "Memory access intensity of the node from DAMON's sampling, as DAMON_STAT's "
        "estimated_memory_bandwidth",
    )
    interval = core.GaugeMetricFamily(
        "damon_node_stat_aggregation_interval_seconds",
        "Auto-tuned aggregation interval of the figures, as DAMON_STAT's aggr_interval_us",
    )
    if stat is not None:
        for percentile, value in zip(node_stat.PERCENTILES, stat.idle_ms_percentiles, strict=True):
            idle.add_metric([str(percentile)], value / 1000.0)
        bandwidth.add_metric([], stat.estimated_bandwidth)
        interval.add_metric([], stat.aggr_us / 1e6)
        yield from (idle, bandwidth, interval)


def _kernel_tiering_families(
    found: resources.KernelTiering | None,
) -> Iterator[prometheus_client.core.Metric]:
    core = prometheus_client.core
    balancing = core.GaugeMetricFamily(
        "damon_node_numa_balancing",
        "kernel.numa_balancing: 0 off, bit 1 normal NUMA balancing, bit 2 memory tiering "
        "(either moves pages out of the slower, CPU-less tiers itself)",
    )
    modes = core.GaugeMetricFamily(
        "damon_node_numa_balancing_mode",
        "1 where kernel.numa_balancing has that mode's bit set",
        labels=["mode"],
    )
    demotion = core.GaugeMetricFamily(
        "damon_node_demotion_enabled",
        "1 where reclaim demotes pages to a lower memory tier (/sys/kernel/mm/numa/"
        "demotion_enabled)",
    )
    if found is not None and found.numa_balancing is not None:
        balancing.add_metric([], found.numa_balancing)
        for mode in resources.NUMA_BALANCING_MODES:
            modes.add_metric([mode], 1 if mode in found.numa_balancing_modes else 0)
    if found is not None and found.demotion_enabled is not None:
        demotion.add_metric([], 1 if found.demotion_enabled else 0)
    yield from (balancing, modes, demotion)


def _problems_family(plan: planning.Plan) -> prometheus_client.core.Metric:
    # The same problems set a scheme's Degraded condition on this node; exported so that
    # an alert sees them without reading every DamonNode. Counted by reason rather than
    # one series per message: reasons are a small fixed set, messages are free text.
    problems = prometheus_client.core.GaugeMetricFamily(
        "damon_scheme_problems",
        "Problems the plan found with a scheme object on this node (its Degraded reasons)",
        labels=["scheme", "severity", "reason"],
    )
    counted: dict[tuple[str, str, str], int] = {}
    for problem in plan.problems:
        key = (problem.source, problem.severity, problem.reason)
        counted[key] = counted.get(key, 0) + 1
    for labels, number in sorted(counted.items()):
        problems.add_metric(list(labels), number)
    return problems


def _tuning_families(
    plan: planning.Plan, tuning: dict[str, backend_mod.SchemeTuning]
) -> Iterator[prometheus_client.core.Metric]:
    core = prometheus_client.core
    effective = core.GaugeMetricFamily(
        "damon_scheme_effective_quota_bytes",
        "Bytes a scheme may act on in the current quota window, as its goals tuned it",
        labels=["scheme", "name"],
    )
    goal_labels = ["scheme", "name", "goal", "metric"]
    target = core.GaugeMetricFamily(
        "damon_scheme_goal_target",
        "A quota goal's target, in its metric's unit (us of stall per reset interval, "
        "basis points, or a number)",
        labels=goal_labels,
    )
    current = core.GaugeMetricFamily(
        "damon_scheme_goal_current",
        "A quota goal's current value, in its metric's unit (absent where the kernel "
        "computes the metric itself and does not show it)",
        labels=goal_labels,
    )
    for scheme in plan.user_schemes():
        found = tuning.get(scheme.key)
        if found is None:
            continue
        labels = [scheme.source, scheme.name]
        if found.effective_quota_bytes is not None:
            effective.add_metric(labels, found.effective_quota_bytes)
        for index, goal in enumerate(found.goals):
            one = [*labels, str(index), goal.metric]
            target.add_metric(one, goal.target)
            if goal.current is not None:
                current.add_metric(one, goal.current)
    yield from (effective, target, current)


def _pod_families(pods: list[loop_outcome.PodOutcome]) -> Iterator[prometheus_client.core.Metric]:
    core = prometheus_client.core
    by_scheme: dict[str, int] = {}
    for pod in pods:
        for scheme in pod.schemes:
            by_scheme[scheme] = by_scheme.get(scheme, 0) + pod.saved_bytes
    saved_by_scheme = core.GaugeMetricFamily(
        "damon_scheme_memory_saved_bytes",
        "Memory a scheme's pods on this node are charged less than when the agent first saw them",
        labels=["scheme"],
    )
    for scheme, amount in sorted(by_scheme.items()):
        saved_by_scheme.add_metric([scheme], amount)
    yield saved_by_scheme
    # Not the sum of the per-scheme figures: a pod two schemes select counts once, and
    # pods beyond the exported cap count too (as the DamonNode status' savedBytes).
    saved_by_node = core.GaugeMetricFamily(
        "damon_node_memory_saved_bytes",
        "Memory the pods this node's schemes select are charged less than at first sight",
    )
    saved_by_node.add_metric([], sum(pod.saved_bytes for pod in pods))
    yield saved_by_node

    listed = loop_outcome.most_interesting(pods, resources.MAX_POD_STATUSES)
    pressure = core.GaugeMetricFamily(
        "damon_pod_memory_pressure_some_avg10_ratio",
        "Share of the last 10 s some of a pod's tasks stalled on memory (memory.pressure)",
        labels=["pod"],
    )
    stalled = core.CounterMetricFamily(
        "damon_pod_memory_pressure_some_seconds",
        "Cumulative time some of a pod's tasks stalled on memory (memory.pressure)",
        labels=["pod"],
    )
    memory = core.GaugeMetricFamily(
        "damon_pod_memory_bytes", "Memory charged to a pod (memory.current)", labels=["pod"]
    )
    swap = core.GaugeMetricFamily(
        "damon_pod_memory_swap_bytes", "Swap used by a pod (memory.swap.current)", labels=["pod"]
    )
    saved = core.GaugeMetricFamily(
        "damon_pod_memory_saved_bytes",
        "Memory a pod is charged less than when the agent first saw it (never below 0)",
        labels=["pod"],
    )
    refaults = core.CounterMetricFamily(
        "damon_pod_memory_refaults",
        "Pages of a pod refaulted since the agent first saw it (memory.stat "
        "workingset_refault_anon + _file)",
        labels=["pod"],
    )
    protected = core.GaugeMetricFamily(
        "damon_pod_protected",
        "1 while a pod is at or below its reclaim floor and pageout leaves it alone "
        "(pods of schemes with a protection)",
        labels=["pod"],
    )
    floor = core.GaugeMetricFamily(
        "damon_pod_protection_floor_bytes",
        "A pod's reclaim floor: max(memory.low|memory.min|requests, minimum)",
        labels=["pod"],
    )
    for pod in listed:
        labels = [pod.key]
        if pod.now.psi is not None:
            pressure.add_metric(labels, pod.now.psi.some_avg10 / 100.0)
            stalled.add_metric(labels, pod.now.psi.some_total_us / 1e6)
        memory.add_metric(labels, pod.now.memory_bytes)
        swap.add_metric(labels, pod.now.swap_bytes)
        saved.add_metric(labels, pod.saved_bytes)
        refaults.add_metric(labels, pod.refaults)
        if pod.floor is not None:
            protected.add_metric(labels, 1 if pod.floor.protected else 0)
            if pod.floor.floor_bytes is not None:
                floor.add_metric(labels, pod.floor.floor_bytes)
    omitted = core.GaugeMetricFamily(
        "damon_agent_pods_omitted",
        f"Selected pods left out of the damon_pod_* metrics (at most "
        f"{resources.MAX_POD_STATUSES} pods are exported)",
    )
    omitted.add_metric([], len(pods) - len(listed))
    yield from (pressure, stalled, memory, swap, saved, refaults, protected, floor, omitted)


def _context_families(
    plan: planning.Plan,
    cpu: dict[str, loop_outcome.CpuUse],
    ages: dict[str, float],
) -> Iterator[prometheus_client.core.Metric]:
    core = prometheus_client.core
    labels = ["context", "operations"]
    cpu_seconds = core.CounterMetricFamily(
        "damon_kdamond_cpu_seconds",
        "CPU time a context's kdamond has used (user + system, /proc/PID/stat)",
        labels=labels,
    )
    age = core.GaugeMetricFamily(
        "damon_snapshot_age_seconds",
        "Seconds since a context's latest snapshot of its regions (the kernel backend "
        "takes one only when asked)",
        labels=labels,
    )
    for index, context in enumerate(plan.contexts):
        one = [str(index), context.operations]
        use = cpu.get(context.key)
        if use is not None:
            cpu_seconds.add_metric(one, use.seconds)
        if context.key in ages:
            age.add_metric(one, ages[context.key])
    yield from (cpu_seconds, age)


def registry_for(source: MetricsSource) -> prometheus_client.CollectorRegistry:
    """A registry holding only the agent's collector (no process-global default registry)."""
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(source))
    return registry
