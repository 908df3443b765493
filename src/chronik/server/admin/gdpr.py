"""The admin UI's Personal data page and the event view's Redact button.

- ``GET /admin/personal-data``: a form to forget a subject (with a confirmation) and the list
  of forgotten subjects; ``POST /admin/personal-data/forget`` (form fields ``subject``,
  ``reason``) forgets through the app's key ring and answers the refreshed fragment.
- ``POST /admin/events/{event_id}/redact``: the reason comes from htmx's prompt
  (``HX-Prompt``); answers the fragment that replaces the event on the stream page.

Both writes go through ``chronik.lifecycle`` (``forget_subject``, ``redact_event``), whose
audit events name the signed-in principal (``chronik.server.http_gdpr.principal_name``).
Module-level handlers ``handler(state, request)`` over an ``AdminState``; imports ``state``
and ``security``, never ``routes``.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Final
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from chronik.errors import PayloadTooLarge
from chronik.lifecycle.forget import compact_if_sqlite, forget_subject
from chronik.lifecycle.redact import redact_event
from chronik.lifecycle.subjects import forgotten_subjects, key_ring_for
from chronik.server.admin.security import credentials
from chronik.server.admin.state import AdminState, render
from chronik.server.http_gdpr import principal_name

__all__ = ["forget_action", "personal_data", "redact_action"]

log = logging.getLogger("chronik.admin")
MAX_FORM: Final = 16_384


def _who(state: AdminState, request: Request) -> str:
    host = request.client.host if request.client is not None else "unknown"
    return principal_name(state.auth, credentials(request), f"admin:{host}")


async def _context(state: AdminState, flash: str = "") -> dict[str, Any]:
    gone = await forgotten_subjects(state.store, 200)
    utc = datetime.UTC
    rows = [
        {"subject": s.subject, "at": datetime.datetime.fromtimestamp(s.forgotten_at / 1e6, utc)}
        for s in gone
    ]
    return {"page": "personal-data", "forgotten": rows, "flash": flash}


async def personal_data(state: AdminState, request: Request) -> Response:
    """``GET /admin/personal-data``: the forget form and the forgotten subjects."""
    return render(state, request, "personal_data.html", **await _context(state))


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise PayloadTooLarge(len(body), MAX_FORM)
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    return {k: v[0].strip() for k, v in fields.items() if v}


async def forget_action(state: AdminState, request: Request) -> Response:
    """``POST /admin/personal-data/forget``: forget the subject of the form, audited."""
    form = await _form(request)
    who = _who(state, request)
    keys = key_ring_for(state.store, state.app.registry)
    report = await forget_subject(
        state.store, keys, form.get("subject", ""), by=who, reason=form.get("reason", "")
    )
    done = "its key was deleted" if report.key_deleted else "it had no key left"
    flash = f"forgot {report.subject}: {done} (audit event {report.audit_event_id}, by {who})"
    return render(state, request, "_personal_data.html", **await _context(state, flash))


async def redact_action(state: AdminState, request: Request) -> Response:
    """``POST /admin/events/{event_id}/redact``: redact the event, reason from the prompt."""
    who = _who(state, request)
    reason = request.headers.get("hx-prompt", "")
    report = await redact_event(state.store, request.path_params["event_id"], by=who, reason=reason)
    compacted = await compact_if_sqlite(state.store.url)
    log.info("admin: event %s redacted by %s", report.event_id, who)
    return render(state, request, "_redacted.html", r=report, compacted=compacted)
