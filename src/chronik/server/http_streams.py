"""HTTP handlers of the read side: streams, events (also live, as SSE) and live queries.

Module-level handlers over ``chronik.server.http_state.HttpState``; they import
``http_state``, ``http_params`` and ``http_queries``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from chronik.errors import UnknownProjection
from chronik.messages import StreamId
from chronik.server import http_params as params
from chronik.server.http_queries import live_changes, parse_page, read_page, table_of
from chronik.server.http_state import state_of

__all__ = ["all_events", "event_stream", "get_query", "list_streams", "stream_events"]

SSE_KEEPALIVE: Final = 15.0
QUERY_POLL: Final = 0.1
_SSE_HEADERS: Final = {"cache-control": "no-store"}


async def list_streams(request: Request) -> Response:
    """``GET /v1/streams?domain=&prefix=&limit=``: streams and their versions."""
    q = request.query_params
    limit = params.limit(q)
    domain = params.domains(q)
    prefix = params.text(q, "prefix")
    streams = [
        {
            "stream": str(i.stream),
            "domain": i.stream.domain,
            "aggregate_id": i.stream.aggregate_id,
            "tenant": i.stream.tenant,
            "version": i.version,
        }
        async for i in state_of(request).store.list_streams(
            domain[0] if domain else None, prefix, limit
        )
    ]
    return JSONResponse({"streams": streams})


async def stream_events(request: Request) -> Response:
    """``GET /v1/streams/{domain}/{aggregate_id}/events?from=&limit=``: one stream's events."""
    p = request.path_params
    q = request.query_params
    stream = StreamId(p["domain"], p["aggregate_id"], q.get("tenant", ""))
    start = params.sequence(q, "from")
    store = state_of(request).store
    events = [e.to_dict() async for e in store.read_stream(stream, start, limit=params.limit(q))]
    return JSONResponse({"stream": str(stream), "events": events})


async def all_events(request: Request) -> Response:
    """``GET /v1/events?after=&before=&domain=&type=&order=&limit=``: the global log."""
    q = request.query_params
    events = [
        e.to_dict()
        async for e in state_of(request).store.read_all(
            params.position(q.get("after"), "after"),
            params.domains(q),
            params.types(q),
            params.limit(q),
            backward=params.backward(q),
            before=params.position(q.get("before"), "before"),
        )
    ]
    return JSONResponse({"events": events})


async def event_stream(request: Request) -> Response:
    """``GET /v1/events/stream``: events live as SSE, from now, the start or a position."""
    state = state_of(request)
    store, metrics = state.store, state.metrics
    q = request.query_params
    at_head, after = params.live_start(q, request.headers.get("last-event-id"))
    domains, types = params.domains(q), params.types(q)
    if at_head:  # live clients start from now; ?from=start or ?after= catch up
        after = await store.head()
    sub = store.subscribe(after, domains, types)

    async def sse() -> AsyncIterator[bytes]:
        metrics.http_subscriptions += 1
        try:
            async with sub:
                if at_head and after is not None:  # sets the reconnect id, no event
                    yield f"id: {after}\n\n".encode()
                events = sub.__aiter__()
                while True:
                    try:
                        e = await asyncio.wait_for(anext(events), SSE_KEEPALIVE)
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    except StopAsyncIteration:
                        return
                    data = json.dumps(e.to_dict())
                    yield f"id: {e.position}\nevent: {e.type}\ndata: {data}\n\n".encode()
        finally:
            metrics.http_subscriptions -= 1

    return StreamingResponse(sse(), media_type="text/event-stream", headers=_SSE_HEADERS)


async def get_query(request: Request) -> Response:
    """``GET /v1/queries/{name}``: a live query's page, or its changes as SSE."""
    state = state_of(request)
    name = request.path_params["name"]
    spec = state.queries.get(name)
    if spec is None:
        raise UnknownProjection(name, sorted(state.queries))
    table = table_of(spec, (state.runner, state.app.runner))
    page = parse_page(spec, table, request.query_params)
    if "text/event-stream" not in request.headers.get("accept", ""):
        rows, next_cursor = await read_page(state.store, spec, page)
        return JSONResponse({"query": name, "rows": rows, "next_cursor": next_cursor})
    resume = request.headers.get("last-event-id")  # checked before the response starts
    changes = live_changes(state.store, spec, page, QUERY_POLL, SSE_KEEPALIVE, resume)
    return StreamingResponse(changes, media_type="text/event-stream", headers=_SSE_HEADERS)
