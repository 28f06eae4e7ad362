"""Faults of the agent's own making or of its node, the kernel backend over a fake sysfs.

The daemon's loop (``runtime.daemon.Agent``) runs its real kernel backend and driver
(ownership records in a real state directory) over ``ops.kernel.fake.FakeDamonSysfs``,
with the informers' caches filled by hand and status writes captured:

* SIGTERM lands while an apply is in the kernel (a ``state`` command held): the apply
  finishes, then every kdamond the agent made is turned off and the list emptied; the
  record of them is gone and the last status says the agent stopped;
* the state directory is deleted under a running agent: the next status build writes the
  record again (a successor adopts the kdamonds), logs it naming the file, and the
  agent's own kdamonds are never taken for someone else's; DAMON_STAT, taken over
  (``--take-over-damon-stat``), is still turned back on at stop;
* the state directory is full (a real 64 KiB tmpfs): an apply that cannot record what it
  made fails naming the file and "No space left on device", the loop goes on, the agent
  still knows its kdamonds (stops them at the end), and once there is room the record is
  written and the plan applied;
* its DamonNode made again (another UID): a status is written on the next tick, not a
  status interval later; a status write the apiserver answers 404 (no DamonNode) is
  dropped, not retried, while other failures are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fnmatch
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from damon_agent.api import resources
from damon_agent.cli import daemon as cli_daemon
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver, ownership, takeover
from damon_agent.ops.kernel import fake as fake_sysfs
from damon_agent.runtime import daemon, errors
from damon_agent.runtime.backends import kernel as kernel_backend

BOOT = "boot-1"
RAM = "100000000-13fffffff : System RAM\n"


class GatedSysfs(fake_sysfs.FakeDamonSysfs):
    """The fake tree, but a write of ``gate`` (path glob, value) waits until ``opened``:
    a kernel slow to take a command, so that a signal lands in the middle of it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate: tuple[str, str] | None = None
        self.held = threading.Event()
        self.opened = threading.Event()

    def write(self, path: str, value: str) -> None:
        gate = self.gate
        if gate is not None and fnmatch.fnmatch(path, gate[0]) and value == gate[1]:
            self.held.set()
            self.opened.wait(timeout=30)
        super().write(path, value)


def _kernel_backend(
    tree: fake_sysfs.FakeDamonSysfs, state_dir: Path, *, adopt: bool = False
) -> kernel_backend.KernelBackend:
    kernel = kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(tree, state_dir, boot_id=BOOT, sleep=lambda _: None),
        kernel_release="6.18.4",
        proc_root=tree.root.parent / "proc",
    )
    return kernel_backend.KernelBackend(kernel, tiers={}, adopt=adopt)


def _dnode(generation: int, action: str = "stat") -> dict[str, Any]:
    """A DamonNode assigning one whole-node scheme (one paddr kdamond)."""
    return {
        "metadata": {"name": "n1", "generation": generation, "uid": "dn-1"},
        "spec": {
            "schemes": [
                {
                    "kind": "ClusterDamonScheme",
                    "name": "whole",
                    "uid": "u1",
                    "generation": generation,
                    "wholeNode": True,
                    "spec": {"schemes": [{"name": "cold", "action": action}]},
                }
            ]
        },
    }


async def _forever() -> None:
    await asyncio.Event().wait()


@pytest.fixture
def tree(tmp_path: Path) -> GatedSysfs:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "iomem").write_text(RAM)
    return GatedSysfs(tmp_path / "admin")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def agent(tmp_path: Path, tree: GatedSysfs, state_dir: Path) -> AsyncIterator[Any]:
    node_root = tmp_path / "node"
    node_root.mkdir()
    config = cli_daemon.parse_args(
        ["--node-name", "n1", "--backend", "kernel", "--state-dir", str(state_dir),
         "--sys-root", str(node_root), "--proc-root", str(node_root), "--tick", "0.1"]
    )  # fmt: skip
    cfg = kubernetes.client.Configuration()
    cfg.host = "http://127.0.0.1:1"
    the_agent = daemon.Agent(config, daemon.kube.Client(cfg))
    the_agent.node_backend = _kernel_backend(tree, state_dir)
    # The caches are the test's: no watch runs (there is no apiserver).
    the_agent.dnodes.run = _forever  # type: ignore[method-assign]
    the_agent.pods.run = _forever  # type: ignore[method-assign]
    the_agent.dnodes.items = {"n1": _dnode(1)}
    the_agent.dnodes.synced.set()
    the_agent.pods.synced.set()
    written: list[resources.DamonNodeStatus] = []

    async def capture(built: resources.DamonNodeStatus) -> bool:
        written.append(built)
        the_agent.state.last_status = built
        return True

    the_agent.write_status = capture  # type: ignore[method-assign]
    the_agent.written = written
    yield the_agent
    if the_agent.node_backend is not None:
        await the_agent.shutdown()
    await the_agent.client.close()


async def _status_now(agent: Any) -> resources.DamonNodeStatus:
    agent.throttle.forget()
    await agent.tick()
    await agent.flush_status()
    return agent.written[-1]  # type: ignore[no-any-return]


def _condition(built: resources.DamonNodeStatus, kind: str) -> Any:
    return next(c for c in built.conditions if c.type == kind)


def _assert_nothing_left(tree: fake_sysfs.FakeDamonSysfs, state_dir: Path) -> None:
    nr = int(tree.read("kdamonds/nr_kdamonds"))
    states = [tree.read(f"kdamonds/{i}/state") for i in range(nr)]
    assert nr == 0, f"kdamonds left: {states}"
    assert not (state_dir / ownership.STATE_FILE).exists()


def _record(state_dir: Path) -> dict[str, Any]:
    return json.loads((state_dir / ownership.STATE_FILE).read_text())  # type: ignore[no-any-return]


# ---- SIGTERM during an apply ------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "gate"),
    [
        # The first plan: turning the new kdamond on.
        ("start", ("kdamonds/*/state", "on")),
        # A changed scheme committed online into the running kdamond.
        ("commit", ("kdamonds/*/state", "commit")),
    ],
)
async def test_sigterm_during_an_apply_stops_every_kdamond_it_made(
    agent: Any,
    tree: GatedSysfs,
    state_dir: Path,
    step: str,
    gate: tuple[str, str],
    record_property: Any,
) -> None:
    if step == "commit":
        await agent.tick()  # the first plan runs
        assert tree.read("kdamonds/0/state") == "on"
        agent.dnodes.items = {"n1": _dnode(2, action="pageout")}
    tree.gate = gate
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)  # as ``daemon.serve`` does
    try:
        running = asyncio.create_task(agent.run(stop))
        assert await asyncio.to_thread(tree.held.wait, 10), f"the {step} never reached sysfs"
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), timeout=5)
        assert not running.done()  # the apply is still in the kernel
        signalled = time.monotonic()
        tree.opened.set()
        await asyncio.wait_for(running, timeout=10)
        await agent.shutdown()
        stopped_s = time.monotonic() - signalled
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        tree.opened.set()
    log = tree.log
    held_at = log.index(("kdamonds/0/state", gate[1]))
    # The apply finished, and only then was the kdamond turned off: nothing raced it.
    assert ("kdamonds/0/state", "off") in log[held_at:]
    assert agent.counters.applies == (2 if step == "commit" else 1)
    _assert_nothing_left(tree, state_dir)
    last = agent.written[-1]
    backend = _condition(last, "BackendAvailable")
    assert (backend.status, backend.message) == ("False", "agent stopped")
    assert agent.node_backend is None
    record_property("figures", f"{step}: stopped {stopped_s * 1000:.0f} ms after the apply")


# ---- the state directory deleted ----------------------------------------------------------


async def test_a_deleted_state_directory_is_written_again_and_nothing_is_lost(
    agent: Any, tree: GatedSysfs, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await agent.tick()
    pid = int(tree.read("kdamonds/0/pid"))
    assert _record(state_dir)["kdamonds"][0]["pid"] == pid
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    with caplog.at_level(logging.WARNING, logger="damon_agent.daemon"):
        built = await _status_now(agent)
    # Written again at the next status build, as it was.
    assert _record(state_dir)["kdamonds"][0]["pid"] == pid
    said = [r.getMessage() for r in caplog.records]
    assert any(str(state_dir / ownership.STATE_FILE) in m and "written again" in m for m in said)
    # Its own kdamond is not taken for someone else's.
    available = _condition(built, resources.CONDITION_DAMON_AVAILABLE)
    assert (available.status, available.reason) == ("True", "Free"), available.message
    # Deleted again, then a changed scheme: committed into the same kdamond, recorded.
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    agent.dnodes.items = {"n1": _dnode(2, action="pageout")}
    await agent.tick()
    assert agent.readiness() == (True, "ok")
    assert int(tree.read("kdamonds/0/pid")) == pid
    assert _record(state_dir)["kdamonds"][0]["pid"] == pid
    # A successor (this one killed) adopts it from the record written again.
    successor = _kernel_backend(tree, state_dir, adopt=True)
    assert [h.pid for h in successor._kernel._adopted] == [pid]
    await agent.shutdown()
    _assert_nothing_left(tree, state_dir)


async def test_a_state_directory_deleted_while_idle_still_stops_everything(
    agent: Any, tree: GatedSysfs, state_dir: Path
) -> None:
    """Without a status build between the deletion and the stop: the agent knows its
    kdamonds from memory, not from the file."""
    await agent.tick()
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    await agent.shutdown()
    _assert_nothing_left(tree, state_dir)


# ---- the state directory full ---------------------------------------------------------------


@pytest.fixture
def full_state_dir(state_dir: Path) -> Iterator[Path]:
    """``state_dir`` on a 64 KiB tmpfs, and a file that fills it (delete it to free)."""
    state_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(state_dir)], check=True)
    try:
        yield state_dir / "filler"
    finally:
        subprocess.run(["umount", "-l", str(state_dir)], check=False)


def _fill(filler: Path) -> None:
    with filler.open("ab", buffering=0) as out:
        while True:
            try:
                out.write(b"\0" * 4096)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                return


async def test_a_full_state_directory_fails_the_apply_naming_it_and_loses_nothing(
    agent: Any, tree: GatedSysfs, state_dir: Path, full_state_dir: Path
) -> None:
    filler = full_state_dir
    _fill(filler)
    record_path = str(state_dir / ownership.STATE_FILE)
    # Full before the first plan: refused before the kernel is touched.
    built = await _status_now(agent)
    ready, why = agent.readiness()
    assert not ready and record_path in why and "No space left on device" in why
    assert tree.read("kdamonds/nr_kdamonds") == "0"
    (scheme,) = built.schemes
    condition = _condition(scheme, "Ready")
    assert (condition.status, condition.reason) == ("False", "ApplyFailed")
    assert record_path in condition.message
    # Room again: applied at the next try, and recorded.
    filler.unlink()
    agent.state.failed_at -= daemon.APPLY_RETRY_S
    await agent.tick()
    assert agent.readiness() == (True, "ok")
    pid = int(tree.read("kdamonds/0/pid"))
    assert _record(state_dir)["kdamonds"][0]["pid"] == pid
    # Full again, and a changed scheme: the kernel takes it, the record cannot.
    _fill(filler)
    agent.dnodes.items = {"n1": _dnode(2, action="pageout")}
    built = await _status_now(agent)
    ready, why = agent.readiness()
    assert not ready and record_path in why and "No space left on device" in why
    assert int(tree.read("kdamonds/0/pid")) == pid  # the same kdamond, still the agent's
    available = _condition(built, resources.CONDITION_DAMON_AVAILABLE)
    assert available.reason == "Free" and "No space left on device" in available.message
    assert [p.name for p in state_dir.iterdir()] == ["filler", ownership.STATE_FILE]
    await agent.tick()  # the loop goes on
    # Room again: the retry commits and records; the status says nothing more of it.
    filler.unlink()
    agent.state.failed_at -= daemon.APPLY_RETRY_S
    built = await _status_now(agent)
    assert agent.readiness() == (True, "ok")
    available = _condition(built, resources.CONDITION_DAMON_AVAILABLE)
    assert "No space" not in available.message
    assert _record(state_dir)["kdamonds"][0]["pid"] == pid
    await agent.shutdown()
    _assert_nothing_left(tree, state_dir)


async def test_a_full_state_directory_at_the_stop_still_stops_everything(
    agent: Any, tree: GatedSysfs, state_dir: Path, full_state_dir: Path
) -> None:
    await agent.tick()
    assert tree.read("kdamonds/0/state") == "on"
    _fill(full_state_dir)
    with contextlib.suppress(OSError):
        (state_dir / ownership.STATE_FILE).unlink()  # and the record gone too
    await agent.shutdown()
    _assert_nothing_left(tree, state_dir)


# ---- the DamonNode deleted and made again -----------------------------------------------------


async def test_a_damonnode_made_again_gets_a_status_at_once(agent: Any, tree: GatedSysfs) -> None:
    """A new object (another UID) has no status: one is written on the next tick, not a
    status interval later, even when nothing it says changed."""
    await agent.tick()
    await agent.flush_status()
    writes = len(agent.written)
    await agent.tick()
    await agent.flush_status()
    assert len(agent.written) == writes  # the same object, nothing new: no write yet
    made_again = _dnode(1)
    made_again["metadata"]["uid"] = "dn-2"
    agent.dnodes.items = {"n1": made_again}
    await agent.tick()
    await agent.flush_status()
    assert len(agent.written) == writes + 1
    assert int(tree.read("kdamonds/nr_kdamonds")) == 1  # the same plan, the same kdamond


async def test_a_status_write_that_finds_no_damonnode_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "STATUS_RETRY_FIRST_S", 0.01)
    config = cli_daemon.parse_args(
        ["--node-name", "n1", "--backend", "sim", "--sim-workload", "unused.yaml",
         "--state-dir", str(tmp_path), "--sys-root", str(tmp_path), "--proc-root", str(tmp_path)]
    )  # fmt: skip
    cfg = kubernetes.client.Configuration()
    cfg.host = "http://127.0.0.1:1"
    the_agent = daemon.Agent(config, daemon.kube.Client(cfg))
    answers: list[int] = [404, 503]
    asked: list[int] = []

    async def apiserver(*_: Any, **__: Any) -> dict[str, Any]:
        asked.append(answers[0])
        code = answers.pop(0) if len(answers) > 1 else answers[0]
        raise errors.KubeError(f"PATCH: {code}", code=code)

    monkeypatch.setattr(the_agent.client, "request", apiserver)
    writer = asyncio.create_task(the_agent._status_writer())
    try:
        the_agent._unwritten = resources.DamonNodeStatus()
        the_agent._status_ready.set()
        await asyncio.sleep(0.2)
        assert asked == [404]  # gone: dropped, not retried
        the_agent._unwritten = resources.DamonNodeStatus()
        the_agent._status_ready.set()
        await asyncio.sleep(0.2)
        assert len(asked) > 3 and set(asked[1:]) == {503}  # any other failure: retried
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await the_agent.client.close()


async def test_a_deleted_state_directory_still_gives_damon_stat_back(
    agent: Any, tree: GatedSysfs, state_dir: Path, tmp_path: Path
) -> None:
    """--take-over-damon-stat: DAMON_STAT turned off at start is turned back on at stop,
    though its record went with the state directory; written again meanwhile."""
    enabled = tmp_path / "node" / "module" / "damon_stat" / "parameters" / "enabled"
    enabled.parent.mkdir(parents=True)
    enabled.write_text("Y\n")
    agent.config = dataclasses.replace(agent.config, take_over_damon_stat=True)
    agent._settle_damon_stat()
    assert enabled.read_text().strip() == "N" and agent.state.holding_damon_stat
    await agent.tick()  # its own kdamond stands in for DAMON_STAT
    record = state_dir / takeover.STATE_FILE
    assert record.is_file()
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    await _status_now(agent)
    assert record.is_file()  # written again
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    await agent.shutdown()
    assert enabled.read_text().strip() == "Y"
    _assert_nothing_left(tree, state_dir)
    assert not record.exists()
