"""The admin UI's transport dead-letters page: list a queue's dead letters, inspect one,
retry it to its group or drop it.

Module-level handlers ``handler(state, request)`` over an ``AdminState`` whose ``transport``
is a Transport (used as it is) or a URL (opened for each request and closed after it, so the
UI holds no broker connection between requests); without one the page says how to give one.
Retry and drop are POST buttons behind the same-origin check and the ``admin`` right, as
every admin write (``create_admin_routes``), and are logged with who did them. Imports
``state`` and ``security``, never ``routes``.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from chronik.errors import ValidationError
from chronik.server.admin.security import credentials
from chronik.server.admin.state import AdminState, render
from chronik.transports.base import Transport
from chronik.transports.dead_letters import DeadLetter

__all__ = ["transport_letter", "transport_letter_action", "transport_letters"]

log = logging.getLogger("chronik.admin")
PAGE: Final = 50


@asynccontextmanager
async def _transport(state: AdminState) -> AsyncIterator[Transport | None]:
    given = state.transport
    if given is None or isinstance(given, Transport):
        yield given
        return
    from chronik.transports import open_transport

    async with open_transport(given) as opened:
        yield opened


def _known_queues(transport: Transport | None) -> list[str]:
    """The dead-letter queues of the consumers this process runs on the transport."""
    consumers = getattr(transport, "_consumers", ())
    return sorted({c.dead_letter_queue for c in consumers})


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _view(d: DeadLetter) -> dict[str, Any]:
    return {"d": d, "at": _when(d.at), "origin": f"{d.topic}/{d.group}" if d.group else d.topic}


async def _context(
    state: AdminState, queue: str, after: str = "", flash: str = "", error: str = ""
) -> dict[str, Any]:
    async with _transport(state) as transport:
        letters: list[DeadLetter] = []
        if transport is not None and queue:
            letters = await transport.dead_letters(queue, limit=PAGE, after=after or None)
        known = _known_queues(transport)
    return {
        "configured": state.transport is not None,
        "queue": queue,
        "after": after,
        "queues": known,
        "letters": [_view(d) for d in letters],
        "more": len(letters) == PAGE,
        "next_after": letters[-1].id if letters else "",
        "flash": flash,
        "error": error,
    }


async def transport_letters(state: AdminState, request: Request) -> Response:
    """``GET /admin/transport/dead-letters?queue=...&after=...``: one queue's dead letters."""
    q = request.query_params
    context = await _context(state, q.get("queue", "").strip(), q.get("after", ""))
    return render(
        state, request, "transport_letters.html", page="transport-dead-letters", **context
    )


async def transport_letter(state: AdminState, request: Request) -> Response:
    """``GET /admin/transport/dead-letters/show?queue=...&id=...``: one with its body."""
    q = request.query_params
    queue, letter_id = q.get("queue", ""), q.get("id", "")
    async with _transport(state) as transport:
        if transport is None:
            raise ValidationError("no transport is configured", field="transport")
        d = await transport.inspect(queue, letter_id)
    body = (d.body or b"").decode("utf-8", "replace")
    return render(
        state,
        request,
        "transport_letter.html",
        page="transport-dead-letters",
        v=_view(d),
        body=body,
        headers=sorted(d.headers.items()),
    )


def _who(state: AdminState, request: Request) -> str:
    """Who pressed the button: the signed-in principal, or the client (no auth)."""
    client = request.client.host if request.client is not None else "?"
    if state.auth is None:
        return f"admin UI without auth from {client}"
    who = state.auth.authenticate(credentials(request))
    name = getattr(who, "name", None) or getattr(who, "subject", None) or type(who).__name__
    return f"admin UI {name} from {client}"


async def transport_letter_action(state: AdminState, request: Request) -> Response:
    """``POST /admin/transport/dead-letters/{retry|drop}?queue=...&id=...``."""
    q, action = request.query_params, request.path_params["action"]
    queue, letter_id = q.get("queue", ""), q.get("id", "")
    if action not in ("retry", "drop"):
        raise ValidationError(f"unknown action {action!r}", field="action")
    if not queue or not letter_id:
        raise ValidationError("queue and id are required", field="id")
    by = _who(state, request)
    async with _transport(state) as transport:
        if transport is None:
            raise ValidationError("no transport is configured", field="transport")
        if action == "retry":
            d = await transport.retry(queue, letter_id, by=by)
            flash = f"retried {d.id} (message {d.message_id}) to {_view(d)['origin']}"
        else:
            d = await transport.drop(queue, letter_id, by=by)
            flash = f"dropped {d.id} (message {d.message_id})"
    log.info("admin: transport dead letter %s %s of %s by %s", letter_id, action, queue, by)
    context = await _context(state, queue, flash=flash)
    return render(state, request, "_transport_letters.html", **context)
