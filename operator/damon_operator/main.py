"""``damon-operator``: run the kopf operator with the project's settings.

    damon-operator [--all-namespaces | --namespace NS ...] [--peering NAME | --standalone]
                   [--priority N] [--heartbeat-timeout 60] [--event-interval 60]
                   [--log-format full|plain|json]
                   [--webhook-listen ADDR:PORT --webhook-cert FILE --webhook-key FILE
                    [--agent-service-account NAMESPACE:NAME]]
    damon-operator release-finalizers [--instance NAME] [--kubeconfig FILE]

Peering: replicas share one peering object (``--peering``, default ``damon-operator``;
the chart creates it with the CRDs). kopf pauses every replica that sees a peer of higher
priority and freezes all of them on equal priorities, so each replica picks a random
priority unless ``--priority`` is given: exactly one acts, the others stand by and take
over when its record expires (``--peering-lifetime``) or it leaves. ``--standalone``
skips peering (one replica only, or tests).

Admission (``admission``): with ``--webhook-listen`` every replica serves the validating
webhooks over HTTPS with the given certificate (the chart's Secret); the
ValidatingWebhookConfiguration that calls them is the chart's. ``--agent-service-account``
names the agents' ServiceAccount, whose DamonNode status writes are confined to the node
of the pod their token is bound to.

``release-finalizers`` (``release``) is a one-shot command, not the operator: it removes
the operator's finalizer from every scheme, for an uninstall (the chart's pre-delete hook).
The console script (``cli``) sends it there without importing this module and kopf.

Errors: bad arguments exit with status 2 and argparse's message; at run time kopf logs
and retries. kopf stops the whole operator when one watch fails for good: a restarting
apiserver answers 404 for custom resources until it has loaded their definitions (and
an apiserver gone longer than kopf's retries would end them too). The operator then waits
until the apiserver serves damon.io again and resumes in the same process (its state
rebuilt from fresh watches, as at a start), rather than exit for the kubelet to restart.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import kopf
import kubernetes

# kopf does not export the errors its API client raises.
from kopf._cogs.clients import errors as kopf_api_errors

from damon_agent.api import resources
from damon_operator import (
    admission,
    cli,
    controller,
    handlers,  # importing registers the kopf handlers
    kube,
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
    webhook: admission.Config | None = None


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDR:PORT (e.g. 0.0.0.0:9443)")
    return host.strip("[]"), int(port)


def _service_account(text: str) -> admission.ServiceAccount:
    try:
        return admission.ServiceAccount.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="damon-operator",
        description=__doc__.split("\n\n")[0],
        epilog=f"damon-operator {cli.RELEASE_FINALIZERS} [--instance NAME] [--kubeconfig FILE]: "
        "remove this operator's finalizer from every scheme (for an uninstall; see "
        f"damon-operator {cli.RELEASE_FINALIZERS} --help)",
    )
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
        "--event-interval",
        type=_positive,
        default=60.0,
        metavar="S",
        help="post an Event of one scheme and reason at most this often; repeats meanwhile "
        "are counted into the next (its count)",
    )
    p.add_argument(
        "--instance",
        metavar="NAME",
        help="manage only objects labelled damon.io/instance=NAME (Nodes, schemes, DamonNodes)",
    )
    hooks = p.add_argument_group("admission webhooks")
    hooks.add_argument(
        "--webhook-listen",
        type=_listen,
        metavar="ADDR:PORT",
        help="serve the validating admission webhooks (HTTPS) here, e.g. 0.0.0.0:9443",
    )
    hooks.add_argument(
        "--webhook-cert", type=Path, metavar="FILE", help="PEM serving certificate (tls.crt)"
    )
    hooks.add_argument("--webhook-key", type=Path, metavar="FILE", help="PEM key (tls.key)")
    hooks.add_argument(
        "--agent-service-account",
        type=_service_account,
        metavar="NAMESPACE:NAME",
        help="the agents' ServiceAccount: its DamonNode status writes are allowed only to "
        "the DamonNode of the node its token's pod runs on",
    )
    p.add_argument("--log-format", choices=sorted(LOG_FORMATS), default="full")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--liveness", metavar="URL", help="e.g. http://0.0.0.0:8080/healthz")
    return p


_WEBHOOK_IDS = frozenset(hook.id for hook in admission.WEBHOOKS)


def _handler_id(message: str, outcome: str) -> str | None:
    """``x`` of kopf's "Handler 'x' <outcome>" (or "Webhook 'x' ...") lines."""
    for prefix in ("Handler '", "Webhook '"):
        if message.startswith(prefix) and f"' {outcome}" in message:
            return message[len(prefix) : message.index(f"' {outcome}")]
    return None


class _QuietEventHandlers(logging.Filter):
    """Drop kopf's "... 'x' succeeded." lines of event handlers and admission webhooks:
    both run for every agent heartbeat, so these would drown the log. A webhook's refusal
    ("failed permanently") is the request's fault, not the operator's: a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        succeeded = _handler_id(message, "succeeded.")
        if succeeded is not None and (succeeded.endswith("_event") or succeeded in _WEBHOOK_IDS):
            return False
        if record.levelno > logging.WARNING and (
            _handler_id(message, "failed permanently") in _WEBHOOK_IDS
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _webhook(p: argparse.ArgumentParser, args: argparse.Namespace) -> admission.Config | None:
    if args.webhook_listen is None:
        if args.webhook_cert or args.webhook_key or args.agent_service_account:
            p.error("--webhook-cert, --webhook-key, --agent-service-account need --webhook-listen")
        return None
    if args.webhook_cert is None or args.webhook_key is None:
        p.error("--webhook-listen needs --webhook-cert and --webhook-key")
    addr, port = args.webhook_listen
    return admission.Config(
        addr=addr,
        port=port,
        certfile=args.webhook_cert,
        keyfile=args.webhook_key,
        agent=args.agent_service_account,
    )


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(arguments)
    webhook = _webhook(p, args)
    kopf.configure(
        verbose=args.verbose,
        log_format=LOG_FORMATS[args.log_format],
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietEventHandlers())
    if not args.verbose:  # the webhook server's access log: a line per admission review
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    options = Options(
        controller=controller.Config(
            heartbeat_timeout_s=args.heartbeat_timeout,
            resync_s=args.resync,
            totals_interval_s=args.totals_interval,
            event_interval_s=args.event_interval,
        ),
        peering_lifetime_s=args.peering_lifetime,
        event_level=logging.WARNING,
        instance=args.instance,
        webhook=webhook,
    )
    if webhook is not None:
        admission.register(when=handlers.mine)
    priority = args.priority if args.priority is not None else random.randint(1, MAX_PRIORITY)
    logging.getLogger(__name__).info(
        "damon-operator starting: %s, %s",
        "standalone" if args.standalone else f"peering {args.peering} priority {priority}",
        f"namespaces {args.namespace}" if args.namespace else "all namespaces",
    )
    if webhook is not None:
        logging.getLogger(__name__).info(
            "serving admission webhooks on https://%s:%d (agents confined: %s)",
            webhook.addr,
            webhook.port,
            webhook.agent.username if webhook.agent else "no",
        )
    run_resuming(
        lambda: kopf.run(
            standalone=args.standalone,
            peering_name=None if args.standalone else args.peering,
            priority=priority,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            memo=kopf.Memo(options=options),
        ),
        serves_damon_api,
    )
    return 0


# What ends kopf's run when the apiserver fails it (see the module's docstring). Not
# every API error: a 403 (RBAC) would come back at once, round after round.
LOST_APISERVER: tuple[type[Exception], ...] = (
    kopf_api_errors.APINotFoundError,
    kopf_api_errors.APIServerError,
    kopf_api_errors.APITooManyRequestsError,
    aiohttp.ClientError,
)
WAIT_LOG_EVERY_S = 30.0


def run_resuming(
    run_once: Callable[[], None],
    apiserver_ready: Callable[[], bool],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """``run_once`` (kopf's run) until it returns (a signal stopped it); when the apiserver
    ended it, wait until ``apiserver_ready`` and run it again."""
    log = logging.getLogger(__name__)
    while True:
        try:
            run_once()
            return
        except LOST_APISERVER as err:
            log.warning(
                "kopf stopped: the apiserver failed a watch (%s); resuming once it serves %s/%s",
                kube.first_line(err),
                resources.GROUP,
                resources.VERSION,
            )
        sleep(1.0)  # never a tight loop, even when the apiserver says it is ready at once
        waited = 1.0
        while not apiserver_ready():
            sleep(1.0)
            waited += 1.0
            if waited % WAIT_LOG_EVERY_S == 0:
                log.warning("still waiting for the apiserver (%.0f s)", waited)
        log.info("the apiserver serves %s/%s again: resuming", resources.GROUP, resources.VERSION)


def serves_damon_api() -> bool:
    """Does the apiserver answer discovery for damon.io (its CRDs loaded)?"""
    try:
        kube.load_config()
        kubernetes.client.CustomObjectsApi().get_api_resources(resources.GROUP, resources.VERSION)
    except kube.WRITE_FAILURES:
        return False
    except kubernetes.config.ConfigException:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
