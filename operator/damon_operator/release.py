"""``damon-operator release-finalizers``: remove this operator's finalizer from every scheme.

    damon-operator release-finalizers [--instance NAME] [--kubeconfig FILE] [--retries N]
                                      [--stop-deployment NAMESPACE/NAME [--stop-timeout S]]

Every DamonScheme (all namespaces) and ClusterDamonScheme carries the operator's
finalizer (``kube.finalizer``: ``damon.io/teardown``, or ``damon.io/teardown-NAME``
with ``--instance NAME``). Once the operator is uninstalled nothing removes it, and
deleting a scheme (or the CRDs) hangs; the agents are gone too and turned their kdamonds
off, so the teardown the finalizer waits for is moot. The chart runs this command as a
``pre-delete`` hook (``operator.releaseFinalizersOnUninstall``).

A running operator adds its finalizer back to every scheme it sees without one (kopf
does so on the very event our patch causes). ``--stop-deployment`` first scales the
operator's Deployment to 0 and waits until its pods have stopped; in any case the
release passes repeat until one finds nothing left to release (an operator pod still in
its grace period may add a few back), at most ``--passes`` times.

Only that one finalizer is removed: other finalizers, the objects and their annotations
stay. With ``--instance NAME`` only objects labelled ``damon.io/instance=NAME`` are
touched. Each removal is a JSON Patch that first tests that the finalizer is still at the
index it was read at, so a concurrent change to the list is never clobbered; when the
apiserver refuses the test (409/422), the object is read again and the removal retried.

Selection (``Target``, ``holding``, ``select``, ``removal``) is pure; ``Schemes`` is the
API access and ``release`` drives both.

Output: one line per object released and a summary line on stdout. Exit status 0 when
every object holding the finalizer was released (or went away meanwhile), 1 naming what
failed on stderr otherwise (credentials, a list, or an object), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TextIO

import kubernetes

from damon_agent.api import names
from damon_operator import kube

HTTP_FORBIDDEN = 403
HTTP_UNPROCESSABLE = 422
DEFAULT_RETRIES = 5
DEFAULT_PASSES = 10
PASS_INTERVAL_S = 2.0
STOP_POLL_S = 1.0
# A read fails as a write does, or with a body that is no JSON object.
READ_FAILURES: tuple[type[Exception], ...] = (*kube.WRITE_FAILURES, ValueError)


class ReleaseError(Exception):
    """What failed, in words a user can act on."""


@dataclasses.dataclass(frozen=True)
class Target:
    """An object holding the finalizer at ``index`` of its ``metadata.finalizers``."""

    kind: str
    namespace: str | None
    name: str
    index: int

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


def holding(
    kind: str, obj: Mapping[str, Any], finalizer: str, instance: str | None
) -> Target | None:
    """The object as a ``Target`` when it carries ``finalizer`` (and, with ``instance``,
    the instance label), else ``None``."""
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    if instance is not None and labels.get(kube.INSTANCE_LABEL) != instance:
        return None
    finalizers: list[str] = list(meta.get("finalizers") or [])
    if finalizer not in finalizers:
        return None
    namespace = meta.get("namespace") or None
    return Target(kind, namespace, str(meta.get("name", "")), finalizers.index(finalizer))


def select(
    kind: str, objects: Iterable[Mapping[str, Any]], finalizer: str, instance: str | None
) -> list[Target]:
    """The objects of ``kind`` that hold ``finalizer``, in the order given."""
    found = (holding(kind, obj, finalizer, instance) for obj in objects)
    return [target for target in found if target is not None]


def removal(target: Target, finalizer: str) -> list[dict[str, Any]]:
    """A JSON Patch removing the finalizer only if it is still where it was read."""
    path = f"/metadata/finalizers/{target.index}"
    return [{"op": "test", "path": path, "value": finalizer}, {"op": "remove", "path": path}]


def label_selector(instance: str | None) -> str | None:
    return f"{kube.INSTANCE_LABEL}={instance}" if instance else None


class Schemes(Protocol):
    def list_all(self, kind: str, selector: str | None) -> list[dict[str, Any]]:
        """Every object of ``kind`` (all namespaces); [] when the kind is not installed."""

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or ``None`` when it is gone."""

    def patch(self, target: Target, body: list[dict[str, Any]]) -> None:
        """Apply the JSON Patch; raises ``ApiException`` as the apiserver answers."""


class ApiSchemes:
    """``Schemes`` through the official client (synchronous: a one-shot command)."""

    def __init__(self, api_client: Any | None = None) -> None:
        self._custom = kubernetes.client.CustomObjectsApi(api_client)

    def list_all(self, kind: str, selector: str | None) -> list[dict[str, Any]]:
        plural = names.PLURALS[kind]
        try:
            found: Any = self._custom.list_cluster_custom_object(
                names.GROUP, names.VERSION, plural, label_selector=selector or ""
            )
        except kubernetes.client.ApiException as err:
            if err.status == kube.HTTP_NOT_FOUND:
                return []
            raise
        items: list[dict[str, Any]] = found.get("items") or []
        return items

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        plural = names.PLURALS[kind]
        found: Any
        try:
            if namespace is None:
                found = self._custom.get_cluster_custom_object(
                    names.GROUP, names.VERSION, plural, name
                )
            else:
                found = self._custom.get_namespaced_custom_object(
                    names.GROUP, names.VERSION, namespace, plural, name
                )
        except kubernetes.client.ApiException as err:
            if err.status == kube.HTTP_NOT_FOUND:
                return None
            raise
        obj: dict[str, Any] = found
        return obj

    def patch(self, target: Target, body: list[dict[str, Any]]) -> None:
        plural = names.PLURALS[target.kind]
        if target.namespace is None:
            self._custom.patch_cluster_custom_object(
                names.GROUP,
                names.VERSION,
                plural,
                target.name,
                body,
                _content_type=kube.JSON_PATCH,
            )
        else:
            self._custom.patch_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                target.namespace,
                plural,
                target.name,
                body,
                _content_type=kube.JSON_PATCH,
            )


def _reason(err: Exception) -> str:
    if isinstance(err, kubernetes.client.ApiException):
        return f"HTTP {err.status} {err.reason}".strip()
    return f"{type(err).__name__}: {err}"


def release_one(
    schemes: Schemes, target: Target, finalizer: str, instance: str | None, retries: int
) -> bool:
    """Remove the finalizer from one object: ``True`` when removed, ``False`` when the
    object or the finalizer went away meanwhile. Raises ``ReleaseError``."""
    current: Target | None = target
    for _ in range(retries):
        if current is None:
            return False
        try:
            schemes.patch(current, removal(current, finalizer))
            return True
        except kubernetes.client.ApiException as err:
            if err.status == kube.HTTP_NOT_FOUND:
                return False
            if err.status not in {kube.HTTP_CONFLICT, HTTP_UNPROCESSABLE}:
                raise ReleaseError(f"cannot patch {target}: {_reason(err)}") from err
        except kube.WRITE_FAILURES as err:
            raise ReleaseError(f"cannot patch {target}: {_reason(err)}") from err
        try:  # the list changed under us: read it again
            obj = schemes.get(target.kind, target.namespace, target.name)
        except kube.WRITE_FAILURES as err:
            raise ReleaseError(f"cannot read {target} again: {_reason(err)}") from err
        current = None if obj is None else holding(target.kind, obj, finalizer, instance)
    raise ReleaseError(f"{target}: its finalizers kept changing ({retries} attempts)")


@dataclasses.dataclass
class Summary:
    released: list[Target] = dataclasses.field(default_factory=list)
    gone: list[Target] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)


def release(
    schemes: Schemes,
    instance: str | None,
    out: TextIO,
    *,
    retries: int = DEFAULT_RETRIES,
) -> Summary:
    """Release every scheme of both kinds holding this operator's finalizer, printing a
    line per object released; failures are collected, the others still released."""
    finalizer = kube.finalizer(instance)
    summary = Summary()
    for kind in names.SCHEME_KINDS:
        try:
            objects = schemes.list_all(kind, label_selector(instance))
        except kube.WRITE_FAILURES as err:
            summary.failed.append(f"cannot list {kind}s: {_reason(err)}")
            continue
        for target in select(kind, objects, finalizer, instance):
            try:
                removed = release_one(schemes, target, finalizer, instance, retries)
            except ReleaseError as err:
                summary.failed.append(str(err))
                continue
            if removed:
                summary.released.append(target)
                print(f"released {target}: removed finalizer {finalizer}", file=out)
            else:
                summary.gone.append(target)
    return summary


def _deployment(text: str) -> tuple[str, str]:
    try:
        found = names.NamespacedName.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return found.namespace, found.name


def stop_deployment(
    apps: Any,
    core: Any,
    namespace: str,
    name: str,
    timeout_s: float,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> str:
    """Scale the Deployment to 0 and wait until none of its pods runs; what happened, in
    words (and a line to ``progress`` as each wait begins). Raises ``ReleaseError``.

    A Deployment reports 0 replicas as soon as its pods are *terminating*, but such a pod's
    operator runs on through its grace period and adds its finalizer back to every scheme
    released meanwhile (seen on a slow node: all ten release passes undone). So the wait
    goes on until each pod is gone or ``stopped`` (``core``: ``list pods`` in the
    namespace, which the chart grants only to this hook); without that permission it says
    so and ends at 0 replicas.
    """
    what = f"Deployment {namespace}/{name}"

    def call(doing: str, request: Callable[[], Any]) -> Any:
        """``request()``'s answer; None when the Deployment is gone."""
        try:
            return request()
        except kubernetes.client.ApiException as err:
            if err.status == kube.HTTP_NOT_FOUND:
                return None
            raise ReleaseError(f"cannot {doing} {what}: {_reason(err)}") from err
        except READ_FAILURES as err:
            raise ReleaseError(f"cannot {doing} {what}: {_reason(err)}") from err

    scale = {"spec": {"replicas": 0}}
    progress(f"scaling {what} to 0")
    scaled = call("scale", lambda: apps.patch_namespaced_deployment_scale(name, namespace, scale))
    if scaled is None:
        return f"{what} is gone already"
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        found = call(
            "read",
            lambda: _json(apps.read_namespaced_deployment(name, namespace, _preload_content=False)),
        )
        if found is None:
            return f"{what} is gone"
        replicas = (found.get("status") or {}).get("replicas") or 0
        if replicas == 0:
            break
        if time.monotonic() > deadline:
            raise ReleaseError(f"{what} still has {replicas} replica(s) after {timeout_s:.0f} s")
        time.sleep(STOP_POLL_S)
    labels = ((found.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not labels:
        return f"scaled {what} to 0 (its selector has no labels to find its pods by)"
    selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
    waited = 0
    while True:
        try:
            listed = core.list_namespaced_pod(
                namespace, label_selector=selector, _preload_content=False
            )
            pods: list[dict[str, Any]] = _json(listed).get("items") or []
        except kubernetes.client.ApiException as err:
            if err.status != HTTP_FORBIDDEN:
                raise ReleaseError(f"cannot list the pods of {what}: {_reason(err)}") from err
            return (
                f"scaled {what} to 0; may not list its pods ({_reason(err)}): one still in "
                "its grace period may add finalizers back"
            )
        except READ_FAILURES as err:
            raise ReleaseError(f"cannot list the pods of {what}: {_reason(err)}") from err
        running = [p for p in pods if not stopped(p)]
        if not running:
            break
        if not waited:
            progress(f"{what} is at 0 replicas; waiting for {len(running)} pod(s) to stop")
        if time.monotonic() > deadline:
            names_left = sorted(str((p.get("metadata") or {}).get("name")) for p in running)
            raise ReleaseError(
                f"{what} is at 0 replicas but {len(running)} of its pod(s) still run after "
                f"{timeout_s:.0f} s: {', '.join(names_left)}"
            )
        waited = len(running)
        time.sleep(STOP_POLL_S)
    if waited:
        return (
            f"scaled {what} to 0; its terminating pod(s) stopped after "
            f"{time.monotonic() - started:.0f} s"
        )
    return f"scaled {what} to 0"


def _json(response: Any) -> dict[str, Any]:
    """The JSON object of a call made with ``_preload_content=False``. The hook reads the
    Deployment and polls the pods so, skipping the client's model classes: building them
    costs ten times the JSON decoding (0.59 ms against 0.055 ms for three pods on the
    host), and the emulated test node is some fifty times slower again."""
    body = json.loads(response.data)
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    return body


def stopped(pod: Mapping[str, Any]) -> bool:
    """A pod (as the API's JSON) that can no longer write: marked for deletion, and each of
    its containers reported terminated. A kubelet that reports that before removing the
    pod ends the wait early; the test node's kubelet 1.20 reports nothing of a deleted
    pod's containers and removes the object 40-60 s after its processes exited, so there
    the wait lasts until the pod is gone. A pod not yet marked may still be started or
    restarted."""
    if not (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(
        "terminated" in (status.get("state") or {}) for status in statuses
    )


def release_until_settled(
    schemes: Schemes,
    instance: str | None,
    out: TextIO,
    *,
    retries: int = DEFAULT_RETRIES,
    passes: int = DEFAULT_PASSES,
    interval_s: float = PASS_INTERVAL_S,
) -> Summary:
    """``release`` passes until one releases nothing (or fails), at most ``passes``."""
    total = Summary()
    for number in range(passes):
        if number:
            time.sleep(interval_s)
        summary = release(schemes, instance, out, retries=retries)
        total.released += summary.released
        total.gone += summary.gone
        total.failed += summary.failed
        if summary.failed or not summary.released:
            return total
    finalizer = kube.finalizer(instance)
    total.failed.append(
        f"{finalizer} was added back in each of {passes} passes: is the operator still running?"
    )
    return total


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="damon-operator release-finalizers", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--instance",
        metavar="NAME",
        help="the operator's --instance: its finalizer's name, and only objects labelled "
        "damon.io/instance=NAME",
    )
    p.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig to use (default: in-cluster credentials, else $KUBECONFIG)",
    )
    p.add_argument(
        "--stop-deployment",
        type=_deployment,
        metavar="NAMESPACE/NAME",
        help="scale the operator's Deployment to 0 first (a running operator adds its "
        "finalizer back)",
    )
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="how long the operator's pods may take to stop (their grace period is 30 s)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        metavar="N",
        help="attempts per object when its finalizers change concurrently",
    )
    p.add_argument(
        "--passes",
        type=int,
        default=DEFAULT_PASSES,
        metavar="N",
        help="release passes at most, until one finds nothing left to release",
    )
    return p


def _api_client(kubeconfig: str | None) -> Any:
    if kubeconfig:
        return kubernetes.config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    kube.load_config()
    return kubernetes.client.ApiClient()


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.retries < 1 or args.passes < 1:
        p.error("--retries and --passes must be at least 1")
    prog = "damon-operator release-finalizers"
    finalizer = kube.finalizer(args.instance)
    scope = f"objects labelled {label_selector(args.instance)}" if args.instance else "all objects"

    # Progress lines as each step begins: on a busy node the interpreter alone may take
    # minutes to start, and the hook's log then shows where its deadline went.
    def say(line: str) -> None:
        print(f"{prog}: {line}", file=err, flush=True)

    say(f"releasing finalizer {finalizer} ({scope})")
    try:
        client = _api_client(args.kubeconfig)
    except (kubernetes.config.ConfigException, OSError) as error:
        print(f"{prog}: cannot load Kubernetes credentials: {error}", file=err)
        return 1
    with client:
        if args.stop_deployment is not None:
            namespace, name = args.stop_deployment
            apps = kubernetes.client.AppsV1Api(client)
            core = kubernetes.client.CoreV1Api(client)
            try:
                stopping = stop_deployment(
                    apps, core, namespace, name, args.stop_timeout, progress=say
                )
                print(stopping, file=out)
            except ReleaseError as error:
                print(f"{prog}: {error}", file=err)
                return 1
        summary = release_until_settled(
            ApiSchemes(client), args.instance, out, retries=args.retries, passes=args.passes
        )
    print(
        f"released {len(summary.released)} scheme(s) from finalizer {finalizer} ({scope}); "
        f"{len(summary.gone)} went away meanwhile, {len(summary.failed)} failed",
        file=out,
    )
    for failure in summary.failed:
        print(f"{prog}: {failure}", file=err)
    return 1 if summary.failed else 0
