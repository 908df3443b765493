"""The HTTP gateway (Starlette): commands, streams, events (also as SSE), projections, live queries.

Every error is ``application/problem+json`` with the chronik error's class as its title and a
plain message, never a stack trace: rejection 422, wrong expected version 409, validation 400,
unknown domain / type / projection 404, auth 401 / 403, store or service down 503.
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
    AuthenticationError,
    ChronikError,
    CommandRejected,
    ConcurrencyError,
    PayloadTooLarge,
    PermissionDenied,
    ServiceUnavailable,
    StoreClosed,
    StoreUnavailable,
    UnknownCommandType,
    UnknownDomain,
    UnknownEventType,
    UnknownProjection,
    ValidationError,
)
from chronik.messages import Command, Position, StreamId
from chronik.projections import ProjectionAdmin, ProjectionRunner, query
from chronik.server.http_auth import HttpAuth
from chronik.server.metrics import Metrics
from chronik.server.openapi import openapi_document

__all__ = ["LiveQuery", "create_http_app"]

log = logging.getLogger("chronik.http")
PROBLEM: Final = "application/problem+json"
MAX_LIMIT: Final = 1000
SSE_KEEPALIVE: Final = 15.0
QUERY_POLL: Final = 0.1

_STATUS: Final[list[tuple[type[BaseException], int]]] = [
    (CommandRejected, 422),
    (PayloadTooLarge, 413),
    (ConcurrencyError, 409),
    (UnknownDomain, 404),
    (UnknownCommandType, 404),
    (UnknownEventType, 404),
    (UnknownProjection, 404),
    (ValidationError, 400),
    (AuthenticationError, 401),
    (PermissionDenied, 403),
    (ServiceUnavailable, 503),
    (StoreUnavailable, 503),
    (StoreClosed, 503),
]


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


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    """An RFC 9457 problem document."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM)


def error_response(exc: BaseException) -> Response:
    """The problem document of an exception (500 without details if it is not chronik's)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            detail = exc.reason if isinstance(exc, CommandRejected) else str(exc)
            extra = {"reason": exc.reason} if isinstance(exc, CommandRejected) else {}
            return problem(status, type(exc).__name__, detail, **extra)
    if isinstance(exc, ChronikError):
        return problem(500, type(exc).__name__, str(exc))
    log.exception("unexpected error in an HTTP call", exc_info=exc)
    return problem(500, "InternalError", "internal error")


class LiveQuery(msgspec.Struct, frozen=True):
    """``GET /v1/queries/{name}?param=...``: rows of one projection table, filtered."""

    name: str
    projection: str
    table: str
    params: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()


class _CommandBody(msgspec.Struct, forbid_unknown_fields=True):
    domain: str
    aggregate_id: str
    type: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    command_id: str | None = None
    metadata: dict[str, str] | None = None
    expected_sequence: int | None = None
    tenant: str = ""


_command_decoder = msgspec.json.Decoder(_CommandBody)


def _limit(request: Request, default: int = 100) -> int:
    raw = request.query_params.get("limit")
    try:
        limit = default if raw is None else int(raw)
    except ValueError:
        raise ValidationError(f"invalid limit {raw!r}", field="limit") from None
    if not 0 < limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be 1..{MAX_LIMIT}", field="limit")
    return limit


def _position(text: str | None) -> Position | None:
    return Position.parse(text) if text else None


def _result_json(result: CommandResult) -> dict[str, Any]:
    return {
        "command_id": result.command_id,
        "stream": str(result.stream),
        "version": result.version,
        "duplicate": result.duplicate,
        "events": [e.to_dict() for e in result.events],
    }


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
) -> Starlette:
    """The Starlette application serving ``app`` over HTTP.

    With ``allowed_hosts``, requests naming any other host in their Host header are refused
    (DNS-rebinding protection; ``chronik serve`` allows the loopback names by default).
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
                return await handler(request)
            except (AuthenticationError, PermissionDenied) as exc:
                log.warning("refused %s %s: %s", request.method, request.url.path, exc)
                return error_response(exc)
            except Exception as exc:
                return error_response(exc)

        return call

    async def body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise PayloadTooLarge(int(declared), max_body_bytes)
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_body_bytes:
                raise PayloadTooLarge(len(data), max_body_bytes)
        return data

    async def post_command(request: Request) -> Response:
        try:
            cmd = _command_decoder.decode(await body(request))
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise ValidationError(f"invalid command body: {exc}", field="body") from None
        command = Command(
            domain=cmd.domain,
            aggregate_id=cmd.aggregate_id,
            type=cmd.type,
            payload=cmd.payload,
            command_id=cmd.command_id,
            metadata=cmd.metadata,
            expected_sequence=cmd.expected_sequence,
            tenant=cmd.tenant,
        )
        if auth is not None:
            auth.check_command(request.headers, command)
        result = await app.dispatch(command)
        if request.query_params.get("wait") == "projections" and runner and result.position:
            async with asyncio.timeout(10):
                await runner.wait_for(result.position)
        return JSONResponse(_result_json(result))

    async def list_streams(request: Request) -> Response:
        q = request.query_params
        limit = _limit(request)
        streams = [
            {
                "stream": str(i.stream),
                "domain": i.stream.domain,
                "aggregate_id": i.stream.aggregate_id,
                "tenant": i.stream.tenant,
                "version": i.version,
            }
            async for i in store.list_streams(
                q.get("domain") or None, q.get("prefix") or None, limit
            )
        ]
        return JSONResponse({"streams": streams})

    async def stream_events(request: Request) -> Response:
        p = request.path_params
        q = request.query_params
        stream = StreamId(p["domain"], p["aggregate_id"], q.get("tenant", ""))
        raw_from = q.get("from")
        if raw_from is not None and not raw_from.isdigit():
            raise ValidationError(f"invalid from {raw_from!r}", field="from")
        start = int(raw_from) if raw_from is not None else None
        events = [
            e.to_dict() async for e in store.read_stream(stream, start, limit=_limit(request))
        ]
        return JSONResponse({"stream": str(stream), "events": events})

    async def all_events(request: Request) -> Response:
        q = request.query_params
        domains = q.getlist("domain") or None
        types = q.getlist("type") or None
        events = [
            e.to_dict()
            async for e in store.read_all(
                _position(q.get("after")),
                domains,
                types,
                _limit(request),
                backward=q.get("order") == "desc",
                before=_position(q.get("before")),
            )
        ]
        return JSONResponse({"events": events})

    async def event_stream(request: Request) -> Response:
        q = request.query_params
        after = _position(request.headers.get("last-event-id") or q.get("after"))
        sub = store.subscribe(after, q.getlist("domain") or None, q.getlist("type") or None)

        async def sse() -> AsyncIterator[bytes]:
            metrics.http_subscriptions += 1
            try:
                async with sub:
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
        unknown = set(request.query_params) - set(spec.params)
        if unknown:
            raise ValidationError(f"unknown query parameters {sorted(unknown)}", field="query")
        where = {k: request.query_params[k] for k in spec.params if k in request.query_params}

        async def rows() -> list[dict[str, Any]]:
            return await query(store, spec.projection, spec.table, where or None, spec.order_by)

        if "text/event-stream" not in request.headers.get("accept", ""):
            return JSONResponse({"query": name, "rows": await rows()})

        async def updates() -> AsyncIterator[bytes]:
            last: list[dict[str, Any]] | None = None
            quiet = 0.0
            while True:
                current = await rows()
                if current != last:
                    last, quiet = current, 0.0
                    yield f"event: result\ndata: {json.dumps(current)}\n\n".encode()
                elif quiet >= SSE_KEEPALIVE:
                    quiet = 0.0
                    yield b": keepalive\n\n"
                await asyncio.sleep(QUERY_POLL)
                quiet += QUERY_POLL

        return StreamingResponse(updates(), media_type="text/event-stream")

    async def projections(request: Request) -> Response:
        return JSONResponse([s.to_json() for s in await admin.statuses()])

    async def projection_action(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ("rebuild", "pause", "resume", "reset"):
            raise ValidationError(f"unknown action {action!r}", field="action")
        request_id = await admin.request(name, action, request.query_params.get("to", ""))
        return JSONResponse(
            {"request_id": request_id, "projection": name, "action": action}, status_code=202
        )

    async def dead_letters(request: Request) -> Response:
        letters = await admin.dead_letters(request.path_params["name"])
        return JSONResponse([msgspec.to_builtins(d) for d in letters])

    async def dead_letters_action(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        event_id = request.query_params.get("event_id") or None
        if action == "retry":
            return JSONResponse(
                {"request_id": await admin.request(name, "retry", event_id or "")}, status_code=202
            )
        if action == "drop":
            return JSONResponse({"dropped": await admin.drop_dead_letters(name, event_id)})
        raise ValidationError(f"unknown action {action!r}", field="action")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems: list[str] = []
        try:
            async with asyncio.timeout(2):
                await store.head()
        except Exception as exc:
            problems.append(f"store: {exc or type(exc).__name__}")
        if runner is not None:
            for status in await admin.statuses():
                if status.name in runner.processors and (
                    status.state in ("failing", "stopped") or not status.alive
                ):
                    problems.append(f"projection {status.name}: {status.state}")
        body = {"status": "ready" if not problems else "not ready", "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    async def metrics_route(request: Request) -> Response:
        await metrics.refresh(store, admin if runner is not None else None)
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    routes = [
        Route("/v1/commands", guarded(post_command), methods=["POST"]),
        Route("/v1/streams", guarded(list_streams, "read")),
        Route("/v1/streams/{domain}/{aggregate_id:path}/events", guarded(stream_events, "read")),
        Route("/v1/events", guarded(all_events, "read")),
        Route("/v1/events/stream", guarded(event_stream, "read")),
        Route("/v1/queries/{name}", guarded(get_query, "read")),
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
        return problem(405, "MethodNotAllowed", f"{request.method} not allowed here")

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
    return http
