"""HTTP handlers for operators: projections (status, actions, dead letters), health,
readiness, metrics, the schema catalog and the OpenAPI document.

Module-level handlers over ``chronik.server.http_state.HttpState``; they import
``http_state``, ``http_params``, ``problems``, ``catalog`` and ``openapi``.
"""

from __future__ import annotations

import asyncio

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chronik.errors import ValidationError
from chronik.health import horizon_problems
from chronik.messages import Position
from chronik.server import http_params as params
from chronik.server.catalog import catalog_of
from chronik.server.http_state import state_of
from chronik.server.openapi import openapi_document
from chronik.server.problems import method_not_allowed

__all__ = [
    "dead_letters",
    "dead_letters_action",
    "healthz",
    "metrics_route",
    "openapi",
    "projection_action",
    "projections",
    "readyz",
    "schemas",
]


async def projections(request: Request) -> Response:
    """``GET /v1/projections``: every projection's status."""
    return JSONResponse([s.to_json() for s in await state_of(request).admin.statuses()])


async def projection_action(request: Request) -> Response:
    """``POST /v1/projections/{name}/{action}``: rebuild, pause, resume, reset (``?to=``) or
    repartition (``?partitions=``)."""
    state = state_of(request)
    name, action = request.path_params["name"], request.path_params["action"]
    if action == "dead-letters":  # the path of GET .../dead-letters, not an action
        return method_not_allowed(request, "GET, HEAD")
    if action == "repartition":  # ?partitions=N: a new partition count, no rebuild
        count = params.sequence(request.query_params, "partitions")
        if count is None:
            raise ValidationError("repartition needs partitions=N (2..256)", field="partitions")
        request_id = await state.admin.repartition(name, count)
        return JSONResponse(
            {"request_id": request_id, "projection": name, "action": action, "partitions": count},
            status_code=202,
        )
    if action not in ("rebuild", "pause", "resume", "reset"):
        raise ValidationError(f"unknown action {action[:64]!r}", field="action")
    to = params.position(request.query_params.get("to"), "to")
    if to is not None and action != "reset":
        raise ValidationError(f"to applies to reset, not to {action}", field="to")
    if to is not None:
        head = await state.store.head()
        if to > (head or Position(0)):
            shown = f"the head {head}" if head is not None else "the head (the store is empty)"
            raise ValidationError(f"invalid to: position {to} is past {shown}", field="to")
    request_id = await state.admin.request(name, action, "" if to is None else str(to))
    return JSONResponse(
        {"request_id": request_id, "projection": name, "action": action}, status_code=202
    )


async def dead_letters(request: Request) -> Response:
    """``GET /v1/projections/{name}/dead-letters``: the events a projection parked."""
    letters = await state_of(request).admin.dead_letters(request.path_params["name"])
    return JSONResponse([msgspec.to_builtins(d) for d in letters])


async def dead_letters_action(request: Request) -> Response:
    """``POST /v1/projections/{name}/dead-letters/{retry|drop}?event_id=``."""
    admin = state_of(request).admin
    name, action = request.path_params["name"], request.path_params["action"]
    event_id = params.text(request.query_params, "event_id", 64)
    if action == "retry":
        return JSONResponse(
            {"request_id": await admin.request(name, "retry", event_id or "")}, status_code=202
        )
    if action == "drop":
        return JSONResponse({"dropped": await admin.drop_dead_letters(name, event_id)})
    raise ValidationError(f"unknown action {action!r}", field="action")


async def healthz(request: Request) -> Response:
    """``GET /healthz``: 503 while a vital part is dead (wedged writer, blocked loop, ...)."""
    state = state_of(request)
    store = state.store
    fatal = [p for i, h in enumerate(state.supervisors) for p in h.fatal(None if i else store)]
    if fatal:
        return JSONResponse({"status": "failing", "problems": fatal}, status_code=503)
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """``GET /readyz``: 503 naming each problem (store, tasks, projections, horizon)."""
    state = state_of(request)
    store, runner = state.store, state.runner
    problems: list[str] = []
    try:
        async with asyncio.timeout(2):
            await store.head()
    except Exception as exc:
        problems.append(f"store: {exc or type(exc).__name__}")
    for i, h in enumerate(state.supervisors):
        problems += h.problems(None if i else store)
    if runner is not None and not problems:
        for status in await state.admin.statuses():
            if status.name in runner.processors and not status.alive:
                problems.append(f"projection {status.name}: no heartbeat")
        problems += await horizon_problems(store)
    body = {"status": "ready" if not problems else "not ready", "problems": problems}
    return JSONResponse(body, status_code=200 if not problems else 503)


async def metrics_route(request: Request) -> Response:
    """``GET /metrics``: Prometheus text."""
    state = state_of(request)
    metrics = state.metrics
    await metrics.refresh(state.store, state.admin if state.runner is not None else None)
    metrics.refresh_health(state.supervisors, state.store)
    data, content_type = metrics.render()
    return Response(data, media_type=content_type)


async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: the OpenAPI document, with the app's command schemas."""
    state = state_of(request)
    queries = {q.name: q.params for q in state.queries.values()}
    return JSONResponse(openapi_document(catalog_of(state.app), queries))


async def schemas(request: Request) -> Response:
    """``GET /v1/schemas``: the schema catalog (commands and events)."""
    return JSONResponse(catalog_of(state_of(request).app).to_json())
