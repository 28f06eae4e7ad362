"""Shared pieces of the CLI tests: paths of the console scripts and of the examples."""

from __future__ import annotations

import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent


@pytest.fixture
def repo() -> pathlib.Path:
    return REPO


@pytest.fixture
def console_script() -> pathlib.Path:
    """Directory of the installed console scripts (the virtualenv's bin)."""
    for name in ("damon-agent", "damonctl"):
        if not (BIN / name).exists():
            pytest.fail(
                f"{BIN / name} is missing: install the project into the virtualenv "
                "(pip install -e .) so its console scripts exist"
            )
    return BIN
