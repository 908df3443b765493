"""The node's limits at the HTTP edge: ``LimitMiddleware`` answers ``429`` with ``Retry-After``
at once for a request past a limit, before its body is read.

- ``POST /v1/commands`` holds an in-flight command slot while it runs;
- ``GET /v1/events/stream`` and a live query's SSE stream hold a subscription slot while open;
- every ``/v1/`` request presenting an API key with a ``rate`` takes a token of its bucket (an
  unknown key or a JWT passes on: the handler answers it).

The problem document is the error's (``Overloaded`` / ``RateLimited``) with ``limit`` and
``retry_after_ms``; ``Retry-After`` is in whole seconds (at least 1, as RFC 9110 wants).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from chronik.errors import AuthenticationError, Overloaded
from chronik.server.auth import Auth
from chronik.server.limits import Limiter
from chronik.server.problems import error_response

__all__ = ["LimitMiddleware"]

_STREAM: Final = "/v1/events/stream"
_QUERIES: Final = "/v1/queries/"


class LimitMiddleware:
    """Applies a ``Limiter`` to the requests of an ASGI app (see the module docstring)."""

    def __init__(self, app: ASGIApp, limiter: Limiter, keys: Auth | None = None) -> None:
        self.app = app
        self.limiter = limiter
        self.keys = keys

    def _slot(self, scope: Scope, headers: dict[bytes, bytes]) -> AbstractContextManager[None]:
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path == "/v1/commands" and method == "POST":
            return self.limiter.command("http")
        if method == "GET" and (
            path == _STREAM
            or (path.startswith(_QUERIES) and b"text/event-stream" in headers.get(b"accept", b""))
        ):
            return self.limiter.subscription("http")
        return nullcontext()

    def _admit(self, headers: dict[bytes, bytes]) -> None:
        if self.keys is None or not self.limiter.rated:
            return
        presented = headers.get(b"x-api-key", b"").decode("latin-1")
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if not presented and auth.lower().startswith("bearer "):
            presented = auth[7:].strip()
        if not presented or presented.count(".") == 2:  # none, or a JWT: the handler decides
            return
        try:
            key = self.keys.authenticate([("x-api-key", presented)])
        except AuthenticationError:
            return
        self.limiter.check_rate(key.name, "http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            self._admit(headers)
            held = self._slot(scope, headers)
            held.__enter__()
        except Overloaded as exc:
            response = error_response(exc)
            response.headers["retry-after"] = str(max(1, math.ceil(exc.retry_after_ms / 1000)))
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            held.__exit__(None, None, None)
