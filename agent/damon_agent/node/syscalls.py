"""Thin ctypes bindings of the system calls the userspace actions need.

``pidfd_open``, ``process_madvise`` and ``move_pages`` are called through libc's generic
``syscall()`` with the architecture's numbers, because older C libraries lack wrappers for
the first two. Every argument is passed as a ``c_long`` (variadic ints would be truncated to
32 bits otherwise). Arrays handed to the kernel are numpy arrays of the kernel's element
types, so building them for 100 000 pages costs no Python loop.

Failures raise ``OSError`` with the kernel's errno: the callers in ``actions`` and ``numa``
decide which errnos mean "the process exited" and which are real failures.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from damon_agent.node import errors

MADV_COLD = 20
MADV_PAGEOUT = 21
MPOL_MF_MOVE = 1 << 1
MPOL_MF_MOVE_ALL = 1 << 2
# process_madvise takes at most IOV_MAX ranges per call (UIO_MAXIOV in the kernel).
IOV_MAX = 1024

_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"pidfd_open": 434, "process_madvise": 440, "move_pages": 279},
    "aarch64": {"pidfd_open": 434, "process_madvise": 440, "move_pages": 239},
}


@dataclass(frozen=True)
class MovePagesResult:
    """What one move_pages call returned: per page, a node id (>= 0) or a negative errno."""

    not_migrated: int  # the call's positive return value: pages it could not move
    status: NDArray[np.int32]


def _number(name: str) -> int:
    machine = platform.machine()
    try:
        return _NUMBERS[machine][name]
    except KeyError:
        raise errors.UnsupportedPlatformError(
            f"{name}: no system call number known for architecture {machine!r} "
            f"(known: {', '.join(_NUMBERS)})"
        ) from None


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _call(name: str, *args: int) -> int:
    result = int(_syscall(ctypes.c_long(_number(name)), *(ctypes.c_long(arg) for arg in args)))
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")
    return result


def pidfd_open(pid: int) -> int:
    """A pidfd for ``pid`` (close it with ``os.close``)."""
    return _call("pidfd_open", pid, 0)


def process_madvise(pidfd: int, ranges: Sequence[tuple[int, int]], advice: int) -> int:
    """Advise up to ``IOV_MAX`` (start, length) ranges of another process; bytes advised.

    The kernel handles the ranges in order and stops at the first that fails: a return value
    smaller than the sum of lengths means the ranges before the failing one were advised and
    the rest were not (an error is raised only when the very first range fails).
    """
    if not ranges:
        return 0
    if len(ranges) > IOV_MAX:
        raise errors.InvalidArgumentError(
            "ranges", f"{len(ranges)} ranges exceed IOV_MAX ({IOV_MAX})"
        )
    # struct iovec { void *iov_base; size_t iov_len; } is two 64-bit words on 64-bit Linux.
    iovecs = np.array(ranges, dtype=np.uint64).reshape(len(ranges), 2)
    pointer = int(iovecs.ctypes.data)
    return _call("process_madvise", pidfd, pointer, len(ranges), advice, 0)


def move_pages(
    pid: int,
    addresses: NDArray[np.uint64],
    nodes: NDArray[np.int32] | None,
    flags: int = MPOL_MF_MOVE,
) -> MovePagesResult:
    """Move pages of ``pid`` to ``nodes`` (one per page), or query them with ``nodes=None``."""
    count = int(addresses.size)
    status = np.full(count, -errno.EINVAL, dtype=np.int32)
    if count == 0:
        return MovePagesResult(not_migrated=0, status=status)
    pages = np.ascontiguousarray(addresses, dtype=np.uint64)
    nodes_pointer = 0
    if nodes is not None:
        if nodes.size != count:
            raise errors.InvalidArgumentError("nodes", f"{nodes.size} nodes for {count} pages")
        nodes = np.ascontiguousarray(nodes, dtype=np.int32)
        nodes_pointer = int(nodes.ctypes.data)
    not_migrated = _call(
        "move_pages",
        pid,
        count,
        int(pages.ctypes.data),
        nodes_pointer,
        int(status.ctypes.data),
        flags,
    )
    return MovePagesResult(not_migrated=not_migrated, status=status)


def page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")
