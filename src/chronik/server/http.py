"""The HTTP gateway (Starlette): commands, streams, events (also as SSE), projections, live queries.

Every error is ``application/problem+json`` with the chronik error's class as its title and a
plain message, never a stack trace (the table is in ``chronik.server.problems``). Inputs are
checked at the edge (``chronik.server.http_params``: the value rule, positions, parameters); a
committed command is always answered with its result, never a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chronik.app import Chronik
from chronik.commands import CommandResult
from chronik.errors import (
    AdminWritesDisabled,
    AuthenticationError,
    PayloadTooLarge,
    PermissionDenied,
    UnknownProjection,
    ValidationError,
)
from chronik.health import horizon_problems
from chronik.messages import Position, StreamId
from chronik.projections import ProjectionAdmin, ProjectionRunner
from chronik.server import http_params as params
from chronik.server.catalog import catalog_of
from chronik.server.http_auth import HttpAuth
from chronik.server.http_queries import LiveQuery, live_changes, parse_page, read_page, table_of
from chronik.server.metrics import Metrics
from chronik.server.openapi import openapi_document
from chronik.server.problems import PROBLEM, error_response, method_not_allowed, problem

__all__ = ["PROBLEM", "LiveQuery", "create_http_app", "error_response", "problem"]

log = logging.getLogger("chronik.http")
MAX_LIMIT: Final = params.MAX_LIMIT
SSE_KEEPALIVE: Final = 15.0
QUERY_POLL: Final = 0.1


LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")


def request_host(value: str) -> str:
    """The host name of a Host header (``[::1]:8080`` -> ``::1``), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostCheck:
    """Refuses requests whose Host header names a host not served here (421), so a page whose
    DNS name was rebound to this server's address cannot use it from a browser."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            host = request_host(raw)
            if host not in self.hosts:
                log.warning("refused %s: host %r is not allowed", scope.get("path"), host)
                response = problem(
                    421,
                    "MisdirectedRequest",
                    f"host {host!r} is not served here (http.allowed_hosts)",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _result_json(result: CommandResult) -> dict[str, Any]:
    body = {
        "command_id": result.command_id,
        "stream": str(result.stream),
        "version": result.version,
        "duplicate": result.duplicate,
    }
    try:
        return {**body, "events": [e.to_dict() for e in result.events]}
    except Exception:  # committed: answer it even if an event cannot be shown
        log.exception("cannot show the events of committed command %s", result.command_id)
        return {**body, "events": []}


def create_http_app(
    app: Chronik,
    *,
    runner: ProjectionRunner | None = None,
    queries: Sequence[LiveQuery] = (),
    auth: HttpAuth | None = None,
    max_body_bytes: int = 1024 * 1024,
    metrics: Metrics | None = None,
    extra_routes: Sequence[Route] = (),
    allowed_hosts: Sequence[str] | None = None,
    admin_writes: bool = False,
) -> Starlette:
    """The Starlette application serving ``app`` over HTTP.

    With ``allowed_hosts``, requests naming any other host in their Host header are refused
    (DNS-rebinding protection; ``chronik serve`` allows the loopback names by default).
    Admin writes (projection reset/rebuild/pause/resume, dead-letter retry/drop, the admin UI's
    buttons) need the ``admin`` right when ``auth`` is set; without auth they are refused (403
    AdminWritesDisabled) unless ``admin_writes`` enables them (config ``http.admin_writes``).
    """
    store = app.store
    admin = ProjectionAdmin(store)
    live = {q.name: q for q in queries}
    metrics = metrics or Metrics()
    metrics.instrument(app)

    def guarded(
        handler: Callable[[Request], Awaitable[Response]], action: str | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        async def call(request: Request) -> Response:
            try:
                if auth is not None and action is not None:
                    auth.check(request.headers, action)
                elif action == "admin" and not admin_writes:
                    raise AdminWritesDisabled()
                return await handler(request)
            except (AuthenticationError, PermissionDenied) as exc:
                log.warning("refused %s %s: %s", request.method, request.url.path, exc)
                return error_response(exc)
            except Exception as exc:
                return error_response(exc)

        return call

    async def body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        known = declared is not None and declared.isascii() and declared.isdigit()
        if known and int(declared or 0) > max_body_bytes:
            raise PayloadTooLarge(int(declared or 0), max_body_bytes)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_body_bytes:
                raise PayloadTooLarge(len(data), max_body_bytes)
        return bytes(data)

    async def post_command(request: Request) -> Response:
        timeout = params.wait_timeout(request.query_params)
        command = await params.parse_command(await body(request))
        if auth is not None:
            auth.check_command(request.headers, command)
        result = await app.dispatch(command)
        # committed from here on: whatever fails now, the answer is the committed result
        answer = _result_json(result)
        if timeout is None:
            return JSONResponse(answer)
        if await caught_up(result, timeout):
            return JSONResponse({**answer, "projections": "caught_up"})
        return JSONResponse({**answer, "projections": "pending"}, status_code=202)

    async def caught_up(result: CommandResult, seconds: float) -> bool:
        """Whether the projections applied the command's events within ``seconds``."""
        if runner is None or result.position is None:
            return True
        try:
            async with asyncio.timeout(seconds):
                await runner.wait_for(result.position)
        except TimeoutError:
            return False
        except Exception as exc:  # a projection stopped, the store went away: still committed
            log.warning("command %s committed; projections not confirmed: %r", result, exc)
            return False
        return True

    async def list_streams(request: Request) -> Response:
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
            async for i in store.list_streams(domain[0] if domain else None, prefix, limit)
        ]
        return JSONResponse({"streams": streams})

    async def stream_events(request: Request) -> Response:
        p = request.path_params
        q = request.query_params
        stream = StreamId(p["domain"], p["aggregate_id"], q.get("tenant", ""))
        start = params.sequence(q, "from")
        events = [
            e.to_dict() async for e in store.read_stream(stream, start, limit=params.limit(q))
        ]
        return JSONResponse({"stream": str(stream), "events": events})

    async def all_events(request: Request) -> Response:
        q = request.query_params
        events = [
            e.to_dict()
            async for e in store.read_all(
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

        return StreamingResponse(
            sse(), media_type="text/event-stream", headers={"cache-control": "no-store"}
        )

    async def get_query(request: Request) -> Response:
        name = request.path_params["name"]
        spec = live.get(name)
        if spec is None:
            raise UnknownProjection(name, sorted(live))
        table = table_of(spec, runner if runner is not None else app.runner)
        page = parse_page(spec, table, request.query_params)
        if "text/event-stream" not in request.headers.get("accept", ""):
            rows, next_cursor = await read_page(store, spec, page)
            return JSONResponse({"query": name, "rows": rows, "next_cursor": next_cursor})
        changes = live_changes(store, spec, page, QUERY_POLL, SSE_KEEPALIVE)
        return StreamingResponse(
            changes, media_type="text/event-stream", headers={"cache-control": "no-store"}
        )

    async def projections(request: Request) -> Response:
        return JSONResponse([s.to_json() for s in await admin.statuses()])

    async def projection_action(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action == "dead-letters":  # the path of GET .../dead-letters, not an action
            return method_not_allowed(request, "GET, HEAD")
        if action not in ("rebuild", "pause", "resume", "reset"):
            raise ValidationError(f"unknown action {action[:64]!r}", field="action")
        to = params.position(request.query_params.get("to"), "to")
        if to is not None and action != "reset":
            raise ValidationError(f"to applies to reset, not to {action}", field="to")
        if to is not None:
            head = await store.head()
            if to > (head or Position(0)):
                shown = f"the head {head}" if head is not None else "the head (the store is empty)"
                raise ValidationError(f"invalid to: position {to} is past {shown}", field="to")
        request_id = await admin.request(name, action, "" if to is None else str(to))
        return JSONResponse(
            {"request_id": request_id, "projection": name, "action": action}, status_code=202
        )

    async def dead_letters(request: Request) -> Response:
        letters = await admin.dead_letters(request.path_params["name"])
        return JSONResponse([msgspec.to_builtins(d) for d in letters])

    async def dead_letters_action(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        event_id = params.text(request.query_params, "event_id", 64)
        if action == "retry":
            return JSONResponse(
                {"request_id": await admin.request(name, "retry", event_id or "")}, status_code=202
            )
        if action == "drop":
            return JSONResponse({"dropped": await admin.drop_dead_letters(name, event_id)})
        raise ValidationError(f"unknown action {action!r}", field="action")

    supervisors = [app.health]
    if runner is not None and runner.health is not app.health:
        supervisors.append(runner.health)

    async def healthz(request: Request) -> Response:
        fatal = [p for i, h in enumerate(supervisors) for p in h.fatal(None if i else store)]
        if fatal:
            return JSONResponse({"status": "failing", "problems": fatal}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems: list[str] = []
        try:
            async with asyncio.timeout(2):
                await store.head()
        except Exception as exc:
            problems.append(f"store: {exc or type(exc).__name__}")
        for i, h in enumerate(supervisors):
            problems += h.problems(None if i else store)
        if runner is not None and not problems:
            for status in await admin.statuses():
                if status.name in runner.processors and not status.alive:
                    problems.append(f"projection {status.name}: no heartbeat")
            problems += await horizon_problems(store)
        body = {"status": "ready" if not problems else "not ready", "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    async def metrics_route(request: Request) -> Response:
        await metrics.refresh(store, admin if runner is not None else None)
        metrics.refresh_health(supervisors, store)
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(catalog_of(app), {q.name: q.params for q in queries}))

    async def schemas(request: Request) -> Response:
        return JSONResponse(catalog_of(app).to_json())

    routes = [
        Route("/v1/commands", guarded(post_command), methods=["POST"]),
        Route("/v1/streams", guarded(list_streams, "read")),
        Route("/v1/streams/{domain}/{aggregate_id:path}/events", guarded(stream_events, "read")),
        Route("/v1/events", guarded(all_events, "read")),
        Route("/v1/events/stream", guarded(event_stream, "read")),
        Route("/v1/queries/{name}", guarded(get_query, "read")),
        Route("/v1/schemas", guarded(schemas, "read")),
        Route("/v1/projections", guarded(projections, "read")),
        Route("/v1/projections/{name}/dead-letters", guarded(dead_letters, "read")),
        Route(
            "/v1/projections/{name}/dead-letters/{action}",
            guarded(dead_letters_action, "admin"),
            methods=["POST"],
        ),
        Route(
            "/v1/projections/{name}/{action}", guarded(projection_action, "admin"), methods=["POST"]
        ),
        Route("/healthz", healthz),
        Route("/readyz", guarded(readyz)),
        Route("/metrics", guarded(metrics_route)),
        Route("/openapi.json", openapi),
        *extra_routes,
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return problem(404, "NotFound", f"no route {request.method} {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
        return method_not_allowed(request, allow)

    middleware: list[Middleware] = []
    if allowed_hosts is not None and "*" not in allowed_hosts:
        middleware.append(Middleware(HostCheck, hosts=allowed_hosts))
    started = time.time()
    http = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: not_found, 405: not_allowed, 500: lambda r, e: error_response(e)},
    )
    http.state.started = started
    http.state.admin_writes = admin_writes
    return http
