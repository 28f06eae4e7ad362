"""The live source of ``damonctl report access --agent URL --pod NS/NAME`` and of
``damonctl record --agent URL`` (``fetch_history``: ``/v1/snapshots``).

Fetches an agent's ``/v1/snapshot`` (shape: ``wire``) and returns one
``core.snapshots.Snapshot`` that the reports render like a recorded one. Synchronous on
purpose: the CLI makes one request and exits, so an event loop would only add weight.

Which snapshot: the schemes on the agent that select the pod; with ``scheme`` given, only
that one (its key as ``/v1/snapshot`` lists it, or just its name). Where a scheme's targets
belong to pods (vaddr), only the pod's own targets are kept; on paddr the scheme's whole
physical-memory snapshot is returned, since regions there are not per pod.

Credentials: the agent serves snapshots only to a bearer token whose user may ``get
damonnodes/snapshot`` of its node (``guard``). ``default_token`` finds the token a
person or a pod already has: the current kubeconfig context's (``$KUBECONFIG``, else
``~/.kube/config``; a static token, a token file or an exec plugin's), else the in-cluster
ServiceAccount token. A refusal (401, 403) or an agent that could not check (503) raises
``SnapshotAccessError`` with one line naming where the token came from.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from damon_agent.core import snapshots
from damon_agent.runtime import errors, wire

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
READER_ROLE_HINT = (
    "a cluster admin grants it by binding the chart's ClusterRole RELEASE-snapshot-reader "
    "(e.g. damon-k8s-snapshot-reader) to that user"
)


@dataclass(frozen=True)
class Token:
    """A bearer token for the agent, or none (``value`` None), and where it came from."""

    value: str | None
    source: str


def token_file(path: str | Path) -> Token:
    """The token in ``path`` (surrounding whitespace dropped)."""
    try:
        value = Path(path).read_text().strip()
    except OSError as err:
        raise errors.SnapshotFetchError(
            f"--token-file {path}: cannot read it ({err.strerror or err})"
        ) from err
    if not value:
        raise errors.SnapshotFetchError(f"--token-file {path}: the file is empty")
    return Token(value, f"--token-file {path}")


def kubeconfig_token(kubeconfig: str | None = None) -> Token:
    """The bearer token of the current context of ``kubeconfig`` (default: ``$KUBECONFIG``,
    else ``~/.kube/config``); ``value`` None, with the reason in ``source``, when there is
    no kubeconfig or its context has no token (e.g. a client certificate)."""
    # Imported here: only a live report with no --token needs the package (and its
    # import time); the recording reports never do.
    import kubernetes.client  # noqa: PLC0415
    import kubernetes.config  # noqa: PLC0415

    where = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    cfg = kubernetes.client.Configuration()
    # The loaders are untyped; they only read files (and run exec plugins).
    load: Any = kubernetes.config.load_kube_config
    contexts: Any = kubernetes.config.list_kube_config_contexts
    try:
        _, current = contexts(config_file=where)
        context = str((current or {}).get("name", "?"))
        load(config_file=where, client_configuration=cfg, persist_config=False)
    except Exception as err:  # the loaders, YAML and exec plugins raise anything
        return Token(None, f"no usable kubeconfig at {where} ({_one_line(str(err))})")
    # auth_settings() holds the Authorization header under whatever name this version of
    # the package gives it (as kube.Client reads it).
    settings: Any = cfg.auth_settings()
    header = next(
        (
            str(setting.get("value") or "")
            for setting in settings.values()
            if str(setting.get("key", "")).lower() == "authorization"
        ),
        "",
    )
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return Token(
            None,
            f"kubeconfig context {context!r} ({where}) has no bearer token (a client "
            "certificate, perhaps)",
        )
    return Token(value.strip(), f"kubeconfig context {context!r}")


def default_token(kubeconfig: str | None = None) -> Token:
    """The current kubeconfig context's token, else the in-cluster ServiceAccount's."""
    found = kubeconfig_token(kubeconfig)
    if found.value is not None:
        return found
    try:
        value = IN_CLUSTER_TOKEN.read_text().strip()
    except OSError:
        value = ""
    if value:
        return Token(value, f"the in-cluster service account ({IN_CLUSTER_TOKEN})")
    return Token(
        None,
        f"no token found: {found.source}, and no in-cluster service account token; give "
        "--token-file",
    )


def fetch_entries(
    agent_url: str,
    *,
    pod: str | None = None,
    token: Token | None = None,
    timeout_s: float = 10.0,
) -> list[wire.SnapshotEntry]:
    """Every scheme's latest snapshot on the agent (only those selecting ``pod`` if given),
    asked with ``token`` (none: no Authorization header, which the agent refuses)."""
    url = _endpoint(agent_url, "/v1/snapshot", {} if pod is None else {"pod": pod})
    return wire.decode(_get_document(url, token, timeout_s), source=url)


@dataclass(frozen=True)
class HistoryPage:
    """One answer of ``/v1/snapshots``: entries oldest first, one per scheme and time."""

    node: str
    backend: str
    entries: list[wire.SnapshotEntry]
    # The agent has more snapshots after the last one here: ask again from its time.
    more: bool
    # How far back the agent's ring reaches (its --snapshot-history), in seconds.
    window_s: float


def fetch_history(
    agent_url: str,
    *,
    scheme: str | None = None,
    pod: str | None = None,
    since_us: int | None = None,
    limit: int | None = None,
    token: Token | None = None,
    timeout_s: float = 10.0,
) -> HistoryPage:
    """The snapshots the agent holds newer than ``since_us`` (its clock), of ``scheme``
    and only those selecting ``pod`` if given; the agent reads its latest first."""
    query: dict[str, str] = {}
    if scheme is not None:
        query["scheme"] = scheme
    if pod is not None:
        query["pod"] = pod
    if since_us is not None:
        query["since"] = str(since_us)
    if limit is not None:
        query["limit"] = str(limit)
    url = _endpoint(agent_url, "/v1/snapshots", query)
    document = _get_document(url, token, timeout_s)
    entries = wire.decode(document, source=url)
    assert isinstance(document, dict)  # wire.decode refused anything else
    raw = document.get("history")
    if not isinstance(raw, dict):
        raise errors.SnapshotFetchError(f"{url}: field 'history': expected an object")
    more, window_s = raw.get("more"), raw.get("window_s")
    if not isinstance(more, bool):
        raise errors.SnapshotFetchError(f"{url}: field 'history.more': expected a boolean")
    if not isinstance(window_s, int | float) or isinstance(window_s, bool):
        raise errors.SnapshotFetchError(f"{url}: field 'history.window_s': expected a number")
    return HistoryPage(
        node=str(document.get("node", "")),
        backend=str(document.get("backend", "")),
        entries=entries,
        more=more,
        window_s=float(window_s),
    )


def _endpoint(agent_url: str, path: str, query: dict[str, str]) -> str:
    base = agent_url.rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    return f"{base}{path}" + ("?" + urllib.parse.urlencode(query) if query else "")


def _get_document(url: str, token: Token | None, timeout_s: float) -> object:
    """GET ``url`` as JSON; refusals and failures raised as one-line errors."""
    headers = {"Accept": "application/json"}
    if token is not None and token.value is not None:
        headers["Authorization"] = f"Bearer {token.value}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout_s
        ) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403, 503):
            raise errors.SnapshotAccessError(_refusal(url, err, token), err.code) from err
        if err.code == 400:
            # The agent names the parameter it could not take.
            raise errors.SnapshotFetchError(_refusal(url, err, token)) from err
        if err.code == 404 and urllib.parse.urlsplit(url).path.endswith("/v1/snapshots"):
            raise errors.SnapshotFetchError(
                f"{url}: the agent has no /v1/snapshots (a damon-k8s agent older than "
                "`damonctl record`?)"
            ) from err
        raise errors.SnapshotFetchError(f"{url}: the agent answered HTTP {err.code}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise errors.SnapshotFetchError(f"{url}: cannot reach the agent ({reason})") from err
    try:
        document: object = json.loads(body)
    except json.JSONDecodeError as err:
        raise errors.SnapshotFetchError(f"{url}: the answer is not JSON ({err.msg})") from err
    return document


def _refusal(url: str, err: urllib.error.HTTPError, token: Token | None) -> str:
    """One line: the agent's status and message, and where the token came from."""
    try:
        text = err.read().decode(errors="replace")
    except OSError:
        text = ""
    try:
        message = str(json.loads(text).get("message") or "")
    except (json.JSONDecodeError, AttributeError):
        message = text[:300]
    line = f"{url}: the agent answered {err.code} {err.reason}"
    if message:
        line += f": {_one_line(message)}"
    if token is None or token.value is None:
        line += f" [{token.source if token else 'no token sent'}]"
    else:
        line += f" [token from {token.source}]"
    if err.code == 403:
        line += f"; {READER_ROLE_HINT}"
    return line


def _one_line(text: str) -> str:
    return " ".join(text.split())


def fetch_pod_snapshot(
    agent_url: str,
    pod: str,
    *,
    scheme: str | None = None,
    token: Token | None = None,
    timeout_s: float = 10.0,
) -> snapshots.Snapshot:
    """The latest snapshot covering ``pod`` ("namespace/name") on the agent at ``agent_url``."""
    if pod.count("/") != 1 or not all(pod.split("/")):
        raise errors.SnapshotFetchError(f"--pod {pod!r}: expected NAMESPACE/NAME")
    fetched = fetch_entries(agent_url, pod=pod, token=token, timeout_s=timeout_s)
    entries = [e for e in fetched if pod in e.pods]
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
