"""The backends a plan runs on, and how a node picks one (``open_backend``).

::

    kernel      the kernel's DAMON through sysfs (``kernel.KernelBackend``)
    userspace   the project's monitor and DAMOS engine over real processes
                (``userspace.open_userspace``: soft-dirty or idle page tracking,
                process_madvise, move_pages)
    sim         the same monitor and engine over a simulated workload (``sim.open_sim``)

``auto`` (the default of ``run`` on a real node and of ``daemon``) takes the kernel where
its DAMON sysfs exists and is free for the agent; else userspace where the kernel has an
access check for it, with the reason the kernel was passed over kept in
``BackendInfo.fallback_reason`` (the status shows it); else it refuses with a
``BackendError`` naming what each backend misses. DAMON held by DAMON_STAT counts as free
when the agent was told to take DAMON_STAT over. ``sim`` is only ever chosen by name.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver as kdriver
from damon_agent.ops.kernel import errors as kernel_errors
from damon_agent.ops.kernel import holders as kernel_holders
from damon_agent.ops.kernel import ownership
from damon_agent.ops.kernel import sysfs as kernel_sysfs
from damon_agent.runtime import backend, errors, observing
from damon_agent.runtime.backends import inprocess, kernel, sim, userspace

log = logging.getLogger(__name__)

Choice = Literal["auto", "kernel", "userspace", "sim"]
CHOICES: tuple[Choice, ...] = ("auto", "kernel", "userspace", "sim")


@dataclass(frozen=True)
class BackendRequest:
    """What ``run`` or ``daemon`` asks for (their flags)."""

    choice: Choice
    state_dir: Path
    roots: observing.NodeRoots = field(default_factory=observing.NodeRoots)
    sim_workload: Path | None = None
    # The sim's pacing: stepped in virtual time for ``run``, the wall clock for ``daemon``.
    sim_pacing: inprocess.Pacing = inprocess.Pacing.WALL_PACED
    seed: int = 0
    snapshot_source: kernel_damon.SnapshotSource = "auto"
    take_over_damon_stat: bool = False
    # Keep the kdamonds a previous agent on this boot left running, for the first plan to
    # commit into (``daemon``: its predecessor handed them over, or died); else turn
    # them off (``run``, which leaves nothing running behind it).
    adopt: bool = False


def open_backend(request: BackendRequest) -> backend.Backend:
    """The backend ``request`` asks for (module docstring); ``BackendError`` if none."""
    if request.choice == "sim":
        if request.sim_workload is None:
            raise errors.BackendError("the sim backend needs a workload file")
        return sim.open_sim(request.sim_workload, pacing=request.sim_pacing, seed=request.seed)
    tiers = observing.tiers_of(observing.read_numa(request.roots))
    if request.choice == "userspace":
        return _userspace(request, tiers, "")
    if request.choice == "kernel":
        return _kernel(request, tiers)
    try:
        opened = _kernel(request, tiers)
    except errors.BackendError as err:
        reason = str(err)
    else:
        reason = _held_reason(opened, request)
        if not reason:
            return opened
        opened.stop()
    log.warning("kernel DAMON not usable (%s): trying the userspace backend", reason)
    try:
        return _userspace(request, tiers, reason)
    except errors.BackendError as err:
        raise errors.BackendError(f"no backend can run here: {reason}; {err}") from err


def _kernel(request: BackendRequest, tiers: dict[str, tuple[int, ...]]) -> kernel.KernelBackend:
    admin = request.roots.sys / "kernel" / "mm" / "damon" / "admin"
    if not admin.is_dir():
        raise errors.BackendError(
            f"kernel DAMON: no {admin} (a kernel without CONFIG_DAMON_SYSFS, or DAMON before 5.18)"
        )
    try:
        request.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise errors.BackendError(
            f"state directory {request.state_dir}: {err.strerror or err} "
            "(set it with --state-dir or DAMON_AGENT_STATE_DIR)"
        ) from err
    return kernel.KernelBackend.on_host(
        request.state_dir,
        sys_root=request.roots.sys,
        proc_root=request.roots.proc,
        tiers=tiers,
        node_distances=observing.node_distances(request.roots),
        snapshot_source=request.snapshot_source,
        adopt=request.adopt,
    )


def _held_reason(opened: kernel.KernelBackend, request: BackendRequest) -> str:
    """Why the kernel's DAMON is not free for the agent; empty when it is."""
    found = opened.holders()
    if not found.held:
        return ""
    only_damon_stat = not found.foreign and all(
        m.module == kernel_holders.DAMON_STAT for m in found.modules
    )
    if only_damon_stat and request.take_over_damon_stat:
        return ""
    return f"kernel DAMON is held: {found.summary()}"


def _userspace(
    request: BackendRequest, tiers: dict[str, tuple[int, ...]], reason: str
) -> inprocess.InProcessBackend:
    turn_off_handed_over(request)
    return userspace.open_userspace(
        proc_root=request.roots.proc,
        sys_root=request.roots.sys,
        tiers=tiers,
        kernel_release=platform.release(),
        fallback_reason=reason,
    )


def turn_off_handed_over(request: BackendRequest, fs: kernel_sysfs.SysfsIO | None = None) -> None:
    """Turn off the kdamonds an earlier agent of this boot left for its successor.

    A kernel-backend agent replaced by one on another backend hands its kdamonds over
    all the same (it cannot know); the successor would never adopt them, and they would
    act on the node with no agent to stop them. Only kdamonds the state directory
    records as made on this boot are touched; without a record nothing is read.
    ``fs``: the DAMON sysfs tree to use (default: the one under ``request.roots``).
    """
    admin = request.roots.sys / "kernel" / "mm" / "damon" / "admin"
    state_dir = request.state_dir
    if not request.adopt or not (state_dir / ownership.STATE_FILE).is_file():
        return
    if fs is None and not admin.is_dir():
        return
    try:
        tree = fs if fs is not None else kernel_sysfs.HostSysfs(admin)
        found = kdriver.KdamondDriver(tree, state_dir).recover(adopt=False)
    except kernel_errors.KernelDamonError as err:
        log.warning("kdamonds left by an earlier agent could not be turned off: %s", err)
        return
    if found.cleaned:
        log.info(
            "turned off kdamonds %s an earlier agent left running (this agent's backend "
            "is not the kernel's, so it will not adopt them)",
            found.cleaned,
        )
