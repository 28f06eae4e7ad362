"""A workload with a known hot and a known cold virtual range (run as a script).

Started by path: tests/kernel/conftest.py (``spawn_workload``) and bench/agent_overhead.py.

Allocates HOT_MIB and COLD_MIB of anonymous memory with numpy, touches every page of both
once, prints one JSON line with the ranges' virtual addresses, then keeps touching one
byte per page of the hot range only, with short sleeps so it does not hog a shared CPU.
Exits when its stdin closes (the test's end) or after MAX_SECONDS.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

import numpy as np

PAGE = 4096


def main() -> None:
    hot_mib, cold_mib, max_seconds = (int(a) for a in sys.argv[1:4])
    hot = np.ones(hot_mib << 20, dtype=np.uint8)
    cold = np.ones(cold_mib << 20, dtype=np.uint8)
    hot_pages = hot.reshape(-1, PAGE)[:, 0]
    info = {
        "pid": os.getpid(),
        "hot": [hot.ctypes.data, hot.ctypes.data + hot.nbytes],
        "cold": [cold.ctypes.data, cold.ctypes.data + cold.nbytes],
    }
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        hot_pages += 1
        readable, _, _ = select.select([sys.stdin], [], [], 0.002)
        if readable and not sys.stdin.read(1):
            break
    del cold


if __name__ == "__main__":
    main()
