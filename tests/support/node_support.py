"""Helpers of the node tests (tests/node): the checked-in fake trees, and real children.

``TREES`` is tests/node/trees. ``spawn_mapper`` starts a child Python process that maps a
file (clean page cache pages, written and fsynced by the test, so reclaim can drop them
without swap), reads every page so that they are resident, and then obeys one-line
commands on stdin:

- ``anon N``: map N bytes of anonymous memory and write every page; answers its address;
- ``hole K``: unmap the K-th page of the file mapping; answers ``ok``;
- ``exit-after S``: exit by itself S seconds later (a process that dies mid-action).

Its first line of output is ``<file mapping address> <size>``. ``stop`` kills and reaps
it; ``resident_bytes`` reads a range's Rss from smaps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TREES = Path(__file__).resolve().parents[1] / "node" / "trees"
PAGE = os.sysconf("SC_PAGE_SIZE")

_CHILD = r"""
import ctypes, mmap, os, sys, threading
path, size = sys.argv[1], int(sys.argv[2])
page = mmap.PAGESIZE
fd = os.open(path, os.O_RDONLY)
# MAP_PRIVATE with write permission only so ctypes can take the address; it is only read,
# so the pages stay clean page cache pages of the file.
mapping = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
total = 0
for offset in range(0, size, page):
    total += mapping[offset]
print(address, size, flush=True)
libc = ctypes.CDLL(None, use_errno=True)
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
keep = []
for line in sys.stdin:
    command, _, argument = line.strip().partition(" ")
    if command == "anon":
        length = int(argument)
        anon = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        for offset in range(0, length, page):
            anon[offset] = 1
        keep.append(anon)
        print(ctypes.addressof(ctypes.c_char.from_buffer(anon)), flush=True)
    elif command == "hole":
        if libc.munmap(address + int(argument) * page, page) != 0:
            print("error", ctypes.get_errno(), flush=True)
        else:
            print("ok", flush=True)
    elif command == "exit-after":
        threading.Timer(float(argument), os._exit, (0,)).start()
        print("ok", flush=True)
    elif command == "exit":
        break
"""


@dataclass
class Mapper:
    process: subprocess.Popen[str]
    address: int
    size: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def command(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        if not answer or answer.startswith("error"):
            pytest.fail(f"child {self.pid} did not obey {line!r}: {answer!r}")
        return answer

    def anon(self, length: int) -> int:
        return int(self.command(f"anon {length}"))


def spawn_mapper(directory: Path, size: int) -> Mapper:
    path = directory / "mapped.bin"
    with path.open("wb") as file:
        file.write(os.urandom(PAGE) * (size // PAGE))
        file.flush()
        os.fsync(file.fileno())  # clean pages: reclaim may drop them without writeback
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline().split()
    if len(first) != 2:
        stop(Mapper(process, 0, 0))
        pytest.fail(f"mapper child failed to start (said {first!r})")
    return Mapper(process=process, address=int(first[0]), size=int(first[1]))


def stop(child: Mapper) -> None:
    """Kill and reap the child, and close its pipes (warnings are errors here)."""
    child.process.kill()
    child.process.wait()
    for pipe in (child.process.stdin, child.process.stdout):
        if pipe is not None:
            pipe.close()


def resident_bytes(pid: int, start: int, end: int) -> int:
    """Rss of the mappings of ``pid`` inside [start, end), from /proc/PID/smaps."""
    total = 0
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            low, high = (int(part, 16) for part in first.split("-"))
            inside = low >= start and high <= end
        elif inside and first == "Rss:":
            total += int(line.split()[1]) * 1024
    return total
