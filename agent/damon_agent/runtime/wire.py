"""The JSON shape of ``GET /v1/snapshot``, written by the agent and read by ``damonctl``.

One document per request::

    {"node": "n1", "backend": "kernel", "schemes": [
        {"scheme": "DamonScheme/shop/reclaim-cold", "operations": "paddr",
         "pods": ["shop/cart-0"],
         "snapshot": {"time_us": ..., "sample_us": ..., "aggr_us": ...,
                      "targets": [{"target_id": 0, "pod": "shop/cart-0" | null,
                                   "start": [...], "end": [...],
                                   "nr_accesses": [...], "age": [...]}]}}]}

The snapshot object uses the recording format's field names (docs/recording-format.md), so
a live snapshot and a recorded one read the same. ``pod`` on a target is set where a target
belongs to one pod (vaddr: one target per process); on paddr the single target covers the
node's physical memory and the scheme's memcg filters, not the regions, tell pods apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from damon_agent.core import snapshots
from damon_agent.core.regions import Int64Array
from damon_agent.runtime import errors


@dataclass(frozen=True)
class SnapshotEntry:
    """The latest snapshot of one scheme, with the pods it selects."""

    scheme: str
    operations: str
    pods: tuple[str, ...]
    snapshot: snapshots.Snapshot
    # target_id -> "namespace/name" where a target belongs to exactly one pod.
    target_pods: Mapping[int, str] = field(default_factory=dict)
    # target_id -> a name for people (a sim workload's target, "pid 1234"); not sent.
    target_names: Mapping[int, str] = field(default_factory=dict)


def encode(node: str, backend: str, entries: list[SnapshotEntry]) -> dict[str, object]:
    return {
        "node": node,
        "backend": backend,
        "schemes": [_encode_entry(entry) for entry in entries],
    }


def _encode_entry(entry: SnapshotEntry) -> dict[str, object]:
    snap = entry.snapshot
    return {
        "scheme": entry.scheme,
        "operations": entry.operations,
        "pods": list(entry.pods),
        "snapshot": {
            "time_us": int(snap.time_us),
            "sample_us": int(snap.sample_us),
            "aggr_us": int(snap.aggr_us),
            "targets": [
                {
                    "target_id": int(target.target_id),
                    "pod": entry.target_pods.get(int(target.target_id)),
                    "start": target.start.tolist(),
                    "end": target.end.tolist(),
                    "nr_accesses": target.nr_accesses.tolist(),
                    "age": target.age.tolist(),
                }
                for target in snap.targets
            ],
        },
    }


def decode(document: object, *, source: str) -> list[SnapshotEntry]:
    """Read a ``/v1/snapshot`` document; ``SnapshotFetchError`` names the field that is wrong."""
    if not isinstance(document, dict):
        raise errors.SnapshotFetchError(f"{source}: expected a JSON object")
    raw_entries = document.get("schemes")
    if not isinstance(raw_entries, list):
        raise errors.SnapshotFetchError(f"{source}: field 'schemes': expected a list")
    return [
        _decode_entry(raw, f"{source}: schemes[{index}]") for index, raw in enumerate(raw_entries)
    ]


def _decode_entry(raw: object, where: str) -> SnapshotEntry:
    if not isinstance(raw, dict):
        raise errors.SnapshotFetchError(f"{where}: expected an object")
    scheme = _str(raw, "scheme", where)
    operations = _str(raw, "operations", where)
    pods = raw.get("pods")
    if not isinstance(pods, list) or not all(isinstance(p, str) for p in pods):
        raise errors.SnapshotFetchError(f"{where}: field 'pods': expected a list of strings")
    snap = raw.get("snapshot")
    if not isinstance(snap, dict):
        raise errors.SnapshotFetchError(f"{where}: field 'snapshot': expected an object")
    raw_targets = snap.get("targets")
    if not isinstance(raw_targets, list):
        raise errors.SnapshotFetchError(f"{where}: field 'snapshot.targets': expected a list")
    targets = []
    target_pods: dict[int, str] = {}
    for index, target in enumerate(raw_targets):
        twhere = f"{where}: snapshot.targets[{index}]"
        if not isinstance(target, dict):
            raise errors.SnapshotFetchError(f"{twhere}: expected an object")
        target_id = _int(target, "target_id", twhere)
        columns = [_ints(target, name, twhere) for name in ("start", "end", "nr_accesses", "age")]
        if len({c.size for c in columns}) != 1:
            raise errors.SnapshotFetchError(
                f"{twhere}: fields start, end, nr_accesses and age differ in length"
            )
        pod = target.get("pod")
        if isinstance(pod, str):
            target_pods[target_id] = pod
        targets.append(
            snapshots.TargetSnapshot(
                target_id=target_id,
                start=columns[0],
                end=columns[1],
                nr_accesses=columns[2],
                age=columns[3],
            )
        )
    return SnapshotEntry(
        scheme=scheme,
        operations=operations,
        pods=tuple(pods),
        target_pods=target_pods,
        snapshot=snapshots.Snapshot(
            time_us=_int(snap, "time_us", f"{where}: snapshot"),
            sample_us=max(1, _int(snap, "sample_us", f"{where}: snapshot")),
            aggr_us=max(1, _int(snap, "aggr_us", f"{where}: snapshot")),
            targets=tuple(targets),
        ),
    )


def _str(obj: Mapping[str, object], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise errors.SnapshotFetchError(f"{where}: field '{name}': expected a string")
    return value


def _int(obj: Mapping[str, object], name: str, where: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.SnapshotFetchError(f"{where}: field '{name}': expected an integer >= 0")
    return value


def _ints(obj: Mapping[str, object], name: str, where: str) -> Int64Array:
    value = obj.get(name)
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise errors.SnapshotFetchError(
            f"{where}: field '{name}': expected a list of integers >= 0"
        )
    return np.asarray(value, dtype=np.int64).reshape(-1)
