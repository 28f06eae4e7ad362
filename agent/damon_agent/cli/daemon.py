"""``damon-agent daemon``: the node agent's command line (``runtime.daemon`` runs it).

Flags become a ``runtime.daemon.Config``; a flag the agent cannot use prints one line
naming it and exits 2, a daemon that cannot start exits 1, a stop on SIGTERM or SIGINT
exits 0 once every kdamond the agent owns is off. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from damon_agent.api import units
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.runtime import backends, daemon, errors, handover, http, observing

log = logging.getLogger("damon_agent.daemon")

EXIT_BAD_ARGUMENTS = 2
EXIT_FAILED = 1


def parse_args(argv: list[str]) -> daemon.Config:
    parser = argparse.ArgumentParser(
        prog="damon-agent daemon",
        description="Run the node agent: watch this node's DamonNode and pods, run DAMON.",
    )
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME", ""),
        help="this node's name (default: $NODE_NAME); the DamonNode and pods watched",
    )
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG") or None,
        help="kubeconfig file (default: $KUBECONFIG, else the in-cluster service account)",
    )
    parser.add_argument(
        "--backend",
        choices=backends.CHOICES,
        default="auto",
        help="kernel: the node's DAMON sysfs; userspace: the agent's own monitor over the "
        "pods' processes; sim: simulated memory (--sim-workload); auto: kernel if its DAMON "
        "is present and free, else userspace",
    )
    parser.add_argument(
        "--sim-workload", type=Path, default=None, help="workload file for the sim backend"
    )
    parser.add_argument("--listen", default="0.0.0.0:8080", help="HOST:PORT of the HTTP server")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/damon-agent"),
        help="where the agent records the kdamonds it owns (survives restarts)",
    )
    parser.add_argument("--proc-root", type=Path, default=Path("/proc"), help="the host's /proc")
    parser.add_argument("--sys-root", type=Path, default=Path("/sys"), help="the host's /sys")
    parser.add_argument("--tick", type=float, default=2.0, help="seconds between loop ticks")
    parser.add_argument(
        "--status-interval",
        type=float,
        default=10.0,
        help="seconds between status writes when nothing changed materially",
    )
    parser.add_argument(
        "--event-interval",
        type=float,
        default=60.0,
        help="seconds between two Events of one reason on the DamonNode; repeats meanwhile "
        "are counted into the next (its count)",
    )
    parser.add_argument(
        "--snapshot-source",
        choices=kernel_damon.SNAPSHOT_SOURCES,
        default="auto",
        help="kernel backend: snapshots from sysfs tried regions, DAMON's trace events "
        "(tracefs: about half the agent's CPU), or tracefs if it can be set up, else sysfs "
        "(auto, the default)",
    )
    parser.add_argument(
        "--take-over-damon-stat",
        action="store_true",
        help="kernel backend: turn DAMON_STAT off at start (it holds DAMON exclusively), "
        "export its figures from the agent's own kdamond, and turn it back on at stop",
    )
    parser.add_argument(
        "--metrics-auth",
        action="store_true",
        help="serve /metrics, like /v1/snapshot, only to a bearer token whose user may get "
        "damonnodes/metrics of this node (a TokenReview and a SubjectAccessReview; "
        "default: /metrics is open, so Prometheus scrapes without a token)",
    )
    parser.add_argument(
        "--owner-daemonset",
        default=None,
        metavar="NAMESPACE/NAME",
        help="the DaemonSet this agent's pod belongs to: a stop while it still selects this "
        "node (the pod deleted or rolled) leaves the kdamonds running for the successor "
        "pod to adopt; once it is gone (uninstalled) a stop turns them off (default: none, "
        "every stop turns them off)",
    )
    parser.add_argument(
        "--snapshot-history",
        default="5m",
        metavar="DURATION",
        help="how far back the ring of recent snapshots reaches that /v1/snapshots serves "
        "(`damonctl record --agent --from-past`), e.g. 5m (the default); 0 keeps only the "
        "newest",
    )
    parser.add_argument(
        "--snapshot-history-bytes",
        default="32Mi",
        metavar="SIZE",
        help="the most memory that ring holds, e.g. 32Mi (the default); the oldest "
        "snapshots go first",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.node_name:
        raise errors.ArgumentsError("--node-name: needed (or set $NODE_NAME)")
    try:
        host, port = http.parse_listen(args.listen)
    except ValueError as err:
        raise errors.ArgumentsError(f"--listen: {err}") from None
    if args.backend == "sim" and args.sim_workload is None:
        raise errors.ArgumentsError("--sim-workload: needed with --backend sim")
    if not 0.1 <= args.tick <= 60:
        raise errors.ArgumentsError(f"--tick: {args.tick} is not between 0.1 and 60 seconds")
    if args.event_interval < 0:
        raise errors.ArgumentsError(f"--event-interval: {args.event_interval} is negative")
    try:
        history_us = units.parse_duration_us(args.snapshot_history)
    except ValueError as err:
        raise errors.ArgumentsError(f"--snapshot-history: {err}") from None
    try:
        history_bytes = units.parse_size_bytes(args.snapshot_history_bytes)
    except ValueError as err:
        raise errors.ArgumentsError(f"--snapshot-history-bytes: {err}") from None
    # The ring is memory held for the agent's life: "max" would let it grow without end.
    if history_us == units.UNBOUNDED:
        raise errors.ArgumentsError("--snapshot-history: give a duration such as 5m, not max")
    if history_bytes == units.UNBOUNDED:
        raise errors.ArgumentsError("--snapshot-history-bytes: give a size such as 32Mi, not max")
    owner = None
    if args.owner_daemonset:
        try:
            owner = handover.Owner.parse(args.owner_daemonset)
        except ValueError as err:
            raise errors.ArgumentsError(f"--owner-daemonset: {err}") from None
    return daemon.Config(
        node_name=args.node_name,
        kubeconfig=args.kubeconfig,
        backend=args.backend,
        sim_workload=args.sim_workload,
        listen_host=host,
        listen_port=port,
        state_dir=args.state_dir,
        roots=observing.NodeRoots(proc=args.proc_root, sys=args.sys_root),
        tick_s=args.tick,
        status_interval_s=args.status_interval,
        event_interval_s=args.event_interval,
        snapshot_source=args.snapshot_source,
        take_over_damon_stat=args.take_over_damon_stat,
        metrics_auth=args.metrics_auth,
        owner_daemonset=owner,
        snapshot_history_s=history_us / 1e6,
        snapshot_history_bytes=history_bytes,
    )


def main(argv: list[str]) -> int:
    """Entry point of ``damon-agent daemon``; returns the exit status."""
    try:
        config = parse_args(argv)
    except errors.ArgumentsError as err:
        log.error("%s", err)
        return EXIT_BAD_ARGUMENTS
    try:
        asyncio.run(daemon.serve(config))
    except errors.AgentError as err:
        log.error("%s", err)
        return EXIT_FAILED
    return 0
