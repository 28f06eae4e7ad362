"""The thin applier: perform a write list in one ``kdamonds/N`` directory, then a command.

``stage`` performs ``writes.kdamond_writes`` output; ``turn_on`` and ``commit`` write the
state command; ``turn_off`` waits until the kdamond thread is gone. Nothing here decides
what to write (that is ``writes``) or whose kdamond it is (that is ``ownership``).

EBUSY from an ``nr_*`` file can be transient: the kernel takes its sysfs lock with a
trylock and a running kdamond holds it briefly while it fills tried regions. Such writes
are retried a few times before the error is raised. EBUSY from ``nr_kdamonds`` is not
transient (a kdamond runs) but a retry costs only milliseconds.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
from collections.abc import Callable, Iterable
from typing import Final

from damon_agent.ops.kernel import errors
from damon_agent.ops.kernel import sysfs as sysfs_io
from damon_agent.ops.kernel import writes as writes_mod

BUSY_RETRIES: Final = 20
BUSY_BACKOFF_S: Final = 0.01
STOP_TIMEOUT_S: Final = 5.0

Sleep = Callable[[float], None]


def write_retrying(fs: sysfs_io.SysfsIO, path: str, value: str, sleep: Sleep) -> None:
    """Write, retrying EBUSY (the kernel's sysfs trylock) a few times."""
    for attempt in range(BUSY_RETRIES + 1):
        try:
            fs.write(path, value)
            return
        except errors.SysfsBusyError:
            if attempt == BUSY_RETRIES:
                raise
            sleep(BUSY_BACKOFF_S * (attempt + 1))


def stage(
    fs: sysfs_io.SysfsIO, index: int, writes: Iterable[writes_mod.Write], sleep: Sleep
) -> None:
    """Perform ``writes`` below ``kdamonds/<index>``."""
    base = f"kdamonds/{index}"
    for one in writes:
        write_retrying(fs, f"{base}/{one.path}", one.value, sleep)


def state_command(fs: sysfs_io.SysfsIO, index: int, command: str, sleep: Sleep) -> None:
    """Write ``command`` to ``kdamonds/<index>/state`` and explain the kernel's odd errnos."""
    path = f"kdamonds/{index}/state"
    try:
        write_retrying(fs, path, command, sleep)
    except errors.SysfsError as err:
        if err.errno == errno_codes.ENOMEM and command in ("on", "commit"):
            # damon_sysfs_add_schemes() reports every scheme construction failure as
            # ENOMEM, including a memcg filter path that names no memory cgroup.
            raise errors.SysfsInvalidError(
                path,
                err.errno,
                "the kernel refused the staged schemes (ENOMEM; also reported when a memcg "
                "filter's memcg_path names no memory cgroup)",
                command,
            ) from err
        raise


def turn_on(fs: sysfs_io.SysfsIO, index: int, sleep: Sleep) -> int:
    """Start the staged kdamond; return its pid."""
    state_command(fs, index, "on", sleep)
    return read_pid(fs, index)


def commit(fs: sysfs_io.SysfsIO, index: int, sleep: Sleep) -> None:
    """Make the running kdamond re-read its staged files (online, same thread)."""
    state_command(fs, index, "commit", sleep)


def turn_off(
    fs: sysfs_io.SysfsIO,
    index: int,
    sleep: Sleep,
    monotonic: Callable[[], float],
    timeout_s: float = STOP_TIMEOUT_S,
) -> None:
    """Stop the kdamond and wait until its thread is gone (``nr_kdamonds`` needs that)."""
    path = f"kdamonds/{index}/state"
    if fs.read(path) == "on":
        # EINVAL: it stopped by itself between the read and the write.
        with contextlib.suppress(errors.SysfsInvalidError):
            fs.write(path, "off")
    deadline = monotonic() + timeout_s
    while fs.read(path) != "off":
        if monotonic() > deadline:
            raise errors.SysfsBusyError(
                path, errno_codes.EBUSY, f"kdamond still running {timeout_s} s after off", "off"
            )
        sleep(0.02)


def read_pid(fs: sysfs_io.SysfsIO, index: int) -> int:
    return sysfs_io.read_int(fs, f"kdamonds/{index}/pid")


def is_on(fs: sysfs_io.SysfsIO, index: int) -> bool:
    return fs.read(f"kdamonds/{index}/state") == "on"
