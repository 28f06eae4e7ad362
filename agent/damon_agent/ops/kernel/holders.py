"""Who else holds the node's DAMON, and what an admin can do about each holder.

A node's DAMON can be in someone else's hands in two ways, and the kernel says neither:

- A DAMON module runs. DAMON_STAT, DAMON_RECLAIM and DAMON_LRU_SORT start their kdamond
  *exclusively*: while one runs, writing ``on`` to a sysfs kdamond's ``state`` fails with
  EBUSY (and a module cannot start while any kdamond runs). Each module says whether it
  runs in ``/sys/module/<module>/parameters/enabled`` (``Y``/``N``); DAMON_RECLAIM and
  DAMON_LRU_SORT also give their thread's pid in ``kdamond_pid``. Debian's kernels from
  6.17 on (6.18, 7.3) build DAMON_STAT enabled at boot.
- sysfs kdamonds this agent did not create exist ("foreign", as ``ownership`` decides):
  running or only staged, they keep the agent from resizing the kdamond list, so it
  cannot add its own (see ``ownership`` for why it never touches them).

``detect`` reads both (the module directory is injected, as the sysfs tree is); the rest
of the module is pure: parsing the module files (``module_holders``), the foreign list
(``foreign_kdamonds``), and the words (``Holders.summary``, ``remedies``), so that the
agent's status condition, the standalone runner's error line and the operator's per-node
reason all say the same thing. Remedies name the host's own paths (``/sys/module/...``),
whatever root the agent reads through, since an admin types them on the node.

Detection only reads: it never writes a module parameter or a foreign kdamond's file.
Turning DAMON_STAT off is a separate, opt-in step (``takeover``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from damon_agent.ops.kernel import errors, ownership
from damon_agent.ops.kernel import sysfs as sysfs_io

DEFAULT_MODULE_ROOT: Final = Path("/sys/module")
HOST_ADMIN: Final = "/sys/kernel/mm/damon/admin"
# The chart value and agent flag that let the agent turn DAMON_STAT off (``takeover``).
TAKEOVER_FLAG: Final = "--take-over-damon-stat"
TAKEOVER_VALUE: Final = "agent.takeOverDamonStat=true"


@dataclass(frozen=True)
class Module:
    """A DAMON module that runs its kdamond exclusively."""

    module: str  # the directory under /sys/module
    name: str  # as the kernel's documentation names it
    stops: str  # what the node loses when it is turned off, for the remedy

    @property
    def enabled_path(self) -> str:
        """The host path an admin writes ``N`` to."""
        return f"{DEFAULT_MODULE_ROOT}/{self.module}/parameters/enabled"


MODULES: Final = (
    Module("damon_stat", "DAMON_STAT", "its idle-time and bandwidth figures stop"),
    Module(
        "damon_reclaim",
        "DAMON_RECLAIM",
        "its proactive reclaim stops; a pageout DamonScheme can take its place",
    ),
    Module(
        "damon_lru_sort",
        "DAMON_LRU_SORT",
        "its LRU sorting stops; lru_prio/lru_deprio DamonSchemes can take its place",
    ),
)
DAMON_STAT: Final = MODULES[0]


@dataclass(frozen=True)
class ModuleHolder:
    module: Module
    pid: int | None = None  # its kdamond's pid, where the module gives it

    @property
    def label(self) -> str:
        return self.module.name if self.pid is None else f"{self.module.name} (pid {self.pid})"

    @property
    def remedy(self) -> str:
        text = f"echo N > {self.module.enabled_path} ({self.module.stops}"
        if self.module == DAMON_STAT:
            text += (
                f"; or let the agent do it and turn it back on when it stops: "
                f"{TAKEOVER_FLAG}, chart value {TAKEOVER_VALUE}"
            )
        return text + ")"


@dataclass(frozen=True)
class ForeignKdamond:
    index: int
    state: str  # "on", "off", or "unreadable"
    pid: int | None = None

    @property
    def label(self) -> str:
        running = f", pid {self.pid}" if self.pid is not None and self.pid > 0 else ""
        return f"kdamond {self.index} ({self.state}{running})"


@dataclass(frozen=True)
class Holders:
    """Everyone but this agent who holds the node's DAMON; empty when it is free."""

    modules: tuple[ModuleHolder, ...] = ()
    foreign: tuple[ForeignKdamond, ...] = ()

    @property
    def held(self) -> bool:
        return bool(self.modules or self.foreign)

    def names(self) -> tuple[str, ...]:
        """``DAMON_STAT``, ``kdamond 0``: one short name per holder."""
        return tuple(m.module.name for m in self.modules) + tuple(
            f"kdamond {k.index}" for k in self.foreign
        )

    def remedies(self) -> tuple[str, ...]:
        found = tuple(m.remedy for m in self.modules)
        if self.foreign:
            found += (_foreign_remedy(self.foreign),)
        return found

    def summary(self) -> str:
        """One line: who holds DAMON, why that blocks the agent, and what frees it."""
        if not self.held:
            return "no DAMON module runs and no kdamond of another tool exists"
        parts = []
        if self.modules:
            labels = " and ".join(m.label for m in self.modules)
            verb = "runs" if len(self.modules) == 1 else "run"
            parts.append(
                f"{labels} {verb}, and DAMON's modules run exclusively: no kdamond can start"
            )
        if self.foreign:
            labels = ", ".join(k.label for k in self.foreign)
            was, them = ("was", "it") if len(self.foreign) == 1 else ("were", "them")
            parts.append(
                f"{labels} {was} not created by this agent, which never touches {them} nor "
                f"resizes the kdamond list under {them}"
            )
        return (
            f"DAMON is held by {' and '.join(self.names())}: {'; '.join(parts)}. To free it: "
            + "; ".join(self.remedies())
        )

    def error(self) -> errors.DamonHeldError:
        return errors.DamonHeldError(self.summary(), self.names())


def _foreign_remedy(foreign: tuple[ForeignKdamond, ...]) -> str:
    offs = "; ".join(
        f"echo off > {HOST_ADMIN}/kdamonds/{k.index}/state" for k in foreign if k.state == "on"
    )
    by_hand = f"{offs}; then " if offs else ""
    them = "it" if len(foreign) == 1 else "them"
    return (
        f"stop and remove {them} with the tool that made {them} (by hand: "
        f"{by_hand}echo 0 > {HOST_ADMIN}/kdamonds/nr_kdamonds)"
    )


# ---------------------------------------------------------------------------------------
# Pure parsing


def parse_enabled(text: str) -> bool:
    """A module's ``enabled`` parameter: the kernel prints a bool as ``Y`` or ``N``."""
    return text.strip().upper() in ("Y", "1")


def module_holders(
    enabled: Mapping[str, str], pids: Mapping[str, str] | None = None
) -> tuple[ModuleHolder, ...]:
    """The running modules, from their files' contents by module directory name.

    ``enabled`` holds each present module's ``enabled`` file; a module the kernel lacks
    is simply absent. ``pids`` holds ``kdamond_pid`` where the module has one.
    """
    found = []
    for module in MODULES:
        text = enabled.get(module.module)
        if text is None or not parse_enabled(text):
            continue
        pid = _parse_pid((pids or {}).get(module.module))
        found.append(ModuleHolder(module, pid if pid is not None and pid > 0 else None))
    return tuple(found)


def foreign_kdamonds(
    nr_kdamonds: int, owned: Collection[int], states: Mapping[int, tuple[str, str | None]]
) -> tuple[ForeignKdamond, ...]:
    """The kdamonds not in ``owned``, with their ``(state, pid)`` file contents."""
    found = []
    for index in (i for i in range(nr_kdamonds) if i not in owned):
        state, pid = states.get(index, ("unreadable", None))
        found.append(ForeignKdamond(index, state.strip() or "unreadable", _parse_pid(pid)))
    return tuple(found)


def _parse_pid(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------
# Reading


def read_modules(module_root: Path) -> tuple[ModuleHolder, ...]:
    """The DAMON modules that run, from ``<module_root>/<module>/parameters``."""
    enabled: dict[str, str] = {}
    pids: dict[str, str] = {}
    for module in MODULES:
        parameters = module_root / module.module / "parameters"
        text = _read(parameters / "enabled")
        if text is None:
            continue  # this kernel lacks the module (or it is not built in)
        enabled[module.module] = text
        pid = _read(parameters / "kdamond_pid")
        if pid is not None:
            pids[module.module] = pid
    return module_holders(enabled, pids)


def read_foreign(fs: sysfs_io.SysfsIO, owner: ownership.Ownership) -> tuple[ForeignKdamond, ...]:
    """The kdamonds this agent's ownership record does not vouch for (only reads)."""
    if not fs.exists("kdamonds/nr_kdamonds"):
        return ()
    state = owner.verify(fs)
    states: dict[int, tuple[str, str | None]] = {}
    for index in ownership.foreign_indices(state.nr_kdamonds, state.kdamonds):
        try:
            kdamond_state = fs.read(f"kdamonds/{index}/state")
            pid = fs.read(f"kdamonds/{index}/pid") if kdamond_state == "on" else None
        except errors.SysfsError:
            continue  # removed meanwhile, or unreadable: reported as such
        states[index] = (kdamond_state, pid)
    return foreign_kdamonds(state.nr_kdamonds, state.kdamonds.keys(), states)


def detect(fs: sysfs_io.SysfsIO, owner: ownership.Ownership, module_root: Path | None) -> Holders:
    """Who holds DAMON now; ``module_root`` None leaves modules out (fake trees)."""
    modules = read_modules(module_root) if module_root is not None else ()
    return Holders(modules=modules, foreign=read_foreign(fs, owner))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
