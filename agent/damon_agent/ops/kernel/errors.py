"""The exceptions of ``damon_agent.ops.kernel``.

::

    KernelDamonError                 anything the kernel DAMON driver cannot do
     +-- SysfsError                  a read or write of one sysfs file failed
     |    |                          (names the file, the value written and the errno)
     |    +-- SysfsInvalidError      EINVAL: the kernel refused the value, or a commit
     |    |                          refused the staged configuration as a whole
     |    +-- SysfsBusyError         EBUSY: a kdamond runs, or the sysfs lock was held
     |    +-- SysfsMissingError      ENOENT: the file or directory does not exist (an
     |                               older kernel, or a kdamond removed under us)
     +-- FeatureMissingError         the running kernel lacks a feature the configuration
     |                               asks for (names the feature and the kernel version
     |                               that brought it)
     +-- ConfigError                 a configuration that cannot be valid on any kernel
     |                               (names the field and the reason)
     +-- StateDirError               the state directory that records which kdamonds the
     |                               agent made cannot be written (names the path); checked
     |                               before the kernel is touched
     +-- OwnershipError              the driver will not act, to protect kdamonds it did
     |    |                          not create
     |    +-- ForeignKdamondsError   kdamonds the agent did not create exist, so the
     |    |                          indexed kdamond list cannot be resized
     |    +-- NotOwnedError          an operation named a kdamond the agent does not own
     +-- TracefsError                tracefs or DAMON's trace events cannot serve
     |                               snapshots (names the path and the reason)
     +-- DamonHeldError              someone else holds the node's DAMON: a DAMON module
                                     that runs exclusively (DAMON_STAT, DAMON_RECLAIM,
                                     DAMON_LRU_SORT) or kdamonds this agent did not
                                     create; names each holder and what frees it
                                     (``holders``)

The agent turns every ``KernelDamonError`` into a status condition (reason = the class
name, message = ``str(err)``); none of them is meant to crash it.
"""

from __future__ import annotations


class KernelDamonError(Exception):
    """Base of every error raised by ``damon_agent.ops.kernel``."""


class SysfsError(KernelDamonError):
    """A sysfs read or write failed."""

    def __init__(self, path: str, errno: int | None, detail: str, value: str | None = None):
        self.path = path
        self.errno = errno
        self.value = value
        action = f"writing {value!r} to" if value is not None else "reading"
        super().__init__(f"{action} {path}: {detail}")


class SysfsInvalidError(SysfsError):
    """The kernel answered EINVAL."""


class SysfsBusyError(SysfsError):
    """The kernel answered EBUSY."""


class SysfsMissingError(SysfsError):
    """The file does not exist."""


class FeatureMissingError(KernelDamonError):
    """The running kernel's DAMON lacks a requested feature."""

    def __init__(self, feature: str, since: str, detail: str = ""):
        self.feature = feature
        self.since = since
        extra = f" ({detail})" if detail else ""
        super().__init__(f"kernel DAMON lacks {feature}{extra}; it came with Linux {since}")


class ConfigError(KernelDamonError):
    """A configuration no kernel could take."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class OwnershipError(KernelDamonError):
    """Refused to protect kdamonds the agent did not create."""


class ForeignKdamondsError(OwnershipError):
    """Kdamonds the agent did not create exist; resizing the list would destroy them."""


class NotOwnedError(OwnershipError):
    """The kdamond named is not one the agent created."""


class TracefsError(KernelDamonError):
    """Tracefs or DAMON's trace events cannot be used for snapshots."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class StateDirError(KernelDamonError):
    """The agent's state directory cannot record ownership; the kernel was not touched."""


class DamonHeldError(KernelDamonError):
    """Someone else holds DAMON, so no kdamond of this agent can start; nothing was written.

    ``holders`` names each holder (``DAMON_STAT``, ``kdamond 0``); the message is one line
    naming them and what an admin can do about each (built by ``holders.Holders``).
    """

    def __init__(self, message: str, holders: tuple[str, ...]):
        self.holders = holders
        super().__init__(message)
