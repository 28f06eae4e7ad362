"""Fixtures of the node tests; their helpers are in tests/support/node_support.py.

``mapper``: a child (``node_support.spawn_mapper``) with a resident 16 MiB file mapping;
killed and reaped after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from node_support import Mapper, spawn_mapper, stop


@pytest.fixture
def mapper(tmp_path: Path) -> Iterator[Mapper]:
    """A child with a resident 16 MiB file mapping; killed and reaped after the test."""
    child = spawn_mapper(tmp_path, 16 << 20)
    try:
        yield child
    finally:
        stop(child)
