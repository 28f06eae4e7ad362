"""A small asyncio Kubernetes API client for the agent: get, list+watch, status patch,
Event posts.

Why not the ``kubernetes`` package's client: it is synchronous, and its watches block a
thread that cannot be cancelled on SIGTERM. The agent needs a few calls, so it speaks HTTP
with aiohttp and borrows only the ``kubernetes`` package's kubeconfig / in-cluster loading
(server, CA, client certificate, bearer token and its refresh).

``Informer`` keeps a local copy of a filtered collection (the agent's own DamonNode by
``metadata.name``; the pods of its node by ``spec.nodeName``) current: list, then watch
from the list's resourceVersion; a closed watch is resumed, a ``410 Gone`` (the version
was compacted away) relists. After every change it calls ``on_change`` so the control
loop wakes up; the loop reads ``items`` and never sees a half-applied event.

Errors: HTTP failures raise ``errors.KubeError`` with the method, path, status and the
API server's own message (the status also as ``code``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kubernetes.client
import kubernetes.config

from damon_agent.api import events
from damon_agent.runtime import errors

log = logging.getLogger(__name__)

Obj = dict[str, Any]
# An Event write that takes longer is abandoned; the recorder retries it later.
EVENT_TIMEOUT_S = 10.0


class Client:
    def __init__(self, configuration: Any) -> None:
        self._cfg = configuration
        self.host = str(configuration.host).rstrip("/")
        context: ssl.SSLContext | bool
        if self.host.startswith("https"):
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
            if not configuration.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        else:
            context = False
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=8),
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=None),
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None) -> Client:
        """Load the kubeconfig file if given, else the in-cluster service account."""
        cfg = kubernetes.client.Configuration()
        try:
            # The kubernetes package is untyped; these loaders only fill ``cfg``.
            load_file: Any = kubernetes.config.load_kube_config
            load_incluster: Any = kubernetes.config.load_incluster_config
            if kubeconfig:
                load_file(config_file=kubeconfig, client_configuration=cfg)
            else:
                load_incluster(client_configuration=cfg)
        except (kubernetes.config.ConfigException, OSError) as err:
            where = kubeconfig or "the in-cluster service account"
            raise errors.KubeError(
                f"cannot load Kubernetes credentials from {where}: {err}"
            ) from err
        return cls(cfg)

    async def close(self) -> None:
        await self._session.close()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        hook = getattr(self._cfg, "refresh_api_key_hook", None)
        if hook is not None:
            hook(self._cfg)
        headers = {"Accept": "application/json"}
        # auth_settings() holds the bearer token (kubeconfig or service account) under
        # whatever name this version of the package uses for it.
        for setting in self._cfg.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"]).title()] = str(setting["value"])
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Obj | list[Obj] | None = None,
        content_type: str = "application/json",
        timeout_s: float = 30.0,
    ) -> Obj:
        data = None if body is None else json.dumps(body)
        try:
            async with self._session.request(
                method,
                self.host + path,
                params=params,
                data=data,
                headers=self._headers(content_type if body is not None else None),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise errors.KubeError(
                        f"{method} {path}: HTTP {response.status}: {_message(text)}",
                        code=response.status,
                    )
                result: Obj = json.loads(text) if text else {}
                return result
        except (aiohttp.ClientError, TimeoutError) as err:
            raise errors.KubeError(f"{method} {path}: {err or type(err).__name__}") from err

    async def watch(
        self, path: str, params: dict[str, str], *, timeout_s: int = 60
    ) -> AsyncIterator[Obj]:
        """Watch events of a collection from ``params['resourceVersion']``."""
        query = dict(
            params, watch="true", timeoutSeconds=str(timeout_s), allowWatchBookmarks="true"
        )
        try:
            async with self._session.get(
                self.host + path,
                params=query,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=timeout_s + 30, sock_read=timeout_s + 30),
            ) as response:
                if response.status >= 400:
                    text = await response.text()
                    raise errors.KubeError(
                        f"WATCH {path}: HTTP {response.status}: {_message(text)}"
                    )
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise errors.KubeError(f"WATCH {path}: {err or type(err).__name__}") from err


HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


async def post_event(
    client: Client, posting: events.Posting, *, component: str, instance: str
) -> None:
    """Create the posting's Event, or bring the existing one up to date (``events``).

    A create that finds the Event there (a restarted agent continuing a series) patches
    it; a patch that finds it gone (expired after the apiserver's ``--event-ttl``)
    creates it.
    """
    collection = f"/api/v1/namespaces/{posting.namespace}/events"
    body = posting.body(component=component, instance=instance)
    if posting.create:
        try:
            await client.request("POST", collection, body=body, timeout_s=EVENT_TIMEOUT_S)
            return
        except errors.KubeError as err:
            if err.code != HTTP_CONFLICT:
                raise
    try:
        await client.request(
            "PATCH",
            f"{collection}/{posting.name}",
            body=posting.patch(),
            content_type="application/merge-patch+json",
            timeout_s=EVENT_TIMEOUT_S,
        )
    except errors.KubeError as err:
        if err.code != HTTP_NOT_FOUND:
            raise
        await client.request("POST", collection, body=body, timeout_s=EVENT_TIMEOUT_S)


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message", text))
    except (json.JSONDecodeError, AttributeError):
        return text[:500]


class GoneError(errors.KubeError):
    """The watch's resourceVersion is too old: relist."""


class Informer:
    """A watched, filtered collection kept in ``items`` (name -> object)."""

    def __init__(
        self,
        client: Client,
        path: str,
        *,
        params: dict[str, str],
        on_change: Callable[[], None],
        key: Callable[[Obj], str] = lambda o: str(
            o["metadata"].get("uid") or o["metadata"]["name"]
        ),
    ) -> None:
        self._client = client
        self._path = path
        self._params = params
        self._on_change = on_change
        self._key = key
        self.items: dict[str, Obj] = {}
        self.synced = asyncio.Event()
        self.last_error = ""

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                version = await self._list()
                backoff = 0.5
                while True:
                    version = await self._watch(version)
            except GoneError:
                log.info("%s: watch expired, relisting", self._path)
            except errors.KubeError as err:
                self.last_error = str(err)
                log.warning("%s: %s (retrying in %.1fs)", self._path, err, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _list(self) -> str:
        listing = await self._client.request("GET", self._path, params=self._params)
        self.items = {self._key(item): item for item in listing.get("items", [])}
        self.last_error = ""
        self.synced.set()
        self._on_change()
        return str(listing.get("metadata", {}).get("resourceVersion", ""))

    async def _watch(self, version: str) -> str:
        params = dict(self._params, resourceVersion=version)
        async for event in self._client.watch(self._path, params):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise GoneError(f"WATCH {self._path}: {obj.get('message', 'gone')}")
                raise errors.KubeError(f"WATCH {self._path}: {obj.get('message', obj)}")
            version = str(obj.get("metadata", {}).get("resourceVersion", version))
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                self.items.pop(self._key(obj), None)
            elif kind in ("ADDED", "MODIFIED"):
                self.items[self._key(obj)] = obj
            self._on_change()
        return version
