"""``damonctl status``'s text, from statuses as the apiserver holds them (pure)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from damon_agent.api import resources
from damon_agent.reports import live_status

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
KEY = "DamonScheme/shop/reclaim"


def _ready(reason: str = "Applied", message: str = "") -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T11:00:00Z",
    }


def node_status(**extra: Any) -> resources.DamonNodeStatus:
    body: dict[str, Any] = {
        "heartbeat": "2026-01-01T11:59:56Z",
        "backend": "kernel",
        "capabilities": {"kernelRelease": "6.18.4"},
        "psi": {"someAvg10": 0.25},
        "conditions": [_ready(message="1 monitoring context(s), 1 scheme(s)")],
        "contexts": [
            {
                "operations": "paddr",
                "schemes": [f"{KEY}/cold"],
                "kdamondPid": 4242,
                "cpuSeconds": 12.5,
                "cpuPercent": 3.21,
                "snapshotAgeSeconds": 4.0,
            }
        ],
        "schemes": [
            {
                "kind": "DamonScheme",
                "namespace": "shop",
                "name": "reclaim",
                "uid": "u1",
                "conditions": [_ready(message="1 scheme(s) over 2 pod(s)")],
                "targets": 2,
                "savedBytes": 96 << 20,
                "refaults": 12,
                "stats": [
                    {
                        "name": "cold",
                        "appliedBytes": 1 << 30,
                        "qtExceeds": 7,
                        "effectiveQuotaBytes": 12 << 20,
                        "goals": [
                            {"metric": "pod_mem_psi_us", "target": 10000, "current": 2500},
                            {"metric": "some_mem_psi_us", "target": 50000},
                            {"metric": "node_mem_free_bp", "target": 1500, "current": 2000},
                        ],
                    },
                    {"name": "watch", "appliedBytes": 0},
                ],
            }
        ],
        "pods": [
            {
                "namespace": "shop",
                "name": "cart-0",
                "schemes": [KEY],
                "psi": {"someAvg10": 1.5, "someTotalUs": 2_300_000},
                "memoryBytes": 200 << 20,
                "swapBytes": 64 << 20,
                "firstMemoryBytes": 296 << 20,
                "savedBytes": 96 << 20,
                "refaults": 12,
                "since": "2026-01-01T11:55:00Z",
            },
            {
                "namespace": "shop",
                "name": "cart-1",
                "schemes": [KEY],
                "memoryBytes": 10 << 20,
                "since": "2026-01-01T11:59:00Z",
            },
        ],
        "podsOmitted": 3,
        "savedBytes": 96 << 20,
    }
    body.update(extra)
    return resources.DamonNodeStatus.model_validate(body)


def test_a_node_reads_as_contexts_then_a_table_per_scheme_then_pods() -> None:
    text = live_status.render_node("node-1", node_status(), NOW)
    lines = text.splitlines()
    assert lines[0] == "DamonNode node-1: kernel backend (Linux 6.18.4), heartbeat 4 s ago"
    assert lines[1] == "  Ready=True (Applied): 1 monitoring context(s), 1 scheme(s)"
    assert lines[2] == (
        "  memory PSI some 0.25% (10 s), saved 96.000 MiB over 5 pod(s), "
        "kdamond CPU 3.2% of one CPU"
    )
    assert lines[3] == "  kernel tiering: not reported"  # an agent that did not read it
    context = next(line for line in lines if line.startswith("  0 "))
    assert context.split() == ["0", "paddr", "4242", "3.21%", "12.50", "s", "4", "s", "ago", "1"]
    assert "DamonScheme shop/reclaim: Ready=True (Applied): 1 scheme(s) over 2 pod(s)" in lines
    assert "  saved 96.000 MiB over 2 pod(s), 12 refault(s)" in lines
    cold = next(line for line in lines if line.strip().startswith("cold "))
    assert "12.000 MiB" in cold and "1.000 GiB" in cold and cold.rstrip().endswith("7")
    # Goals in their metric's unit; the kernel's own metric has no current value.
    assert "pod_mem_psi_us 2.5 ms / 10 ms; some_mem_psi_us ? / 50 ms;" in cold
    assert "node_mem_free_bp 20% / 15%" in cold
    watch = next(line for line in lines if line.strip().startswith("watch "))
    assert watch.split()[:2] == ["watch", "-"]  # no quota: nothing to tune
    cart = next(line for line in lines if line.strip().startswith("shop/cart-0"))
    assert cart.split() == [
        "shop/cart-0", "1.50%", "2.3", "s", "200.000", "MiB", "64.000", "MiB",
        "96.000", "MiB", "12", "5", "m", "ago",
    ]  # fmt: skip
    quiet = next(line for line in lines if line.strip().startswith("shop/cart-1"))
    assert quiet.split()[1:3] == ["-", "-"]  # no PSI (cgroup v1)
    assert lines[-1].startswith("  ... and 3 more pod(s)")
    header = next(line for line in lines if "GOALS" in line)
    assert header.split()[:3] == ["SCHEME", "QUOTA", "GOALS"]


@pytest.mark.parametrize(
    ("found", "line"),
    [
        (
            {"numaBalancing": 2, "demotionEnabled": True},
            "numa_balancing=2 (tiering), demotion_enabled=true",
        ),
        (
            {"numaBalancing": 3, "demotionEnabled": False},
            "numa_balancing=3 (normal, tiering), demotion_enabled=false",
        ),
        ({"numaBalancing": 0}, "numa_balancing=0 (off), no demotion"),
        ({}, "no NUMA balancing, no demotion"),
        (
            {"demotionEnabled": True, "error": "/proc/sys/kernel/numa_balancing: 'x' is not ..."},
            "no NUMA balancing, demotion_enabled=true "
            "(unreadable: /proc/sys/kernel/numa_balancing: 'x' is not ...)",
        ),
    ],
)
def test_a_node_says_how_its_kernel_tiers_by_itself(found: dict[str, Any], line: str) -> None:
    text = live_status.render_node("node-1", node_status(kernelTiering=found), NOW)
    assert text.splitlines()[3] == "  kernel tiering: " + line


def test_a_node_whose_agent_never_reported() -> None:
    text = live_status.render_node("node-2", None, NOW)
    assert text == "DamonNode node-2: its agent has not reported yet"


def test_a_scheme_reads_as_its_aggregate_then_a_row_per_node_and_its_pods() -> None:
    status = resources.SchemeStatus.model_validate(
        {
            "nodesReady": "1/2",
            "applied": "1.000 GiB",
            "saved": "96.000 MiB",
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Valid",
                    "lastTransitionTime": "2026-01-01T11:00:00Z",
                },
                dict(_ready("NodesNotReady", "1/2 nodes ready"), status="False"),
                {
                    "type": "Degraded",
                    "status": "True",
                    "reason": "NodesFailing",
                    "message": "1/2 nodes failing: node-2: DamonHeld",
                    "lastTransitionTime": "2026-01-01T11:00:00Z",
                },
            ],
        }
    )
    other = node_status(pods=[], schemes=[])
    text = live_status.render_scheme(
        "DamonScheme",
        "shop",
        "reclaim",
        status=status,
        nodes=[("node-1", node_status()), ("node-3", other)],
        now=NOW,
    )
    lines = text.splitlines()
    assert lines[0] == (
        "DamonScheme shop/reclaim: nodes ready 1/2, applied 1.000 GiB, saved 96.000 MiB"
    )
    assert lines[1:4] == [
        "  Accepted=True (Valid)",
        "  Ready=False (NodesNotReady): 1/2 nodes ready",
        "  Degraded=True (NodesFailing): 1/2 nodes failing: node-2: DamonHeld",
    ]
    rows = [line.split()[:2] for line in lines if line.startswith("  node-")]
    assert rows == [["node-1", "cold"], ["node-1", "watch"]]  # node-3 does not report it
    pods = [line.split()[:2] for line in lines if line.startswith("  shop/")]
    assert pods == [["shop/cart-0", "node-1"], ["shop/cart-1", "node-1"]]
    empty = live_status.render_scheme(
        "ClusterDamonScheme", None, "n", status=resources.SchemeStatus(), nodes=[], now=NOW
    )
    assert empty.splitlines()[0].startswith("ClusterDamonScheme n: nodes ready 0/0")
    assert "no node reports this scheme yet" in empty
