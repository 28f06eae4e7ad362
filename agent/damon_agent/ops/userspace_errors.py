"""The exceptions of the userspace operations (``ops.userspace`` and its helpers).

A process that exits while it is monitored or acted on is normal on a node and raises
nothing: its ranges are empty, its pages read as not accessed, actions on it apply 0
bytes. What does raise::

    Exception
     └── UserspaceOpsError
          ├── NoAccessCheckError        the kernel has none of the access-check primitives
          │                             (each one probed is named with why it is missing)
          ├── ProcFileError             a /proc or /sys file refused a live process (no root,
          │                             no ptrace access, PFNs hidden, the file vanished)
          ├── MalformedProcFileError    also ValueError: /proc content not in the kernel's form
          └── InvalidRequestError       also ValueError: a bad argument, named with the reason

Errors of the injected action backend (``node.actions``: ``ActionFailedError`` for EPERM,
an unknown NUMA node, ...) pass through unchanged: they belong to that package's tree.
"""

from __future__ import annotations

from pathlib import Path


class UserspaceOpsError(Exception):
    """Base of every error the userspace operations raise themselves."""


class NoAccessCheckError(UserspaceOpsError):
    """No access-check primitive is usable on this kernel (or the one asked for is not)."""

    def __init__(self, reasons: dict[str, str]) -> None:
        listed = "; ".join(f"{name}: {why}" for name, why in reasons.items())
        super().__init__(f"no usable access-check primitive ({listed})")
        self.reasons = dict(reasons)


class ProcFileError(UserspaceOpsError):
    """A /proc or /sys file the operations need could not be used for a live process."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class MalformedProcFileError(UserspaceOpsError, ValueError):
    """A /proc file whose content does not have the kernel's documented form."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class InvalidRequestError(UserspaceOpsError, ValueError):
    """An argument that cannot be right; names the argument (field) and the reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
