"""Memory cgroups that are gone since the plan was made: what a start or commit leaves out.

(Processes gone since the plan are left out of the vaddr targets by the engine itself,
``ops.kernel.damon``; a target filter on one is dropped the same way, ``inert`` included.)

A pod's memory cgroup is removed when kubelet deletes the pod, which can happen between
the planner's look at the node and the engine's write. The kernel resolves every staged
``memcg_path`` (a filter's, or a ``node_memcg_*_bp`` goal's ``path``) when a kdamond
starts or takes a commit, and one that names no memory cgroup fails the whole write
(ENOMEM). Kernels before 6.15 handle a commit in the kdamond's own callback, where the
refusal never reaches the writer and the kdamond stops. So the engine rewrites a scheme
without its gone memcgs before it writes, keeping what the scheme means:

- A gone memcg holds no page. A ``matching`` filter on it selects nothing and never
  hits: it is left out.
- A ``matching: false`` filter on it selects every page. As a reject (the planner's
  "reject what is not in this memcg", a per-memcg copy's first filter) it leaves the
  scheme nothing to act on.
- Left out, a scheme's last allow filter would flip the kernel's default for pages no
  filter matched (rejected while an allow filter is last, else passed): a scheme kept to
  its pods by ``allow memcg`` filters would act on the whole node. When that happens,
  or the scheme is left nothing as above, the scheme is made inert instead of dropped
  (its index, key and counters stay): action ``stat``, which changes no memory, and,
  where the kernel has ``addr`` filters, one rejecting every address, so it tries
  nothing either.
- A quota goal on a gone memcg is left out: the pod it steers is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from damon_agent.schemes import model

# Whether a memcg path (as a memcg filter takes it, "/a/b") names a memory cgroup now.
MemcgExists = Callable[[str], bool]

REJECT_EVERY_ADDRESS = model.Filter(
    type="addr", allow=False, matching=True, addr_start=0, addr_end=model.UNBOUNDED
)


def gone_memcgs(scheme: model.Scheme, exists: MemcgExists) -> set[str]:
    """The memcg paths ``scheme`` names (filters and quota goals) that name no cgroup now."""
    named = {f.memcg_path for f in scheme.filters if f.type == "memcg" and f.memcg_path}
    if scheme.quota is not None:
        named |= {g.path for g in scheme.quota.goals if g.path}
    return {path for path in named if not exists(path)}


def without_gone_memcgs(
    scheme: model.Scheme, gone: set[str], *, addr_filters: bool
) -> model.Scheme:
    """``scheme`` as it can be written with the memcgs in ``gone`` removed (see above);
    ``addr_filters``: whether the kernel has the ``addr`` filter an inert scheme uses."""
    if not gone:
        return scheme
    quota = scheme.quota
    if quota is not None:
        quota = replace(quota, goals=tuple(g for g in quota.goals if g.path not in gone))
    kept: list[model.Filter] = []
    left_nothing = False
    for one in scheme.filters:
        if one.type != "memcg" or one.memcg_path not in gone:
            kept.append(one)
        elif not one.matching and not one.allow:
            left_nothing = True
    had_allow = any(f.allow for f in scheme.filters)
    if left_nothing or (had_allow and not any(f.allow for f in kept)):
        return inert(replace(scheme, quota=quota), addr_filters=addr_filters)
    return replace(scheme, filters=tuple(kept), quota=quota)


def inert(scheme: model.Scheme, *, addr_filters: bool) -> model.Scheme:
    """``scheme`` acting on nothing, in its place: action ``stat``, and a filter
    rejecting every address where the kernel has ``addr`` filters."""
    filters = (REJECT_EVERY_ADDRESS,) if addr_filters else ()
    return replace(scheme, action="stat", filters=filters, dests=())
