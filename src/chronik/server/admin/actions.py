"""The admin UI's POST handlers: the buttons that write (projection pause / resume / rebuild /
repartition, dead-letter and outbox retry / drop), and sign-in / sign-out.

Module-level functions ``handler(state, request)`` over an ``AdminState``.
``create_admin_routes`` binds the buttons behind the same-origin check and the ``admin`` right
(without auth: only where the HTTP app enabled admin writes); each answers with the fragment it
changed. ``login`` and ``logout`` check the origin themselves. Imports ``state``, ``pages`` (the
fragments' contexts) and ``security``, never ``routes``.
"""

from __future__ import annotations

import logging
from typing import Final
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from chronik.errors import AuthenticationError, PermissionDenied, ValidationError
from chronik.server.admin import panels
from chronik.server.admin.pages import letters_context, projections_context
from chronik.server.admin.security import (
    check_same_origin,
    clear_credential,
    safe_next,
    set_credential,
)
from chronik.server.admin.state import AdminState, render

__all__ = ["letter_action", "login", "logout", "outbox_action", "projection_action"]

log = logging.getLogger("chronik.admin")
ACTIONS: Final = ("pause", "resume", "rebuild")
MAX_LOGIN_BODY: Final = 16_384


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


async def projection_action(state: AdminState, request: Request) -> Response:
    """``POST /admin/projections/{name}/{action}``: request a pause, resume or rebuild."""
    name, action = request.path_params["name"], request.path_params["action"]
    if action == "repartition":  # the count comes from the button's prompt (hx-prompt)
        return await _repartition(state, request, name)
    if action not in ACTIONS:
        raise ValidationError(f"unknown action {action!r}", field="action")
    await state.projections.request(name, action)
    log.info("admin: %s requested for projection %s", action, name)
    context = await projections_context(state, f"{action} requested for {name}")
    return render(state, request, "_projections.html", **context)


async def _repartition(state: AdminState, request: Request, name: str) -> Response:
    """Request a repartition into the count the user typed (header ``HX-Prompt``)."""
    raw = (request.headers.get("hx-prompt") or request.query_params.get("partitions", "")).strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 3:
        shown = repr(raw[:16])
        raise ValidationError(f"invalid partitions {shown}: expected 2..256", field="partitions")
    count = int(raw)
    await state.projections.repartition(name, count)
    log.info("admin: repartition of %s into %d partitions requested", name, count)
    flash = f"repartition of {name} into {count} partitions requested"
    context = await projections_context(state, flash)
    return render(state, request, "_projections.html", **context)


async def letter_action(state: AdminState, request: Request) -> Response:
    """``POST /admin/dead-letters/{retry|drop}?projection=...&event_id=...``."""
    q, action = request.query_params, request.path_params["action"]
    projection, event_id = q.get("projection", ""), q.get("event_id", "")
    if not projection or not event_id:
        raise ValidationError("projection and event_id are required", field="event_id")
    if action == "retry":
        await state.projections.request(projection, "retry", event_id)
        flash = f"retry of {event_id} requested"
    elif action == "drop":
        n = await state.projections.drop_dead_letters(projection, event_id)
        flash = f"dropped {_plural(n, 'dead letter')}"
    else:
        raise ValidationError(f"unknown action {action!r}", field="action")
    log.info("admin: %s of dead letter %s (%s)", action, event_id, projection)
    context = await letters_context(state, q.get("filter", ""), flash)
    return render(state, request, "_dead_letters.html", **context)


async def outbox_action(state: AdminState, request: Request) -> Response:
    """``POST /admin/outbox/{retry|drop}?id=...``: a failed message pending again, or gone."""
    from chronik.outbox import OutboxAdmin

    action, message_id = request.path_params["action"], request.query_params.get("id", "")
    if not message_id:
        raise ValidationError("id is required", field="id")
    if action == "retry":
        n = await OutboxAdmin(state.store).retry(message_id)
        flash = f"{_plural(n, 'message')} pending again"
    elif action == "drop":
        n = await OutboxAdmin(state.store).drop(message_id)
        flash = f"dropped {_plural(n, 'message')}"
    else:
        raise ValidationError(f"unknown action {action!r}", field="action")
    log.info("admin: outbox %s of %s", action, message_id)
    context = await panels.outbox_context(state.store, flash)
    return render(state, request, "_outbox.html", **context)


async def login(state: AdminState, request: Request) -> Response:
    """``GET|POST /admin/login``: the sign-in form; a valid credential is kept in the cookie
    (without auth: straight on to ``next``)."""
    base, auth = state.base, state.auth
    target = safe_next(request.query_params.get("next"), base)
    if auth is None:
        return RedirectResponse(target, status_code=303)
    if request.method == "GET":
        return render(state, request, "login.html", next=target, error="")
    try:
        check_same_origin(request)
    except PermissionDenied as exc:
        return render(state, request, "login.html", 403, next=target, error=str(exc))
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return render(state, request, "login.html", 413, next=target, error="request too large")
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    token = (fields.get("credential") or [""])[0].strip()
    target = safe_next((fields.get("next") or [target])[0], base)
    try:
        auth.check({"authorization": f"Bearer {token}"}, "read")
    except (AuthenticationError, PermissionDenied) as exc:
        log.warning("admin: sign-in refused: %s", exc)
        status = 401 if isinstance(exc, AuthenticationError) else 403
        return render(state, request, "login.html", status, next=target, error=str(exc))
    response = RedirectResponse(target, status_code=303)
    set_credential(response, request, token, base)
    return response


async def logout(state: AdminState, request: Request) -> Response:
    """``POST /admin/logout``: forget the sign-in cookie."""
    try:
        check_same_origin(request)
    except PermissionDenied as exc:
        return render(
            state, request, "error.html", 403, status=403, title="PermissionDenied", detail=str(exc)
        )
    response = RedirectResponse(f"{state.base}/login", status_code=303)
    clear_credential(response, state.base)
    return response
