"""The operator's writes to the Kubernetes API, behind one small interface (and the one
read the admission webhook needs: where a pod runs, ``ApiPods``).

``Writer`` also makes the reads that must not trust the watch-fed index: whether a Node
is really gone (before its DamonNode is deleted), and the DamonNodes as stored (before a
scheme's finalizer goes).

Events (``post_event``) are core v1 Events the ``events.Recorder`` of the controller has
found due: created for a new series, patched (count, last time, message) afterwards.

kopf delivers events and applies patches to the object a handler runs for; the operator
also writes *other* objects (DamonNode specs, scheme statuses from a daemon), which goes
through ``Writer``. ``ApiWriter`` uses the official client in worker threads (its calls
block); ``RecordingWriter`` is the in-package fake for tests. Not-found on delete or
patch is not an error (the object went away, which is what a reconciler converges to
anyway); a create that finds the object already there becomes a patch (and a patch of an
Event that expired, a create).

Errors: anything else the API answers propagates as ``kubernetes.client.ApiException``;
callers log and retry on the next wake-up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from typing import TYPE_CHECKING, Any, Protocol

import kubernetes
import urllib3

from damon_agent.api import names

if TYPE_CHECKING:  # annotations only: no models on the uninstall hook's import path
    from damon_agent.api import events

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
FINALIZER = "damon.io/teardown"
INSTANCE_LABEL = "damon.io/instance"
MANAGED_BY = "app.kubernetes.io/managed-by"
EVENT_COMPONENT = "damon-operator"
# Whole-section replacement as a JSON Patch, not a merge patch: kube-apiserver 1.20's merge
# patch turns "" into null (then refused by the schema), and replacing the section also
# drops keys the new value no longer has.
JSON_PATCH = "application/json-patch+json"


def finalizer(instance: str | None) -> str:
    """The finalizer this operator owns: per instance, because kopf drops a finalizer of its
    own name from every object its filters do not match, so operators of other instances
    sharing the cluster would strip it from ours. Here, not with the handlers, so that
    ``release-finalizers`` names it without importing kopf."""
    return f"{FINALIZER}-{instance}" if instance else FINALIZER


# What a write raises when the apiserver refuses it, or cannot be reached at all.
WRITE_FAILURES: tuple[type[Exception], ...] = (
    kubernetes.client.ApiException,
    urllib3.exceptions.HTTPError,
    OSError,
)


def unreachable(err: BaseException) -> bool:
    """The apiserver did not answer, or answered that it cannot now (stopped, restarting,
    overloaded): expected through an outage, so worth a line in the log, not a traceback."""
    if isinstance(err, kubernetes.client.ApiException):
        return err.status in (0, None, 429) or err.status >= 500
    return isinstance(err, (urllib3.exceptions.HTTPError, OSError))


def first_line(err: BaseException) -> str:
    """An error in one log line (urllib3's and kopf's run over several and far)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]


def _replace(section: str, value: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"op": "add", "path": f"/{section}", "value": value}]


class Writer(Protocol):
    async def put_damon_node_spec(
        self, name: str, spec: dict[str, Any], *, exists: bool, node_uid: str = ""
    ) -> None:
        """Create the DamonNode (owned by its Node), or patch its spec when it exists."""

    async def delete_damon_node(self, name: str) -> None: ...

    async def node_exists(self, name: str) -> bool: ...

    async def list_damon_nodes(self) -> list[dict[str, Any]]:
        """Every DamonNode this operator manages, as the apiserver holds them now."""

    async def patch_scheme_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None: ...

    async def post_event(self, posting: events.Posting) -> None: ...


def load_config() -> None:
    """In-cluster credentials when running in a pod, else the kubeconfig (``$KUBECONFIG``)."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]


class ApiWriter:
    def __init__(
        self,
        api_client: Any | None = None,
        *,
        damon_node_labels: dict[str, str] | None = None,
        instance: str = "",
    ) -> None:
        self._labels = {MANAGED_BY: "damon-operator", **(damon_node_labels or {})}
        # The DamonNodes it manages: those of its instance (every one without an instance).
        self._selector = ",".join(f"{k}={v}" for k, v in (damon_node_labels or {}).items())
        self._instance = instance or socket.gethostname()  # in a pod: the pod's name
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)

    async def put_damon_node_spec(
        self, name: str, spec: dict[str, Any], *, exists: bool, node_uid: str = ""
    ) -> None:
        if not exists:
            metadata: dict[str, Any] = {"name": name, "labels": self._labels}
            if node_uid:
                # The garbage collector removes the DamonNode with its Node, even while the
                # operator is down.
                owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
                metadata["ownerReferences"] = [owner]
            body = {
                "apiVersion": names.API_VERSION,
                "kind": "DamonNode",
                "metadata": metadata,
                "spec": spec,
            }
            try:
                await asyncio.to_thread(
                    self._custom.create_cluster_custom_object,
                    names.GROUP,
                    names.VERSION,
                    "damonnodes",
                    body,
                )
                return
            except kubernetes.client.ApiException as err:
                if err.status != HTTP_CONFLICT:
                    raise
        await asyncio.to_thread(
            self._custom.patch_cluster_custom_object,
            names.GROUP,
            names.VERSION,
            "damonnodes",
            name,
            _replace("spec", spec),
            _content_type=JSON_PATCH,
        )

    async def delete_damon_node(self, name: str) -> None:
        try:
            await asyncio.to_thread(
                self._custom.delete_cluster_custom_object,
                names.GROUP,
                names.VERSION,
                "damonnodes",
                name,
            )
        except kubernetes.client.ApiException as err:
            if err.status != HTTP_NOT_FOUND:
                raise

    async def node_exists(self, name: str) -> bool:
        try:
            await asyncio.to_thread(self._core.read_node, name)
        except kubernetes.client.ApiException as err:
            if err.status == HTTP_NOT_FOUND:
                return False
            raise
        return True

    async def list_damon_nodes(self) -> list[dict[str, Any]]:
        listed: Any = await asyncio.to_thread(
            self._custom.list_cluster_custom_object,
            names.GROUP,
            names.VERSION,
            "damonnodes",
            label_selector=self._selector,
        )
        items: list[dict[str, Any]] = listed.get("items") or []
        return items

    async def patch_scheme_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        plural = names.PLURALS[kind]
        try:
            if namespace is None:
                await asyncio.to_thread(
                    self._custom.patch_cluster_custom_object_status,
                    names.GROUP,
                    names.VERSION,
                    plural,
                    name,
                    _replace("status", status),
                    _content_type=JSON_PATCH,
                )
            else:
                await asyncio.to_thread(
                    self._custom.patch_namespaced_custom_object_status,
                    names.GROUP,
                    names.VERSION,
                    namespace,
                    plural,
                    name,
                    _replace("status", status),
                    _content_type=JSON_PATCH,
                )
        except kubernetes.client.ApiException as err:
            if err.status != HTTP_NOT_FOUND:
                raise

    async def post_event(self, posting: events.Posting) -> None:
        # A dict, which the client sends as it is (its stubs want a V1Event).
        body: Any = posting.body(component=EVENT_COMPONENT, instance=self._instance)
        if posting.create:
            try:
                await asyncio.to_thread(self._core.create_namespaced_event, posting.namespace, body)
                return
            except kubernetes.client.ApiException as err:
                if err.status != HTTP_CONFLICT:
                    raise
        try:
            await asyncio.to_thread(
                self._core.patch_namespaced_event, posting.name, posting.namespace, posting.patch()
            )
        except kubernetes.client.ApiException as err:
            if err.status != HTTP_NOT_FOUND:
                raise
            await asyncio.to_thread(self._core.create_namespaced_event, posting.namespace, body)


@dataclasses.dataclass(frozen=True)
class PodPlacement:
    """A pod's identity and node: ``node_name`` is "" while the pod is not scheduled."""

    uid: str
    node_name: str


class ApiPods:
    """Reads where pods run (``get`` on pods; the chart grants it in the agents' namespace)."""

    def __init__(self, api_client: Any | None = None) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)

    async def placement(self, namespace: str, name: str) -> PodPlacement | None:
        """The pod's UID and node, or ``None`` when no such pod exists."""
        try:
            pod = await asyncio.to_thread(self._core.read_namespaced_pod, name, namespace)
        except kubernetes.client.ApiException as err:
            if err.status == HTTP_NOT_FOUND:
                return None
            raise
        uid = pod.metadata.uid if pod.metadata is not None else None
        node = pod.spec.node_name if pod.spec is not None else None
        return PodPlacement(uid=str(uid or ""), node_name=str(node or ""))


@dataclasses.dataclass
class RecordingWriter:
    """A fake ``Writer`` that records every write (and knows which Nodes exist, and which
    DamonNodes the apiserver would list)."""

    existing_nodes: set[str] = dataclasses.field(default_factory=set)
    damon_nodes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    writes: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    specs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    statuses: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    postings: list[events.Posting] = dataclasses.field(default_factory=list)

    async def put_damon_node_spec(
        self, name: str, spec: dict[str, Any], *, exists: bool, node_uid: str = ""
    ) -> None:
        self.writes.append(("patch" if exists else "create", name))
        self.specs[name] = spec

    async def delete_damon_node(self, name: str) -> None:
        self.writes.append(("delete", name))
        self.specs.pop(name, None)

    async def node_exists(self, name: str) -> bool:
        return name in self.existing_nodes

    async def list_damon_nodes(self) -> list[dict[str, Any]]:
        return list(self.damon_nodes)

    async def patch_scheme_status(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        key = names.scheme_key(kind, namespace, name)
        self.writes.append(("status", key))
        self.statuses[key] = status

    async def post_event(self, posting: events.Posting) -> None:
        self.writes.append(("event", posting.occurrence.reason, posting.occurrence.about.name))
        self.postings.append(posting)
