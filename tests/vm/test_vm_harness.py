"""The harness itself: results come back, failures are reported, nothing outlives a boot.

Three short shell-only boots: a script that fails with output and a file, one that
outlives the guest's own deadline, and one the host has to kill because the guest does
not come back in time; and one through ``scripts/vm-run``, the harness as a command.
After each, no process mentioning the boot's run directory (QEMU, either virtiofsd) may
be left. One Python boot checks the emulated CPU (``harness.GUEST_CPU``): numpy sorts
arrays that end at the end of a mapping, which QEMU 7.2's emulated AVX2 faulted on.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.vm


def test_failed_script_brings_back_status_output_and_files(
    vm: harness.Runner, vm_figures: harness.Figures
) -> None:
    run = vm.shell(
        'echo "to stdout"; echo "to stderr" >&2; uname -r > kernel.txt; exit 3', check=False
    )
    vm_figures.record_run(run)
    assert run.rc == 3
    assert run.stdout == "to stdout\n"
    assert run.stderr == "to stderr\n"
    assert run.text("kernel.txt").strip() == vm.assets.release
    with pytest.raises(harness.GuestFailedError, match="rc=3"):
        run.check()
    assert harness.processes_using(run.share.parent) == []


def test_guest_deadline_ends_the_script_and_powers_off(
    vm: harness.Runner, vm_figures: harness.Figures
) -> None:
    config = harness.VmConfig(deadline_s=5, zram="0")
    started = time.monotonic()
    run = vm.shell("echo started; sleep 600; echo never", config=config, check=False)
    vm_figures.record(wall_s=round(time.monotonic() - started, 1))
    assert run.rc not in (None, 0)
    assert run.stdout == "started\n"
    assert run.guest_run_s is not None and run.guest_run_s < 60
    assert harness.processes_using(run.share.parent) == []


def test_host_kills_a_guest_that_does_not_return(vm: harness.Runner) -> None:
    # The guest's deadline is far away; the host's (deadline + margin) comes first.
    config = harness.VmConfig(deadline_s=600, margin_s=-590, zram="0")
    started = time.monotonic()
    with pytest.raises(harness.VmTimeoutError) as caught:
        vm.shell("sleep 600", config=config)
    assert time.monotonic() - started < 60
    assert harness.processes_using(caught.value.run_dir) == []


def test_vm_run_script_runs_a_command_and_brings_back_files(tmp_path: Path) -> None:
    # scripts/vm-run: the harness as a command, for people (the tests use the fixture).
    probe = tmp_path / "probe.txt"
    probe.write_text("from the host\n")
    out = tmp_path / "out"
    vm_run = str(harness.REPO_ROOT / "scripts" / "vm-run")
    done = subprocess.run(
        [vm_run, "--file", str(probe), "--out", str(out),
         "--", 'cat probe.txt; cat /sys/devices/system/node/has_cpu > cpus.txt; exit 5'],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert done.stdout == "from the host\n"
    assert "rc=5" in done.stderr
    # Node 1 is CPU-less: only node 0 has CPUs.
    assert (out / "cpus.txt").read_text().strip() == "0"
    bad = subprocess.run(
        [vm_run, "--file", str(tmp_path / "nope"), "--", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "--file" in bad.stderr and "no such file" in bad.stderr


SORT_AT_MAPPING_END = """
import mmap
import numpy as np
from numpy._core._multiarray_umath import __cpu_features__
for n in range(1, 1500):
    pages = (n * 8 + 4095) // 4096
    buf = mmap.mmap(-1, pages * 4096)
    # The array's last byte is the mapping's last byte: any read or write past it faults.
    arr = np.frombuffer(buf, dtype=np.uint64, count=n, offset=pages * 4096 - n * 8)
    arr[:] = np.random.default_rng(n).integers(0, 2**40, size=n, dtype=np.uint64)
    arr.sort()
    assert (np.diff(arr.astype(np.int64)) >= 0).all(), n
    del arr
print("AVX2" if __cpu_features__["AVX2"] else "no AVX2", n)
"""


def test_guest_numpy_sorts_arrays_that_end_at_a_mapping_end(vm: harness.Runner) -> None:
    # With AVX2 on, the first such array killed the guest's process (SIGSEGV): the userspace
    # backend's migrate_pages (np.unique sorts) died so in CI. The host sorts them all.
    run = vm.python(SORT_AT_MAPPING_END, check=False)
    assert run.rc == 0, f"numpy's sort died in the guest:\n{run.describe()}"
    assert run.stdout.split() == ["no", "AVX2", "1499"], run.stdout
