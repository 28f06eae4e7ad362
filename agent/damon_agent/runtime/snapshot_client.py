"""The live source of ``damonctl report access --agent URL --pod NS/NAME``.

Fetches an agent's ``/v1/snapshot`` (shape: ``wire``) and returns one
``core.snapshots.Snapshot`` that the reports render like a recorded one. Synchronous on
purpose: the CLI makes one request and exits, so an event loop would only add weight.

Which snapshot: the schemes on the agent that select the pod; with ``scheme`` given, only
that one (its key as ``/v1/snapshot`` lists it, or just its name). Where a scheme's targets
belong to pods (vaddr), only the pod's own targets are kept; on paddr the scheme's whole
physical-memory snapshot is returned, since regions there are not per pod.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from damon_agent.core import snapshots
from damon_agent.runtime import errors, wire


def fetch_entries(
    agent_url: str, *, pod: str | None = None, timeout_s: float = 10.0
) -> list[wire.SnapshotEntry]:
    """Every scheme's latest snapshot on the agent (only those selecting ``pod`` if given)."""
    base = agent_url.rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    url = f"{base}/v1/snapshot"
    if pod is not None:
        url += "?" + urllib.parse.urlencode({"pod": pod})
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        raise errors.SnapshotFetchError(f"{url}: the agent answered HTTP {err.code}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise errors.SnapshotFetchError(f"{url}: cannot reach the agent ({reason})") from err
    try:
        document = json.loads(body)
    except json.JSONDecodeError as err:
        raise errors.SnapshotFetchError(f"{url}: the answer is not JSON ({err.msg})") from err
    return wire.decode(document, source=url)


def fetch_pod_snapshot(
    agent_url: str, pod: str, *, scheme: str | None = None, timeout_s: float = 10.0
) -> snapshots.Snapshot:
    """The latest snapshot covering ``pod`` ("namespace/name") on the agent at ``agent_url``."""
    if pod.count("/") != 1 or not all(pod.split("/")):
        raise errors.SnapshotFetchError(f"--pod {pod!r}: expected NAMESPACE/NAME")
    entries = [e for e in fetch_entries(agent_url, pod=pod, timeout_s=timeout_s) if pod in e.pods]
    if scheme is not None:
        entries = [e for e in entries if scheme in (e.scheme, e.scheme.rsplit("/", 1)[-1])]
    if not entries:
        which = f" by scheme {scheme!r}" if scheme else ""
        raise errors.SnapshotFetchError(
            f"{agent_url}: no snapshot of pod {pod}{which} yet (is the pod on that node, "
            "selected by a scheme, and has monitoring run one aggregation interval?)"
        )
    return pod_view(entries[0], pod)


def pod_view(entry: wire.SnapshotEntry, pod: str) -> snapshots.Snapshot:
    """The entry's snapshot narrowed to the pod's own targets where targets belong to pods."""
    snap = entry.snapshot
    own = tuple(t for t in snap.targets if entry.target_pods.get(int(t.target_id)) == pod)
    if not own:
        return snap
    return snapshots.Snapshot(
        time_us=snap.time_us, sample_us=snap.sample_us, aggr_us=snap.aggr_us, targets=own
    )
