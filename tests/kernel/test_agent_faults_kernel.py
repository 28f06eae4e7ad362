"""The state directory deleted under a running kdamond, on the real DAMON of the kernel
under test (runs in the VM's kernel matrix; tests/runtime/test_agent_faults.py has the
same over the fake sysfs, with the daemon's loop).

The record is written again as it was, the kdamond is never taken for someone else's,
and ``stop`` turns it off whether or not the file is there (``kernel_damon`` checks that
``nr_kdamonds`` is back to 0).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from damon_agent.core import attrs
from damon_agent.ops.kernel import damon as damon_ops
from damon_agent.ops.kernel import ownership

pytestmark = pytest.mark.kernel


def test_a_deleted_state_directory_loses_no_kdamond_of_the_real_kernel(
    kernel_damon: Path, host_state_dir: Path
) -> None:
    engine = damon_ops.KernelDamon.on_host(host_state_dir, admin=kernel_damon)
    context = damon_ops.KdamondContext(
        key="host", monitoring=attrs.MonitoringAttrs(), operations="paddr"
    )
    record = host_state_dir / ownership.STATE_FILE
    try:
        engine.apply([context])
        pid = int((kernel_damon / "kdamonds" / "0" / "pid").read_text())
        shutil.rmtree(host_state_dir)
        assert engine.find_holders().foreign == ()
        assert engine.driver.ownership.restore()
        assert [k["pid"] for k in json.loads(record.read_text())["kdamonds"]] == [pid]
        shutil.rmtree(host_state_dir)  # gone again when the agent stops
    finally:
        engine.stop()
    assert (kernel_damon / "kdamonds" / "nr_kdamonds").read_text().strip() == "0"
    assert not record.exists()
