"""Reading /proc and /sys files as text, without a decoding error ever escaping.

Two kinds of file:

* the kernel's own numbers and keywords (PSI, ``memory.current``, ``cgroup.procs``,
  meminfo): ``read_text`` decodes them strictly, and bytes that are not text are a
  ``MalformedFileError`` naming the file, as any other content out of the kernel's form;
* files that carry names a process or an admin chose (a process's ``comm`` in
  ``status`` and ``stat``, file paths in ``numa_maps``, mount points in ``mountinfo``):
  those may be any bytes, so ``read_named`` keeps undecodable bytes as surrogates
  (``surrogateescape``, as ``os`` does for file names) instead of failing on them.

``OSError`` passes through: each caller says what a missing or unreadable file means.
"""

from __future__ import annotations

from pathlib import Path

from damon_agent.node import errors


def read_text(path: Path) -> str:
    """The file's text; ``MalformedFileError`` naming it when its bytes are not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise errors.MalformedFileError(
            path, f"not text: byte {err.start} is {data[err.start : err.start + 1]!r}"
        ) from None


def read_named(path: Path) -> str:
    """The file's text, undecodable bytes (in names) kept as surrogates."""
    return path.read_bytes().decode(errors="surrogateescape")


def is_count(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes ``²`` and ``١``, which the kernel never
    writes and ``int`` may not read."""
    return text.isascii() and text.isdigit()
