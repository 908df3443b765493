"""The HTTP gateway (Starlette): commands, streams, events (also as SSE), DCB queries and tagged
appends, projections, live queries.

``create_http_app`` only assembles: it resolves its arguments into an ``HttpState`` (stored on
``app.state.chronik``), and mounts the module-level handlers of ``http_commands`` (the write
side), ``http_streams`` (streams, events, SSE, live queries), ``http_dcb`` (DCB reads and
tagged appends) and ``http_ops`` (projections, health, metrics, schemas, OpenAPI), each
wrapped by ``http_state.guarded`` with its right.

Every error is ``application/problem+json`` with the chronik error's class as its title and a
plain message, never a stack trace (the table is ``chronik.server.status``). Inputs are checked
at the edge (``chronik.server.http_params``: the value rule, positions, parameters); a
committed command is always answered with its result, never a 5xx.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chronik.app import Chronik
from chronik.projections import ProjectionAdmin, ProjectionRunner
from chronik.server import http_commands as commands
from chronik.server import http_dcb as dcb
from chronik.server import http_gdpr as gdpr
from chronik.server import http_ops as ops
from chronik.server import http_params as params
from chronik.server import http_streams as streams
from chronik.server.http_auth import HttpAuth
from chronik.server.http_limits import LimitMiddleware
from chronik.server.http_queries import LiveQuery
from chronik.server.http_state import HttpState, guarded, state_of
from chronik.server.limits import Limiter
from chronik.server.metrics import Metrics
from chronik.server.problems import PROBLEM, error_response, method_not_allowed, problem

__all__ = [
    "PROBLEM",
    "HttpState",
    "LiveQuery",
    "create_http_app",
    "error_response",
    "problem",
    "state_of",
]

log = logging.getLogger("chronik.http")
MAX_LIMIT: Final = params.MAX_LIMIT


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
    raw_append: bool = False,
    limiter: Limiter | None = None,
) -> Starlette:
    """The Starlette application serving ``app`` over HTTP.

    With ``allowed_hosts``, requests naming any other host in their Host header are refused
    (DNS-rebinding protection; ``chronik serve`` allows the loopback names by default).
    Admin writes (projection reset/rebuild/pause/resume, dead-letter retry/drop, the admin UI's
    buttons) need the ``admin`` right when ``auth`` is set; without auth they are refused (403
    AdminWritesDisabled) unless ``admin_writes`` enables them (config ``http.admin_writes``).
    ``POST /v1/dcb/append`` (raw tagged appends, no business logic in between) is refused (403)
    unless ``raw_append`` enables it (config ``http.raw_append``), and needs the ``append``
    right when ``auth`` is set. With ``limiter``, requests past the node's limits (in-flight
    commands, subscriptions, API key rates) are answered 429 with Retry-After at once.
    Every request stays within its credential's tenant scope (``chronik.server.tenancy``);
    projection and personal-data routes need an operator's (tenant ``*``) when auth scopes it.
    """
    metrics = metrics or Metrics()
    metrics.instrument(app)
    supervisors = [app.health]
    if runner is not None and runner.health is not app.health:
        supervisors.append(runner.health)
    state = HttpState(
        app=app,
        admin=ProjectionAdmin(app.store),
        metrics=metrics,
        runner=runner,
        queries={q.name: q for q in queries},
        auth=auth,
        max_body_bytes=max_body_bytes,
        admin_writes=admin_writes,
        raw_append=raw_append,
        supervisors=tuple(supervisors),
    )
    routes = [
        Route("/v1/commands", guarded(commands.post_command), methods=["POST"]),
        Route("/v1/streams", guarded(streams.list_streams, "read")),
        Route(
            "/v1/streams/{domain}/{aggregate_id:path}/events",
            guarded(streams.stream_events, "read"),
        ),
        Route("/v1/events", guarded(streams.all_events, "read")),
        Route("/v1/events/stream", guarded(streams.event_stream, "read")),
        Route("/v1/queries/{name}", guarded(streams.get_query, "read")),
        Route("/v1/dcb/read", guarded(dcb.dcb_read, "read"), methods=["POST"]),
        Route("/v1/dcb/append", guarded(dcb.dcb_append, "append"), methods=["POST"]),
        Route("/v1/schemas", guarded(ops.schemas, "read")),
        Route("/v1/projections", guarded(ops.projections, "read", operator=True)),
        Route(
            "/v1/projections/{name}/dead-letters", guarded(ops.dead_letters, "read", operator=True)
        ),
        Route(
            "/v1/projections/{name}/dead-letters/{action}",
            guarded(ops.dead_letters_action, "admin", operator=True),
            methods=["POST"],
        ),
        Route(
            "/v1/projections/{name}/{action}",
            guarded(ops.projection_action, "admin", operator=True),
            methods=["POST"],
        ),
        Route(
            "/v1/admin/gdpr/forget", guarded(gdpr.forget, "admin", operator=True), methods=["POST"]
        ),
        Route(
            "/v1/admin/gdpr/verify", guarded(gdpr.verify, "read", operator=True), methods=["POST"]
        ),
        Route("/v1/admin/gdpr/forgotten", guarded(gdpr.forgotten, "read", operator=True)),
        Route(
            "/v1/events/{event_id}/redact",
            guarded(gdpr.redact, "admin", operator=True),
            methods=["POST"],
        ),
        Route("/healthz", ops.healthz),
        Route("/readyz", guarded(ops.readyz)),
        Route("/metrics", guarded(ops.metrics_route)),
        Route("/openapi.json", ops.openapi),
        *extra_routes,
    ]

    middleware: list[Middleware] = []
    if allowed_hosts is not None and "*" not in allowed_hosts:
        middleware.append(Middleware(HostCheck, hosts=allowed_hosts))
    if limiter is not None:
        metrics.watch_limits(limiter)
        keys = None if auth is None else auth.keys
        middleware.append(Middleware(LimitMiddleware, limiter=limiter, keys=keys))
    started = time.time()
    http = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: not_found, 405: not_allowed, 500: server_error},
    )
    http.state.started = started
    http.state.admin_writes = admin_writes
    http.state.chronik = state
    return http


async def not_found(request: Request, exc: Exception) -> Response:
    """404 problem+json for a path no route serves."""
    return problem(404, "NotFound", f"no route {request.method} {request.url.path}")


async def not_allowed(request: Request, exc: Exception) -> Response:
    """405 problem+json with the Allow header."""
    allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
    return method_not_allowed(request, allow)


async def server_error(request: Request, exc: Exception) -> Response:
    """500 problem+json for an error no handler caught (no details for a bug)."""
    return error_response(exc)
