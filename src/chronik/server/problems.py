"""Errors as RFC 9457 problem documents, by the one table in ``chronik.server.status``.

The problem's ``type`` is the error's problem type (``urn:chronik:problem:<slug>``), its
``title`` the chronik error's class, ``detail`` a plain message, plus what a client acts on:
``reason`` (a rejection), ``field`` (the refused input), the stored event of an
UndecodableEvent, the query ``item`` and ``position`` (a string) of an AppendConditionFailed.
Anything that is not a chronik error is 500 without details (logged once with its traceback).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from chronik.errors import (
    AppendConditionFailed,
    ChronikError,
    CommandRejected,
    DeserializationError,
    Overloaded,
    PermissionDenied,
    RateLimited,
    ValidationError,
)
from chronik.server.status import INTERNAL, wire_status

__all__ = ["PROBLEM", "error_response", "method_not_allowed", "problem", "problem_fields"]

log = logging.getLogger("chronik.http")
PROBLEM: Final = "application/problem+json"


def problem(
    status: int, title: str, detail: str, *, type_: str = "about:blank", **extra: Any
) -> Response:
    """An RFC 9457 problem document (``type_``: the problem type URI)."""
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extra}
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM)


def error_response(exc: BaseException) -> Response:
    """The problem document of an exception (500 without details if it is not chronik's)."""
    if isinstance(exc, ChronikError):
        row = wire_status(exc)
        detail = exc.reason if isinstance(exc, CommandRejected) else str(exc)
        fields = problem_fields(exc)
        return problem(row.http, type(exc).__name__, detail, type_=row.problem_type, **fields)
    log.exception("unexpected error in an HTTP call", exc_info=exc)
    return problem(500, "InternalError", "internal error", type_=INTERNAL.problem_type)


def problem_fields(exc: BaseException) -> dict[str, Any]:
    """The fields of a problem besides the detail: what a client acts on."""
    if isinstance(exc, CommandRejected):
        return {"reason": exc.reason}
    if isinstance(exc, ValidationError) and exc.field:
        return {"field": exc.field}
    if isinstance(exc, PermissionDenied) and getattr(exc, "field", None):  # a tenant refusal
        return {"field": exc.field}  # type: ignore[attr-defined]
    if isinstance(exc, Overloaded):  # the limit and the retry hint (Retry-After: seconds)
        fields = {k: getattr(exc, k, None) for k in ("limit", "retry_after_ms")}
        if isinstance(exc, RateLimited):
            fields["key"] = getattr(exc, "key", None)
        return {k: v for k, v in fields.items() if v is not None}
    if isinstance(exc, AppendConditionFailed):  # fields a bare rebuilt instance may lack
        item, position = getattr(exc, "item", None), getattr(exc, "position", None)
        return {
            **({"item": item} if isinstance(item, int) else {}),
            **({"position": str(position)} if position is not None else {}),
        }
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
