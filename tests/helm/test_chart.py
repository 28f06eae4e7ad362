"""The chart: lint, values documentation and schema, install/upgrade/uninstall with Helm's
engine against the real kube-apiserver, and what the rendered objects say."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_sdkpy
import kube_support
import pytest
import yaml

from damon_agent.cli import daemon as cli_daemon
from damon_agent.runtime import guard, handover
from damon_operator import main as operator_main

CHART = Path(__file__).resolve().parents[2] / "helm" / "damon-k8s"
REQUIRED_CAPABILITIES = {"SYS_ADMIN", "SYS_NICE", "SYS_PTRACE"}
# host path -> (mount path in the agent, read-only?)
AGENT_HOST_MOUNTS = {
    "/sys/kernel/mm/damon": ("/host/sys/kernel/mm/damon", False),
    "/sys/fs/cgroup": ("/host/sys/fs/cgroup", True),
    # Writable for the default backend (auto), whose userspace fallback writes clear_refs.
    "/proc": ("/host/proc", False),
    "/sys/devices/system/node": ("/host/sys/devices/system/node", True),
    "/sys/devices/virtual/memory_tiering": ("/host/sys/devices/virtual/memory_tiering", True),
    "/sys/kernel/tracing": ("/sys/kernel/tracing", False),
    "/sys/module": ("/host/sys/module", True),
    "/var/lib/damon-agent": ("/var/lib/damon-agent", False),
}
# With agent.takeOverDamonStat only: DAMON_STAT's parameters, to turn it off and on.
DAMON_STAT_MOUNT = ("/sys/module/damon_stat/parameters", "/host/sys/module/damon_stat/parameters")
SEVERITY_WARNING = 2  # Helm's support.WarningSev; INFO is 1


# ---------------------------------------------------------------------------------------
# Static: lint, values and schema


def _leaf_keys(values: Any, prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in _FREE_FORM:
            keys.extend(_leaf_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


# Maps whose content is Kubernetes' own structure (documented as a whole).
_FREE_FORM = {
    f"{c}.{k}"
    for c in ("operator", "agent")
    for k in ("podSecurityContext", "securityContext", "resources", "updateStrategy")
}


def _documented_keys(text: str) -> set[str]:
    """Dotted paths of the keys that a ``# --`` comment introduces in values.yaml."""
    documented: set[str] = set()
    stack: list[tuple[int, str]] = []
    pending = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = True
            continue
        if not stripped or stripped.startswith("#") or stripped.startswith("-"):
            continue
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        if pending:
            documented.add(path)
            pending = False
        stack.append((indent, key))
    return documented


def test_every_value_is_documented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    leaves = _leaf_keys(values)
    assert len(leaves) > 40
    undocumented = sorted(set(leaves) - _documented_keys(text))
    assert not undocumented, f"values without a '# --' comment: {undocumented}"
    for path in leaves:
        node = schema
        for part in path.split("."):
            assert part in node.get("properties", {}), f"{path}: not in values.schema.json"
            node = node["properties"][part]
        assert node.get("description"), f"{path}: no description in values.schema.json"


@pytest.mark.kube
def test_helm_lint_passes(helm: Any) -> None:
    result = helm.lint()
    assert result["TotalChartsLinted"] == 1
    assert not result["Errors"], result
    worse_than_info = [m for m in result["Messages"] if m["Severity"] >= SEVERITY_WARNING]
    assert not worse_than_info, worse_than_info


@pytest.mark.kube
def test_helm_lint_catches_a_broken_template(helm: Any, tmp_path: Path) -> None:
    broken = tmp_path / "damon-k8s"
    broken.mkdir()
    for item in ("Chart.yaml", "values.yaml", "values.schema.json"):
        (broken / item).write_text((CHART / item).read_text())
    (broken / "templates").mkdir()
    (broken / "templates" / "bad.yaml").write_text("{{ .Values.agent.enable | nosuchfunc }}\n")
    result = helm.lint(broken)
    # helm-sdkpy loses the error's text in JSON; the severity and the path remain.
    assert result["Errors"]
    assert [m["Path"] for m in result["Messages"] if m["Severity"] >= SEVERITY_WARNING] == [
        "templates/"
    ]


# ---------------------------------------------------------------------------------------
# Installed into the real apiserver


def _by_kind(release: Any, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in release.manifest() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def _live(kubectl: Any, release: Any, kind: str, name: str) -> dict[str, Any]:
    where = [] if kind in {"clusterrole", "clusterrolebinding", "clusterkopfpeering"} else [
        "-n",
        release.namespace,
    ]  # fmt: skip
    loaded: dict[str, Any] = kubectl.json(kind, name, *where)
    return loaded


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args, failing on an unknown variable."""

    def one(match: re.Match[str]) -> str:
        assert match[1] in env, f"args refer to $({match[1]}), which the container lacks"
        return env[match[1]]

    return [re.sub(r"\$\(([A-Z_][A-Z0-9_]*)\)", one, arg) for arg in args]


def _container_env(kubectl: Any, release: Any, container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        cm = _live(kubectl, release, "configmap", source["configMapRef"]["name"])
        env.update(cm["data"])
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", "from-field")
    return env


@pytest.mark.kube
def test_install_creates_least_privileged_components(kubectl: Any, release: Any) -> None:
    rel = release()
    assert rel.installed["info"]["status"] == "deployed"
    assert "What to do next" in rel.installed["info"]["notes"]

    ds = _live(kubectl, rel, "daemonset", rel.agent)
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod.get("hostNetwork", False) is False
    assert pod["serviceAccountName"] == rel.agent
    (agent,) = pod["containers"]
    security = agent["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == REQUIRED_CAPABILITIES
    assert pod["securityContext"]["runAsUser"] == 0

    volumes = {v["name"]: v for v in pod["volumes"]}
    host_paths = {v["hostPath"]["path"]: name for name, v in volumes.items() if "hostPath" in v}
    assert set(host_paths) == set(AGENT_HOST_MOUNTS), "host paths must be exactly the narrow set"
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    for host_path, (mount_path, read_only) in AGENT_HOST_MOUNTS.items():
        mount = mounts[host_paths[host_path]]
        assert mount["mountPath"] == mount_path, host_path
        assert mount.get("readOnly", False) is read_only, f"{host_path}: readOnly {read_only}"
    assert "/sys" not in host_paths and "/" not in host_paths

    # The args reach the agent's real CLI with every $(VAR) defined.
    fields = {"NODE_NAME": "n1", "POD_NAMESPACE": rel.namespace}  # the downward API's
    args = _expand(agent["args"], _container_env(kubectl, rel, agent) | fields)
    assert args[0] == "daemon" and agent["command"] == ["damon-agent"]
    config = cli_daemon.parse_args(args[1:])
    assert config.node_name == "n1"
    assert (str(config.roots.proc), str(config.roots.sys)) == ("/host/proc", "/host/sys")
    assert config.listen_port == agent["ports"][0]["containerPort"]
    assert not config.take_over_damon_stat  # DAMON_STAT is never touched by default
    assert not config.metrics_auth  # Prometheus keeps scraping without a token
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = agent["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] == 300
    # A replaced pod hands its kdamonds to the successor, while its own DaemonSet lasts.
    assert config.owner_daemonset == handover.Owner(rel.namespace, rel.agent)

    deploy = _live(kubectl, rel, "deployment", rel.operator)
    op_pod = deploy["spec"]["template"]["spec"]
    assert op_pod["serviceAccountName"] == rel.operator
    assert op_pod["securityContext"]["runAsNonRoot"] is True
    assert op_pod["securityContext"]["runAsUser"] != 0
    assert not op_pod.get("hostPID") and not any("hostPath" in v for v in op_pod["volumes"])
    (operator,) = op_pod["containers"]
    assert operator["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # A slow node starts the image in minutes: the liveness probe waits for the startup's.
    op_startup = operator["startupProbe"]
    assert op_startup["httpGet"]["path"] == operator["livenessProbe"]["httpGet"]["path"]
    assert op_startup["periodSeconds"] * op_startup["failureThreshold"] == 300
    op_args = operator_main.parser().parse_args(
        _expand(operator["args"], _container_env(kubectl, rel, operator))
    )
    assert op_args.peering == rel.operator and not op_args.standalone
    assert op_args.heartbeat_timeout == 60.0
    assert _live(kubectl, rel, "clusterkopfpeering", rel.operator)["metadata"]["name"]

    for workload in (ds, deploy):
        checksum = workload["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        assert re.fullmatch(r"[0-9a-f]{64}", checksum)
    for name in (rel.agent, rel.operator):
        assert _live(kubectl, rel, "serviceaccount", name)
        role = _live(kubectl, rel, "clusterrole", name)
        assert role["rules"], name
        binding = _live(kubectl, rel, "clusterrolebinding", name)
        assert binding["roleRef"]["name"] == name
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": name, "namespace": rel.namespace}
        ]
    # The agent asks the API server who a token is and what it may (its endpoints' guard).
    agent_rules = _live(kubectl, rel, "clusterrole", rel.agent)["rules"]
    for group, resource in (
        ("authentication.k8s.io", "tokenreviews"),
        ("authorization.k8s.io", "subjectaccessreviews"),
    ):
        assert {"apiGroups": [group], "resources": [resource], "verbs": ["create"]} in agent_rules
    # The readers' roles hold exactly the rule the agent's guard asks about; unbound.
    for access in (guard.snapshot_access("n1"), guard.metrics_access("n1")):
        name = f"{rel.fullname}-{access.subresource}-reader"
        assert _live(kubectl, rel, "clusterrole", name)["rules"] == [
            {
                "apiGroups": [access.group],
                "resources": [f"{access.resource}/{access.subresource}"],
                "verbs": [access.verb],
            }
        ]
        absent = kubectl("get", "clusterrolebinding", name, check=False)
        assert "NotFound" in absent.stderr
    assert not [o for o in rel.manifest() if o["kind"] == "NetworkPolicy"]


@pytest.mark.kube
def test_damon_stat_takeover_is_one_flag_and_one_narrow_writable_mount(
    kubectl: Any, release: Any
) -> None:
    rel = release({"agent": {"takeOverDamonStat": True}})
    pod = _live(kubectl, rel, "daemonset", rel.agent)["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    args = _expand(agent["args"], _container_env(kubectl, rel, agent) | {"NODE_NAME": "n1"})
    assert cli_daemon.parse_args(args[1:]).take_over_damon_stat
    host_paths = {v["hostPath"]["path"]: v["name"] for v in pod["volumes"] if "hostPath" in v}
    assert set(host_paths) == set(AGENT_HOST_MOUNTS) | {DAMON_STAT_MOUNT[0]}
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    writable = mounts[host_paths[DAMON_STAT_MOUNT[0]]]
    assert writable["mountPath"] == DAMON_STAT_MOUNT[1]
    assert writable.get("readOnly", False) is False
    assert mounts[host_paths["/sys/module"]]["readOnly"] is True
    with pytest.raises(helm_sdkpy.HelmError) as raised:
        release({"agent": {"takeOverDamonStat": "yes"}})
    assert "takeOverDamonStat" in str(raised.value)


@pytest.mark.kube
def test_backend_choice_reaches_the_agent_and_sets_what_proc_may_do(
    kubectl: Any, release: Any
) -> None:
    for backend, proc_read_only in (("kernel", True), ("userspace", False)):
        rel = release({"agent": {"config": {"backend": backend}}})
        pod = _live(kubectl, rel, "daemonset", rel.agent)["spec"]["template"]["spec"]
        (agent,) = pod["containers"]
        args = _expand(agent["args"], _container_env(kubectl, rel, agent) | {"NODE_NAME": "n1"})
        assert cli_daemon.parse_args(args[1:]).backend == backend
        proc = next(
            v["name"] for v in pod["volumes"] if v.get("hostPath", {}).get("path") == "/proc"
        )
        mount = next(m for m in agent["volumeMounts"] if m["name"] == proc)
        assert mount.get("readOnly", False) is proc_read_only, backend
    with pytest.raises(helm_sdkpy.HelmError) as raised:
        release({"agent": {"config": {"backend": "sim"}}})
    assert "backend" in str(raised.value)


@pytest.mark.kube
def test_operator_instance_reaches_the_operator(kubectl: Any, release: Any) -> None:
    rel = release({"operator": {"instance": "blue"}})
    pod = _live(kubectl, rel, "deployment", rel.operator)["spec"]["template"]["spec"]
    (operator,) = pod["containers"]
    args = _expand(operator["args"], _container_env(kubectl, rel, operator))
    assert operator_main.parser().parse_args(args).instance == "blue"
    default = release()
    pod = _live(kubectl, default, "deployment", default.operator)["spec"]["template"]["spec"]
    assert not any(a.startswith("--instance") for a in pod["containers"][0]["args"])
    with pytest.raises(helm_sdkpy.HelmError) as raised:
        release({"operator": {"instance": "not a label"}})
    assert "instance" in str(raised.value)


@pytest.mark.kube
def test_schema_rejects_bad_values_naming_the_field(release: Any) -> None:
    with pytest.raises(helm_sdkpy.HelmError) as raised:
        release({"agent": {"config": {"tick": 500}}})
    assert "tick" in str(raised.value)
    with pytest.raises(helm_sdkpy.HelmError) as raised:
        release({"agent": {"hostPID": False}})
    assert "hostPID" in str(raised.value)
    with pytest.raises(helm_sdkpy.HelmError) as raised:
        release({"operator": {"releaseFinalizersDeadlineSeconds": 5}})
    assert "releaseFinalizersDeadlineSeconds" in str(raised.value)


@pytest.mark.kube
def test_a_surging_agent_rollout_is_refused(release: Any) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}
    with pytest.raises(helm_sdkpy.HelmError) as raised:
        release({"agent": {"updateStrategy": strategy}})
    assert "maxSurge must be 0" in str(raised.value)


@pytest.mark.kube
def test_more_replicas_without_peering_is_refused(release: Any) -> None:
    with pytest.raises(helm_sdkpy.HelmError) as raised:
        release({"operator": {"replicas": 2, "peering": {"enable": False}}})
    assert "peering" in str(raised.value)


def _checksum(kubectl: Any, rel: Any, kind: str, name: str) -> str:
    live = _live(kubectl, rel, kind, name)
    return str(live["spec"]["template"]["metadata"]["annotations"]["checksum/config"])


@pytest.mark.kube
def test_upgrade_rolls_only_what_changed_and_drops_disabled_components(
    kubectl: Any, release: Any
) -> None:
    rel = release()
    agent_sum = _checksum(kubectl, rel, "daemonset", rel.agent)
    operator_sum = _checksum(kubectl, rel, "deployment", rel.operator)

    rel.upgrade({"agent": {"config": {"tick": 5}}})
    assert rel.installed["version"] == 2
    assert _checksum(kubectl, rel, "daemonset", rel.agent) != agent_sum
    assert _checksum(kubectl, rel, "deployment", rel.operator) == operator_sum
    assert _live(kubectl, rel, "configmap", rel.agent)["data"]["DAMON_AGENT_TICK"] == "5"

    rel.upgrade({"agent": {"config": {"tick": 5}}, "operator": {"enable": False}})
    for kind, name in [
        ("deployment", rel.operator),
        ("serviceaccount", rel.operator),
        ("configmap", rel.operator),
        ("clusterrole", rel.operator),
        ("clusterrolebinding", rel.operator),
        ("clusterkopfpeering", rel.operator),
    ]:
        where = [] if kind.startswith("cluster") else ["-n", rel.namespace]
        gone = kubectl("get", kind, name, *where, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, f"{kind}/{name} still exists"
    assert _live(kubectl, rel, "daemonset", rel.agent)


@pytest.mark.kube
def test_optional_monitors_select_the_agents(kubectl: Any, release: Any) -> None:
    kube_support.install_monitoring_crds(kubectl)
    rel = release({"metrics": {"podMonitor": {"enable": True}, "serviceMonitor": {"enable": True}}})
    agent_labels = _live(kubectl, rel, "daemonset", rel.agent)["spec"]["template"]["metadata"][
        "labels"
    ]
    pod_monitor = _live(kubectl, rel, "podmonitor", rel.agent)
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    service_monitor = _live(kubectl, rel, "servicemonitor", rel.agent)
    service = _live(kubectl, rel, "service", rel.agent)
    assert service["spec"]["clusterIP"] == "None"
    for selector in (
        pod_monitor["spec"]["selector"]["matchLabels"],
        service_monitor["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"],
    ):
        assert selector.items() <= agent_labels.items()
        assert selector["app.kubernetes.io/component"] == "agent"

    rel.upgrade({})
    gone = kubectl("get", "podmonitor", rel.agent, "-n", rel.namespace, check=False)
    assert "NotFound" in gone.stderr


@pytest.mark.kube
def test_metrics_auth_reaches_the_agent_and_prometheus_sends_its_token(
    kubectl: Any, release: Any
) -> None:
    kube_support.install_monitoring_crds(kubectl)
    prometheus = {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}
    rel = release(
        {
            "agent": {"auth": {"metrics": True, "metricsReaders": [prometheus]}},
            "metrics": {"serviceMonitor": {"enable": True}},
        }
    )
    pod = _live(kubectl, rel, "daemonset", rel.agent)["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    args = _expand(agent["args"], _container_env(kubectl, rel, agent) | {"NODE_NAME": "n1"})
    assert cli_daemon.parse_args(args[1:]).metrics_auth
    # The probes stay unauthenticated: the kubelet sends no token.
    assert {
        agent["livenessProbe"]["httpGet"]["path"],
        agent["readinessProbe"]["httpGet"]["path"],
    } == {
        "/healthz",
        "/readyz",
    }
    (endpoint,) = _live(kubectl, rel, "servicemonitor", rel.agent)["spec"]["endpoints"]
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    binding = _live(kubectl, rel, "clusterrolebinding", f"{rel.fullname}-metrics-reader")
    assert binding["roleRef"]["name"] == f"{rel.fullname}-metrics-reader"
    assert binding["subjects"] == [prometheus]
    assert "metrics-reader" in rel.installed["info"]["notes"]
    # A PodMonitor cannot send Prometheus' own token: refused, saying what to use.
    with pytest.raises(helm_sdkpy.HelmError) as raised:
        release({"agent": {"auth": {"metrics": True}}, "metrics": {"podMonitor": {"enable": True}}})
    assert "serviceMonitor" in str(raised.value)


@pytest.mark.kube
def test_snapshot_readers_are_bound_from_the_values(kubectl: Any, release: Any) -> None:
    readers = [
        {"kind": "Group", "name": "sre"},
        {"kind": "User", "name": "jane@example.com"},
        {"kind": "ServiceAccount", "name": "dashboards", "namespace": "tools"},
    ]
    rel = release({"agent": {"auth": {"snapshotReaders": readers}}})
    name = f"{rel.fullname}-snapshot-reader"
    binding = _live(kubectl, rel, "clusterrolebinding", name)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": name,
    }
    rbac = "rbac.authorization.k8s.io"
    assert binding["subjects"] == [
        {"kind": "Group", "name": "sre", "apiGroup": rbac},
        {"kind": "User", "name": "jane@example.com", "apiGroup": rbac},
        readers[2],
    ]
    for bad, words in (
        ({"kind": "ServiceAccount", "name": "x"}, "needs its namespace"),
        ({"kind": "Robot", "name": "x"}, "kind"),
    ):
        with pytest.raises(helm_sdkpy.HelmError) as raised:
            release({"agent": {"auth": {"snapshotReaders": [bad]}}})
        assert words in str(raised.value), str(raised.value)


@pytest.mark.kube
def test_network_policy_opens_only_the_agent_port(kubectl: Any, release: Any) -> None:
    prometheus = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    rel = release(
        {"agent": {"port": 9100, "networkPolicy": {"enable": True, "from": [prometheus]}}}
    )
    policy = _live(kubectl, rel, "networkpolicy", rel.agent)["spec"]
    pod = _live(kubectl, rel, "daemonset", rel.agent)["spec"]["template"]["metadata"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [
        {"ports": [{"port": 9100, "protocol": "TCP"}], "from": [prometheus]}
    ]
    # Without peers: the port from anywhere, nothing else.
    rel.upgrade({"agent": {"networkPolicy": {"enable": True}}})
    policy = _live(kubectl, rel, "networkpolicy", rel.agent)["spec"]
    assert policy["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    rel.upgrade({})
    gone = kubectl("get", "networkpolicy", rel.agent, "-n", rel.namespace, check=False)
    assert "NotFound" in gone.stderr


def _release_objects(kubectl: Any, rel: Any) -> list[str]:
    selector = f"app.kubernetes.io/instance={rel.name}"
    namespaced = kubectl(
        "get",
        "deployment,daemonset,configmap,serviceaccount,service,secret",
        "-n",
        rel.namespace,
        "-l",
        selector,
        "-o",
        "name",
    ).stdout.split()
    cluster = kubectl(
        "get", "clusterrole,clusterrolebinding,clusterkopfpeering", "-l", selector, "-o", "name"
    ).stdout.split()
    helm_secrets = kubectl(
        "get", "secret", "-n", rel.namespace, "-l", f"owner=helm,name={rel.name}", "-o", "name"
    ).stdout.split()
    return namespaced + cluster + helm_secrets


@pytest.mark.kube
def test_uninstall_leaves_only_the_crds(kubectl: Any, helm: Any, release: Any) -> None:
    rel = release()
    assert [r["name"] for r in helm.releases(rel.namespace)] == [rel.name]
    before = _release_objects(kubectl, rel)
    # 2 SA, 2 CM, DS, Deploy, 4 CR (2 readers), 2 CRB, peering, secret
    assert len(before) >= 13, before
    rel.uninstall()
    assert _release_objects(kubectl, rel) == []
    assert [r for r in helm.releases(rel.namespace) if r.get("name") == rel.name] == []
    crds = kubectl("get", "crd", "-o", "name").stdout.split()
    for crd in (
        "damonschemes.damon.io",
        "clusterdamonschemes.damon.io",
        "damonnodes.damon.io",
        "clusterkopfpeerings.kopf.dev",
    ):
        assert f"customresourcedefinition.apiextensions.k8s.io/{crd}" in crds


@pytest.mark.kube
def test_hand_over_off_drops_the_flag_and_the_daemonset_read(kubectl: Any, release: Any) -> None:
    rel = release({"agent": {"handOver": False}})
    pod = _live(kubectl, rel, "daemonset", rel.agent)["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    fields = {"NODE_NAME": "n1", "POD_NAMESPACE": rel.namespace}
    args = _expand(agent["args"], _container_env(kubectl, rel, agent) | fields)
    assert cli_daemon.parse_args(args[1:]).owner_daemonset is None
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rel.manifest()}
    assert ("Role", f"{rel.agent}-handover") not in kinds


def _hooks(installed: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The release's hook objects by (kind, name), parsed."""
    parsed = (yaml.safe_load(hook["manifest"]) for hook in installed.get("hooks") or [])
    return {(o["kind"], o["metadata"]["name"]): o for o in parsed}


@pytest.mark.kube
def test_uninstall_hook_releases_the_operators_finalizers(release: Any) -> None:
    from damon_operator import release as operator_release

    # The release fixture turns the hook off by default (no kubelet: the Job would never
    # finish and the uninstall would wait for it); here it is on, then upgraded away.
    rel = release({"operator": {"releaseFinalizersOnUninstall": True, "instance": "blue"}})
    hooks = _hooks(rel.installed)
    name = f"{rel.fullname}-release-finalizers"
    assert set(hooks) == {("Job", name), ("Role", name), ("RoleBinding", name)}
    job = hooks[("Job", name)]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-delete"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert job["metadata"]["namespace"] == rel.namespace
    assert job["spec"]["backoffLimit"] <= 3
    # Within Helm's default uninstall timeout (5m), which waits for the hook.
    assert 60 <= job["spec"]["activeDeadlineSeconds"] <= 300
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == rel.operator  # still there while pre-delete runs
    values = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]
    assert pod["securityContext"] == values["podSecurityContext"]
    (container,) = pod["containers"]
    assert container["securityContext"] == values["securityContext"]
    assert container["resources"] == values["resources"]
    assert container["command"] == ["damon-operator"]
    assert container["args"][0] == "release-finalizers"
    args = operator_release.parser().parse_args(container["args"][1:])
    assert args.instance == "blue"
    assert args.stop_deployment == (rel.namespace, rel.operator)
    # The hook's Role lets it scale only the operator's Deployment, and list the pods of its
    # own namespace (until the operator's are gone), bound to its account.
    role = hooks[("Role", name)]
    by_name = [rule for rule in role["rules"] if "resourceNames" in rule]
    assert {n for rule in by_name for n in rule["resourceNames"]} == {rel.operator}
    assert {r for rule in by_name for r in rule["resources"]} == {
        "deployments",
        "deployments/scale",
    }
    unnamed = [rule for rule in role["rules"] if "resourceNames" not in rule]
    assert unnamed == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    binding = hooks[("RoleBinding", name)]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": rel.operator, "namespace": rel.namespace}
    ]
    for hook in hooks.values():  # all are pre-delete only
        assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    # Without operator.instance: no --instance.
    default = release({"operator": {"releaseFinalizersOnUninstall": True}})
    (container,) = _hooks(default.installed)[("Job", f"{default.fullname}-release-finalizers")][
        "spec"
    ]["template"]["spec"]["containers"]
    assert operator_release.parser().parse_args(container["args"][1:]).instance is None
    # A slow node's hook gets longer (the uninstall's --timeout then must allow as much).
    slow = {"releaseFinalizersOnUninstall": True, "releaseFinalizersDeadlineSeconds": 900}
    job = _hooks(rel.upgrade({"operator": slow}))[("Job", name)]
    assert job["spec"]["activeDeadlineSeconds"] == 900
    # Off: no hook at all (and the uninstall of the fixture does not wait for one).
    assert _hooks(rel.upgrade({"operator": {"releaseFinalizersOnUninstall": False}})) == {}
    assert _hooks(default.upgrade({"operator": {"releaseFinalizersOnUninstall": False}})) == {}
    no_operator = release({"operator": {"enable": False, "releaseFinalizersOnUninstall": True}})
    assert _hooks(no_operator.installed) == {}
