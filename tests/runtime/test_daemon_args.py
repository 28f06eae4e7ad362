"""``damon-agent daemon`` arguments: bad values are refused naming the flag."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from damon_agent.cli import daemon as cli_daemon
from damon_agent.runtime import daemon, errors


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--backend", "sim"], "--node-name"),
        (["--node-name", "n1", "--listen", "nowhere"], "--listen"),
        (["--node-name", "n1", "--backend", "sim"], "--sim-workload"),
        (["--node-name", "n1", "--tick", "0"], "--tick"),
        (["--node-name", "n1", "--owner-daemonset", "agent"], "--owner-daemonset"),
    ],
)
def test_bad_arguments_name_the_flag(
    argv: list[str], flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    with pytest.raises(errors.ArgumentsError, match=flag):
        cli_daemon.parse_args(argv)


def test_main_returns_2_on_bad_arguments(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    with caplog.at_level(logging.ERROR):
        assert cli_daemon.main(["--backend", "kernel"]) == 2
    assert "--node-name" in caplog.text


def test_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node-7")
    monkeypatch.setenv("KUBECONFIG", "/tmp/kc")
    config = cli_daemon.parse_args(["--listen", "127.0.0.1:9100", "--sys-root", "/host/sys"])
    assert (config.node_name, config.kubeconfig) == ("node-7", "/tmp/kc")
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9100)
    assert config.roots.sys == Path("/host/sys") and config.backend == "auto"


def test_auto_backend_without_damon_or_access_checks_names_both(tmp_path: Path) -> None:
    config = cli_daemon.parse_args(
        ["--node-name", "n1", "--sys-root", str(tmp_path), "--proc-root", str(tmp_path)]
    )
    with pytest.raises(errors.BackendError, match=r"kernel DAMON: no .*admin.*userspace backend"):
        daemon.open_backend(config)
