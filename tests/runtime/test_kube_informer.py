"""The informer against a small fake API server (aiohttp): list, watch, resume, relist.

The real API server is exercised by the end-to-end test (tests/kube/runtime); this one
injects what is hard to provoke there: a watch that closes, and a 410 Gone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kubernetes.client
from aiohttp import web

from damon_agent.runtime import errors, kube


def _pod(name: str, version: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": str(version)}}


class FakeApi:
    def __init__(self) -> None:
        self.lists = 0
        self.watches: list[str] = []
        self.auth: list[str] = []
        self.release = asyncio.Event()

    async def pods(self, request: web.Request) -> web.StreamResponse:
        self.auth.append(request.headers.get("Authorization", ""))
        assert request.query["fieldSelector"] == "spec.nodeName=n1"
        if request.query.get("watch") != "true":
            self.lists += 1
            items = [_pod("a", 10)] if self.lists == 1 else [_pod("a", 30), _pod("c", 31)]
            return web.json_response({"metadata": {"resourceVersion": "20"}, "items": items})
        self.watches.append(request.query["resourceVersion"])
        response = web.StreamResponse()
        await response.prepare(request)
        if len(self.watches) == 1:
            events = [
                {"type": "ADDED", "object": _pod("b", 21)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "22"}}},
            ]  # then the server closes the watch: the informer resumes from 22
        elif len(self.watches) == 2:
            events = [
                {"type": "DELETED", "object": _pod("a", 23)},
                {"type": "ERROR", "object": {"code": 410, "message": "too old"}},
            ]
        else:
            await self.release.wait()  # an idle watch, until the test ends
            events = []
        for event in events:
            await response.write((json.dumps(event) + "\n").encode())
        await response.write_eof()
        return response


async def test_informer_lists_watches_resumes_and_relists_on_gone() -> None:
    api = FakeApi()
    app = web.Application()
    app.router.add_get("/api/v1/pods", api.pods)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cfg = kubernetes.client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    cfg.api_key = {"BearerToken": "Bearer secret"}
    client = kube.Client(cfg)
    changes = asyncio.Event()
    informer = kube.Informer(
        client, "/api/v1/pods", params={"fieldSelector": "spec.nodeName=n1"}, on_change=changes.set
    )
    task = asyncio.create_task(informer.run())
    try:
        for _ in range(100):
            if api.lists == 2 and len(api.watches) == 3:
                break
            await asyncio.sleep(0.05)
        assert api.watches == ["20", "22", "20"]  # resumed after close; relisted after 410
        assert sorted(informer.items) == ["uid-a", "uid-c"]  # the relist's view
        assert informer.synced.is_set() and changes.is_set()
        assert set(api.auth) == {"Bearer secret"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        api.release.set()
        await client.close()
        await runner.cleanup()


async def test_request_errors_carry_the_servers_message() -> None:
    async def forbidden(request: web.Request) -> web.Response:
        return web.json_response({"message": "pods is forbidden: nope"}, status=403)

    app = web.Application()
    app.router.add_get("/api/v1/pods", forbidden)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    cfg = kubernetes.client.Configuration()
    cfg.host = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = kube.Client(cfg)
    try:
        await client.request("GET", "/api/v1/pods")
    except errors.KubeError as err:
        assert "HTTP 403" in str(err) and "pods is forbidden: nope" in str(err)
    else:
        raise AssertionError("a 403 must raise KubeError")
    finally:
        await client.close()
        await runner.cleanup()
