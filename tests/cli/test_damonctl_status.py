"""``damonctl status`` without an apiserver: usage, credentials and an unreachable server,
each one line (the real apiserver: tests/kube/test_damonctl_status.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from damon_agent.cli import damonctl, damonctl_status


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


def test_an_unreachable_apiserver_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")))
    assert damonctl.main(["status", "--node", "n1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("damonctl: cannot reach the apiserver at http://127.0.0.1:1")


def test_missing_credentials_and_contexts_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setattr(damonctl_status, "IN_CLUSTER_TOKEN", tmp_path / "no-token")
    assert damonctl.main(["status", "--node", "n1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("damonctl: no kubeconfig at ") and err.count("\n") == 1
    config = str(_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1"))
    assert damonctl.main(["status", "--kubeconfig", config, "--context", "x", "--node", "n"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"damonctl: cannot load credentials from {config}: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("shop/cold", ("DamonScheme", "shop", "cold")),
        ("node-reclaim", ("ClusterDamonScheme", None, "node-reclaim")),
    ],
)
def test_scheme_names(text: str, parsed: tuple[str, str | None, str]) -> None:
    assert damonctl_status.parse_scheme(text) == parsed


def test_status_needs_a_node_or_a_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        damonctl.main(["status"])
    assert exit_info.value.code == 2
    assert "one of the arguments --node --scheme is required" in capsys.readouterr().err
