"""The monitor and the DAMOS engine over the userspace operations, on a real child.

The host kernel has no access-check primitive (test_host_real.py proves it), so the
accesses come from a fake that reports the child's anonymous mapping as accessed; the
layout (/proc/PID/maps), the monitor's regions over it and the pageout through
process_madvise are real. A ``pageout`` scheme for regions idle for a few aggregations
must reclaim the child's clean file mapping and leave the "hot" anonymous memory alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from userspace_support import PAGE, Child

from damon_agent.core import attrs, clock, monitor
from damon_agent.node import actions as node_actions
from damon_agent.ops import userspace, userspace_fake
from damon_agent.ops import userspace_procfs as procfs
from damon_agent.schemes import engine, errors, model

PROC = Path("/proc")


class _NoMetrics:
    def read(self, metric: str, *, nid: int | None = None, path: str | None = None) -> int:
        raise errors.MetricUnavailableError(f"{metric}: not used by this test")


def _resident(pid: int, span: tuple[int, int]) -> int:
    return int(procfs.read_pagemap_range(pid, *span, PROC, PAGE).present.sum())


def test_pageout_scheme_reclaims_the_idle_file_mapping_only(child: Child) -> None:
    check = userspace_fake.FakeAccessCheck({child.pid: [child.anon]})
    ops = userspace.UserspaceOperations(check, node_actions, proc_root=PROC)
    aggr_us = 40_000
    scheme = model.Scheme(
        name="reclaim-idle",
        action="pageout",
        pattern=model.AccessPattern(max_rate_bp=0, min_age_us=3 * aggr_us),
    )
    schemes = engine.SchemesEngine([scheme], ops, _NoMetrics())
    mon = monitor.Monitor(
        attrs.MonitoringAttrs(sample_us=4_000, aggr_us=aggr_us, min_nr_regions=10),
        ops,
        [child.pid],
        clock=clock.WallClock(),
        rng=np.random.default_rng(7),
        schemes=schemes,
    )
    file_pages = (child.file[1] - child.file[0]) // PAGE
    anon_before = _resident(child.pid, child.anon)
    assert _resident(child.pid, child.file) == file_pages
    mon.run(1_500_000)
    (stats,) = schemes.stats()
    assert stats.sz_applied > 0
    assert check.prepared and {pid for pid, _ in check.prepared} == {child.pid}
    file_left = _resident(child.pid, child.file)
    assert file_left <= file_pages // 10, f"{file_left} of {file_pages} file pages left"
    # The accessed anonymous pages were never in a matching region.
    assert _resident(child.pid, child.anon) == anon_before
    assert ops.counters.applied_bytes["pageout"] == stats.sz_applied
