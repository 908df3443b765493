"""Errors as RFC 9457 problem documents: the one table from chronik's errors to HTTP statuses.

Rejection 422 (with ``reason``), an undecodable stored event 422 (UndecodableEvent, with the
event's stream, sequence, id, type and version), too large 413, concurrency 409, unknown
domain / type / projection 404, validation 400 (with ``field``), auth 401 / 403, store or
service down 503; any other chronik error 500 with its message, anything else 500 without
details (logged once with its traceback).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from chronik.errors import (
    AuthenticationError,
    ChronikError,
    CommandRejected,
    ConcurrencyError,
    DeserializationError,
    PayloadTooLarge,
    PermissionDenied,
    ReplayRefused,
    ServiceUnavailable,
    StoreClosed,
    StoreUnavailable,
    UnknownCommandType,
    UnknownDomain,
    UnknownEventType,
    UnknownProjection,
    UpcastError,
    ValidationError,
)

__all__ = ["PROBLEM", "error_response", "method_not_allowed", "problem", "problem_fields"]

log = logging.getLogger("chronik.http")
PROBLEM: Final = "application/problem+json"
_STATUS: Final[list[tuple[type[BaseException], int]]] = [
    (CommandRejected, 422),
    (DeserializationError, 422),  # UndecodableEvent: a stored event the code cannot read
    (UpcastError, 422),
    (PayloadTooLarge, 413),
    (ConcurrencyError, 409),
    (ReplayRefused, 409),
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


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    """An RFC 9457 problem document."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM)


def error_response(exc: BaseException) -> Response:
    """The problem document of an exception (500 without details if it is not chronik's)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            detail = exc.reason if isinstance(exc, CommandRejected) else str(exc)
            return problem(status, type(exc).__name__, detail, **problem_fields(exc))
    if isinstance(exc, ChronikError):
        return problem(500, type(exc).__name__, str(exc))
    log.exception("unexpected error in an HTTP call", exc_info=exc)
    return problem(500, "InternalError", "internal error")


def problem_fields(exc: BaseException) -> dict[str, Any]:
    """The fields of a problem besides the detail: what a client acts on."""
    if isinstance(exc, CommandRejected):
        return {"reason": exc.reason}
    if isinstance(exc, ValidationError) and exc.field:
        return {"field": exc.field}
    stored = {"stream", "sequence", "event_id", "event_type", "schema_version"}
    if isinstance(exc, DeserializationError) and stored <= vars(exc).keys():
        return {k: getattr(exc, k) for k in sorted(stored)}  # UndecodableEvent
    return {}


def method_not_allowed(request: Request, allow: str) -> Response:
    """405 problem+json with the Allow header (RFC 9110)."""
    response = problem(405, "MethodNotAllowed", f"{request.method} not allowed here")
    if allow:
        response.headers["allow"] = allow
    return response
