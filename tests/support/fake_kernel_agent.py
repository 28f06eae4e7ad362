"""The real ``damon-agent daemon`` process on the kernel backend, over a fake DAMON sysfs.

For tests that need the daemon's own process (its signal handling, its exit code) on the
kernel backend where the host's DAMON must not be touched::

    python -m fake_kernel_agent damon-agent daemon --backend kernel --sys-root SYS ...

Every sysfs access of the agent (``ops.kernel.sysfs.HostSysfs``) goes to one
``ops.kernel.fake.FakeDamonSysfs`` laid out at ``SYS/kernel/mm/damon/admin`` (plain files,
so the test reads what the process left after it exits). A kernel slow to take a command:
a write of VALUE to a kdamond's ``state`` waits while ``SYS/hold-VALUE`` exists, and says
so first by creating ``SYS/held-VALUE``.
"""

from __future__ import annotations

import fnmatch
import sys
import time
from pathlib import Path

from damon_agent.cli import agent as agent_cli
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.ops.kernel import sysfs as sysfs_io

HOLD_POLL_S = 0.05


class HeldSysfs(fake_sysfs.FakeDamonSysfs):
    """The fake tree; a ``state`` command waits while its hold file exists."""

    def __init__(self, admin: Path, sys_root: Path) -> None:
        super().__init__(admin)
        self._sys_root = sys_root

    def write(self, path: str, value: str) -> None:
        if fnmatch.fnmatch(path, "kdamonds/*/state"):
            hold = self._sys_root / f"hold-{value.strip()}"
            if hold.exists():
                (self._sys_root / f"held-{value.strip()}").touch()
                while hold.exists():
                    time.sleep(HOLD_POLL_S)
        super().write(path, value)


def main(argv: list[str]) -> int:
    if argv[:2] != ["damon-agent", "daemon"] or "--sys-root" not in argv:
        sys.stderr.write("usage: python -m fake_kernel_agent damon-agent daemon --sys-root ...\n")
        return 2
    sys_root = Path(argv[argv.index("--sys-root") + 1])
    admin = sys_root / "kernel" / "mm" / "damon" / "admin"
    tree = HeldSysfs(admin, sys_root)

    def host_sysfs(root: Path = sysfs_io.DEFAULT_ADMIN) -> sysfs_io.SysfsIO:
        if Path(root) != admin:
            raise AssertionError(f"the agent asked for sysfs at {root}, not {admin}")
        return tree

    sysfs_io.HostSysfs = host_sysfs  # type: ignore[assignment,misc]
    return agent_cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
