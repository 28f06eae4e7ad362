"""`damonctl report access --agent URL --pod NS/NAME` against a real agent HTTP server."""

from __future__ import annotations

import asyncio
import importlib.util
import pathlib
import sys
from types import ModuleType

import pytest

from damon_agent.cli import damonctl
from damon_agent.runtime import http, snapshot_client


def _http_test_module() -> ModuleType:
    # The fake agent view lives beside the HTTP tests; load it by path (importlib mode).
    path = pathlib.Path(__file__).parents[1] / "runtime" / "test_http.py"
    spec = importlib.util.spec_from_file_location("runtime_http_fakes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_live_access_report_of_one_pod(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    fakes = _http_test_module()
    runner = await http.serve(fakes.make_app(fakes.FakeView()), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    token_file = tmp_path / "token"
    token_file.write_text(fakes.READER + "\n")
    live = ["report", "access", "--agent", base]
    try:
        code = await asyncio.to_thread(
            damonctl.main, [*live, "--pod", "shop/b", "--token-file", str(token_file)]
        )
        out = capsys.readouterr().out
        assert code == 0
        assert out.startswith(f"pod shop/b on {base}\n")
        assert "target 1" in out and "target 0" not in out

        code = await asyncio.to_thread(
            damonctl.main, [*live, "--pod", "bank/x", "--token", fakes.READER]
        )
        assert code == 1
        assert "no snapshot of pod bank/x" in capsys.readouterr().err
    finally:
        await runner.cleanup()


async def test_live_access_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = _http_test_module()
    runner = await http.serve(fakes.make_app(fakes.FakeView()), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    live = ["report", "access", "--agent", base, "--pod", "shop/b"]
    # No kubeconfig, no in-cluster token: nothing to send.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setattr(snapshot_client, "IN_CLUSTER_TOKEN", tmp_path / "no-service-account")
    try:
        for extra, words in (
            ([], ["401 Unauthorized", "no token found", "--token-file"]),
            (["--token", "garbage"], ["401 Unauthorized", "[token from --token]"]),
            (
                ["--token", fakes.NOBODY],
                ["403 Forbidden", "user 'nobody' may not get damonnodes/snapshot", "reader"],
            ),
        ):
            code = await asyncio.to_thread(damonctl.main, [*live, *extra])
            captured = capsys.readouterr()
            assert code == 1 and captured.out == ""
            assert captured.err.count("\n") == 1 and captured.err.startswith("damonctl: ")
            for word in words:
                assert word in captured.err, (word, captured.err)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--agent", "http://127.0.0.1:1"], "--agent needs --pod"),
        (["--pod", "a/b", "--input", "x.jsonl"], "need --agent URL"),
        ([], "give --input REC, or --agent URL"),
        (["--agent", "http://h:1", "--pod", "a/b", "--input", "r"], "give one of them"),
        (["--input", "r", "--token", "t"], "need --agent URL"),
        (["--agent", "http://h:1", "--token", "t", "--token-file", "f"], "not allowed with"),
        (["--agent", "http://h:1", "--pod", "a/b", "--token-file", "/nonexistent"], "cannot read"),
    ],
)
def test_live_access_usage_errors_name_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        damonctl.main(["report", "access", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
