"""The kernel's own tiering settings (NUMA balancing, demotion): fake trees, then the
host's real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from node_support import TREES

from damon_agent.node import errors, kernel_tiering

NUMA_TREE = TREES / "numa-cxl"


def _tree(root: Path, balancing: str | None, demotion: str | None) -> Path:
    """A /proc + /sys pair under ``root`` holding the given file contents (None: no file)."""
    if balancing is not None:
        (root / "proc" / "sys" / "kernel").mkdir(parents=True)
        (root / "proc" / "sys" / "kernel" / "numa_balancing").write_text(balancing)
    if demotion is not None:
        (root / "sys" / "kernel" / "mm" / "numa").mkdir(parents=True)
        (root / "sys" / "kernel" / "mm" / "numa" / "demotion_enabled").write_text(demotion)
    return root


def test_a_cxl_node_that_tiers_by_itself() -> None:
    assert kernel_tiering.read_numa_balancing(NUMA_TREE / "proc") == 2
    assert kernel_tiering.read_demotion_enabled(NUMA_TREE / "sys") is True


def test_missing_files_mean_a_kernel_without_them(tmp_path: Path) -> None:
    root = _tree(tmp_path, None, None)
    assert kernel_tiering.read_numa_balancing(root / "proc") is None
    assert kernel_tiering.read_demotion_enabled(root / "sys") is None


@pytest.mark.parametrize(("text", "value"), [("0\n", 0), ("1\n", 1), ("2\n", 2), ("3", 3)])
def test_numa_balancing_values(tmp_path: Path, text: str, value: int) -> None:
    assert kernel_tiering.read_numa_balancing(_tree(tmp_path, text, None) / "proc") == value


@pytest.mark.parametrize(("text", "value"), [("true\n", True), ("false\n", False)])
def test_demotion_values(tmp_path: Path, text: str, value: bool) -> None:
    assert kernel_tiering.read_demotion_enabled(_tree(tmp_path, None, text) / "sys") is value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("on\n", "'on' is not a non-negative integer"),
        ("-1\n", "'-1' is not a non-negative integer"),
        ("1 2\n", "'1 2' is not a non-negative integer"),
        ("\n", "'' is not a non-negative integer"),
        ("\u00b2\n", "'\u00b2' is not a non-negative integer"),  # a digit to str.isdigit
        ("4294967296\n", "4294967296 is beyond an int's range"),
    ],
)
def test_a_numa_balancing_value_outside_the_format_names_the_file(
    tmp_path: Path, text: str, reason: str
) -> None:
    with pytest.raises(errors.MalformedFileError) as raised:
        kernel_tiering.read_numa_balancing(_tree(tmp_path, text, None) / "proc")
    assert raised.value.path == str(tmp_path / "proc" / "sys" / "kernel" / "numa_balancing")
    assert raised.value.reason == reason


@pytest.mark.parametrize("text", ["1\n", "yes\n", "True\n", ""])
def test_a_demotion_value_outside_the_format_names_the_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(errors.MalformedFileError, match=r"demotion_enabled: .* is neither"):
        kernel_tiering.read_demotion_enabled(_tree(tmp_path, None, text) / "sys")


def test_an_unreadable_file_is_unavailable_not_missing(tmp_path: Path) -> None:
    # A directory where the file should be: reading it fails, unlike a missing file.
    (tmp_path / "proc" / "sys" / "kernel" / "numa_balancing").mkdir(parents=True)
    with pytest.raises(errors.FactUnavailableError, match="numa_balancing: Is a directory"):
        kernel_tiering.read_numa_balancing(tmp_path / "proc")


def test_the_hosts_settings_are_what_its_files_say() -> None:
    balancing = Path("/proc/sys/kernel/numa_balancing")
    demotion = Path("/sys/kernel/mm/numa/demotion_enabled")
    assert balancing.exists() and demotion.exists(), "this host's kernel has both files"
    assert kernel_tiering.read_numa_balancing() == int(balancing.read_text())
    assert kernel_tiering.read_demotion_enabled() is (demotion.read_text().strip() == "true")
