"""``damonctl status``: a node's or a scheme's outcome, read from the apiserver.

Credentials as kubectl finds them: ``--kubeconfig`` (else ``$KUBECONFIG``, else
``~/.kube/config``) with its current context or ``--context``; inside a pod without a
kubeconfig, the in-cluster service account. Objects::

    --node NAME           the DamonNode of that node
    --scheme NS/NAME      a DamonScheme (namespaced)
    --scheme NAME         a ClusterDamonScheme

A scheme is shown with the DamonNodes that report it (one list of DamonNodes). What
cannot be read fails with one line (``errors.KubeError``): an object that does not exist,
an apiserver that cannot be reached or refuses the credentials. The text comes from
``reports.live_status``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pydantic
import urllib3.exceptions

from damon_agent.api import conditions, resources
from damon_agent.reports import live_status
from damon_agent.runtime import errors

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# Seconds to connect and to read one answer; one retry, so an unreachable apiserver
# fails in seconds rather than after urllib3's default backoff.
REQUEST_TIMEOUT = (5, 30)


def add_parser(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "status",
        help="what the schemes do on a node or over a scheme's nodes (from the apiserver)",
        description="The loop's outcome as the agents report it: per scheme its effective\n"
        "quota, its goals (current / target) and the bytes it acted on; per pod its memory\n"
        "PSI and the memory it saved since the agent first saw it; per node the kdamonds'\n"
        "CPU. Read from the DamonNode and scheme objects, with kubectl's credentials.",
        epilog="examples:\n"
        "  damonctl status --node node-1\n"
        "  damonctl status --scheme shop/reclaim-cold     # a DamonScheme\n"
        "  damonctl status --scheme node-reclaim          # a ClusterDamonScheme\n",
        formatter_class=formatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--node", metavar="NAME", help="a node: its DamonNode's status")
    which.add_argument(
        "--scheme",
        metavar="NS/NAME|NAME",
        help="a DamonScheme (NS/NAME) or a ClusterDamonScheme (NAME), over its nodes",
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else the "
        "in-cluster service account)",
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> str:
    api = Objects(_configuration(args.kubeconfig, args.context))
    try:
        now = conditions.now()
        if args.node is not None:
            raw = api.get("DamonNode", None, args.node)
            return live_status.render_node(args.node, _node_status(raw, args.node), now)
        kind, namespace, name = parse_scheme(args.scheme)
        raw = api.get(kind, namespace, name)
        status = _validated(resources.SchemeStatus, raw.get("status"), _what(kind, namespace, name))
        key = resources.scheme_key(kind, namespace, name)
        nodes = []
        for item in api.list("DamonNode"):
            node = str(item.get("metadata", {}).get("name", ""))
            node_status = _node_status(item, node)
            if node_status is not None and node_status.scheme(key) is not None:
                nodes.append((node, node_status))
        return live_status.render_scheme(kind, namespace, name, status=status, nodes=nodes, now=now)
    finally:
        api.close()


def parse_scheme(text: str) -> tuple[str, str | None, str]:
    """``NS/NAME`` -> a DamonScheme; ``NAME`` -> a ClusterDamonScheme."""
    parts = text.split("/")
    if len(parts) == 2 and all(parts):
        return "DamonScheme", parts[0], parts[1]
    if len(parts) == 1 and parts[0]:
        return "ClusterDamonScheme", None, parts[0]
    raise errors.KubeError(
        f"--scheme {text!r}: give NS/NAME for a DamonScheme or NAME for a ClusterDamonScheme"
    )


def _what(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _node_status(raw: dict[str, Any], name: str) -> resources.DamonNodeStatus | None:
    body = raw.get("status")
    if not body:
        return None
    return _validated(resources.DamonNodeStatus, body, f"DamonNode {name}")


def _validated[M: pydantic.BaseModel](model: type[M], body: Any, what: str) -> M:
    try:
        return model.model_validate(body or {})
    except pydantic.ValidationError as err:
        raise errors.KubeError(
            f"{what}: its status cannot be read ({resources.describe(err)})"
        ) from None


def _configuration(kubeconfig: str | None, context: str | None) -> Any:
    cfg = kubernetes.client.Configuration()
    # The kubernetes package is untyped; its loaders only fill ``cfg``.
    load_file: Any = kubernetes.config.load_kube_config
    load_incluster: Any = kubernetes.config.load_incluster_config
    default = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    path = kubeconfig or default
    try:
        if kubeconfig or context or any(Path(p).exists() for p in path.split(os.pathsep) if p):
            load_file(config_file=path, context=context, client_configuration=cfg)
        elif IN_CLUSTER_TOKEN.exists():
            load_incluster(client_configuration=cfg)
        else:
            raise errors.KubeError(
                f"no kubeconfig at {path} and no in-cluster service account: give --kubeconfig"
            )
    except (kubernetes.config.ConfigException, OSError, ValueError) as err:
        raise errors.KubeError(f"cannot load credentials from {path}: {err}") from None
    cfg.retries = 1
    return cfg


class Objects:
    """Gets and lists of the damon.io objects, each failure one ``KubeError`` line."""

    def __init__(self, configuration: Any) -> None:
        self.host = str(configuration.host)
        # The kubernetes package's types are partial: held as Any.
        self._client: Any = kubernetes.client.ApiClient(configuration)
        self._api: Any = kubernetes.client.CustomObjectsApi(self._client)

    def close(self) -> None:
        self._client.close()

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        plural = resources.PLURALS[kind]
        what = _what(kind, namespace, name)
        call: Any
        if namespace:
            call = self._api.get_namespaced_custom_object
            args: tuple[str, ...] = (resources.GROUP, resources.VERSION, namespace, plural, name)
        else:
            call = self._api.get_cluster_custom_object
            args = (resources.GROUP, resources.VERSION, plural, name)
        found: dict[str, Any] = self._call(what, call, *args)
        return found

    def list(self, kind: str) -> list[dict[str, Any]]:
        plural = resources.PLURALS[kind]
        found = self._call(
            f"the {plural}",
            self._api.list_cluster_custom_object,
            resources.GROUP,
            resources.VERSION,
            plural,
        )
        return list(found.get("items") or [])

    def _call(self, what: str, call: Any, *args: str) -> Any:
        try:
            return call(*args, _request_timeout=REQUEST_TIMEOUT)
        except kubernetes.client.ApiException as err:
            if err.status == 404:
                raise errors.KubeError(f"{what} not found") from None
            reason = f"HTTP {err.status} {err.reason}".strip()
            raise errors.KubeError(f"the apiserver at {self.host} refused: {reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            cause = getattr(err, "reason", None) or err
            raise errors.KubeError(f"cannot reach the apiserver at {self.host}: {cause}") from None
