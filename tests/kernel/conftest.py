"""Fixtures of the kernel backend's tests.

- ``fake``: an on-disk fake DAMON sysfs tree in ``tmp_path`` (``ops.kernel.fake``);
- ``fake_driver``: a driver on it, with a state directory, a fixed boot id and no real
  sleeping;
- ``host_state_dir``: a state directory for drivers on the real host.

Real-kernel tests take the shared ``kernel_damon`` fixture (tests/conftest.py), which
serialises them and checks ``nr_kdamonds`` is 0 afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import memcg_support
import pytest

from damon_agent.ops.kernel import driver
from damon_agent.ops.kernel import fake as fake_sysfs


class _Ticks:
    """A monotonic clock that advances only when slept on."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake(tmp_path: Path) -> fake_sysfs.FakeDamonSysfs:
    return fake_sysfs.FakeDamonSysfs(tmp_path / "admin")


@pytest.fixture
def fake_driver(fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path) -> driver.KdamondDriver:
    ticks = _Ticks()
    return driver.KdamondDriver(
        fake, tmp_path / "state", boot_id="boot-1", sleep=ticks.sleep, monotonic=ticks.monotonic
    )


@pytest.fixture
def host_state_dir(tmp_path: Path) -> Path:
    return tmp_path / "agent-state"


@pytest.fixture
def child_memcg() -> Iterator[tuple[Path, str]]:
    """A new memory cgroup (v1 or v2, whichever the kernel under test has): its directory
    and memcg path (the cgroup's path from its hierarchy's mount point, the form the
    kernel's memcg filter compares against ``cgroup_path()``)."""
    with memcg_support.memcgs() as made:
        path = f"/damon-k8s-test-{os.getpid()}"
        # The workload fixture (requested after this one) has ended before removal.
        yield made.make(path), made.memcg_path(path)
