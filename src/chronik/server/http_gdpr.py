"""HTTP handlers for personal data: forget a subject, verify it is gone, list the forgotten,
redact one event. Writes need the ``admin`` right (and, without auth, ``http.admin_writes``),
reads the ``read`` right, as every admin action (``create_http_app`` wraps them in ``guarded``).

- ``POST /v1/admin/gdpr/forget`` ``{"subject", "reason"}``: ``forget_subject`` through the
  app's key ring; the audit event names the authenticated principal (``who``).
- ``POST /v1/admin/gdpr/verify`` ``{"subject", "canaries", "tables"}``: ``verify_subject``
  over every event, system table, snapshot and the given tables (and, on SQLite, the file).
- ``GET /v1/admin/gdpr/forgotten``: the tombstones, most recent first.
- ``POST /v1/events/{event_id}/redact`` ``{"reason"}``: ``redact_event`` (then, on SQLite,
  the file is compacted so the old bytes go).

Imports ``http_state``, ``http_params`` and chronik.lifecycle; the admin UI's Personal data page
(``chronik.server.admin.gdpr``) uses ``principal_name`` too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chronik.errors import AuthenticationError, ValidationError
from chronik.lifecycle.forget import compact_if_sqlite, forget_subject, sqlite_path
from chronik.lifecycle.redact import redact_event
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.lifecycle.subjects import forgotten_subjects, key_ring_for
from chronik.lifecycle.verify import MAX_CANARIES, verify_subject
from chronik.server import http_params as params
from chronik.server.auth import ApiKey
from chronik.server.http_auth import HttpAuth
from chronik.server.http_state import read_body, state_of

__all__ = ["forget", "forgotten", "principal_name", "redact", "verify"]

log = logging.getLogger("chronik.gdpr")


class ForgetBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/admin/gdpr/forget``."""

    subject: str
    reason: str = ""


class VerifyBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/admin/gdpr/verify``."""

    subject: str
    canaries: list[str] = msgspec.field(default_factory=list)
    tables: list[str] = msgspec.field(default_factory=list)


class RedactBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/events/{event_id}/redact``."""

    reason: str


def principal_name(auth: HttpAuth | None, headers: Mapping[str, str], fallback: str) -> str:
    """Who sent a request, for an audit record: the API key's name, the JWT's ``sub``, or
    ``fallback`` (no auth configured: e.g. ``http:127.0.0.1``)."""
    if auth is None:
        return fallback
    try:
        who = auth.authenticate(headers)
    except AuthenticationError:  # guarded() let it through, so this does not happen
        return fallback
    if isinstance(who, ApiKey):
        return f"key:{who.name}"
    return f"jwt:{who.claims.get('sub', 'token')}"


def _peer(request: Request, via: str) -> str:
    host = request.client.host if request.client is not None else "unknown"
    return f"{via}:{host}"


async def forget(request: Request) -> Response:
    """``POST /v1/admin/gdpr/forget``: delete the subject's key, audited with who and why."""
    state = state_of(request)
    body = params.convert_body(await read_body(request), ForgetBody)
    reason = _bounded(body.reason, "reason")
    who = principal_name(state.auth, request.headers, _peer(request, "http"))
    keys = key_ring_for(state.store, state.app.registry)
    report = await forget_subject(state.store, keys, body.subject, by=who, reason=reason)
    return JSONResponse(msgspec.to_builtins(report))


async def verify(request: Request) -> Response:
    """``POST /v1/admin/gdpr/verify``: where the subject's canaries (or still-opening
    envelopes) are found; ``clean`` when nowhere."""
    state = state_of(request)
    body = params.convert_body(await read_body(request), VerifyBody)
    if len(body.canaries) > MAX_CANARIES or len(body.tables) > MAX_CANARIES:
        raise ValidationError(
            f"at most {MAX_CANARIES} canaries and {MAX_CANARIES} tables", field="canaries"
        )
    short = [c for c in body.canaries if len(c) < 4]
    if short:
        raise ValidationError(
            f"a canary needs 4 characters or more: {short[0]!r}", field="canaries"
        )
    path = sqlite_path(state.store.url)
    report = await verify_subject(
        state.store,
        body.subject,
        canaries=body.canaries,
        keys=StoreKeyStore(state.store),
        tables=body.tables,
        sqlite_file=path,
    )
    out = msgspec.to_builtins(report)
    out["clean"] = report.clean
    return JSONResponse(out)


async def forgotten(request: Request) -> Response:
    """``GET /v1/admin/gdpr/forgotten?limit=``: the forgotten subjects, most recent first."""
    state = state_of(request)
    limit = params.limit(request.query_params)
    return JSONResponse(msgspec.to_builtins(await forgotten_subjects(state.store, limit)))


async def redact(request: Request) -> Response:
    """``POST /v1/events/{event_id}/redact``: the event's payload replaced by the marker."""
    state = state_of(request)
    body = params.convert_body(await read_body(request), RedactBody)
    who = principal_name(state.auth, request.headers, _peer(request, "http"))
    event_id = request.path_params["event_id"]
    report = await redact_event(state.store, event_id, by=who, reason=body.reason)
    out = msgspec.to_builtins(report)
    out["compacted"] = await compact_if_sqlite(state.store.url)
    return JSONResponse(out)


def _bounded(text: str, field: str, limit: int = 1024) -> str:
    if len(text) > limit:
        raise ValidationError(f"{field} has more than {limit} characters", field=field)
    return text
