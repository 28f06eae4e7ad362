"""Memory cgroups for tests, on whichever hierarchy the kernel under test has.

Hosts of this project's kind keep memory on cgroup v1 (``/sys/fs/cgroup/memory``); the
VM's guests, like current Kubernetes nodes, are unified (cgroup v2), where a cgroup has a
memory controller only when its parent enables it in ``cgroup.subtree_control``, as
systemd and kubelet do for the pod slices. ``Memcgs`` makes cgroups in either, by
hierarchy path, and removes what it made, deepest first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from damon_agent.node import cgroups


class Memcgs:
    """Cgroups made for one test on the memory hierarchy; ``remove`` undoes them."""

    def __init__(self) -> None:
        layout = cgroups.discover()
        if layout.memory is None:
            pytest.fail("the kernel under test has no memory cgroup hierarchy")
        self.layout = layout
        self.memory = layout.memory
        self._made: list[Path] = []

    @property
    def version(self) -> int:
        return self.memory.version

    def make(self, path: str) -> Path:
        """Create cgroup ``path`` (``/a/b``, hierarchy-rooted) with its parents; its dir."""
        parts = PurePosixPath(cgroups.normalize(path)).parts[1:]
        current = "/"
        for part in parts:
            parent = self.memory.directory(current)
            if self.version == 2:
                # Children get a memory controller only when the parent hands it down.
                control = parent / "cgroup.subtree_control"
                if "memory" not in control.read_text().split():
                    control.write_text("+memory")
            current = str(PurePosixPath(current) / part)
            directory = self.memory.directory(current)
            if not directory.exists():
                directory.mkdir()
                self._made.append(directory)
        return self.memory.directory(path)

    def memcg_path(self, path: str) -> str:
        """The value a DAMOS memcg filter takes for ``path``."""
        return cgroups.memcg_path(self.layout, path)

    def usage_bytes(self, path: str) -> int:
        return cgroups.memory_usage_bytes(self.layout, path)

    def enter(self, path: str, pid: int) -> None:
        (self.memory.directory(path) / "cgroup.procs").write_text(f"{pid}\n")

    def remove(self) -> None:
        """Remove the cgroups made, deepest first (a killed task leaves asynchronously)."""
        for directory in reversed(self._made):
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY until a killed task has left
                    time.sleep(0.1)
        self._made.clear()


@contextlib.contextmanager
def memcgs() -> Iterator[Memcgs]:
    made = Memcgs()
    try:
        yield made
    finally:
        made.remove()
