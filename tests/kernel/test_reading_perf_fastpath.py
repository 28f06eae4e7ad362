"""The snapshot reader's fast path (``HostSysfs.read_numbered_table``) against the generic one.

Both paths must give the same ``RegionColumns`` from the same tried regions: on the fake
tree (scripted regions, odd layouts, faults) and on the host's real 6.18 DAMON, where one
``update_schemes_tried_regions`` is read by both and by the full ``tried_regions`` reader
(which reads every ``end`` file), so the tiling shortcut is checked against the kernel's
own ends.
"""

from __future__ import annotations

import errno
import itertools
import random
import time
from pathlib import Path

import pytest

from damon_agent.ops.kernel import applying, driver, errors, iomem, model, reading, sysfs
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.schemes import stats as scheme_stats

GIB = 1 << 30
RAM = ((4 * GIB, 8 * GIB), (9 * GIB, 10 * GIB))
BASE = "kdamonds/0/contexts/0/schemes/0/tried_regions"


class FakeWithFastPath:
    """The fake tree's ``SysfsIO`` (commands act) plus the host's fast reader on its files."""

    def __init__(self, fake: fake_sysfs.FakeDamonSysfs) -> None:
        self.fake = fake
        self.host = sysfs.HostSysfs(fake.root)

    @property
    def root(self) -> Path:
        return self.fake.root

    def read(self, path: str) -> str:
        return self.fake.read(path)

    def write(self, path: str, value: str) -> None:
        self.fake.write(path, value)

    def listdir(self, path: str) -> list[str]:
        return self.fake.listdir(path)

    def exists(self, path: str) -> bool:
        return self.fake.exists(path)

    def read_table(self, path: str, entries: list[str], files: tuple[str, ...]) -> list[list[str]]:
        return self.fake.read_table(path, entries, files)

    def read_numbered_table(
        self, path: str, files: tuple[str, ...], own_files: tuple[str, ...] = ()
    ) -> sysfs.NumberedTable:
        return self.host.read_numbered_table(path, files, own_files)


def _running(fake_driver: driver.KdamondDriver, *, addr_unit: int | None = None) -> None:
    regions = tuple(model.Region(s, e) for s, e in RAM)
    fake_driver.start(
        model.Kdamond(
            contexts=(
                model.Context(
                    operations="paddr",
                    addr_unit=addr_unit,
                    targets=(model.Target(regions=regions),),
                    schemes=(model.Scheme(action="stat"),),
                ),
            )
        )
    )


def _tiling_regions() -> list[model.TriedRegion]:
    """Regions tiling both RAM ranges, of uneven sizes, with varied counters."""
    result = []
    for number, (start, end) in enumerate(RAM):
        cuts = [start + k * (end - start) // 7 + number * 4096 * k for k in range(7)] + [end]
        for i, (a, b) in enumerate(itertools.pairwise(cuts)):
            result.append(model.TriedRegion(a, b, nr_accesses=(i * 3) % 21, age=i + 10 * number))
    return result


def _both(
    fake: fake_sysfs.FakeDamonSysfs, tiling: list[tuple[int, int]] | None, unit: int | None = None
) -> tuple[reading.RegionColumns, reading.RegionColumns]:
    no_sleep = lambda _s: None  # noqa: E731
    generic = reading.tried_region_columns(fake, 0, 0, no_sleep, tiling=tiling, unit=unit)
    fast = reading.tried_region_columns(
        FakeWithFastPath(fake), 0, 0, no_sleep, tiling=tiling, unit=unit
    )
    return generic, fast


def _columns_of(regions: list[model.TriedRegion], unit: int = 1) -> reading.RegionColumns:
    return reading.RegionColumns(
        start=[r.start * unit for r in regions],
        end=[r.end * unit for r in regions],
        nr_accesses=[r.nr_accesses for r in regions],
        age=[r.age for r in regions],
    )


def test_fast_path_is_taken_only_where_the_tree_offers_it(
    fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path
) -> None:
    assert isinstance(sysfs.HostSysfs(tmp_path), sysfs.NumberedTableReader)
    assert isinstance(FakeWithFastPath(fake), sysfs.NumberedTableReader)
    assert not isinstance(sysfs.GenericSysfs(tmp_path), sysfs.NumberedTableReader)
    assert not isinstance(fake, sysfs.NumberedTableReader)


def test_tiled_regions_read_alike_without_any_end_file(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    _running(fake_driver)
    regions = _tiling_regions()
    fake.tried[(0, 0)] = regions
    generic, fast = _both(fake, list(RAM))
    assert generic == fast == _columns_of(regions)
    # The fast path reads three files per region: without ``end`` and
    # ``sz_filter_passed`` it still gives the same columns.
    applying.state_command(fake, 0, "update_schemes_tried_regions", lambda _s: None)
    for region_dir in (fake.root / BASE).iterdir():
        if region_dir.is_dir():
            (region_dir / "end").unlink()
            (region_dir / "sz_filter_passed").unlink()
    table = sysfs.HostSysfs(fake.root).read_numbered_table(
        BASE, ("start", "nr_accesses", "age"), ("total_bytes",)
    )
    assert table.columns == [fast.start, fast.nr_accesses, fast.age]
    assert table.own == {"total_bytes": sum(r.end - r.start for r in regions)}


def test_regions_with_holes_read_their_ends_alike(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    _running(fake_driver)
    regions = [r for i, r in enumerate(_tiling_regions()) if i % 3 != 1]
    fake.tried[(0, 0)] = regions
    generic, fast = _both(fake, list(RAM))
    assert generic == fast == _columns_of(regions)


def test_addr_unit_multiplies_both_paths_alike(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    _running(fake_driver, addr_unit=4)
    regions = [
        model.TriedRegion(r.start // 4, r.end // 4, r.nr_accesses, r.age) for r in _tiling_regions()
    ]
    fake.tried[(0, 0)] = regions
    generic, fast = _both(fake, list(RAM), unit=4)
    assert generic == fast == _columns_of(regions, unit=4)
    # Without the tiling the ends come from the files, multiplied as well.
    generic, fast = _both(fake, None, unit=4)
    assert generic == fast == _columns_of(regions, unit=4)


def test_no_regions_and_a_missing_total_read_alike(
    fake: fake_sysfs.FakeDamonSysfs, fake_driver: driver.KdamondDriver
) -> None:
    _running(fake_driver)
    generic, fast = _both(fake, list(RAM))
    assert generic == fast == reading.RegionColumns([], [], [], [])
    # A kernel without total_bytes: the tiling cannot be checked, so ends are read.
    regions = _tiling_regions()[:5]
    fake.tried[(0, 0)] = regions
    applying.state_command(fake, 0, "update_schemes_tried_regions", lambda _s: None)
    (fake.root / BASE / "total_bytes").unlink()
    table = sysfs.HostSysfs(fake.root).read_numbered_table(BASE, ("end",), ("total_bytes",))
    assert table.own == {"total_bytes": None}
    assert table.columns == [[r.end for r in regions]]


def _layout(root: Path, entries: dict[str, dict[str, str]], own: dict[str, str]) -> None:
    for name, files in entries.items():
        (root / name).mkdir(parents=True)
        for file, content in files.items():
            (root / name / file).write_text(content)
    for file, content in own.items():
        (root / file).write_text(content)


def test_numbered_table_orders_numerically_and_reads_long_values(tmp_path: Path) -> None:
    admin = tmp_path / "admin"
    long_value = " " * 100 + "123456789\n"  # past the small first read
    entries = {
        "10": {"v": "10\n"},
        "2": {"v": "2\n"},
        "100": {"v": long_value},
        "0": {"v": "18446744073709551615\n"},
    }
    _layout(admin / "t", entries, {"total": "7\n", "note": "x\n"})
    (admin / "t" / "not_a_region").mkdir()
    table = sysfs.HostSysfs(admin).read_numbered_table("t", ("v",), ("total", "absent"))
    assert table.names == ["0", "2", "10", "100"]
    assert table.columns == [[18446744073709551615, 2, 10, 123456789]]
    assert table.own == {"total": 7, "absent": None}


def test_numbered_table_errors_name_the_file(tmp_path: Path) -> None:
    admin = tmp_path / "admin"
    _layout(admin / "t", {"0": {"v": "1\n"}, "2": {"v": "oops\n"}}, {"own": "z\n"})
    host = sysfs.HostSysfs(admin)
    with pytest.raises(errors.SysfsError, match=r"t/2/v: expected an integer") as bad:
        host.read_numbered_table("t", ("v",))
    assert bad.value.path == "t/2/v"
    (admin / "t" / "2" / "v").write_text("2\n")
    assert host.read_numbered_table("t", ("v",)).columns == [[1, 2]]
    (admin / "t" / "4").mkdir()  # a region directory without the file
    with pytest.raises(errors.SysfsMissingError) as missing:
        host.read_numbered_table("t", ("v",))
    assert missing.value.path == "t/4/v" and missing.value.errno == errno.ENOENT
    with pytest.raises(errors.SysfsError, match="t/own: expected an integer"):
        host.read_numbered_table("t", (), ("own",))
    with pytest.raises(errors.SysfsMissingError) as no_dir:
        host.read_numbered_table("gone", ("v",))
    assert no_dir.value.path == "gone"


@pytest.mark.kernel
def test_host_fast_path_matches_the_full_reader_on_one_update(
    kernel_damon: Path, host_state_dir: Path
) -> None:
    """One real update, read three ways: full reader (every file), fast path, generic path."""
    host = sysfs.HostSysfs(kernel_damon)
    drv = driver.KdamondDriver(host, host_state_dir)
    ranges = iomem.largest_ram_ranges()
    handle = drv.start(
        model.Kdamond(
            contexts=(
                model.Context(
                    operations="paddr",
                    monitoring_attrs=model.MonitoringAttrs(nr_regions=model.Range(10, 1000)),
                    targets=(model.Target(regions=tuple(model.Region(s, e) for s, e in ranges)),),
                    schemes=(model.Scheme(action="stat"),),
                ),
            )
        )
    )
    try:
        time.sleep(1.0)
        base = f"kdamonds/{handle.index}/contexts/0/schemes/0/tried_regions"
        # The full reader writes the update and reads every region's files, end included;
        # the others then read the very same directories (nothing updates them meanwhile).
        full = drv.tried_regions(handle)[0]
        table = host.read_numbered_table(base, ("start", "nr_accesses", "age"), ("total_bytes",))
        generic = sysfs.GenericSysfs(kernel_damon)
        names = sorted((n for n in generic.listdir(base) if n.isdigit()), key=int)
        starts, accesses, ages = generic.read_table(base, names, ("start", "nr_accesses", "age"))
        assert len(full.regions) >= 10
        assert table.names == names
        assert table.columns == [
            [int(v) for v in starts],
            [int(v) for v in accesses],
            [int(v) for v in ages],
        ]
        assert table.columns == [
            [r.start for r in full.regions],
            [r.nr_accesses for r in full.regions],
            [r.age for r in full.regions],
        ]
        assert table.own["total_bytes"] == full.total_bytes
        # The tiling shortcut gives the kernel's own ends.
        assert reading._tiled_ends(table.columns[0], ranges) == [r.end for r in full.regions]

        # And through the public reader, a fresh update: consistent columns.
        columns = drv.tried_region_columns(handle, 0, tiling=ranges)
        assert columns.start == sorted(columns.start)
        assert all(s < e for s, e in zip(columns.start, columns.end, strict=True))
        covered = sum(e - s for s, e in zip(columns.start, columns.end, strict=True))
        assert covered == sum(e - s for s, e in ranges)
        assert len(columns.nr_accesses) == len(columns.age) == len(columns.start) >= 10
    finally:
        drv.stop_all()
    assert (kernel_damon / "kdamonds/nr_kdamonds").read_text().strip() == "0"


@pytest.mark.parametrize("omit", [(), ("sz_ops_filter_passed",)])
def test_stats_read_all_files_first_and_fall_back_on_older_kernels(
    tmp_path: Path, omit: tuple[str, ...]
) -> None:
    """``schemes_stats`` no longer probes for ``sz_ops_filter_passed``; a 6.13 tree works."""
    fake = fake_sysfs.FakeDamonSysfs(tmp_path / "admin", omit=omit)
    drv = driver.KdamondDriver(
        fake, tmp_path / "state", boot_id="boot-1", sleep=lambda _s: None, monotonic=lambda: 0.0
    )
    handle = drv.start(
        model.Kdamond(
            contexts=(
                model.Context(
                    operations="paddr",
                    targets=(model.Target(regions=(model.Region(*RAM[0]),)),),
                    schemes=(model.Scheme(action="stat"), model.Scheme(action="pageout")),
                ),
            )
        )
    )
    fake.stats[(0, 0)] = scheme_stats.SchemeCounters(
        nr_tried=5, sz_tried=50, sz_ops_filter_passed=7
    )
    fake.stats[(0, 1)] = scheme_stats.SchemeCounters(nr_applied=3, sz_applied=30, qt_exceeds=2)
    stats = drv.schemes_stats(handle)
    passed = 0 if omit else 7
    assert stats == [
        scheme_stats.SchemeCounters(nr_tried=5, sz_tried=50, sz_ops_filter_passed=passed),
        scheme_stats.SchemeCounters(nr_applied=3, sz_applied=30, qt_exceeds=2),
    ]
    drv.stop_all()


def _reference_ends(start: list[int], tiling: list[tuple[int, int]]) -> list[int]:
    """The definition, one region at a time: next start, capped by the range's end."""
    ends = []
    for i, address in enumerate(start):
        owner = [e for s, e in tiling if s <= address]
        limit = owner[-1] if owner else tiling[0][1]
        ends.append(min(start[i + 1], limit) if i + 1 < len(start) else limit)
    return ends


def test_tiled_ends_follow_the_definition_for_sorted_and_unsorted_starts() -> None:
    rng = random.Random(4)
    for case in range(600):
        bases = sorted(rng.sample(range(0, 100_000, 1_000), rng.randint(1, 4)))
        tiling = [(b, b + rng.randint(1, 999)) for b in bases]
        edges = [a for pair in tiling for a in pair]
        start = [
            rng.choice([rng.randint(-10, 110_000), rng.choice(edges)])
            for _ in range(rng.randint(0, 25))
        ]
        if case % 3:
            start.sort()
        assert reading._tiled_ends(start, tiling) == _reference_ends(start, tiling)
