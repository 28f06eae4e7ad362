"""Helpers of the userspace operations' tests (tests/userspace: its conftest.py and tests).

Fake trees: a /proc process (pid 4242) with a realistic CPython ``maps`` and a sparse
``pagemap`` filled by ``FakeProc.write_pagemap``; a /sys root with a page_idle bitmap.
Real children: ``spawn_child`` starts a Python process with a half-written anonymous
mapping and a fully read clean file mapping.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

PAGE = os.sysconf("SC_PAGE_SIZE")
FAKE_PID = 4242

MAPS = """\
55d0c0a00000-55d0c0a2a000 r--p 00000000 fe:01 1311 /usr/bin/python3.12
55d0c0a2a000-55d0c0d1c000 r-xp 0002a000 fe:01 1311 /usr/bin/python3.12
55d0c0d1c000-55d0c0e0c000 rw-p 0031c000 fe:01 1311 /usr/bin/python3.12
55d0c2000000-55d0c2400000 rw-p 00000000 00:00 0                          [heap]
7f3a10000000-7f3a10400000 rw-p 00000000 00:00 0
7f3a10400000-7f3a10401000 ---p 00000000 00:00 0
7f3a10401000-7f3a10c01000 rw-p 00000000 00:00 0
7f3a20000000-7f3a20100000 r--s 00000000 fe:01 7777 /var/lib/app/data file.bin (deleted)
7f3a2ff00000-7f3a2ff04000 r--p 00000000 00:00 0                          [vvar]
7f3a2ff04000-7f3a2ff06000 r-xp 00000000 00:00 0                          [vdso]
7ffd10000000-7ffd10021000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""

HEAP = (0x55D0C2000000, 0x55D0C2400000)
ARENA = (0x7F3A10000000, 0x7F3A10400000)
GUARD = (0x7F3A10400000, 0x7F3A10401000)
ARENA2 = (0x7F3A10401000, 0x7F3A10C01000)
DATA_FILE = (0x7F3A20000000, 0x7F3A20100000)
VDSO = (0x7F3A2FF04000, 0x7F3A2FF06000)
STACK = (0x7FFD10000000, 0x7FFD10021000)

PRESENT = 1 << 63
SWAPPED = 1 << 62
FILE_OR_SHARED = 1 << 61
EXCLUSIVE = 1 << 56
SOFT_DIRTY = 1 << 55


@dataclass
class FakeProc:
    root: Path
    pid: int

    @property
    def dir(self) -> Path:
        return self.root / str(self.pid)

    def write_pagemap(self, entries: dict[int, int]) -> None:
        """Put ``entries`` (virtual address -> 64-bit entry) into the sparse pagemap."""
        with (self.dir / "pagemap").open("r+b") as pagemap:
            for address, entry in entries.items():
                pagemap.seek(address // PAGE * 8)
                pagemap.write(int(entry).to_bytes(8, "little"))

    def clear_refs_writes(self) -> str:
        return (self.dir / "clear_refs").read_text()


def make_fake_proc(tmp_path: Path) -> FakeProc:
    root = tmp_path / "proc"
    pid_dir = root / str(FAKE_PID)
    pid_dir.mkdir(parents=True)
    (pid_dir / "maps").write_text(MAPS)
    (pid_dir / "clear_refs").write_text("")
    (pid_dir / "pagemap").write_bytes(b"")
    return FakeProc(root, FAKE_PID)


def make_fake_sys(tmp_path: Path) -> Path:
    """A /sys root with an all-zero page_idle/bitmap for the first 64 Ki frames."""
    root = tmp_path / "sys"
    bitmap = root / "kernel/mm/page_idle/bitmap"
    bitmap.parent.mkdir(parents=True)
    bitmap.write_bytes(bytes(65536 // 8))
    return root


def bitmap_words(sys_root: Path) -> np.ndarray:
    data = (sys_root / "kernel/mm/page_idle/bitmap").read_bytes()
    return np.frombuffer(data, dtype="<u8")


# -- a real child process -------------------------------------------------------------------

_CHILD = r"""
import ctypes, mmap, os, sys
path, size = sys.argv[1], int(sys.argv[2])
page = mmap.PAGESIZE
anon = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for offset in range(0, size // 2, page):
    anon[offset] = 1
fd = os.open(path, os.O_RDONLY)
# Writable private mapping only so that ctypes can take its address; it is only read, so
# its pages stay clean page cache pages (reclaimable without swap).
mapped = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
total = 0
for offset in range(0, size, page):
    total += mapped[offset]
address = lambda m: ctypes.addressof(ctypes.c_char.from_buffer(m))
print(address(anon), size, address(mapped), size, flush=True)
for line in sys.stdin:
    if line.strip() == "exit":
        break
"""


@dataclass
class Child:
    process: subprocess.Popen[str]
    anon: tuple[int, int]
    file: tuple[int, int]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def spawn_child(directory: Path, size: int = 4 << 20) -> Child:
    path = directory / "mapped.bin"
    with path.open("wb") as file:
        file.write(os.urandom(PAGE) * (size // PAGE))
        file.flush()
        os.fsync(file.fileno())
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    words = process.stdout.readline().split()
    if len(words) != 4:
        Child(process, (0, 0), (0, 0)).stop()
        pytest.fail(f"child failed to start (said {words!r})")
    anon_start, anon_size, file_start, file_size = (int(w) for w in words)
    return Child(
        process, (anon_start, anon_start + anon_size), (file_start, file_start + file_size)
    )
