"""Garbage in DAMON's sysfs files: every reader of a number says which file and what it
held (``SysfsError``, which the agent turns into a condition), never a bare ``ValueError``
or ``UnicodeDecodeError`` that would end the agent's loop.

The fake tree's ``garble`` makes reads of chosen files give chosen bytes after the kernel
(the fake) filled them: garbage, a value cut short, nothing, bytes that are not text.
``HostSysfs`` is checked on a plain directory the same way, through all three of its
read paths (one file, a table of files, the snapshot's numbered table).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from damon_agent.ops.kernel import capabilities, driver, errors, model, ownership, reading, sysfs
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.schemes import stats as scheme_stats

RAM = (model.Region(0x100000000, 0x640000000),)
GARBAGE = [b"", b"\n", b"12abc\n", b"1.5\n", b"-\n", b"0x10\n", b"\xff\xfe\n", b"on\n", b"4 2\n"]


def _config() -> model.Kdamond:
    goal = model.QuotaGoal(target_metric="user_input", target_value=100, current_value=1)
    scheme = model.Scheme(quotas=model.Quotas(bytes=1 << 20, goals=(goal,)))
    return model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr", targets=(model.Target(regions=RAM),), schemes=(scheme,)
            ),
        )
    )


def _running(fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver) -> Any:
    handle = fake_driver.start(_config())
    fake.tried[(0, 0)] = [model.TriedRegion(0x100000000, 0x110000000, 3, 5)]
    fake.stats[(0, 0)] = scheme_stats.SchemeCounters(nr_tried=1)
    return handle


SCHEME = "kdamonds/0/contexts/0/schemes/0"
# (reader, a file it parses as a number). Each reader's every numeric file is listed.
READERS: list[tuple[str, Callable[[driver.KdamondDriver, Any], object], str]] = [
    ("tried_regions", lambda d, h: d.tried_regions(h), f"{SCHEME}/tried_regions/*/start"),
    ("tried_regions", lambda d, h: d.tried_regions(h), f"{SCHEME}/tried_regions/*/end"),
    ("tried_regions", lambda d, h: d.tried_regions(h), f"{SCHEME}/tried_regions/*/age"),
    ("tried_regions", lambda d, h: d.tried_regions(h), f"{SCHEME}/tried_regions/*/nr_accesses"),
    ("tried_regions", lambda d, h: d.tried_regions(h), f"{SCHEME}/tried_regions/total_bytes"),
    ("tried_regions", lambda d, h: d.tried_regions(h), "kdamonds/0/contexts/0/addr_unit"),
    ("tried_regions", lambda d, h: d.tried_regions(h), "*/schemes/nr_schemes"),
    ("columns", lambda d, h: d.tried_region_columns(h, 0), f"{SCHEME}/tried_regions/*/start"),
    ("columns", lambda d, h: d.tried_region_columns(h, 0), f"{SCHEME}/tried_regions/*/age"),
    ("columns", lambda d, h: d.tried_region_columns(h, 0), f"{SCHEME}/tried_regions/*/end"),
    ("schemes_stats", lambda d, h: d.schemes_stats(h), f"{SCHEME}/stats/nr_tried"),
    ("schemes_stats", lambda d, h: d.schemes_stats(h), f"{SCHEME}/stats/sz_applied"),
    ("tried_bytes", lambda d, h: d.tried_bytes(h), f"{SCHEME}/tried_regions/total_bytes"),
    ("effective_quotas", lambda d, h: d.effective_quotas(h), f"{SCHEME}/quotas/effective_bytes"),
    ("quota_tunings", lambda d, h: d.quota_tunings(h), f"{SCHEME}/quotas/effective_bytes"),
    ("quota_tunings", lambda d, h: d.quota_tunings(h), f"{SCHEME}/quotas/goals/nr_goals"),
    ("quota_tunings", lambda d, h: d.quota_tunings(h), f"{SCHEME}/quotas/goals/0/target_value"),
    ("quota_tunings", lambda d, h: d.quota_tunings(h), f"{SCHEME}/quotas/goals/0/current_value"),
    ("tuned_intervals", lambda d, h: d.tuned_intervals(h), "*/intervals/sample_us"),
    ("tuned_intervals", lambda d, h: d.tuned_intervals(h), "*/intervals/aggr_us"),
    ("commit", lambda d, h: d.commit(h, _config()), "kdamonds/0/pid"),
]


@pytest.mark.parametrize(
    ("reader", "pattern"),
    [pytest.param(r, p, id=f"{name}:{p.rsplit('/', 2)[-2]}/{p.rsplit('/', 1)[-1]}")
     for name, r, p in READERS],
)  # fmt: skip
@pytest.mark.parametrize("garbage", GARBAGE, ids=repr)
def test_a_reader_names_the_file_that_holds_no_number(
    fake: fake_sysfs.FakeDamonSysfs,
    fake_driver: driver.KdamondDriver,
    reader: Callable[[driver.KdamondDriver, Any], object],
    pattern: str,
    garbage: bytes,
) -> None:
    handle = _running(fake, fake_driver)
    fake.garble(pattern, garbage)
    with pytest.raises(errors.SysfsError) as caught:
        reader(fake_driver, handle)
    message = str(caught.value)
    name = pattern.rsplit("/", 1)[-1]
    assert name in message and "the kernel gave" in message, message


def test_recover_and_probe_name_the_file_too(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver, tmp_path: Path
) -> None:
    _running(fake, fake_driver)
    fake.garble("kdamonds/nr_kdamonds", b"1\x00garbage")
    with pytest.raises(errors.SysfsError, match="kdamonds/nr_kdamonds: expected an integer"):
        fake_driver.recover(adopt=True)
    with pytest.raises(errors.SysfsError, match="kdamonds/nr_kdamonds: expected an integer"):
        capabilities.probe(fake, "6.18.0")
    with pytest.raises(errors.SysfsError, match="nr_kdamonds"):
        ownership.Ownership(tmp_path / "state", boot_id="boot-1").verify(fake)


def _an_int(data: bytes) -> bool:
    try:
        int(data)
    except ValueError:
        return False
    return True


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=24).filter(lambda b: not _an_int(b)))
def test_host_sysfs_read_paths_name_a_garbled_file(tmp_path_factory: Any, data: bytes) -> None:
    root = tmp_path_factory.mktemp("admin")
    (root / "kdamonds" / "0").mkdir(parents=True)
    (root / "kdamonds" / "0" / "state").write_text("on\n")
    regions = root / "kdamonds" / "0" / "contexts" / "0" / "schemes" / "0" / "tried_regions"
    for index, value in enumerate([b"4096\n", data]):
        (regions / str(index)).mkdir(parents=True)
        for name in ("start", "end", "nr_accesses", "age"):
            (regions / str(index) / name).write_bytes(value)
    (regions / "total_bytes").write_bytes(data)
    tiling = [(0, 1 << 20)]
    for fs, columns in (
        (sysfs.HostSysfs(root), {}),  # the snapshot's numbered table
        (sysfs.GenericSysfs(root), {}),  # read_table
        (sysfs.HostSysfs(root), {"tiling": tiling}),  # and total_bytes
        (sysfs.GenericSysfs(root), {"tiling": tiling}),
    ):
        with pytest.raises(errors.SysfsError, match="the kernel gave") as caught:
            reading.tried_region_columns(fs, 0, 0, _no_sleep, unit=1, **columns)
        assert "tried_regions/1/" in str(caught.value) or "total_bytes" in str(caught.value)
    with pytest.raises(errors.SysfsError, match=r"tried_regions/1/age: expected"):
        sysfs.read_int(sysfs.HostSysfs(root), f"{regions.relative_to(root)}/1/age")


def _no_sleep(seconds: float) -> None:
    del seconds


def test_the_readers_module_parses_no_number_by_hand() -> None:
    # Every reader goes through sysfs.read_int / parse_int: a bare int() of a read is how
    # a ValueError escaped before.
    import inspect
    import re

    for module in (reading, driver, ownership, capabilities):
        source = inspect.getsource(module)
        assert not re.search(r"int\((self\.)?fs\.read\(|int\(read\(", source), module.__name__
