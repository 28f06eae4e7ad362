"""The driver against the fake tree: life cycle, readers, fault injection, ownership."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from damon_agent.ops.kernel import driver, errors, model, sysfs
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.schemes import stats as scheme_stats

RAM = (model.Region(0x100000000, 0x640000000),)


def config(action: str = "stat", *, nr_schemes: int = 1) -> model.Kdamond:
    return model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                targets=(model.Target(regions=RAM),),
                schemes=tuple(model.Scheme(action=action) for _ in range(nr_schemes)),
            ),
        )
    )


def state_file(tmp_path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp_path / "state" / "kdamonds.json").read_text())
    return data


def test_start_stages_turns_on_and_records_ownership(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver, tmp_path: Path
) -> None:
    handle = fake_driver.start(config())
    assert fake.read("kdamonds/nr_kdamonds") == "1"
    assert fake.read("kdamonds/0/state") == "on"
    assert handle.pid == int(fake.read("kdamonds/0/pid"))
    assert fake.read("kdamonds/0/contexts/0/operations") == "paddr"
    recorded = state_file(tmp_path)
    entries = recorded["kdamonds"]
    assert isinstance(entries, list)
    assert [(e["index"], e["pid"]) for e in entries] == [(0, handle.pid)]
    assert entries[0]["fingerprint"]["contexts/0/operations"] == "paddr"
    fake_driver.stop_all()
    assert fake.read("kdamonds/nr_kdamonds") == "0"
    assert not (tmp_path / "state" / "kdamonds.json").exists()


def test_commit_keeps_the_thread_and_changes_the_scheme(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    handle = fake_driver.start(config("stat"))
    pid = handle.pid
    fake_driver.commit(handle, config("pageout"))
    assert fake.read("kdamonds/0/pid") == str(pid)
    assert fake.read("kdamonds/0/contexts/0/schemes/0/action") == "pageout"
    assert ("kdamonds/0/state", "commit") in fake.log
    fake_driver.stop_all()


def test_readers_return_what_the_kernel_filled(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    handle = fake_driver.start(config(nr_schemes=2))
    regions = [
        model.TriedRegion(0x100000000 + i * 0x1000000, 0x101000000 + i * 0x1000000, i, 10 - i)
        for i in range(12)
    ]
    fake.tried[(0, 1)] = regions
    fake.stats[(0, 0)] = scheme_stats.SchemeCounters(nr_tried=7, sz_tried=7 << 20, qt_exceeds=1)
    fake.effective_bytes[(0, 0)] = 4096
    fake.tuned[0] = model.TunedIntervals(sample_us=7000, aggr_us=140_000)

    # Twice: the kernel's directory names keep counting (0, 2, ... then 24, 26, ...), and
    # "10" sorts before "2" as text: the reader must order by number.
    for _ in range(2):
        tried = fake_driver.tried_regions(handle)
        assert tried[0].regions == ()
        assert list(tried[1].regions) == regions
        assert tried[1].total_bytes == 12 * 0x1000000
    assert fake_driver.schemes_stats(handle)[0] == fake.stats[(0, 0)]
    assert fake_driver.effective_quotas(handle) == [4096, 0]
    assert fake_driver.tuned_intervals(handle) == fake.tuned[0]
    assert fake_driver.tried_bytes(handle) == [0, 12 * 0x1000000]
    fake_driver.stop_all()


def test_addr_unit_scales_tried_regions_to_bytes(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    unit = 4096
    cfg = model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                addr_unit=unit,
                targets=(model.Target(regions=(model.Region(0x100000, 0x640000),)),),
                schemes=(model.Scheme(),),
            ),
        )
    )
    handle = fake_driver.start(cfg)
    fake.tried[(0, 0)] = [model.TriedRegion(0x100000, 0x200000, 3, 1)]
    region = fake_driver.tried_regions(handle)[0].regions[0]
    assert (region.start, region.end) == (0x100000 * unit, 0x200000 * unit)
    fake_driver.stop_all()


def test_einval_names_the_file_and_value(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    fake.inject("kdamonds/0/contexts/0/schemes/0/action", errno.EINVAL)
    with pytest.raises(errors.SysfsInvalidError) as caught:
        fake_driver.start(config("pageout"))
    assert caught.value.path == "kdamonds/0/contexts/0/schemes/0/action"
    assert caught.value.value == "pageout"
    assert "pageout" in str(caught.value)
    # The index was recorded before staging, so stop_all removes the half-staged kdamond.
    fake_driver.stop_all()
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_transient_ebusy_is_retried(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    fake.inject("kdamonds/0/contexts/0/schemes/nr_schemes", errno.EBUSY, times=3)
    handle = fake_driver.start(config())
    assert fake.read("kdamonds/0/contexts/0/schemes/nr_schemes") == "1"
    assert handle.pid > 0
    fake_driver.stop_all()


def test_persistent_ebusy_raises_busy(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    fake.inject("kdamonds/nr_kdamonds", errno.EBUSY)
    with pytest.raises(errors.SysfsBusyError) as caught:
        fake_driver.start(config())
    assert caught.value.path == "kdamonds/nr_kdamonds"


def test_missing_file_raises_missing(tmp_path: Path) -> None:
    old = fake_sysfs.FakeDamonSysfs(tmp_path / "old", omit={"addr_unit"})
    drv = driver.KdamondDriver(old, tmp_path / "st", boot_id="b", sleep=lambda _: None)
    cfg = model.Kdamond(
        contexts=(
            model.Context(operations="paddr", addr_unit=4096, targets=(model.Target(regions=RAM),)),
        )
    )
    with pytest.raises(errors.SysfsMissingError) as caught:
        drv.start(cfg)
    assert caught.value.path == "kdamonds/0/contexts/0/addr_unit"


def test_enoent_on_read_is_typed(fake: fake_sysfs.FakeDamonSysfs) -> None:
    with pytest.raises(errors.SysfsMissingError):
        fake.read("kdamonds/7/state")


def test_enomem_on_on_is_explained(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    fake.inject("kdamonds/0/state", errno.ENOMEM, times=1)
    with pytest.raises(errors.SysfsInvalidError, match="memcg_path names no memory cgroup"):
        fake_driver.start(config())
    fake_driver.stop_all()


# ---- ownership ------------------------------------------------------------------------------


def _foreign(fake: fake_sysfs.FakeDamonSysfs, *, running: bool) -> dict[str, str]:
    """Stage kdamond 0 as another tool would; return a copy of its files."""
    fake.write("kdamonds/nr_kdamonds", "1")
    fake.write("kdamonds/0/contexts/nr_contexts", "1")
    fake.write("kdamonds/0/contexts/0/operations", "paddr")
    fake.write("kdamonds/0/contexts/0/monitoring_attrs/intervals/sample_us", "7777")
    if running:
        fake.start_foreign(0)
    return _files(fake, "kdamonds/0")


def _files(fake: fake_sysfs.FakeDamonSysfs, base: str) -> dict[str, str]:
    root = fake.root / base
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("running", [False, True])
def test_foreign_kdamonds_are_never_touched(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver, running: bool
) -> None:
    before = _foreign(fake, running=running)
    writes_before = len(fake.log)
    with pytest.raises(errors.ForeignKdamondsError, match=r"kdamonds \[0\]"):
        fake_driver.start(config())
    fake_driver.stop_all()
    fake_driver.recover(adopt=False)
    assert fake.log[writes_before:] == []
    assert _files(fake, "kdamonds/0") == before
    assert fake.read("kdamonds/nr_kdamonds") == "1"


def test_recover_adopts_running_kdamonds_after_a_crash(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver, tmp_path: Path
) -> None:
    handle = fake_driver.start(config())
    # A new process (same state dir, same boot) after a crash:
    again = driver.KdamondDriver(fake, tmp_path / "state", boot_id="boot-1", sleep=lambda _: None)
    found = again.recover(adopt=True)
    assert [h.pid for h in found.adopted] == [handle.pid]
    assert found.cleaned == []
    again.commit(found.adopted[0], config("pageout"))
    assert fake.read("kdamonds/0/pid") == str(handle.pid)
    again.stop_all()
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_recover_cleans_when_not_adopting(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver, tmp_path: Path
) -> None:
    fake_driver.start(config())
    again = driver.KdamondDriver(fake, tmp_path / "state", boot_id="boot-1", sleep=lambda _: None)
    found = again.recover(adopt=False)
    assert found.cleaned == [0]
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_records_of_another_boot_are_ignored(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver, tmp_path: Path
) -> None:
    fake_driver.start(config())
    after_reboot = driver.KdamondDriver(
        fake, tmp_path / "state", boot_id="boot-2", sleep=lambda _: None
    )
    # Kdamond 0 is not provably ours under another boot id: it is foreign now.
    assert after_reboot.recover(adopt=True).foreign == [0]
    assert fake.read("kdamonds/0/state") == "on"


def test_a_kdamond_recreated_by_someone_else_is_not_ours(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver, tmp_path: Path
) -> None:
    handle = fake_driver.start(config())
    # Another tool stops ours, rebuilds the list and starts its own at index 0.
    fake.write("kdamonds/0/state", "off")
    _foreign(fake, running=True)
    with pytest.raises(errors.NotOwnedError, match="someone else"):
        fake_driver.commit(handle, config("pageout"))
    again = driver.KdamondDriver(fake, tmp_path / "state", boot_id="boot-1", sleep=lambda _: None)
    assert again.recover(adopt=True).adopted == []
    assert fake.read("kdamonds/0/state") == "on"
    assert fake.read("kdamonds/0/contexts/0/monitoring_attrs/intervals/sample_us") == "7777"


def test_a_staged_foreign_config_at_our_recorded_index_is_not_ours(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver, tmp_path: Path
) -> None:
    fake_driver.start(config())
    fake.write("kdamonds/0/state", "off")
    before = _foreign(fake, running=False)  # same list size, different staged files
    again = driver.KdamondDriver(fake, tmp_path / "state", boot_id="boot-1", sleep=lambda _: None)
    found = again.recover(adopt=False)
    assert found.cleaned == [] and found.foreign == [0]
    assert _files(fake, "kdamonds/0") == before


def test_malformed_state_file_is_an_ownership_error(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver, tmp_path: Path
) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "kdamonds.json").write_text('{"version": 1, "boot_id": "boot-1"}')
    with pytest.raises(errors.OwnershipError, match="malformed"):
        fake_driver.recover(adopt=True)


def test_host_sysfs_read_retries_ebusy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DAMON's sysfs trylock can answer any read with EBUSY: a few are retried, the
    kernel's answer then comes back; a lock held for good still raises SysfsBusyError."""
    (tmp_path / "pid").write_text("1234\n")
    fs = sysfs.HostSysfs(tmp_path)
    real_open = os.open
    busy = {"left": 3}

    def flaky_open(path: str, flags: int, *args: int) -> int:
        if busy["left"] > 0:
            busy["left"] -= 1
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", flaky_open)
    assert fs.read("pid") == "1234"
    busy["left"] = 1000
    with pytest.raises(errors.SysfsBusyError, match="pid"):
        fs.read("pid")


def test_unwritable_state_dir_is_refused_before_the_kernel_is_touched(
    fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path
) -> None:
    # A file where the directory should be: mkdir fails as on a read-only root.
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    drv = driver.KdamondDriver(fake, blocked / "state", boot_id="boot-1")
    with pytest.raises(errors.StateDirError, match="not-a-dir/state is not writable"):
        drv.start(config())
    assert fake.read("kdamonds/nr_kdamonds") == "0"
