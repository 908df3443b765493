"""The admin UI's read handlers: pages, the htmx fragments that refresh them, live ticks and
static files. Module-level functions ``handler(state, request)`` over an ``AdminState``
(``create_admin_routes`` binds the state and the read right); the page contexts are shared
with ``actions``, whose answers re-render a fragment. Imports ``state``, ``data``, ``panels``
and ``live``, never ``actions`` or ``routes``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from chronik.errors import ValidationError
from chronik.messages import StreamId
from chronik.server.admin import data, panels
from chronik.server.admin.live import ticks
from chronik.server.admin.state import HERE, AdminState, render

__all__ = [
    "chain",
    "dead_letters",
    "letters_context",
    "letters_fragment",
    "live",
    "outbox",
    "outbox_fragment",
    "overview",
    "overview_fragment",
    "projections",
    "projections_context",
    "projections_fragment",
    "sagas",
    "static",
    "stream",
    "streams",
]

STATIC: Final = {
    "htmx.min.js": "text/javascript",
    "admin.js": "text/javascript",
    "admin.css": "text/css",
}
STREAMS_PAGE: Final = 100
EVENTS_PAGE: Final = 50
LETTERS_PAGE: Final = 100
RECENT: Final = 10


# --- overview -------------------------------------------------------------------------------


async def overview_context(state: AdminState) -> dict[str, Any]:
    """The overview's figures, health problems and most recent events."""
    store = state.store
    problems = data.health_problems(state.app, state.runner)
    ov = await data.overview(store, await state.projections.statuses(), state.meter, problems)
    recent = [data.event_view(e) async for e in store.read_all(backward=True, limit=RECENT)]
    return {"ov": ov, "recent": recent}


async def overview(state: AdminState, request: Request) -> Response:
    """``GET /admin``: the overview page."""
    context = await overview_context(state)
    return render(state, request, "overview.html", page="overview", **context)


async def overview_fragment(state: AdminState, request: Request) -> Response:
    """``GET /admin/_/overview``: the overview's live part."""
    return render(state, request, "_overview.html", **await overview_context(state))


# --- streams --------------------------------------------------------------------------------


async def streams(state: AdminState, request: Request) -> Response:
    """``GET /admin/streams``: streams of a domain, by id prefix (one page)."""
    q = request.query_params
    domain, prefix = q.get("domain", "").strip(), q.get("prefix", "").strip()
    if len(prefix) > 256:
        raise ValidationError("prefix: at most 256 characters", field="prefix")
    listed = state.store.list_streams(domain or None, prefix or None, STREAMS_PAGE)
    found = [i async for i in listed]
    return render(
        state,
        request,
        "streams.html",
        page="streams",
        domains=state.app.bus.domains,
        domain=domain,
        prefix=prefix,
        streams=found,
        more=len(found) == STREAMS_PAGE,
    )


async def stream(state: AdminState, request: Request) -> Response:
    """``GET /admin/streams/{domain}/{aggregate_id}``: one stream's events from ``from``
    (404 when the stream has none)."""
    p, q = request.path_params, request.query_params
    sid = StreamId(p["domain"], p["aggregate_id"], q.get("tenant", ""))
    raw = q.get("from", "0")
    if not raw.isdigit():
        raise ValidationError(f"invalid from {raw!r}", field="from")
    start = int(raw)
    store = state.store
    version = await store.stream_version(sid)
    events = (
        []
        if version is None
        else [data.event_view(e) async for e in store.read_stream(sid, start, limit=EVENTS_PAGE)]
    )
    return render(
        state,
        request,
        "stream.html",
        200 if version is not None else 404,
        page="streams",
        stream=sid,
        version=version,
        events=events,
        start=start,
        page_size=EVENTS_PAGE,
    )


async def chain(state: AdminState, request: Request) -> Response:
    """``GET /admin/_/chain/{event_id}``: the correlation chain around an event."""
    corr, links = await data.correlation_chain(state.store, request.path_params["event_id"])
    return render(
        state,
        request,
        "_chain.html",
        correlation_id=corr,
        links=links,
        window=data.CHAIN_WINDOW,
    )


# --- projections ----------------------------------------------------------------------------


async def projections_context(state: AdminState, flash: str = "") -> dict[str, Any]:
    """The projections' statuses and which have requests waiting."""
    padmin = state.projections
    views = [data.projection_view(s) for s in await padmin.statuses()]
    names = {v.status.name.split("/")[0] for v in views}
    pending = {n for n in names if await padmin.pending_for(n)}
    return {"views": views, "pending": pending, "flash": flash}


async def projections(state: AdminState, request: Request) -> Response:
    """``GET /admin/projections``: the projections page."""
    context = await projections_context(state)
    return render(state, request, "projections.html", page="projections", **context)


async def projections_fragment(state: AdminState, request: Request) -> Response:
    """``GET /admin/_/projections``: the projections' live part."""
    return render(state, request, "_projections.html", **await projections_context(state))


# --- dead letters ---------------------------------------------------------------------------


async def letters_context(state: AdminState, projection: str, flash: str = "") -> dict[str, Any]:
    """The dead letters (of ``projection``, or all), which projections have requests waiting,
    and a signature of both (a fragment that would not change is not sent)."""
    padmin = state.projections
    letters = await padmin.dead_letters(projection or None)
    views = [await data.dead_letter_view(state.store, d) for d in letters[:LETTERS_PAGE]]
    names = {d.projection.split("/")[0] for d in letters}
    waiting = {n for n in names if await padmin.pending_for(n)}
    raw = repr([(d.projection, d.event_id, d.attempts, d.error) for d in letters])
    sig = hashlib.sha256(f"{raw}{sorted(waiting)}".encode()).hexdigest()[:16]
    return {
        "letters": views,
        "total": len(letters),
        "projection": projection,
        "waiting": waiting,
        "sig": sig,
        "flash": flash,
    }


async def dead_letters(state: AdminState, request: Request) -> Response:
    """``GET /admin/dead-letters`` (or ``/admin/projections/{name}/dead-letters``)."""
    context = await letters_context(state, request.path_params.get("name", ""))
    return render(state, request, "dead_letters.html", page="dead-letters", **context)


async def letters_fragment(state: AdminState, request: Request) -> Response:
    """``GET /admin/_/dead-letters``: the dead letters' live part (204 if unchanged)."""
    q = request.query_params
    context = await letters_context(state, q.get("projection", ""))
    if q.get("sig") == context["sig"]:
        return Response(status_code=204)  # unchanged: leave open <details> alone
    return render(state, request, "_dead_letters.html", **context)


# --- sagas, outbox ----------------------------------------------------------------------------


async def sagas(state: AdminState, request: Request) -> Response:
    """``GET /admin/sagas``: sagas, their instances and deadlines."""
    runners = [r for r in (state.runner, state.app.runner) if r is not None]
    context = await panels.sagas_context(state.store, runners)
    return render(state, request, "sagas.html", page="sagas", **context)


async def outbox(state: AdminState, request: Request) -> Response:
    """``GET /admin/outbox``: the outbox's backlog."""
    context = await panels.outbox_context(state.store)
    return render(state, request, "outbox.html", page="outbox", **context)


async def outbox_fragment(state: AdminState, request: Request) -> Response:
    """``GET /admin/_/outbox``: the outbox's live part."""
    return render(state, request, "_outbox.html", **await panels.outbox_context(state.store))


# --- live ticks, static files ---------------------------------------------------------------


async def live(state: AdminState, request: Request) -> Response:
    """``GET /admin/live``: Server-Sent Events each time the store's head moves."""
    headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
    body = ticks(state.store, request.query_params.get("head"))
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def static(state: AdminState, request: Request) -> Response:
    """``GET /admin/static/{name}``: the UI's scripts and style sheet (404 for anything else)."""
    name = request.path_params["name"]
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    body = (HERE / "static" / name).read_bytes()
    return Response(
        body,
        media_type=STATIC[name],
        headers={"cache-control": "public, max-age=300", "x-content-type-options": "nosniff"},
    )
