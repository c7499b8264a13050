"""A FastAPI app that starts lift_graph runs and streams their events to browsers
as Server-Sent Events.

- ``POST /runs`` (a ``RunRequest`` JSON body) starts a run in the background and
  answers ``{"execution_id": ...}`` at once (202);
- ``GET /runs/{id}/events`` streams its events (``text/event-stream``) from the
  first, or from after the ``Last-Event-ID`` header (or ``?after=N``), and ends
  after ``run_finished`` (or ``run_failed`` / ``run_cancelled``);
- ``GET /runs/{id}`` tells its status and, once finished, its result;
- ``DELETE /runs/{id}`` cancels it;
- ``GET /`` is a page that starts a run and lists its events live.

A client that disconnects stops only its own stream: the run goes on, for the
other clients and for ``GET /runs/{id}``.
Serve it with any ASGI server, e.g. ``uvicorn examples.web.app:app``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.types import Send

from .pipeline import Plan, ResearchState, RunRequest, build_graph
from .runs import Message, RunLog, RunRegistry, TooManyRuns
from .sse import format_comment, format_event

__all__ = ["SSE_HEADERS", "SseResponse", "app", "create_app", "sse_stream"]

PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers responses by default, which would hold events back.
    "X-Accel-Buffering": "no",
}

#: How long the browser waits before it reconnects after a dropped connection.
RECONNECT_MS = 2000


class SseResponse(StreamingResponse):
    """``text/event-stream`` of ``stream``, closed however the response ends.

    Starlette leaves an unfinished body generator to the garbage collector when a
    send fails (how ASGI 2.4 servers report a gone client); closing it here ends
    the client's follow of the run at once.
    """

    def __init__(self, stream: AsyncGenerator[str, None]) -> None:
        super().__init__(stream, media_type="text/event-stream", headers=SSE_HEADERS)
        self._stream = stream

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self._stream.aclose()


async def sse_stream(log: RunLog, after: int, keepalive: float) -> AsyncGenerator[str, None]:
    """``log``'s events after id ``after`` as SSE text, then the end of the stream."""
    yield f"retry: {RECONNECT_MS}\n\n"
    async with contextlib.aclosing(log.follow(after, keepalive)) as messages:
        async for item in messages:
            if isinstance(item, Message):
                yield format_event(item.data, event=item.event, id=item.id)
            else:
                yield format_comment(item)


def create_app(
    *, keepalive: float = 15.0, max_runs: int = 100, max_events: int = 10_000
) -> FastAPI:
    """The app, with its own registry of runs (``app.state.registry``).

    ``keepalive``: idle seconds before a stream sends a comment, so that proxies keep
    it open (and a gone client is noticed).
    """
    registry = RunRegistry(max_runs=max_runs, max_events=max_events)
    graph = build_graph()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await registry.aclose()

    app = FastAPI(title="lift_graph runs", lifespan=lifespan)
    app.state.registry = registry

    def find(execution_id: str) -> RunLog:
        log = registry.get(execution_id)
        if log is None:
            raise HTTPException(404, f"no run {execution_id!r}: start one with POST /runs")
        return log

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.post("/runs", status_code=202)
    async def start_run(body: RunRequest | None = None) -> dict[str, str]:
        request = body or RunRequest()
        state = ResearchState(topics=request.topics)
        try:
            log = registry.start(
                lambda execution_id: graph.iter(
                    Plan(), state=state, deps=request.lm(), execution_id=execution_id
                )
            )
        except TooManyRuns as exc:
            raise HTTPException(503, str(exc)) from exc
        return {"execution_id": log.execution_id}

    @app.get("/runs/{execution_id}")
    async def run_status(execution_id: str) -> dict[str, Any]:
        return find(execution_id).snapshot()

    @app.delete("/runs/{execution_id}")
    async def cancel_run(execution_id: str) -> dict[str, Any]:
        log = find(execution_id)
        await registry.cancel(log)
        return log.snapshot()

    @app.get("/runs/{execution_id}/events", response_model=None)
    async def run_events(
        execution_id: str,
        last_event_id: Annotated[str | None, Header()] = None,
        after: Annotated[int | None, Query(ge=0)] = None,
    ) -> Response:
        log = find(execution_id)
        position = _position(last_event_id, after)
        if log.done and position >= log.last_id:
            # 204 tells an EventSource that reconnected after the end to stop trying.
            return Response(status_code=204)
        return SseResponse(sse_stream(log, position, keepalive))

    return app


def _position(last_event_id: str | None, after: int | None) -> int:
    """Where a stream starts: after the ``Last-Event-ID`` a reconnecting browser
    sends, else after ``?after=``, else at the first event."""
    if last_event_id is not None and last_event_id.strip():
        try:
            position = int(last_event_id)
        except ValueError:
            position = -1
        if position < 0:
            raise HTTPException(
                400, f"Last-Event-ID must be an event id (an int >= 0), got {last_event_id!r}"
            )
        return position
    return after or 0


app = create_app()
