"""`damonctl report access --agent URL --pod NS/NAME` against a real agent HTTP server."""

from __future__ import annotations

import asyncio
import importlib.util
import pathlib
import sys
from types import ModuleType

import pytest

from damon_agent.cli import damonctl
from damon_agent.runtime import http, metrics


def _http_test_module() -> ModuleType:
    # The fake agent view lives beside the HTTP tests; load it by path (importlib mode).
    path = pathlib.Path(__file__).parents[1] / "runtime" / "test_http.py"
    spec = importlib.util.spec_from_file_location("runtime_http_fakes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_live_access_report_of_one_pod(capsys: pytest.CaptureFixture[str]) -> None:
    fakes = _http_test_module()
    view = fakes.FakeView()
    runner = await http.serve(http.make_app(view, metrics.registry_for(view)), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        code = await asyncio.to_thread(
            damonctl.main, ["report", "access", "--agent", base, "--pod", "shop/b"]
        )
        out = capsys.readouterr().out
        assert code == 0
        assert out.startswith(f"pod shop/b on {base}\n")
        assert "target 1" in out and "target 0" not in out

        code = await asyncio.to_thread(
            damonctl.main, ["report", "access", "--agent", base, "--pod", "bank/x"]
        )
        assert code == 1
        assert "no snapshot of pod bank/x" in capsys.readouterr().err
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--agent", "http://127.0.0.1:1"], "--agent needs --pod"),
        (["--pod", "a/b", "--input", "x.jsonl"], "need --agent URL"),
        ([], "give --input REC, or --agent URL"),
        (["--agent", "http://h:1", "--pod", "a/b", "--input", "r"], "give one of them"),
    ],
)
def test_live_access_usage_errors_name_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        damonctl.main(["report", "access", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
