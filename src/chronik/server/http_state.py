"""What every HTTP handler works over: ``HttpState`` (stored on the Starlette app by
``create_http_app``), ``state_of(request)`` to fetch it, ``guarded`` (auth, admin writes and
errors as problem+json around a handler), ``scope_of`` (the tenants a request reaches,
``chronik.server.tenancy``) and ``read_body`` (bounded by ``max_body_bytes``).

The handler modules (``http_commands``, ``http_streams``, ``http_ops``) import this module;
it imports chronik's core and ``chronik.server`` helpers only, never a handler module.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from chronik.app import Chronik
from chronik.errors import (
    AdminWritesDisabled,
    AuthenticationError,
    PayloadTooLarge,
    PermissionDenied,
)
from chronik.health import Supervisor
from chronik.projections import ProjectionAdmin, ProjectionRunner
from chronik.server.http_auth import HttpAuth
from chronik.server.http_queries import LiveQuery
from chronik.server.metrics import Metrics
from chronik.server.problems import error_response
from chronik.server.tenancy import ALL, Scope
from chronik.store.base import EventStore

__all__ = ["Handler", "HttpState", "guarded", "read_body", "scope_of", "state_of"]

log = logging.getLogger("chronik.http")
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HttpState:
    """The app an HTTP gateway serves and how (``create_http_app``'s arguments, resolved)."""

    app: Chronik
    admin: ProjectionAdmin
    metrics: Metrics
    runner: ProjectionRunner | None = None
    queries: Mapping[str, LiveQuery] = field(default_factory=dict)
    auth: HttpAuth | None = None
    max_body_bytes: int = 1024 * 1024
    admin_writes: bool = False
    raw_append: bool = False  # POST /v1/dcb/append (http.raw_append)
    supervisors: Sequence[Supervisor] = ()

    @property
    def store(self) -> EventStore:
        """The app's event store."""
        return self.app.store


def state_of(request: Request) -> HttpState:
    """The HttpState of the app serving ``request``."""
    state: HttpState = request.app.state.chronik
    return state


def scope_of(request: Request) -> Scope:
    """The tenants ``request`` reaches (every tenant without auth); authenticates once per
    request (``guarded`` keeps what it found)."""
    found: Scope | None = getattr(request.state, "tenant_scope", None)
    if found is None:
        auth = state_of(request).auth
        found = ALL if auth is None else auth.scope(auth.authenticate(request.headers))
        request.state.tenant_scope = found
    return found


def guarded(handler: Handler, action: str | None = None, operator: bool = False) -> Handler:
    """``handler`` behind the ``action`` right (with auth; without auth an ``admin`` action
    needs admin writes enabled), for operators only (tenant ``*``) with ``operator``, with
    every error answered as problem+json."""

    async def call(request: Request) -> Response:
        state = state_of(request)
        try:
            if state.auth is not None and action is not None:
                who = state.auth.check(request.headers, action)
                request.state.tenant_scope = state.auth.scope(who)
            elif action == "admin" and not state.admin_writes:
                raise AdminWritesDisabled()
            if operator:
                scope_of(request).require_operator(f"{request.method} {request.url.path}")
            return await handler(request)
        except (AuthenticationError, PermissionDenied) as exc:
            log.warning("refused %s %s: %s", request.method, request.url.path, exc)
            return error_response(exc)
        except Exception as exc:
            return error_response(exc)

    return call


async def read_body(request: Request) -> bytes:
    """The request body; PayloadTooLarge (413) past ``max_body_bytes``, declared or sent."""
    limit = state_of(request).max_body_bytes
    declared = request.headers.get("content-length")
    known = declared is not None and declared.isascii() and declared.isdigit()
    if known and int(declared or 0) > limit:
        raise PayloadTooLarge(int(declared or 0), limit)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(len(data), limit)
    return bytes(data)
