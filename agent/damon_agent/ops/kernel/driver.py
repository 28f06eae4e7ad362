"""The sysfs driver: start, commit, read and stop the kdamonds this agent owns.

``KdamondDriver`` joins the pieces: ``writes`` (what to write), ``applying`` (how),
``reading`` (what comes back), ``ownership`` (whose kdamond it is) and ``capabilities``
(whether the kernel can). Everything it touches is injected: the sysfs tree (``fs``), the
state directory, the boot id, and the sleep and monotonic clock functions.

Life cycle::

    driver = KdamondDriver(HostSysfs(), state_dir)
    driver.recover(adopt=False)          # after a crash: clean (or adopt) what we left
    handle = driver.start(config)        # grow the list by one, stage, on, record pid
    driver.commit(handle, new_config)    # online: same thread, same pid
    driver.tried_regions(handle)         # readers
    driver.stop_all()                    # off, then shrink the list if we are alone

Every operation on a handle first checks that the kdamond is still ours (``ownership``)
and raises ``NotOwnedError`` if not: the driver never writes into a kdamond it did not
create, even when it holds a stale handle to that index.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from damon_agent.ops.kernel import applying, capabilities, errors, model, ownership, reading
from damon_agent.ops.kernel import sysfs as sysfs_io
from damon_agent.ops.kernel import writes as writes_mod
from damon_agent.schemes import stats as scheme_stats

# Whether everything a staged configuration names (processes, memory cgroups) is still
# there; the caller's own check, asked just before the kernel resolves them.
StillValid = Callable[[model.Kdamond], bool]


def _check_still_valid(
    still_valid: StillValid | None, config: model.Kdamond, path: str, command: str
) -> None:
    """Refuse ``command`` ourselves when the staged ``config`` names something gone.

    The kernel resolves every pid and memcg path of a configuration when it takes ``on``
    or ``commit``, and refuses the whole of it when one is gone; a refused commit also
    stopped the kdamond, before 6.15 and again on the 7.3 guest (seen under pod churn:
    the engine had to start it afresh, losing what it had monitored). Staging takes a
    while (hundreds of writes), and pods go meanwhile: asked here, the window is the gap
    between two syscalls instead. Raised as the kernel's refusal would be, nothing
    written, so the caller looks again and writes what is there now.
    """
    if still_valid is not None and not still_valid(config):
        raise errors.SysfsInvalidError(
            path, None, "a process or memory cgroup it names went away while it was staged", command
        )


@dataclass
class KdamondHandle:
    """A kdamond this driver started: its index, thread pid and the configuration in force."""

    index: int
    pid: int
    config: model.Kdamond
    addr_unit: int = 1
    # Adopted (``config`` unknown): the vaddr targets it runs, in its order, as staged by
    # the agent before (a commit must keep that order; see ``damon._target_layout``).
    adopted_pids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Recovery:
    """What ``recover`` found: kdamonds adopted (still running, ours) and cleaned."""

    adopted: list[KdamondHandle] = field(default_factory=list)
    cleaned: list[int] = field(default_factory=list)
    foreign: list[int] = field(default_factory=list)


class KdamondDriver:
    def __init__(
        self,
        fs: sysfs_io.SysfsIO,
        state_dir: Path,
        *,
        boot_id: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fs = fs
        self._sleep = sleep
        self._monotonic = monotonic
        self.ownership = ownership.Ownership(
            state_dir, boot_id if boot_id is not None else ownership.read_boot_id()
        )
        self._handles: dict[int, KdamondHandle] = {}

    # ---- probing ----------------------------------------------------------------------

    def capabilities(self, kernel_release: str) -> capabilities.CapabilityReport:
        return capabilities.probe(self.fs, kernel_release)

    # ---- life cycle -------------------------------------------------------------------

    def recover(self, *, adopt: bool) -> Recovery:
        """After a restart: adopt running kdamonds that are provably ours, or clean them.

        Stopped ones are always cleaned. Cleaning turns them off and, when no foreign
        kdamond exists, shrinks the list to 0.
        """
        state = self.ownership.verify(self.fs)
        adopted: list[KdamondHandle] = []
        cleaned: list[int] = []
        for index, owned in sorted(state.kdamonds.items()):
            running = applying.is_on(self.fs, index)
            if adopt and running:
                # pid -1: the crash came between turning it on and recording the thread.
                pid = (
                    owned.pid
                    if owned.pid != -1
                    else sysfs_io.read_int(self.fs, f"kdamonds/{index}/pid")
                )
                handle = KdamondHandle(
                    index=index,
                    pid=pid,
                    config=model.Kdamond(),
                    addr_unit=_read_addr_unit(self.fs, index),
                    adopted_pids=_read_staged_pids(self.fs, index),
                )
                self._handles[index] = handle
                adopted.append(handle)
            else:
                applying.turn_off(self.fs, index, self._sleep, self._monotonic)
                cleaned.append(index)
        foreign = ownership.foreign_indices(state.nr_kdamonds, state.kdamonds)
        if not adopted and not foreign and state.nr_kdamonds:
            applying.write_retrying(self.fs, "kdamonds/nr_kdamonds", "0", self._sleep)
            state = ownership.OwnedState(boot_id=state.boot_id, nr_kdamonds=0)
        # Otherwise the stopped directories stay recorded as ours, so that a later run,
        # alone again, removes them.
        self.ownership.save(state)
        return Recovery(adopted=adopted, cleaned=cleaned, foreign=foreign)

    def start(self, config: model.Kdamond) -> KdamondHandle:
        """Add one kdamond at the end of the list, stage ``config`` and turn it on."""
        return self.start_many([config])[0]

    def start_many(
        self, configs: list[model.Kdamond], *, still_valid: StillValid | None = None
    ) -> list[KdamondHandle]:
        """Add one kdamond per config, stage them all, then turn them on in order.

        All at once because the kernel resizes the list only while every kdamond is off:
        once the first one runs, no other can be added. ``still_valid``: asked right
        before each ``on`` (``_check_still_valid``).
        """
        all_writes = [writes_mod.kdamond_writes(c) for c in configs]
        self.ownership.check_writable()
        state = self.ownership.verify(self.fs)
        foreign = ownership.foreign_indices(state.nr_kdamonds, state.kdamonds)
        if foreign:
            raise errors.ForeignKdamondsError(
                f"kdamonds {foreign} were not created by this agent; adding one would "
                "resize the kdamond list and wipe their configuration, so nothing was "
                "changed (stop and remove them, or run the agent where it is alone)"
            )
        running = [i for i in state.kdamonds if applying.is_on(self.fs, i)]
        if running:
            raise errors.SysfsBusyError(
                "kdamonds/nr_kdamonds",
                None,
                f"this agent's kdamonds {running} are running and the kernel resizes the "
                "list only when all are off; commit into a running kdamond instead",
                str(state.nr_kdamonds + len(configs)),
            )
        first = state.nr_kdamonds
        total = first + len(configs)
        # Record the resize before making it (ownership's docstring: crash windows).
        # Every index below ``first`` is ours and stopped; the resize empties their
        # directories, so they stay recorded (empty fingerprint) only to be removed later.
        for kept in list(state.kdamonds.values()):
            state.kdamonds[kept.index] = ownership.OwnedKdamond(kept.index, -1, {})
        for index in range(first, total):
            state.kdamonds[index] = ownership.OwnedKdamond(index, -1, {})
        state.nr_kdamonds, state.nr_before = total, first
        self.ownership.save(state)
        applying.write_retrying(self.fs, "kdamonds/nr_kdamonds", str(total), self._sleep)
        state.nr_before = None
        self.ownership.save(state)
        for offset, writes in enumerate(all_writes):
            applying.stage(self.fs, first + offset, writes, self._sleep)
        # Record what was staged before turning on: a crash between ``on`` and the pid's
        # record still leaves a kdamond the next run can prove ours.
        for offset, writes in enumerate(all_writes):
            index = first + offset
            state.kdamonds[index] = ownership.OwnedKdamond(index, -1, ownership.fingerprint(writes))
        self.ownership.save(state)
        handles = []
        for offset, (config, writes) in enumerate(zip(configs, all_writes, strict=True)):
            index = first + offset
            _check_still_valid(still_valid, config, f"kdamonds/{index}/state", "on")
            pid = applying.turn_on(self.fs, index, self._sleep)
            state.kdamonds[index] = ownership.OwnedKdamond(
                index, pid, ownership.fingerprint(writes)
            )
            self.ownership.save(state)
            handle = KdamondHandle(index=index, pid=pid, config=config, addr_unit=_unit(config))
            self._handles[index] = handle
            handles.append(handle)
        return handles

    def commit(
        self,
        handle: KdamondHandle,
        config: model.Kdamond,
        *,
        still_valid: StillValid | None = None,
    ) -> None:
        """Change a running kdamond's configuration online (same thread, same pid);
        ``still_valid``: asked right before the ``commit`` (``_check_still_valid``)."""
        writes = writes_mod.kdamond_writes(config)
        self._check_owned(handle)
        # Recorded before staging, as a start is: the staged files stay what was written
        # whether the kernel takes the commit or refuses it (a refusal before 6.15 also
        # stops the kdamond), and only the new fingerprint then proves the kdamond ours.
        state = self.ownership.load()
        state.kdamonds[handle.index] = ownership.OwnedKdamond(
            handle.index, handle.pid, ownership.fingerprint(writes)
        )
        self.ownership.save(state)
        applying.stage(self.fs, handle.index, writes, self._sleep)
        _check_still_valid(still_valid, config, f"kdamonds/{handle.index}/state", "commit")
        applying.commit(self.fs, handle.index, self._sleep)
        handle.config = config
        handle.addr_unit = _unit(config)

    def stop(self, handle: KdamondHandle) -> None:
        """Turn one owned kdamond off (its directory stays until ``stop_all``)."""
        self._check_owned(handle)
        applying.turn_off(self.fs, handle.index, self._sleep, self._monotonic)
        self._handles.pop(handle.index, None)

    def stop_all(self) -> None:
        """Turn off every kdamond this agent owns; shrink the list to 0 if it is alone.

        Best effort over all of them: the first error is raised after the others were
        tried.
        """
        state = self.ownership.verify(self.fs)
        first_error: errors.KernelDamonError | None = None
        for index in sorted(state.kdamonds):
            try:
                applying.turn_off(self.fs, index, self._sleep, self._monotonic)
            except errors.KernelDamonError as err:
                first_error = first_error or err
        self._handles.clear()
        foreign = ownership.foreign_indices(state.nr_kdamonds, state.kdamonds)
        if first_error is None and not foreign and state.nr_kdamonds:
            applying.write_retrying(self.fs, "kdamonds/nr_kdamonds", "0", self._sleep)
            state = ownership.OwnedState(boot_id=state.boot_id, nr_kdamonds=0)
        self.ownership.save(state)
        if first_error is not None:
            raise first_error

    # ---- readers ----------------------------------------------------------------------

    def schemes_stats(self, handle: KdamondHandle) -> list[scheme_stats.SchemeCounters]:
        self._check_owned(handle)
        known = handle.config.contexts[0].schemes if handle.config.contexts else None
        return reading.schemes_stats(
            self.fs,
            handle.index,
            self._sleep,
            nr_schemes=None if known is None else len(known),
        )

    def tried_regions(
        self, handle: KdamondHandle, *, with_filter_passed: bool = False
    ) -> list[model.TriedRegions]:
        self._check_owned(handle)
        return reading.tried_regions(
            self.fs, handle.index, self._sleep, with_filter_passed=with_filter_passed
        )

    def tried_region_columns(
        self,
        handle: KdamondHandle,
        scheme: int,
        *,
        tiling: list[tuple[int, int]] | None = None,
    ) -> reading.RegionColumns:
        self._check_owned(handle)
        return reading.tried_region_columns(
            self.fs, handle.index, scheme, self._sleep, tiling=tiling, unit=handle.addr_unit
        )

    def tried_bytes(self, handle: KdamondHandle) -> list[int]:
        self._check_owned(handle)
        return reading.tried_bytes(self.fs, handle.index, self._sleep)

    def effective_quotas(self, handle: KdamondHandle) -> list[int]:
        self._check_owned(handle)
        return reading.effective_quotas(self.fs, handle.index, self._sleep)

    def quota_tunings(
        self, handle: KdamondHandle, *, with_effective: bool = True
    ) -> list[reading.QuotaTuning]:
        """Effective quotas and goals of the schemes ``handle``'s configuration has."""
        self._check_owned(handle)
        known = handle.config.contexts[0].schemes if handle.config.contexts else None
        return reading.quota_tunings(
            self.fs,
            handle.index,
            self._sleep,
            with_effective=with_effective,
            nr_schemes=None if known is None else len(known),
        )

    def tuned_intervals(self, handle: KdamondHandle) -> model.TunedIntervals:
        self._check_owned(handle)
        return reading.tuned_intervals(self.fs, handle.index, self._sleep)

    def commit_quota_goals(
        self, handle: KdamondHandle, current_values: dict[tuple[int, int], int]
    ) -> None:
        self._check_owned(handle)
        reading.commit_quota_goals(self.fs, handle.index, current_values, self._sleep)

    def is_running(self, handle: KdamondHandle) -> bool:
        return applying.is_on(self.fs, handle.index)

    # ---- ownership --------------------------------------------------------------------

    def _check_owned(self, handle: KdamondHandle) -> None:
        base = f"kdamonds/{handle.index}"
        # The common case in one read: the thread we started still runs there (a stopped
        # kdamond shows pid -1, and pids are not reused while the thread lives).
        try:
            if sysfs_io.read_int(self.fs, f"{base}/pid") == handle.pid:
                return
        except errors.SysfsMissingError:
            pass
        nr = sysfs_io.read_int(self.fs, "kdamonds/nr_kdamonds")
        if handle.index >= nr:
            raise errors.NotOwnedError(f"kdamond {handle.index} no longer exists (nr {nr})")
        if self.fs.read(f"{base}/state") == "on":
            pid = sysfs_io.read_int(self.fs, f"{base}/pid")
            if pid != handle.pid:
                raise errors.NotOwnedError(
                    f"kdamond {handle.index} runs as pid {pid}, not the pid {handle.pid} "
                    "this agent started; someone else recreated it"
                )


def _unit(config: model.Kdamond) -> int:
    if config.contexts and config.contexts[0].addr_unit is not None:
        return config.contexts[0].addr_unit
    return 1


def _read_staged_pids(fs: sysfs_io.SysfsIO, index: int) -> tuple[int, ...] | None:
    """The pids of a vaddr kdamond's staged targets that it runs (not marked obsolete:
    the last commit removed those); None for other operations."""
    context = f"kdamonds/{index}/contexts/0"
    if not fs.exists(f"{context}/operations") or fs.read(f"{context}/operations") != "vaddr":
        return None
    pids = []
    for t in range(sysfs_io.read_int(fs, f"{context}/targets/nr_targets")):
        obsolete = f"{context}/targets/{t}/obsolete_target"
        if fs.exists(obsolete) and fs.read(obsolete) == "Y":
            continue
        pids.append(sysfs_io.read_int(fs, f"{context}/targets/{t}/pid_target"))
    return tuple(pids)


def _read_addr_unit(fs: sysfs_io.SysfsIO, index: int) -> int:
    path = f"kdamonds/{index}/contexts/0/addr_unit"
    return sysfs_io.read_int(fs, path) if fs.exists(path) else 1
