"""The FastAPI example (examples/web): runs streamed to clients as Server-Sent Events.

httpx's ASGITransport hands a response over once the app has finished it, so the
tests that go through httpx read whole (finite) streams; the ones about what
happens *while* a run goes on (incremental delivery, keep-alives, a client leaving)
drive the ASGI app directly with a receive / send pair.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
import httpx
import pytest_asyncio
from fastapi import FastAPI
from starlette.requests import ClientDisconnect

from examples.web.app import create_app
from examples.web.pipeline import Plan, ResearchState, RunRequest, build_graph
from examples.web.runs import Message, RunRegistry
from examples.web.sse import format_comment, format_event, jsonable

pytestmark = pytest.mark.asyncio

TOPICS = ["forks", "joins", "limits"]


@dataclass
class Sse:
    """One parsed SSE message (``comments``: the comment lines before it)."""

    event: str = "message"
    id: str | None = None
    data_lines: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def data(self) -> str:
        return "\n".join(self.data_lines)

    @property
    def fields(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


def parse_sse(lines: list[str]) -> tuple[list[Sse], list[str]]:
    """Messages (those with data, as a browser dispatches them) and every comment."""
    messages: list[Sse] = []
    comments: list[str] = []
    current = Sse()
    for line in lines:
        if line == "":
            if current.data_lines:
                messages.append(current)
            current = Sse()
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            current.data_lines.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
    return messages, comments


@pytest_asyncio.fixture
async def app() -> AsyncIterator[FastAPI]:
    application = create_app()
    yield application
    await application.state.registry.aclose()


@pytest_asyncio.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def start(client: httpx.AsyncClient, **body: Any) -> str:
    response = await client.post("/runs", json={"topics": TOPICS, "latency": 0.01, **body})
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


async def read_stream(
    client: httpx.AsyncClient, execution_id: str, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, list[Sse]]:
    async with client.stream("GET", f"/runs/{execution_id}/events", headers=headers) as response:
        lines = [line async for line in response.aiter_lines()]
    return response, parse_sse(lines)[0]


async def wait_done(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    for _ in range(500):
        status: dict[str, Any] = (await client.get(f"/runs/{execution_id}")).json()
        if status["status"] != "running":
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {execution_id} did not end")


def positions(messages: list[Sse]) -> dict[tuple[str, str], int]:
    """(kind, key) -> index of its first message."""
    found: dict[tuple[str, str], int] = {}
    for i, m in enumerate(messages):
        found.setdefault((m.event, m.fields["key"]), i)
    return found


# -- one client, a whole run ------------------------------------------------------------


async def test_a_run_streams_its_events_in_order(client: httpx.AsyncClient) -> None:
    execution_id = await start(client)
    response, messages = await read_stream(client, execution_id)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"

    kinds = [m.event for m in messages]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("run_finished") == 1
    assert [int(m.id or 0) for m in messages] == list(range(1, len(messages) + 1))
    for m in messages:
        assert m.fields["kind"] == m.event and m.fields["execution_id"] == execution_id
    times = [m.fields["t"] for m in messages]
    assert times == sorted(times)

    branches = [f"0.Plan/{i}/0.Research" for i in range(len(TOPICS))]
    keys = ["0.Plan", *branches, "1.Report"]
    at = positions(messages)
    for key in keys:
        assert at[("node_started", key)] < at[("node_finished", key)], key
    assert kinds.count("node_started") == kinds.count("node_finished") == len(keys)
    assert at[("node_finished", "0.Plan")] < at[("fork_started", "0.Plan")]
    fork, join = at[("fork_started", "0.Plan")], at[("join_finished", "0.Plan")]
    assert all(fork < at[("node_started", b)] < at[("node_finished", b)] < join for b in branches)
    assert join < at[("node_started", "1.Report")]

    customs = [m.fields for m in messages if m.event == "custom"]
    assert [c["data"] for c in customs if c["name"] == "plan"] == [{"topics": TOPICS}]
    progress = [(c["data"]["topic"], c["data"]["step"]) for c in customs if c["name"] == "progress"]
    assert sorted(progress) == sorted((t, s) for t in TOPICS for s in ("asking", "done"))

    fork_fields = messages[fork].fields
    assert fork_fields["branches"] == len(TOPICS)
    assert messages[join].fields["join"]["statuses"] == ["succeeded"] * len(TOPICS)


async def test_the_events_match_the_runs_records_and_result(client: httpx.AsyncClient) -> None:
    execution_id = await start(client)
    _, messages = await read_stream(client, execution_id)
    request = RunRequest(topics=TOPICS, latency=0.0)
    direct = await build_graph().run(Plan(), state=ResearchState(topics=TOPICS), deps=request.lm())
    finished = {m.fields["key"]: m.fields["record"] for m in messages if m.event == "node_finished"}
    assert sorted(finished) == sorted(r.key for r in direct.records)
    for record in direct.records:
        sent = finished[record.key]
        assert (sent["node"], sent["attempts"], sent["error"]) == (record.node, 1, None)

    result = messages[-1].fields["result"]
    assert result["output"] == direct.output  # the fake LM answers by prompt alone
    assert result["deterministic"] is True and result["nodes"] == len(direct.records)
    assert result["failed"] == [] and result["elapsed_ms"] > 0
    assert set(result) == {"output", "deterministic", "elapsed_ms", "nodes", "failed"}

    status = (await client.get(f"/runs/{execution_id}")).json()
    assert status["status"] == "succeeded" and status["result"] == result
    assert status["events"] == len(messages) and status["error"] is None


async def test_a_failing_run_ends_with_run_failed(client: httpx.AsyncClient) -> None:
    execution_id = await start(client, fail_topics=["joins"])
    _, messages = await read_stream(client, execution_id)
    kinds = [m.event for m in messages]
    assert kinds[-1] == "run_failed" and "run_finished" not in kinds
    retry = next(m.fields for m in messages if m.event == "node_retry")
    assert retry["key"] == "0.Plan/1/0.Research" and retry["attempt"] == 1
    assert retry["error"].startswith("FakeLMError: ")
    failed = next(m.fields for m in messages if m.event == "node_failed")
    assert failed["key"] == "0.Plan/1/0.Research" and failed["record"]["attempts"] == 2
    error = messages[-1].fields["error"]
    assert error.startswith("JoinError: ") and "0.Plan" in error
    status = await wait_done(client, execution_id)
    assert status["status"] == "failed" and status["error"] == error


# -- several clients, late clients, reconnections ---------------------------------------


async def test_two_clients_follow_one_run(client: httpx.AsyncClient) -> None:
    execution_id = await start(client, latency=0.05)
    (_, first), (_, second) = await asyncio.gather(
        read_stream(client, execution_id), read_stream(client, execution_id)
    )
    assert first[-1].event == "run_finished"
    assert [(m.id, m.event, m.data) for m in first] == [(m.id, m.event, m.data) for m in second]


async def test_a_late_client_is_replayed_the_whole_run(client: httpx.AsyncClient) -> None:
    execution_id = await start(client)
    _, live = await read_stream(client, execution_id)
    assert (await wait_done(client, execution_id))["status"] == "succeeded"
    _, late = await read_stream(client, execution_id)
    assert [(m.id, m.data) for m in late] == [(m.id, m.data) for m in live]
    assert late[0].event == "run_started" and late[-1].event == "run_finished"


async def test_last_event_id_resumes_after_that_event(client: httpx.AsyncClient) -> None:
    execution_id = await start(client)
    _, everything = await read_stream(client, execution_id)
    _, rest = await read_stream(client, execution_id, {"Last-Event-ID": "5"})
    assert [m.id for m in rest] == [m.id for m in everything[5:]]
    assert [m.data for m in rest] == [m.data for m in everything[5:]]
    after = await client.get(f"/runs/{execution_id}/events", params={"after": 5})
    assert parse_sse(after.text.split("\n"))[0][0].id == "6"
    # A browser reconnecting after the last event is told to stop (204).
    last = everything[-1].id or ""
    done = await client.get(f"/runs/{execution_id}/events", headers={"Last-Event-ID": last})
    assert done.status_code == 204
    bad = await client.get(f"/runs/{execution_id}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]


# -- the rest of the API ------------------------------------------------------------------


async def test_unknown_runs_are_404(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/runs/nope"), ("GET", "/runs/nope/events")]:
        response = await client.request(method, path)
        assert response.status_code == 404
        assert "POST /runs" in response.json()["detail"]
    assert (await client.delete("/runs/nope")).status_code == 404


async def test_the_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "new EventSource(" in response.text and '"/runs"' in response.text
    assert "source.close()" in response.text  # or the browser reconnects at the end


async def test_the_body_is_checked_and_optional(client: httpx.AsyncClient) -> None:
    for bad in ({"topics": []}, {"latency": -1}, {"topics": ["x" * 81]}, {"topics": "forks"}):
        assert (await client.post("/runs", json=bad)).status_code == 422, bad
    response = await client.post("/runs")  # no body: the default topics
    assert response.status_code == 202
    _, messages = await read_stream(client, response.json()["execution_id"])
    assert messages[-1].event == "run_finished"
    assert messages[0].fields["start"] == "Plan" and messages[0].fields["graph"] == "research"


async def test_delete_cancels_a_run(client: httpx.AsyncClient) -> None:
    execution_id = await start(client, latency=5.0)
    for _ in range(500):  # until the research nodes are waiting on the fake LM
        if (await client.get(f"/runs/{execution_id}")).json()["events"] >= 6:
            break
        await asyncio.sleep(0.01)
    cancelled = await client.delete(f"/runs/{execution_id}")
    assert cancelled.json()["status"] == "cancelled"
    _, messages = await read_stream(client, execution_id)
    kinds = [m.event for m in messages]
    assert kinds[0] == "run_started" and kinds[-1] == "run_cancelled"
    assert "node_started" in kinds and "run_finished" not in kinds
    assert messages[-1].fields["error"] == "the run was cancelled"


async def test_a_run_cancelled_before_it_began_still_ends(client: httpx.AsyncClient) -> None:
    execution_id = await start(client)
    await client.delete(f"/runs/{execution_id}")
    _, messages = await read_stream(client, execution_id)
    assert [m.event for m in messages] == ["run_cancelled"]


async def test_events_carry_no_state_and_no_deps() -> None:
    @dataclass
    class Deps:
        lm: Any
        api_key: str = "sk-do-not-leak"

    class SecretState(ResearchState):
        password: str = "hunter2"

    registry = RunRegistry()
    deps = Deps(RunRequest(latency=0.0).lm())
    state = SecretState(topics=TOPICS)
    log = registry.start(lambda eid: build_graph().iter(Plan(), state=state, deps=deps))
    assert log.task is not None
    await log.task
    sent = "".join(m.data for m in log.since(0))
    assert log.status == "succeeded" and "run_finished" in sent
    assert "sk-do-not-leak" not in sent and "hunter2" not in sent


# -- bounded memory -----------------------------------------------------------------------


async def test_a_log_keeps_its_latest_events_and_says_what_was_dropped() -> None:
    registry = RunRegistry(max_events=5)
    log = registry.start(
        lambda eid: build_graph().iter(
            Plan(), state=ResearchState(topics=TOPICS), deps=RunRequest(latency=0.0).lm()
        )
    )
    assert log.task is not None
    await log.task
    kept = list(range(log.last_id - 4, log.last_id + 1))
    assert log.last_id > 5 and [m.id for m in log.since(0)] == kept
    got = [item async for item in log.follow(0, keepalive=1.0)]
    assert got[0] == f"events 1..{log.last_id - 5} were dropped"
    assert [m.id for m in got[1:] if isinstance(m, Message)] == kept
    assert len(got) == 6


async def test_the_registry_makes_room_with_finished_runs_only() -> None:
    app = create_app(max_runs=1)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            first = await start(c, latency=0.05)
            refused = await c.post("/runs", json={"latency": 0.01})
            assert refused.status_code == 503 and "max_runs=1" in refused.json()["detail"]
            await wait_done(c, first)
            second = await start(c)
            assert (await c.get(f"/runs/{first}")).status_code == 404
            assert (await wait_done(c, second))["status"] == "succeeded"
    finally:
        await app.state.registry.aclose()


# -- SSE framing --------------------------------------------------------------------------


async def test_format_event_frames_multi_line_data() -> None:
    text = format_event("one\ntwo\r\nthree\rfour", event="custom", id=7)
    assert text == ("id: 7\nevent: custom\ndata: one\ndata: two\ndata: three\ndata: four\n\n")
    messages, _ = parse_sse(text.split("\n"))
    assert messages[0].data == "one\ntwo\nthree\nfour" and messages[0].id == "7"
    assert format_event("{}") == "data: {}\n\n"
    with pytest.raises(ValueError, match="cannot span lines"):
        format_event("x", event="a\nb")
    assert format_comment("keep-alive") == ": keep-alive\n\n"
    assert format_comment("a\nb") == ": a\n: b\n\n"


async def test_jsonable_makes_anything_json_safe() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

    value = {
        "error": ValueError("bad topic"),
        "nan": math.nan,
        "items": (1, {2}, Opaque()),
        3: [None, True, 1.5],
    }
    assert jsonable(value) == {
        "error": "ValueError: bad topic",
        "nan": "nan",
        "items": [1, [2], "Opaque()"],
        "3": [None, True, 1.5],
    }
    json.dumps(jsonable(value), allow_nan=False)


# -- while a run goes on: the ASGI app driven directly -------------------------------------


class AsgiStream:
    """A GET on the app, with the body chunks collected as they are sent."""

    def __init__(self, app: FastAPI, path: str, spec_version: str = "2.0") -> None:
        self.spec_version = spec_version
        self.chunks: list[tuple[float, str]] = []
        self.status: int | None = None
        self.gone = asyncio.Event()
        self._sent_request = False
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": spec_version},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
        }
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self._sent_request:
            self._sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        if self.gone.is_set() and self.spec_version >= "2.4":
            # What ASGI 2.4 servers do: a send to a gone client raises OSError.
            raise OSError("the client went away")
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message.get("body"):
            self.chunks.append((asyncio.get_running_loop().time(), message["body"].decode()))

    def text(self) -> str:
        return "".join(chunk for _, chunk in self.chunks)

    async def wait_for(self, needle: str) -> None:
        for _ in range(1000):
            if needle in self.text():
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{needle!r} never arrived; got {self.text()!r}")


async def test_events_arrive_while_the_run_goes_on_and_idle_streams_keep_alive() -> None:
    app = create_app(keepalive=0.05)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    try:
        async with client:
            execution_id = await start(client, latency=0.5)
        stream = AsgiStream(app, f"/runs/{execution_id}/events")
        await stream.wait_for("event: run_started")
        log = app.state.registry.get(execution_id)
        assert log.status == "running" and stream.status == 200
        # The research nodes wait 0.5 s (± 50 %) on the fake LM; keep-alives every 0.05 s.
        await stream.wait_for(": keep-alive")
        assert "event: run_finished" not in stream.text()
        await stream.wait_for("event: run_finished")
        await asyncio.wait_for(stream.task, 5)  # the stream ended on its own
        messages, comments = parse_sse(stream.text().split("\n"))
        assert comments.count("keep-alive") >= 3
        assert [m.event for m in messages][-1] == "run_finished"
    finally:
        await app.state.registry.aclose()


@pytest.mark.parametrize("spec_version", ["2.0", "2.4"])
async def test_a_client_that_leaves_stops_its_stream_not_the_run(spec_version: str) -> None:
    app = create_app(keepalive=0.05)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    try:
        async with client:
            execution_id = await start(client, latency=0.3)
            stream = AsgiStream(app, f"/runs/{execution_id}/events", spec_version)
            await stream.wait_for("event: fork_started")
            log = app.state.registry.get(execution_id)
            assert log.followers == 1
            stream.gone.set()
            # 2.0: the app hears http.disconnect; 2.4: the next keep-alive fails to send.
            await asyncio.wait([stream.task], timeout=5)
            assert stream.task.done()
            if spec_version == "2.4":
                assert isinstance(stream.task.exception(), ClientDisconnect)
            else:
                assert stream.task.exception() is None
            assert log.followers == 0 and log.status == "running"
            status = await wait_done(client, execution_id)
            assert status["status"] == "succeeded"
            assert "event: run_finished" not in stream.text()
            _, replay = await read_stream(client, execution_id)
            assert replay[-1].event == "run_finished"
    finally:
        await app.state.registry.aclose()


# -- docs/web.md ----------------------------------------------------------------------------


async def test_docs_web_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "web.md").read_text("utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/web.md: update this test with its examples"
    printed = re.findall(r"prints\n\n```text\n(.*?)```", text, flags=re.DOTALL)
    code = compile(
        blocks[0], "docs/web.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    namespace: dict[str, Any] = {"__name__": "docs_web"}
    await eval(code, namespace)
    assert capsys.readouterr().out == printed[0] + "\n"
