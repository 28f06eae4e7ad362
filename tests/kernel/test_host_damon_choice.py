"""When a test run uses the host's own DAMON: only where it is free, on a kernel it knows.

The decision reads the DAMON sysfs tree and /sys/module; here both are fake trees, since
this host's real DAMON is held by a kdamond it did not make.
"""

from __future__ import annotations

from pathlib import Path

import damon_modules
import pytest


def _host(tmp_path: Path, nr_kdamonds: str = "0", stat: str = "N") -> tuple[Path, Path]:
    admin = tmp_path / "admin"
    (admin / "kdamonds").mkdir(parents=True)
    (admin / "kdamonds" / "nr_kdamonds").write_text(nr_kdamonds + "\n")
    modules = tmp_path / "module"
    (modules / "damon_stat" / "parameters").mkdir(parents=True)
    (modules / "damon_stat" / "parameters" / "enabled").write_text(stat + "\n")
    return admin, modules


@pytest.mark.parametrize(
    ("nr_kdamonds", "stat", "release", "why_not"),
    [
        ("0", "N", "6.12.117-cloud-amd64", ""),
        ("0", "N", "7.3.4+deb13-cloud-amd64", ""),
        ("1", "N", "6.12.117", "1 kdamond(s) the tests did not make exist"),
        ("0", "Y", "6.18.15", "damon_stat runs"),
        ("0", "N", "6.8.0-45-generic", "its kernel 6.8 is not one the kernel suite knows"),
    ],
)
def test_the_host_damon_is_used_only_when_free_on_a_known_kernel(
    tmp_path: Path, nr_kdamonds: str, stat: str, release: str, why_not: str
) -> None:
    admin, modules = _host(tmp_path, nr_kdamonds, stat)
    found = damon_modules.host_damon_unused_because(admin, modules, release)
    assert found.startswith(why_not) if why_not else found == ""


def test_no_damon_sysfs_is_named(tmp_path: Path) -> None:
    found = damon_modules.host_damon_unused_because(tmp_path / "none", tmp_path, "6.12.1")
    assert found.startswith("no DAMON sysfs interface at")
