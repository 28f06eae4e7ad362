"""Who holds DAMON: module files and foreign kdamonds, in fake trees under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from damon_agent.ops.kernel import driver, errors, holders, model
from damon_agent.ops.kernel import fake as fake_sysfs

RAM = (model.Region(0x100000000, 0x140000000),)


def _modules(root: Path, **enabled: str) -> Path:
    """A fake /sys/module with ``module=Y|N`` and, for ``<module>_pid``, a kdamond_pid."""
    for name, value in enabled.items():
        if name.endswith("_pid"):
            continue
        parameters = root / name / "parameters"
        parameters.mkdir(parents=True)
        (parameters / "enabled").write_text(value + "\n")
        pid = enabled.get(f"{name}_pid")
        if pid is not None:
            (parameters / "kdamond_pid").write_text(pid + "\n")
    return root


def _config() -> model.Kdamond:
    return model.Kdamond(
        contexts=(model.Context(operations="paddr", targets=(model.Target(regions=RAM),)),)
    )


@pytest.mark.parametrize(
    ("text", "expected"), [("Y", True), ("Y\n", True), ("N", False), ("1", True), ("", False)]
)
def test_enabled_is_the_kernels_bool(text: str, expected: bool) -> None:
    assert holders.parse_enabled(text) is expected


def test_a_running_module_is_a_holder_with_its_remedy(tmp_path: Path) -> None:
    root = _modules(tmp_path / "module", damon_stat="Y", damon_reclaim="N")
    found = holders.read_modules(root)
    assert [h.module.name for h in found] == ["DAMON_STAT"]
    (stat,) = found
    assert stat.remedy.startswith("echo N > /sys/module/damon_stat/parameters/enabled")
    assert holders.TAKEOVER_FLAG in stat.remedy and holders.TAKEOVER_VALUE in stat.remedy


def test_remedies_name_the_host_path_whatever_root_is_read(tmp_path: Path) -> None:
    root = _modules(tmp_path / "host" / "sys" / "module", damon_reclaim="Y", damon_reclaim_pid="77")
    (reclaim,) = holders.read_modules(root)
    assert reclaim.pid == 77 and reclaim.label == "DAMON_RECLAIM (pid 77)"
    assert "echo N > /sys/module/damon_reclaim/parameters/enabled" in reclaim.remedy
    assert str(tmp_path) not in reclaim.remedy
    # Only DAMON_STAT can be taken over.
    assert holders.TAKEOVER_FLAG not in reclaim.remedy


def test_missing_modules_and_a_stopped_pid_are_not_holders(tmp_path: Path) -> None:
    assert holders.read_modules(tmp_path / "nothing") == ()
    root = _modules(tmp_path / "module", damon_lru_sort="Y", damon_lru_sort_pid="-1")
    (lru,) = holders.read_modules(root)
    assert lru.pid is None  # enabled is what counts; -1 is no pid to name


def test_every_module_is_known() -> None:
    found = holders.module_holders({"damon_stat": "Y", "damon_reclaim": "Y", "damon_lru_sort": "Y"})
    assert [h.module.module for h in found] == ["damon_stat", "damon_reclaim", "damon_lru_sort"]


def test_foreign_kdamonds_come_with_their_state(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    fake.write("kdamonds/nr_kdamonds", "2")
    pid = fake.start_foreign(1)
    before = list(fake.log)
    found = holders.read_foreign(fake, fake_driver.ownership)
    assert found == (
        holders.ForeignKdamond(0, "off", None),
        holders.ForeignKdamond(1, "on", pid),
    )
    assert fake.log == before, "detection must only read"
    assert found[1].label == f"kdamond 1 (on, pid {pid})"


def test_the_agents_own_kdamonds_are_not_foreign(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    fake_driver.start(_config())
    try:
        assert holders.read_foreign(fake, fake_driver.ownership) == ()
    finally:
        fake_driver.stop_all()


def test_no_sysfs_tree_means_no_foreign_kdamonds(
    tmp_path: Path, fake_driver: driver.KdamondDriver
) -> None:
    empty = fake_sysfs.FakeDamonSysfs(tmp_path / "other")
    (empty.root / "kdamonds" / "nr_kdamonds").unlink()
    assert holders.read_foreign(empty, fake_driver.ownership) == ()


def test_detect_joins_modules_and_foreign_kdamonds(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver, tmp_path: Path
) -> None:
    root = _modules(tmp_path / "module", damon_stat="Y")
    fake.write("kdamonds/nr_kdamonds", "1")
    found = holders.detect(fake, fake_driver.ownership, root)
    assert found.held and found.names() == ("DAMON_STAT", "kdamond 0")
    # Without a module root (fake trees), modules are left out.
    assert holders.detect(fake, fake_driver.ownership, None).names() == ("kdamond 0",)


def test_summary_is_one_line_naming_holders_and_remedies() -> None:
    held = holders.Holders(
        modules=holders.module_holders({"damon_stat": "Y"}),
        foreign=(holders.ForeignKdamond(0, "on", 812), holders.ForeignKdamond(1, "off")),
    )
    line = held.summary()
    assert "\n" not in line
    assert line.startswith("DAMON is held by DAMON_STAT and kdamond 0 and kdamond 1: ")
    assert "DAMON_STAT runs, and DAMON's modules run exclusively" in line
    assert "kdamond 0 (on, pid 812), kdamond 1 (off) were not created by this agent" in line
    assert "echo N > /sys/module/damon_stat/parameters/enabled" in line
    # Only the running foreign kdamond needs turning off before the list can shrink.
    assert "echo off > /sys/kernel/mm/damon/admin/kdamonds/0/state; then echo 0 > " in line
    assert "kdamonds/1/state" not in line


def test_the_error_carries_the_summary_and_the_names() -> None:
    held = holders.Holders(modules=holders.module_holders({"damon_reclaim": "Y"}))
    err = held.error()
    assert isinstance(err, errors.KernelDamonError)
    assert err.holders == ("DAMON_RECLAIM",)
    assert str(err) == held.summary()


def test_free_damon_says_so() -> None:
    free = holders.Holders()
    assert not free.held and free.names() == () and free.remedies() == ()
    assert "no DAMON module runs" in free.summary()
