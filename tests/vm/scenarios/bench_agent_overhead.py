"""Guest side of bench/agent_overhead.py: the same measurement, on the guest's DAMON.

The bench's ``measure`` runs here as it would on a free host (the guest's userland is the
host's root, so it is imported from the repository): the real daemon per snapshot source,
its readers' phases, the agent's and the kdamond's CPU. NUMA balancing is turned off
first, so that its page scanning does not weigh on one phase more than another, and the
loopback interface is brought up (a guest without networking boots with it down): the
daemon, its stand-in API server and the readers talk over 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import guest_lib

sys.path.insert(0, os.path.join(os.environ["REPO"], "bench"))
import agent_overhead

Path("/proc/sys/kernel/numa_balancing").write_text("0")
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
raw = json.loads(Path("params.json").read_text())
params = agent_overhead.Params(
    **{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
)
with tempfile.TemporaryDirectory(prefix="overhead-") as work:
    phases = agent_overhead.measure(params, Path(work))
guest_lib.write_json("result.json", {"phases": [dataclasses.asdict(p) for p in phases]})
