"""The admin UI's routes: ``create_admin_routes`` builds one ``AdminState`` and assembles the
module-level handlers of ``pages`` (pages, htmx fragments, live ticks, static files) and
``actions`` (the POST buttons, sign-in), each behind ``guarded`` with its right.

``guarded`` is where auth, the same-origin check of a POST and the error pages live: a
request without credentials goes to the sign-in page (htmx: ``hx-redirect``), any other error
is an HTML error page (or fragment) naming the chronik error, never a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from chronik.app import Chronik
from chronik.errors import AuthenticationError, ChronikError, PermissionDenied
from chronik.projections import ProjectionRunner
from chronik.server.admin import actions, pages
from chronik.server.admin import cluster as cluster_page
from chronik.server.admin import gdpr as gdpr_page
from chronik.server.admin import retention as retention_page
from chronik.server.admin import transport_letters as letters
from chronik.server.admin.security import authorize, check_same_origin
from chronik.server.admin.state import DOC_PAGES, AdminState, render
from chronik.server.http_auth import HttpAuth
from chronik.server.problems import error_response
from chronik.transports.base import Transport

__all__ = ["DOC_PAGES", "AdminHandler", "bound", "create_admin_routes", "guarded"]

log = logging.getLogger("chronik.admin")
Endpoint = Callable[[Request], Awaitable[Response]]
#: an admin UI handler: ``handler(state, request)``
AdminHandler = Callable[[AdminState, Request], Awaitable[Response]]


def create_admin_routes(
    app: Chronik,
    *,
    runner: ProjectionRunner | None = None,
    auth: HttpAuth | None = None,
    base: str = "/admin",
    docs_url: str | None = None,
    transport: Transport | str | None = None,
) -> list[Route]:
    """The admin UI under ``base``, for ``create_http_app(..., extra_routes=...)``; with
    ``docs_url`` (the docs site's root, e.g. ``/docs/``) each page links to its docs page;
    ``transport`` (a Transport or a URL; default: the app's outbox transport) is the one whose
    dead letters it shows."""
    state = AdminState.create(
        app, runner=runner, auth=auth, base=base, docs_url=docs_url, transport=transport
    )

    read = partial(guarded, state)
    write = partial(guarded, state, action="admin", post=True)
    bare = partial(bound, state)

    return [
        Route(base, read(pages.overview)),
        Route(f"{base}/", read(pages.overview)),
        Route(f"{base}/_/overview", read(pages.overview_fragment)),
        Route(f"{base}/streams", read(pages.streams)),
        Route(f"{base}/streams/{{domain}}/{{aggregate_id:path}}", read(pages.stream)),
        Route(f"{base}/_/chain/{{event_id}}", read(pages.chain)),
        Route(f"{base}/projections", read(pages.projections)),
        Route(f"{base}/_/projections", read(pages.projections_fragment)),
        Route(
            f"{base}/projections/{{name}}/{{action}}",
            write(actions.projection_action),
            methods=["POST"],
        ),
        Route(f"{base}/dead-letters", read(pages.dead_letters)),
        Route(f"{base}/projections/{{name}}/dead-letters", read(pages.dead_letters)),
        Route(f"{base}/_/dead-letters", read(pages.letters_fragment)),
        Route(f"{base}/dead-letters/{{action}}", write(actions.letter_action), methods=["POST"]),
        Route(f"{base}/transport/dead-letters", read(letters.transport_letters)),
        Route(f"{base}/transport/dead-letters/show", read(letters.transport_letter)),
        Route(
            f"{base}/transport/dead-letters/{{action}}",
            write(letters.transport_letter_action),
            methods=["POST"],
        ),
        Route(f"{base}/sagas", read(pages.sagas)),
        Route(f"{base}/outbox", read(pages.outbox)),
        Route(f"{base}/_/outbox", read(pages.outbox_fragment)),
        Route(f"{base}/outbox/{{action}}", write(actions.outbox_action), methods=["POST"]),
        Route(f"{base}/cluster", read(cluster_page.cluster)),
        Route(f"{base}/personal-data", read(gdpr_page.personal_data)),
        Route(f"{base}/retention", read(retention_page.retention)),
        Route(
            f"{base}/retention/{{action}}",
            write(retention_page.retention_action),
            methods=["POST"],
        ),
        Route(f"{base}/personal-data/forget", write(gdpr_page.forget_action), methods=["POST"]),
        Route(
            f"{base}/events/{{event_id}}/redact", write(gdpr_page.redact_action), methods=["POST"]
        ),
        Route(f"{base}/live", read(pages.live)),
        Route(f"{base}/login", bare(actions.login), methods=["GET", "POST"]),
        Route(f"{base}/logout", bare(actions.logout), methods=["POST"]),
        Route(f"{base}/static/{{name}}", bare(pages.static)),
    ]


def bound(state: AdminState, handler: AdminHandler) -> Endpoint:
    """``handler`` as a Starlette endpoint over ``state`` (no checks: sign-in, static files)."""

    async def call(request: Request) -> Response:
        return await handler(state, request)

    return call


def guarded(
    state: AdminState, handler: AdminHandler, action: str = "read", post: bool = False
) -> Endpoint:
    """``handler`` over ``state`` behind the ``action`` right (and, for a ``post``, the
    same-origin check); errors answered as the sign-in redirect or an HTML error page."""

    async def call(request: Request) -> Response:
        htmx = request.headers.get("hx-request") == "true"
        try:
            if post:
                check_same_origin(request)
            authorize(state.auth, request, action)
            return await handler(state, request)
        except AuthenticationError as exc:
            log.warning("admin: refused %s %s: %s", request.method, request.url.path, exc)
            return _to_login(state, request, htmx or post)
        except Exception as exc:
            status = error_response(exc).status_code
            if isinstance(exc, PermissionDenied):
                log.warning("admin: refused %s %s: %s", request.method, request.url.path, exc)
            ours = isinstance(exc, ChronikError)
            title = type(exc).__name__ if ours else "InternalError"
            detail = str(exc) if ours else "internal error"
            name = "_error.html" if htmx else "error.html"
            return render(state, request, name, status, status=status, title=title, detail=detail)

    return call


def _to_login(state: AdminState, request: Request, htmx: bool) -> Response:
    """To the sign-in page and back here: 401 with ``hx-redirect`` for htmx and POSTs."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = f"{state.base}/login?{urlencode({'next': target})}"
    if htmx:
        return Response(status_code=401, headers={"hx-redirect": login})
    return RedirectResponse(login, status_code=303)
