"""The chart's optional Grafana dashboard and PrometheusRule: every PromQL expression in
them names only metrics that really exist.

"Really" is the real agent: ``damon-agent daemon --backend sim`` runs against the test
control plane and its ``/metrics`` is scraped. Its collector yields every family on every
scrape, with or without samples, so the exposition's ``# TYPE`` lines name all it can
export; the names a query can use are the series names, i.e. with the suffixes the
family's type adds (``_total`` of a counter; ``_bucket``, ``_sum``, ``_count`` of a
histogram). The operator serves no metrics (kopf's /healthz and the webhooks only), so the
agent's are all there is; a test fails once the operator starts exporting any, so that its
names join the check. Besides the agents' names, the rules may use ``up``, the series
Prometheus itself writes for each scrape.

Names are taken out of PromQL by ``promql_metric_names``, a small tokenizer (tested here
on its own) rather than a regex: it skips string literals, label matchers in ``{}``,
durations and subquery ranges in ``[]``, function and aggregation names (an identifier
followed by ``(``), keywords with the label lists they take (``by``, ``without``, ``on``,
``ignoring``, ``group_left``, ``group_right``), numbers and Grafana's ``$variables``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kube_support
import prometheus_client
import pytest
import yaml
from kube_support import Kubectl

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "damon-k8s"
DASHBOARD = CHART / "dashboards" / "damon-k8s.json"
SIM_WORKLOAD = REPO / "examples" / "workloads" / "hot-cold.yaml"
DATASOURCE = "${datasource}"
# Written by Prometheus for every target, whatever it exports.
PROMETHEUS_OWN = frozenset({"up"})


# ---------------------------------------------------------------------------------------
# PromQL -> metric names

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan"}
    | {"by", "without", "on", "ignoring", "group_left", "group_right"}
)
# Keywords followed by a parenthesised list of label names (optional for group_*).
_TAKE_LABEL_LIST = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?[A-Za-z0-9_]*")
_GRAFANA_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)")
# Grafana's query-variable form: label_values(SELECTOR, LABEL) or label_values(LABEL).
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<selector>.*),)?\s*[A-Za-z_]\w*\s*\)\s*$")


class PromqlSyntaxError(ValueError):
    pass


def _skip_string(text: str, start: int) -> int:
    """Index after the string literal opening at ``start``."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise PromqlSyntaxError(f"unterminated string at {start}: {text!r}")


def _skip_group(text: str, start: int, close: str) -> int:
    """Index after the group opening at ``start`` (strings inside may hold ``close``)."""
    i = start + 1
    while i < len(text):
        if text[i] in "\"'`":
            i = _skip_string(text, i)
            continue
        if text[i] == close:
            return i + 1
        i += 1
    raise PromqlSyntaxError(f"unclosed {text[start]!r} at {start}: {text!r}")


def _next_significant(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _is_grouping_modifier(text: str, i: int) -> bool:
    word = _IDENTIFIER.match(text, i)
    if not word or word[0].lower() not in {"by", "without"}:
        return False
    after = _next_significant(text, word.end())
    return after < len(text) and text[after] == "("


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (Grafana's label_values form included)."""
    grafana = _LABEL_VALUES.match(expr)
    if grafana:
        expr = grafana["selector"] or ""
    names: set[str] = set()
    depth = 0  # of parentheses, so that an unbalanced expression is refused
    i = 0
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
        elif char in "()":
            depth += 1 if char == "(" else -1
            if depth < 0:
                raise PromqlSyntaxError(f"unopened ')' at {i}: {expr!r}")
            i += 1
        elif char == "#":
            newline = expr.find("\n", i)
            i = len(expr) if newline < 0 else newline
        elif char in "\"'`":
            i = _skip_string(expr, i)
        elif char == "{":
            i = _skip_group(expr, i, "}")
        elif char == "[":
            i = _skip_group(expr, i, "]")
        elif char == "$":
            variable = _GRAFANA_VARIABLE.match(expr, i)
            if not variable:
                raise PromqlSyntaxError(f"stray '$' at {i}: {expr!r}")
            i = variable.end()
        elif char.isdigit() or (char == "." and expr[i + 1 : i + 2].isdigit()):
            number = _NUMBER.match(expr, i)
            assert number is not None  # a digit always starts one
            i = number.end()
        elif identifier := _IDENTIFIER.match(expr, i):
            word = identifier[0]
            i = _next_significant(expr, identifier.end())
            if word.lower() in _TAKE_LABEL_LIST:
                if i < len(expr) and expr[i] == "(":
                    i = _skip_group(expr, i, ")")
            elif word.lower() in _KEYWORDS:
                pass
            elif i < len(expr) and expr[i] == "(":
                pass  # a function or an aggregation: its arguments are read next
            elif _is_grouping_modifier(expr, i):
                pass  # an aggregation with its modifier first: `sum by (a) (x)`
            else:
                names.add(word)
        else:
            i += 1  # operators, commas
    if depth:
        raise PromqlSyntaxError(f"unclosed '(': {expr!r}")
    return names


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        (
            'sum by (node, pod) (rate(damon_pod_memory_refaults_total{pod=~"$namespace/.+"}'
            "[$__rate_interval]))",
            {"damon_pod_memory_refaults_total"},
        ),
        (
            "damon_agent_ready * on (instance) group_left (node) "
            'max by (instance, node) (damon_agent_info{node=~"$node"}) == 0',
            {"damon_agent_ready", "damon_agent_info"},
        ),
        (
            # Aggregation modifiers after the argument, `without`, ignoring, bool,
            # offset with a duration, a subquery range, scientific notation.
            "sum(a_total) without (job) > ignoring (le) group_right b_bytes offset 5m "
            "or max_over_time(c_ratio[1h:5m]) > bool 1.5e+06",
            {"a_total", "b_bytes", "c_ratio"},
        ),
        (
            # Strings hold what looks like names and closing braces; a comment too.
            'label_replace(x_seconds{a="}{y_total"}, "dst", "$1", "src", "(z_bytes)") '
            "# not_a_metric\n or vector(0) unless on () absent(w_info)",
            {"x_seconds", "w_info"},
        ),
        (
            'label_values(damon_agent_selected_pods{scheme=~"a/.*"}, scheme)',
            {"damon_agent_selected_pods"},
        ),
        ("label_values(node)", set()),
        ("topk(15, max by (node) (g))", {"g"}),
    ],
)
def test_promql_metric_names_skip_everything_but_selectors(expr: str, expected: set[str]) -> None:
    assert promql_metric_names(expr) == expected


def test_promql_metric_names_refuses_what_it_cannot_read() -> None:
    for broken in ('x{a="b}', "rate(x[5m)", "'open", "sum(rate(x[5m])", "x)"):
        with pytest.raises(PromqlSyntaxError):
            promql_metric_names(broken)


# ---------------------------------------------------------------------------------------
# Exposition -> series names

_SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def exported_series_names(exposition: str) -> set[str]:
    """Names a query can select: every family's series names, with or without samples."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            if kind == "counter" and family.endswith("_total"):
                family = family.removesuffix("_total")
            names.update(family + suffix for suffix in _SERIES_SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_exported_series_names_add_each_types_suffixes() -> None:
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("a_things", "", registry=registry).inc()
    prometheus_client.Histogram("b_seconds", "", registry=registry)
    prometheus_client.Summary("c_seconds", "", registry=registry)
    prometheus_client.Gauge("d_bytes", "", ["pod"], registry=registry)  # no sample at all
    names = exported_series_names(prometheus_client.generate_latest(registry).decode())
    expected = {"a_things_total", "b_seconds_bucket", "b_seconds_sum", "b_seconds_count"}
    expected |= {"c_seconds", "c_seconds_sum", "c_seconds_count", "d_bytes"}
    assert expected <= names
    assert "a_things" not in names and "b_seconds" not in names


# ---------------------------------------------------------------------------------------
# The dashboard file itself


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _query_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])  # a collapsed row holds its panels
        else:
            yield panel


def dashboard_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression of the dashboard, by where it is: panels and variables."""
    queries = {}
    for panel in _query_panels(dashboard):
        for target in panel["targets"]:
            queries[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries[f"variable {variable['name']}"] = (
                query["query"] if isinstance(query, dict) else query
            )
    return queries


def test_dashboard_is_valid_json_and_every_query_uses_the_datasource_variable() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("node", "namespace", "scheme"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == DATASOURCE, name
    panels = list(_query_panels(dashboard))
    assert len(panels) >= 20
    nested = [p for row in dashboard["panels"] for p in row.get("panels", [])]
    ids = [p["id"] for p in [*dashboard["panels"], *nested]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        where = f"panel {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, where
        assert panel["targets"], f"{where} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, where
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, where
    # The node variable reaches every panel: each query filters by it (through the info
    # metric's node label, as the agents' own series carry none).
    for where, expr in dashboard_queries(dashboard).items():
        if where.startswith("panel"):
            assert 'node=~"$node"' in expr, f"{where} ignores $node: {expr}"


# ---------------------------------------------------------------------------------------
# Rendered by Helm's engine, checked against a real agent's /metrics


@pytest.fixture(scope="module")
def monitoring_crds(helm_kubeconfig: Path) -> None:
    kube_support.install_monitoring_crds(Kubectl(helm_kubeconfig))


def _observability_values(**rules: Any) -> dict[str, Any]:
    return {
        # No webhook: the release would register it with the shared apiserver for nothing.
        "webhook": {"enable": False},
        "metrics": {
            "podMonitor": {"enable": True},
            "dashboard": {"enable": True},
            "prometheusRule": {"enable": True, **rules},
        },
    }


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} rendered"
    return found[0]


def _dashboard_config_map(objects: list[dict[str, Any]]) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == "ConfigMap" and "damon-k8s.json" in o["data"]]
    assert len(found) == 1, f"{len(found)} dashboard ConfigMaps rendered"
    return found[0]


def _alerts(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rule = _one(objects, "PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def agent_exposition(helm_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The /metrics text of a real agent daemon (sim backend) on a node of its own."""
    executable = Path(sys.executable).parent / "damon-agent"
    if not executable.exists():
        pytest.fail(f"{executable} is missing: install the project (scripts/bootstrap.sh)")
    work = tmp_path_factory.mktemp("agent")
    port = _free_port()
    node = f"obs-{uuid.uuid4().hex[:6]}"
    command = [
        str(executable), "daemon",
        "--kubeconfig", str(helm_kubeconfig),
        "--node-name", node,
        "--backend", "sim",
        "--sim-workload", str(SIM_WORKLOAD),
        "--listen", f"127.0.0.1:{port}",
        "--state-dir", str(work / "state"),
        "--tick", "1",
    ]  # fmt: skip
    log_path = work / "agent.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"the agent exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                code, text, _ = kube_support.http_get(f"http://127.0.0.1:{port}/metrics")
                if code == 200:
                    return text
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the agent served no /metrics in 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_the_operator_exports_no_metrics_of_its_own() -> None:
    # If it ever does, its names must join the exported set the queries are checked against.
    sources = sorted((REPO / "operator" / "damon_operator").rglob("*.py"))
    assert sources
    users = [p.name for p in sources if "prometheus_client" in p.read_text()]
    assert not users, f"the operator now exports metrics ({users}): scrape them here too"


@pytest.mark.kube
def test_every_query_names_only_metrics_the_agent_exports(
    agent_exposition: str, monitoring_crds: None, release: Callable[..., Any]
) -> None:
    exported = exported_series_names(agent_exposition) | PROMETHEUS_OWN
    # The agent's own families, as the daemon serves them.
    assert {"damon_agent_info", "damon_agent_ready", "damon_scheme_applied_bytes_total"} <= exported
    # The queries name each node through damon_agent_info's node label, joined on the
    # scrape's instance: the agent must export that label and must not export instance.
    info = [line for line in agent_exposition.splitlines() if line.startswith("damon_agent_info{")]
    assert info and 'node="' in info[0], info
    assert not re.search(r"[{,]instance=", agent_exposition)

    objects = release(_observability_values()).manifest()
    rendered = json.loads(_dashboard_config_map(objects)["data"]["damon-k8s.json"])
    assert rendered == _dashboard()

    queries = dashboard_queries(rendered)
    queries |= {f"alert {name}": rule["expr"] for name, rule in _alerts(objects).items()}
    assert len(queries) > 30
    unknown = {}
    for where, expr in queries.items():
        names = promql_metric_names(expr)
        assert names, f"{where} selects no metric: {expr}"
        if names - exported:
            unknown[where] = sorted(names - exported)
    assert not unknown, f"queries name metrics the agent does not export: {unknown}"


def test_dashboard_and_rules_are_off_by_default() -> None:
    metrics = yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]
    assert metrics["dashboard"]["enable"] is False
    assert metrics["prometheusRule"]["enable"] is False


@pytest.mark.kube
def test_alerts_say_what_happened_and_what_to_do_and_the_default_job_matches_the_monitors(
    monitoring_crds: None, release: Callable[..., Any]
) -> None:
    rel = release(_observability_values())
    objects = rel.manifest()
    alerts = _alerts(objects)
    assert set(alerts) >= {
        "DamonAgentDown",
        "DamonNodeNotReady",
        "DamonSchemeDegraded",
        "DamonStatusNotWritten",
        "DamonQuotaCollapsed",
        "DamonMemoryPressureAboveTarget",
        "DamonKdamondCpuHigh",
        "DamonFeedbackStalled",
        "DamonDyingCgroupsGrowing",
    }
    for name, rule in alerts.items():
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"].endswith(f"docs/observability.md#{name.lower()}"), name
        # Prometheus' templates survive Helm's: the alert names its node or target.
        assert "{{ $labels." in annotations["summary"], name
        assert rule["labels"]["severity"] == "warning", name
    # Each anchor the alerts point at exists in the document.
    document = (REPO / "docs" / "observability.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", document, re.M)
    }
    missing = {n for n in alerts if n.lower() not in headings}
    assert not missing, f"docs/observability.md has no section for {sorted(missing)}"

    # DamonAgentDown's default job selects what the chart's PodMonitor and ServiceMonitor
    # scrape: Prometheus names the job NAMESPACE/PODMONITOR, and SERVICE respectively.
    match = re.search(r'job=~"([^"]+)"', alerts["DamonAgentDown"]["expr"])
    assert match, alerts["DamonAgentDown"]["expr"]
    pod_monitor = _one(objects, "PodMonitor")["metadata"]
    assert re.fullmatch(match[1], f"{pod_monitor['namespace']}/{pod_monitor['name']}")
    assert re.fullmatch(match[1], rel.agent)
    assert not re.fullmatch(match[1], f"{rel.namespace}/{rel.operator}")
    # The agents' pod series keep their pod label (NS/NAME) over the scrape's own.
    assert _one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True


@pytest.mark.kube
def test_thresholds_durations_and_labels_come_from_values(
    monitoring_crds: None, release: Callable[..., Any]
) -> None:
    rules = {
        "agentJob": "prometheus/damon-agents",
        "alertLabels": {"team": "memory"},
        "labels": {"release": "kube-prometheus"},
        "agentDown": {"for": "3m", "severity": "critical"},
        "nodeNotReady": {"for": "11m"},
        "schemeDegraded": {"for": "17m"},
        "statusNotWritten": {"for": "13m"},
        "quotaCollapsed": {"bytes": 2097153, "for": "19m"},
        "psiAboveTarget": {"ratio": 1.25, "for": "37m"},
        "kdamondCpuHigh": {"cpu": 0.35, "for": "23m"},
        "feedbackStalled": {"for": "7m"},
        "dyingCgroupsGrowing": {"growth": 333, "window": "6h", "for": "29m"},
    }
    values = _observability_values(**rules)
    values["metrics"]["dashboard"] |= {
        "label": "example.com/dashboard",
        "labelValue": "damon",
        "annotations": {"grafana_folder": "Memory"},
    }
    objects = release(values).manifest()
    alerts = _alerts(objects)
    by_value = {
        "agentDown": "DamonAgentDown",
        "nodeNotReady": "DamonNodeNotReady",
        "schemeDegraded": "DamonSchemeDegraded",
        "statusNotWritten": "DamonStatusNotWritten",
        "quotaCollapsed": "DamonQuotaCollapsed",
        "psiAboveTarget": "DamonMemoryPressureAboveTarget",
        "kdamondCpuHigh": "DamonKdamondCpuHigh",
        "feedbackStalled": "DamonFeedbackStalled",
        "dyingCgroupsGrowing": "DamonDyingCgroupsGrowing",
    }
    for key, alert in by_value.items():
        assert alerts[alert]["for"] == rules[key]["for"], alert
        assert alerts[alert]["labels"]["team"] == "memory", alert
    assert alerts["DamonAgentDown"]["labels"]["severity"] == "critical"
    assert 'job=~"prometheus/damon-agents"' in alerts["DamonAgentDown"]["expr"]
    assert _numbers(alerts["DamonQuotaCollapsed"]["expr"]) == {2097153}
    assert _numbers(alerts["DamonMemoryPressureAboveTarget"]["expr"]) == {1.25}
    assert _numbers(alerts["DamonKdamondCpuHigh"]["expr"]) == {0.35}
    assert _numbers(alerts["DamonDyingCgroupsGrowing"]["expr"]) == {333}
    assert "damon_node_cgroups_dying[6h]" in alerts["DamonDyingCgroupsGrowing"]["expr"]
    assert _one(objects, "PrometheusRule")["metadata"]["labels"]["release"] == "kube-prometheus"

    config_map = _dashboard_config_map(objects)["metadata"]
    assert config_map["labels"]["example.com/dashboard"] == "damon"
    assert "grafana_dashboard" not in config_map["labels"]
    assert config_map["annotations"] == {"grafana_folder": "Memory"}


def _numbers(expr: str) -> set[float]:
    """The number literals of an expression outside strings, matchers and ranges."""
    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', " ", expr)
    return {
        float(n) for n in re.findall(r"(?<![\w.])[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?", bare)
    } - {0.0}
