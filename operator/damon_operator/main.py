"""``damon-operator``: run the kopf operator with the project's settings.

    damon-operator [--all-namespaces | --namespace NS ...] [--peering NAME | --standalone]
                   [--priority N] [--heartbeat-timeout 60] [--log-format full|plain|json]

Peering: replicas share one peering object (``--peering``, default ``damon-operator``;
the chart creates it with the CRDs). kopf pauses every replica that sees a peer of higher
priority and freezes all of them on equal priorities, so each replica picks a random
priority unless ``--priority`` is given: exactly one acts, the others stand by and take
over when its record expires (``--peering-lifetime``) or it leaves. ``--standalone``
skips peering (one replica only, or tests).

Errors: bad arguments exit with status 2 and argparse's message; everything at run time
is kopf's (it logs, retries, and exits non-zero only on fatal errors).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import sys

import kopf

from damon_operator import (
    controller,
    handlers,  # noqa: F401 - importing registers the kopf handlers
)

DEFAULT_PEERING = "damon-operator"
MAX_PRIORITY = 2**15 - 1
LOG_FORMATS = {
    "full": kopf.LogFormat.FULL,
    "plain": kopf.LogFormat.PLAIN,
    "json": kopf.LogFormat.JSON,
}


@dataclasses.dataclass(frozen=True)
class Options:
    controller: controller.Config
    peering_lifetime_s: int
    event_level: int
    instance: str | None = None


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="damon-operator", description=__doc__.split("\n\n")[0])
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch DamonSchemes everywhere"
    )
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch DamonSchemes of this namespace only (repeatable; globs allowed)",
    )
    peer = p.add_mutually_exclusive_group()
    peer.add_argument("--peering", default=DEFAULT_PEERING, help="peering object name")
    peer.add_argument("--standalone", action="store_true", help="no peering (single replica)")
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help=f"peering priority (default: random in 1..{MAX_PRIORITY}, distinct per replica)",
    )
    p.add_argument("--peering-lifetime", type=int, default=30, metavar="S")
    p.add_argument(
        "--heartbeat-timeout",
        type=_positive,
        default=60.0,
        metavar="S",
        help="an agent silent this long counts as failed and no longer blocks deletions",
    )
    p.add_argument("--resync", type=_positive, default=10.0, metavar="S")
    p.add_argument(
        "--totals-interval",
        type=_positive,
        default=10.0,
        metavar="S",
        help="write changes of byte counters alone at most this often per scheme",
    )
    p.add_argument(
        "--instance",
        metavar="NAME",
        help="manage only objects labelled damon.io/instance=NAME (Nodes, schemes, DamonNodes)",
    )
    p.add_argument("--log-format", choices=sorted(LOG_FORMATS), default="full")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--liveness", metavar="URL", help="e.g. http://0.0.0.0:8080/healthz")
    return p


class _QuietEventHandlers(logging.Filter):
    """Drop kopf's "Handler 'x_event' succeeded." lines: event handlers run for every
    watch event (every agent heartbeat), so these would drown the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Handler '") and message.endswith("_event' succeeded."))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    kopf.configure(
        verbose=args.verbose,
        log_format=LOG_FORMATS[args.log_format],
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietEventHandlers())
    options = Options(
        controller=controller.Config(
            heartbeat_timeout_s=args.heartbeat_timeout,
            resync_s=args.resync,
            totals_interval_s=args.totals_interval,
        ),
        peering_lifetime_s=args.peering_lifetime,
        event_level=logging.WARNING,
        instance=args.instance,
    )
    priority = args.priority if args.priority is not None else random.randint(1, MAX_PRIORITY)
    logging.getLogger(__name__).info(
        "damon-operator starting: %s, %s",
        "standalone" if args.standalone else f"peering {args.peering} priority {priority}",
        f"namespaces {args.namespace}" if args.namespace else "all namespaces",
    )
    kopf.run(
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=priority,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(options=options),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
