"""Does soft-dirty tracking work? Tried on a page of a short-lived child process.

Run as ``python -m damon_agent.ops.userspace_soft_dirty_probe PROC_ROOT``; prints one JSON
line ``{"available": bool, "detail": str}``. ``userspace_access.probe`` starts it.

Why a child: the test writes ``4`` to ``clear_refs`` of the process that runs it, which
write-protects every page of that whole process. Done in the agent, that would race the
agent's own running threads (its HTTP server, its monitor) for nothing; a child of its own
has one thread and one page that matter, and exits.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import sys
from pathlib import Path

from damon_agent.ops import userspace_errors as errors
from damon_agent.ops import userspace_procfs as procfs

PAGE_SIZE = mmap.PAGESIZE


def probe_this_process(proc_root: Path) -> tuple[bool, str]:
    """Write, clear, write again a page of this process, reading its soft-dirty bit each time."""
    page = mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        view = ctypes.c_char.from_buffer(page)
        address = ctypes.addressof(view)
        del view  # the mmap cannot close while a ctypes view exports its buffer
        self_pid = os.getpid()
        pagemap = proc_root / str(self_pid) / "pagemap"
        if not pagemap.is_file():
            return False, f"{pagemap} is missing"

        def soft_dirty() -> bool:
            entries = procfs.read_pagemap_at(self_pid, [address], proc_root, PAGE_SIZE)
            return bool(entries.soft_dirty[0])

        page[0] = 1
        try:
            if not soft_dirty():
                return False, (
                    "a freshly written page is not soft-dirty in pagemap: the kernel was "
                    "built without CONFIG_MEM_SOFT_DIRTY"
                )
            if not procfs.clear_soft_dirty(self_pid, proc_root):
                return False, f"{proc_root}/{self_pid}/clear_refs is missing"
            if soft_dirty():
                return False, "writing 4 to clear_refs did not clear the soft-dirty bit"
            page[0] = 2
            if not soft_dirty():
                return False, "a write after clear_refs did not set the soft-dirty bit"
        except errors.UserspaceOpsError as error:
            return False, str(error)
        return True, "a page written, cleared and written again read 1, 0, 1"
    finally:
        page.close()


def main() -> None:
    available, detail = probe_this_process(Path(sys.argv[1]))
    sys.stdout.write(json.dumps({"available": available, "detail": detail}) + "\n")


if __name__ == "__main__":
    main()
