"""The userspace backend: the project's own monitor and DAMOS engine over real processes.

For nodes whose kernel has no usable DAMON: built without it (Debian 12's stock 6.1
has none), or held by someone else (a DAMON module running exclusively, another tool's
kdamonds). Each planned context is a vaddr context over its pods' processes
(``ops.userspace``): access checks with soft-dirty bits or idle page tracking, whichever
the kernel has (``userspace_access.probe``), ``pageout``/``cold`` through
process_madvise and ``migrate_hot``/``migrate_cold`` through move_pages
(``node.actions``). What it cannot do, it says through the capabilities it plans with:

- vaddr only: physical memory cannot be sampled from userspace, so a whole-node scheme
  is refused by the planner (``OperationsUnsupported``), never run on something else;
- filters on regions only (``addr``, ``target``): page attributes (anon, memcg, young)
  would need a page walk per region;
- quota goals: ``user_input`` (the pods' PSI, fed by ``feedback``), the node's memory
  PSI and per-node used/free shares, read from /proc and /sys as the kernel reads them.

Soft-dirty sees writes only, so a page only read looks cold to it; the status says which
access check runs (``BackendInfo.kernel_release`` carries the kernel, the log the check).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np

from damon_agent.node import actions, meminfo, psi
from damon_agent.node import errors as node_errors
from damon_agent.ops import userspace
from damon_agent.ops import userspace_errors as ops_errors
from damon_agent.runtime import backend, errors, planning
from damon_agent.runtime.backends import inprocess
from damon_agent.schemes import errors as schemes_errors

log = logging.getLogger(__name__)

USERSPACE_FILTER_TYPES: Final = frozenset({"addr", "target"})
USERSPACE_GOAL_METRICS: Final = frozenset(
    {"user_input", "some_mem_psi_us", "node_mem_used_bp", "node_mem_free_bp"}
)


def capabilities(tiers: Mapping[str, tuple[int, ...]]) -> planning.Capabilities:
    return planning.Capabilities(
        operations=frozenset({"vaddr"}),
        actions={"vaddr": frozenset(userspace.SUPPORTED_ACTIONS)},
        filter_types=USERSPACE_FILTER_TYPES,
        goal_metrics=USERSPACE_GOAL_METRICS,
        intervals_goal=True,
        tiers=dict(tiers),
    )


class NodeMetrics:
    """Quota-goal and watermark metrics of the real node, read when the engine asks."""

    def __init__(self, proc_root: Path, sys_root: Path) -> None:
        self._proc = proc_root
        self._sys = sys_root

    def read(self, metric: str, *, nid: int | None = None, path: str | None = None) -> int:
        del path
        try:
            if metric == "some_mem_psi_us":
                return psi.read_system(psi.Resource.MEMORY, self._proc).some.total_us
            if metric == "free_mem_rate":
                return meminfo.free_mem_rate_permille(meminfo.read_meminfo(self._proc))
            if metric in ("node_mem_used_bp", "node_mem_free_bp") and nid is not None:
                info = meminfo.read_node_meminfo(nid, self._sys)
                if metric == "node_mem_used_bp":
                    return meminfo.node_mem_used_bp(info)
                return meminfo.node_mem_free_bp(info)
        except node_errors.NodeError as err:
            raise schemes_errors.MetricUnavailableError(f"{metric}: {err}") from err
        raise schemes_errors.MetricUnavailableError(f"{metric} is not read on this backend")


def open_userspace(
    *,
    proc_root: Path,
    sys_root: Path,
    tiers: Mapping[str, tuple[int, ...]],
    kernel_release: str = "",
    fallback_reason: str = "",
) -> inprocess.InProcessBackend:
    """The userspace backend; ``BackendError`` names each missing access check."""
    try:
        ops = userspace.build(actions, proc_root=proc_root, sys_root=sys_root)
    except ops_errors.UserspaceOpsError as err:
        raise errors.BackendError(f"userspace backend: {err}") from err
    log.info(
        "userspace backend: access checks with %s%s",
        ops.access_check.name,
        "" if ops.access_check.sees_reads else " (sees writes only)",
    )
    metrics = NodeMetrics(proc_root, sys_root)

    def make_parts(context: planning.Context, seed: int, start_us: int) -> inprocess.ContextParts:
        del start_us  # wall clock
        pids = tuple(t.pid for t in context.targets if t.pid is not None)
        if context.operations != "vaddr" or len(pids) != len(context.targets):
            raise errors.BackendError(
                f"context {context.key}: the userspace backend monitors processes only"
            )
        names = {
            index: f"pid {t.pid}" + (f" ({t.pod})" if t.pod else "")
            for index, t in enumerate(context.targets)
        }
        return inprocess.ContextParts(
            ops=ops,
            target_ids=pids,
            target_names=names,
            metrics=metrics,
            clock=ops.clock,
            rng=np.random.default_rng(seed),
        )

    info = backend.BackendInfo(
        backend="userspace",
        capabilities=capabilities(tiers),
        kernel_release=kernel_release,
        fallback_reason=fallback_reason,
    )
    return inprocess.InProcessBackend(info, make_parts, pacing=inprocess.Pacing.REAL_TIME)
