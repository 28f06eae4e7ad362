"""Fixtures of the userspace operations' tests: fake /proc and /sys trees, real children.

``fake_proc``: a /proc tree in a temporary directory with one process (pid 4242) whose
``maps`` is a realistic CPython layout (text, heap, anonymous arenas, a PROT_NONE guard,
a file with spaces in its name, vdso/vvar, the stack and [vsyscall]), an empty
``clear_refs`` and a sparse ``pagemap`` the test fills with ``write_pagemap``.

``child``: a real child Python process with a 4 MiB anonymous mapping whose first half
it wrote (second half never touched), and a 4 MiB mapping of a clean file it read
entirely; it answers ``<anon addr> <anon size> <file addr> <file size>`` and then waits
for ``exit`` on stdin. Killed and reaped after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import userspace_support as support


@pytest.fixture
def fake_proc(tmp_path: Path) -> support.FakeProc:
    return support.make_fake_proc(tmp_path)


@pytest.fixture
def fake_sys(tmp_path: Path) -> Path:
    """A /sys root with an all-zero page_idle/bitmap for the first 64 Ki frames."""
    return support.make_fake_sys(tmp_path)


@pytest.fixture
def child(tmp_path: Path) -> Iterator[support.Child]:
    spawned = support.spawn_child(tmp_path)
    try:
        yield spawned
    finally:
        spawned.stop()
