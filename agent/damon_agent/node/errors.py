"""The exceptions of ``damon_agent.node`` (the tree is drawn in the package docstring).

Every error names the file (or the argument) it is about and says why, so that the agent can
turn it into a status condition without guessing. A process that exits while we look at it
or act on it is a normal event on a busy node: readers raise ``ProcessGoneError`` so callers can
skip that process, and actions never raise for it (their result says ``exited``).
"""

from __future__ import annotations

from pathlib import Path


class NodeError(Exception):
    """Base of every error raised by ``damon_agent.node``."""


class InvalidArgumentError(NodeError, ValueError):
    """An argument that cannot be right (names the argument and the reason)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class FactUnavailableError(NodeError):
    """A file the fact lives in is missing or unreadable on this node."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class MalformedFileError(NodeError):
    """A /proc or /sys file whose content does not have the kernel's documented form."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ProcessGoneError(NodeError):
    """The process exited (or is a zombie without an address space) while being read."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} has exited")
        self.pid = pid


class CgroupError(NodeError):
    """Base of cgroup lookup errors."""


class CgroupLayoutUnknownError(CgroupError):
    """Neither a cgroup v2 hierarchy nor a cgroup v1 memory hierarchy could be found."""


class KubepodsNotFoundError(CgroupError):
    """No ``kubepods`` (cgroupfs driver) or ``kubepods.slice`` (systemd driver) cgroup."""


class CgroupNotFoundError(CgroupError):
    """A cgroup path that does not exist on the hierarchy it was looked up on."""


class PodCgroupNotFoundError(CgroupNotFoundError):
    """The pod UID has no cgroup on this node (not scheduled here, or already gone)."""

    def __init__(self, pod_uid: str, looked_at: list[str]) -> None:
        super().__init__(
            f"pod {pod_uid}: no cgroup on this node (looked at {', '.join(looked_at)})"
        )
        self.pod_uid = pod_uid
        self.looked_at = looked_at


class ContainerCgroupNotFoundError(CgroupNotFoundError):
    """The container ID has no cgroup under its pod's cgroup."""


class PressureUnavailableError(NodeError):
    """Pressure stall information is not available for what was asked.

    Raised when the kernel runs without PSI, and for a cgroup on a cgroup v1 hierarchy: v1 has
    no per-cgroup ``memory.pressure`` (only the event-based ``memory.pressure_level``).
    """


class UnsupportedPlatformError(NodeError):
    """A system call this module needs has no known number on this CPU architecture."""


class ActionFailedError(NodeError):
    """A userspace action failed as a whole (not per page, not because the process exited)."""

    def __init__(self, action: str, pid: int, errno_name: str, reason: str) -> None:
        super().__init__(f"{action} on process {pid}: {errno_name}: {reason}")
        self.action = action
        self.pid = pid
        self.errno_name = errno_name
