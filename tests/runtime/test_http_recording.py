"""Recording from a running agent: ``/v1/snapshots`` and ``damonctl record --agent``.

The agent here is the real HTTP app over the real sim backend, stepped in virtual time:
each read of its snapshots moves the sim ``STEP_US`` on, as if that much time passed
between two requests, so the snapshots and their times are reproducible and the tests
take well under a second of simulated work. Token checks go through the real ``guard``
with a reviewer standing in for the API server (as in test_http.py).
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
import pytest

from damon_agent.api import resources
from damon_agent.cli import damonctl
from damon_agent.cli import damonctl_record as record
from damon_agent.reports import heatmap, recording
from damon_agent.runtime import errors, guard, history, http, planning, snapshot_client, wire
from damon_agent.runtime.backends import inprocess, sim

WORKLOAD = Path(__file__).resolve().parents[2] / "examples" / "workloads" / "hot-cold.yaml"
STEP_US = 500_000
READER = "reader-token"
NOBODY = "nobody-token"
SCHEME_KEY = "DamonScheme/shop/s/all"
POD_A = planning.PodFacts(namespace="shop", name="a", uid="ua", memcg_paths=("/sim/poda",))


class Reviewer:
    """The API server's two reviews: READER may get damonnodes/snapshot, NOBODY may not."""

    async def review_token(self, token: str) -> Mapping[str, Any]:
        name = {READER: "reader", NOBODY: "nobody"}.get(token)
        if name is None:
            return {"authenticated": False, "error": "invalid bearer token"}
        return {"authenticated": True, "user": {"username": name, "groups": []}}

    async def review_access(self, user: guard.User, want: guard.Access) -> Mapping[str, Any]:
        return {"allowed": user.name == "reader" and want.subresource == "snapshot"}


class SimAgent:
    """``http.AgentView`` of an agent whose backend is the sim, stepped on every read."""

    node_name = "n1"
    backend = "sim"

    def __init__(self) -> None:
        self.adapter = sim.open_sim(WORKLOAD, pacing=inprocess.Pacing.STEPPED, seed=7)
        assigned = resources.AssignedScheme.model_validate(
            {
                "kind": "DamonScheme",
                "namespace": "shop",
                "name": "s",
                "uid": "u",
                "generation": 1,
                "namespaces": ["shop"],
                "podSelector": {},
                "spec": {
                    "monitoring": {"intervals": {"sample": "5ms", "aggregation": "100ms"}},
                    "schemes": [{"name": "all", "action": "stat"}],
                },
            }
        )
        self.adapter.apply(planning.plan([assigned], [POD_A], self.adapter.info.capabilities))
        self.reads = 0

    def liveness(self) -> tuple[bool, str]:
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        return True, "ok"

    def snapshot_entries(self) -> list[wire.SnapshotEntry]:
        self.reads += 1
        self.adapter.clock.sleep_us(STEP_US)
        return self.adapter.snapshots()


async def _serve(view: SimAgent) -> tuple[aiohttp.web.AppRunner, str]:
    app = http.make_app(
        view,
        prometheus_client.CollectorRegistry(),
        guard.Guard(Reviewer()),
        snapshot_history=history.SnapshotHistory(window_s=60),
    )
    runner = await http.serve(app, "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[SimAgent, str, Path]]:
    """A serving agent, its URL, and a file holding the reader's token."""
    view = SimAgent()
    runner, base = await _serve(view)
    token_file = tmp_path / "token"
    token_file.write_text(READER + "\n")
    try:
        yield view, base, token_file
    finally:
        await runner.cleanup()
        view.adapter.stop()


async def _get(url: str, token: str | None = READER) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status, json.loads(await r.text())


async def test_snapshots_serves_the_ring_newer_than_since(agent: Any) -> None:
    view, base, _ = agent
    for _ in range(3):  # three /v1/snapshot reads: 0.5 s, 1 s and 1.5 s of sim time
        assert (await _get(base + "/v1/snapshot"))[0] == 200
    code, body = await _get(base + "/v1/snapshots")
    assert code == 200 and body["node"] == "n1" and body["backend"] == "sim"
    # What earlier requests read is there, and this request's own read after it.
    times = [e["snapshot"]["time_us"] for e in body["schemes"]]
    assert times == [500_000, 1_000_000, 1_500_000, 2_000_000]
    assert {e["scheme"] for e in body["schemes"]} == {SCHEME_KEY}
    assert body["history"]["more"] is False and body["history"]["window_s"] == 60
    assert body["history"]["oldest_us"] == 500_000
    entries = wire.decode(body, source="test")  # the same shape as /v1/snapshot's
    assert sum(int(t.sizes.sum()) for t in entries[-1].snapshot.targets) == 1 << 30

    code, body = await _get(base + "/v1/snapshots?since=1500000")
    assert [e["snapshot"]["time_us"] for e in body["schemes"]] == [2_000_000, 2_500_000]
    code, body = await _get(base + "/v1/snapshots?limit=2&scheme=all")
    assert [e["snapshot"]["time_us"] for e in body["schemes"]] == [500_000, 1_000_000]
    assert body["history"]["more"] is True
    # A pod no scheme selects, a scheme that is not there: nothing, not an error.
    for query in ("pod=bank/x", "scheme=nosuch"):
        code, body = await _get(base + "/v1/snapshots?" + query)
        assert code == 200 and body["schemes"] == [], query
    # The ninth read (4.5 s), and the one before it that the ring kept.
    code, body = await _get(base + "/v1/snapshots?pod=shop/a&since=3500000")
    assert [e["snapshot"]["time_us"] for e in body["schemes"]] == [4_000_000, 4_500_000]
    assert body["schemes"][0]["pods"] == ["shop/a"]
    assert view.reads == 9  # one read a request, none of the ring's own


async def test_snapshots_is_guarded_as_snapshot_is(agent: Any) -> None:
    _, base, _ = agent
    code, body = await _get(base + "/v1/snapshots", token=None)
    assert code == 401 and "get damonnodes/snapshot 'n1'" in body["message"]
    code, body = await _get(base + "/v1/snapshots", token="garbage")
    assert code == 401
    code, body = await _get(base + "/v1/snapshots", token=NOBODY)
    assert code == 403 and body["message"] == "user 'nobody' may not get damonnodes/snapshot 'n1'"
    # A refused request reads nothing: the guard answers before the handler.
    code, body = await _get(base + "/v1/snapshots?since=x", token=None)
    assert code == 401


@pytest.mark.parametrize(
    ("query", "parameter", "words"),
    [
        ("since=abc", "since", "expected an integer >= 0"),
        ("since=-5", "since", "got '-5'"),
        ("since=%C2%B2", "since", "expected an integer"),  # a superscript two
        ("limit=0", "limit", "from 1 to 1000"),
        ("limit=1001", "limit", "from 1 to 1000"),
        ("pod=nopod", "pod", "NAMESPACE/NAME"),
        ("pod=a/b/c", "pod", "NAMESPACE/NAME"),
        ("sinse=5", "sinse", "unknown query parameter"),
        ("since=1&since=2", "since", "given 2 times"),
    ],
)
async def test_bad_query_parameters_answer_400_naming_them(
    agent: Any, query: str, parameter: str, words: str
) -> None:
    view, base, _ = agent
    code, body = await _get(f"{base}/v1/snapshots?{query}")
    assert code == 400
    assert body["reason"] == "BadRequest" and body["parameter"] == parameter
    assert words in body["message"] and parameter in body["message"]
    assert view.reads == 0  # refused before reading anything


async def test_client_reads_pages_and_names_what_the_agent_refused(agent: Any) -> None:
    _, base, _ = agent
    token = snapshot_client.Token(READER, "the test")
    first = await asyncio.to_thread(snapshot_client.fetch_history, base, token=token, limit=1)
    assert [e.snapshot.time_us for e in first.entries] == [500_000]
    assert first.more is False and first.node == "n1"  # one read so far: nothing more
    page = await asyncio.to_thread(
        snapshot_client.fetch_history, base, scheme="all", since_us=500_000, token=token
    )
    assert [e.snapshot.time_us for e in page.entries] == [1_000_000]
    with pytest.raises(errors.SnapshotFetchError, match="'limit': expected an integer"):
        await asyncio.to_thread(snapshot_client.fetch_history, base, limit=0, token=token)
    with pytest.raises(errors.SnapshotAccessError) as refused:
        await asyncio.to_thread(snapshot_client.fetch_history, base)
    assert refused.value.code == 401 and "/v1/snapshots" in str(refused.value)


def _record(*argv: str) -> int:
    return damonctl.main(["record", *argv])


async def test_damonctl_record_writes_a_recording_the_reports_read(
    agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    view, base, token_file = agent
    out = tmp_path / "r.jsonl"
    args = ["--agent", base, "--pod", "shop/a", "--token-file", str(token_file)]
    args += ["--duration", "1s", "--interval", "100ms", "--output", str(out)]
    assert await asyncio.to_thread(_record, *args) == 0
    captured = capsys.readouterr()
    rec = recording.read_recording(out)
    times = [s.time_us for s in rec.snapshots]
    # One snapshot a read: the first from /v1/snapshot, then one a poll.
    assert len(times) == view.reads >= 3
    assert times == [STEP_US * (i + 1) for i in range(len(times))]
    assert rec.meta["scheme"] == SCHEME_KEY and rec.meta["pod"] == "shop/a"
    assert rec.meta["node"] == "n1" and rec.meta["backend"] == "sim"
    assert rec.meta["source"] == "agent" and rec.meta["from_past"] is False
    assert sum(int(t.sizes.sum()) for t in rec.snapshots[-1].targets) == 1 << 30
    text = heatmap.render(rec.snapshots, start_us=rec.start_us, rows=4, columns=10)
    assert text.count("\n") >= 4  # the heatmap report reads it like any recording
    assert f"{len(times)} snapshots" in captured.out and str(out) in captured.out
    assert "recording " in captured.err and " / 1 s: " in captured.err


async def test_damonctl_record_from_past_starts_with_the_ring(agent: Any, tmp_path: Path) -> None:
    view, base, token_file = agent
    for _ in range(4):
        await _get(base + "/v1/snapshot")
    out = tmp_path / "past.jsonl"
    args = ["--agent", base, "--node", "--scheme", "all", "--token-file", str(token_file)]
    args += ["--duration", "100ms", "--from-past", "--output", str(out)]
    assert await asyncio.to_thread(_record, *args) == 0
    rec = recording.read_recording(out)
    times = [s.time_us for s in rec.snapshots]
    assert times[:4] == [500_000, 1_000_000, 1_500_000, 2_000_000]  # from before the command
    assert times == sorted(set(times)) and len(times) == view.reads
    assert rec.meta["from_past"] is True and rec.meta["pod"] is None
    assert rec.meta["agent_history_s"] == 60


async def test_damonctl_record_fails_in_one_line_and_writes_nothing(
    agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, base, token_file = agent
    out = tmp_path / "r.jsonl"
    nobody = tmp_path / "nobody"
    nobody.write_text(NOBODY)
    garbage = tmp_path / "garbage"
    garbage.write_text("garbage")
    cases = [
        ("127.0.0.1:1", "shop/a", token_file, "cannot reach the agent"),
        (base, "shop/a", garbage, "answered 401 Unauthorized"),
        (base, "shop/a", nobody, "answered 403 Forbidden"),
        (base, "bank/x", token_file, "no scheme on the agent selects pod bank/x"),
    ]
    for url, pod, token, words in cases:
        args = ["--agent", url, "--pod", pod, "--token-file", str(token)]
        args += ["--duration", "1s", "--output", str(out)]
        assert await asyncio.to_thread(_record, *args) == 1
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
        assert not out.exists()
    with pytest.raises(SystemExit) as usage:
        _record("--agent", base, "--pod", "nopod", "--duration", "1s", "--output", str(out))
    assert usage.value.code == 2
    assert "NAMESPACE/NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _record("--agent", base, "--node", "--duration", "0s", "--output", str(out))
    assert "must be at least 1 us" in capsys.readouterr().err


async def test_ctrl_c_stops_the_recording_with_a_whole_file(agent: Any, tmp_path: Path) -> None:
    _, base, token_file = agent
    out = tmp_path / "r.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "damon_agent.cli.damonctl", "record", "--agent", base,
        "--pod", "shop/a", "--token-file", str(token_file), "--duration", "1h",
        "--interval", "100ms", "--output", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(8):
            while not out.exists() or out.read_text().count("\n") < 4:
                await asyncio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().startswith("stopped after ")
    rec = recording.read_recording(out)
    assert not rec.torn_tail and len(rec.snapshots) >= 3
    assert f"{len(rec.snapshots)} snapshots" in stdout.decode()
    assert "Traceback" not in stderr.decode()


async def test_an_agent_gone_mid_recording_ends_it_with_the_file_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    view = SimAgent()
    runner, base = await _serve(view)
    token_file = tmp_path / "token"
    token_file.write_text(READER)
    out = tmp_path / "r.jsonl"
    args = ["--agent", base, "--pod", "shop/a", "--token-file", str(token_file)]
    args += ["--duration", "1m", "--interval", "100ms", "--output", str(out)]
    try:
        recording_run = asyncio.create_task(asyncio.to_thread(_record, *args))
        async with asyncio.timeout(8):
            while not out.exists() or out.read_text().count("\n") < 3:
                await asyncio.sleep(0.05)
            await runner.cleanup()  # the agent goes away
            assert await recording_run == 1
    finally:
        await runner.cleanup()
        view.adapter.stop()
    err = capsys.readouterr().err
    assert "cannot reach the agent" in err and "poll failed, retrying" in err
    assert f"{record.MAX_FAILED_POLLS} polls in a row failed" in err and str(out) in err
    rec = recording.read_recording(out)
    assert not rec.torn_tail and f"the {len(rec.snapshots)} snapshots recorded" in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal_and_prints_now_and_then_elsewhere() -> None:
    written = record.Written(snapshots=1, regions=40, last_regions=40)
    terminal = _Terminal()
    shown = record.Progress(terminal, duration_us=300_000_000)
    shown.show(59_900_000, written)
    written.snapshots, written.regions, written.last_regions = 2, 70, 30
    shown.show(60_000_000, written, final=True)
    # The shorter second line blanks what is left of the first one.
    assert terminal.getvalue() == (
        "\rrecording 59.9 s / 5 m: 1 snapshot, 40 regions (40 in the last)"
        "\rrecording 1 m / 5 m: 2 snapshots, 70 regions (30 in the last)  \n"
    )
    log = io.StringIO()
    shown = record.Progress(log, duration_us=300_000_000)
    for second in range(1, 4):  # within PROGRESS_EVERY_S of the first line: not shown
        shown.show(second * 1_000_000, written)
    shown.show(4_000_000, written, final=True)
    assert [line.split(":")[0] for line in log.getvalue().splitlines()] == [
        "recording 1 s / 5 m",
        "recording 4 s / 5 m",
    ]
