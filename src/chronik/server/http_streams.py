"""HTTP handlers of the read side: streams, events (also live, as SSE) and live queries.

Every read stays within the request's tenant scope (``chronik.server.tenancy``): another
tenant's stream is 404, the global log and live events carry the scope's tenant only, and a
live query over a table with a ``tenant`` column gets ``tenant = <the scope's>`` added to its
conditions (a table without one is refused to a tenant-scoped credential).

Module-level handlers over ``chronik.server.http_state.HttpState``; they import
``http_state``, ``http_params``, ``http_queries`` and ``tenancy``.
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
from chronik.projections import Table
from chronik.server import http_params as params
from chronik.server import tenancy
from chronik.server.http_queries import QueryPage, live_changes, parse_page, read_page, table_of
from chronik.server.http_state import scope_of, state_of

__all__ = ["all_events", "event_stream", "get_query", "list_streams", "stream_events"]

SSE_KEEPALIVE: Final = 15.0
QUERY_POLL: Final = 0.1
_SSE_HEADERS: Final = {"cache-control": "no-store"}


async def list_streams(request: Request) -> Response:
    """``GET /v1/streams?domain=&prefix=&tenant=&limit=``: streams and their versions (the
    scope's tenant only, for a tenant-scoped credential)."""
    q = request.query_params
    limit = params.limit(q)
    domain = params.domains(q)
    prefix = params.text(q, "prefix")
    scope = scope_of(request)
    wanted = q.get("tenant")
    streams: list[dict[str, object]] = []
    if scope.denied or (wanted is not None and not scope.sees(wanted)):
        return JSONResponse({"streams": streams})
    tenant = scope.filter if wanted is None else wanted
    found = state_of(request).store.list_streams(
        domain[0] if domain else None, prefix, limit, tenant
    )
    streams = [
        {
            "stream": str(i.stream),
            "domain": i.stream.domain,
            "aggregate_id": i.stream.aggregate_id,
            "tenant": i.stream.tenant,
            "version": i.version,
        }
        async for i in found
    ]
    return JSONResponse({"streams": streams})


async def stream_events(request: Request) -> Response:
    """``GET /v1/streams/{domain}/{aggregate_id}/events?from=&limit=``: one stream's events."""
    p = request.path_params
    q = request.query_params
    stream = StreamId(p["domain"], p["aggregate_id"], q.get("tenant", ""))
    stream = scope_of(request).read_stream(stream)
    start = params.sequence(q, "from")
    store = state_of(request).store
    events = [e.to_dict() async for e in store.read_stream(stream, start, limit=params.limit(q))]
    return JSONResponse({"stream": str(stream), "events": events})


async def all_events(request: Request) -> Response:
    """``GET /v1/events?after=&before=&domain=&type=&order=&limit=``: the global log."""
    q = request.query_params
    events = [
        e.to_dict()
        async for e in tenancy.read_all(
            state_of(request).store,
            scope_of(request),
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
    scope = scope_of(request)
    if scope.denied:  # nothing to see: an empty stream
        return StreamingResponse(iter(()), media_type="text/event-stream", headers=_SSE_HEADERS)
    if at_head:  # live clients start from now; ?from=start or ?after= catch up
        after = await store.head()
    sub = store.subscribe(after, domains, types, tenant=scope.filter)

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
    page = _scoped(scope_of(request), name, table, parse_page(spec, table, request.query_params))
    if "text/event-stream" not in request.headers.get("accept", ""):
        if page is None:  # a credential without tenant: no rows
            return JSONResponse({"query": name, "rows": [], "next_cursor": None})
        rows, next_cursor = await read_page(state.store, spec, page)
        return JSONResponse({"query": name, "rows": rows, "next_cursor": next_cursor})
    if page is None:
        return StreamingResponse(iter(()), media_type="text/event-stream", headers=_SSE_HEADERS)
    resume = request.headers.get("last-event-id")  # checked before the response starts
    changes = live_changes(state.store, spec, page, QUERY_POLL, SSE_KEEPALIVE, resume)
    return StreamingResponse(changes, media_type="text/event-stream", headers=_SSE_HEADERS)


def _scoped(scope: tenancy.Scope, name: str, table: Table, page: QueryPage) -> QueryPage | None:
    """``page`` within the scope: ``tenant = <the scope's>`` added for a tenant-scoped
    credential (PermissionDenied if the table has no ``tenant`` column); None: nothing."""
    if scope.operator:
        return page
    if "tenant" not in dict(table.columns):
        raise tenancy.tenant_denied(f"query {name} is not tenant-scoped")
    if scope.denied:
        return None
    return page._replace(where={**page.where, "tenant": scope.tenant})
