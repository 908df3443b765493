"""What every admin UI handler works over: ``AdminState`` (the app, its projections' admin,
the templates, the auth, where the UI is mounted) and ``render`` (a page or fragment with the
security headers).

``create_admin_routes`` builds one ``AdminState`` and binds it to each handler of ``pages``
and ``actions``; a test builds its own and calls a handler alone. Imports chronik's core,
``chronik.server.http_auth`` and the admin UI's ``data`` and ``security``, never a handler module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from chronik.app import Chronik
from chronik.messages import StreamId
from chronik.projections import ProjectionAdmin, ProjectionRunner
from chronik.server.admin.data import Meter
from chronik.server.admin.security import SECURITY_HEADERS
from chronik.server.http_auth import HttpAuth
from chronik.store.base import EventStore
from chronik.transports.base import Transport

__all__ = ["DOC_PAGES", "HERE", "AdminState", "render", "writes_shown"]

HERE: Final = Path(__file__).parent

#: the docs page (under the docs site's root) each admin page links to
DOC_PAGES: Final = {
    "overview": "",
    "streams": "concepts/log-positions/",
    "projections": "how-to/rebuilds-resets/",
    "dead-letters": "how-to/dead-letters/",
    "transport-dead-letters": "how-to/dead-letters/",
    "sagas": "how-to/sagas-deadlines/",
    "outbox": "concepts/delivery/",
    "cluster": "how-to/deployment/",
    "personal-data": "how-to/personal-data/",
    "retention": "how-to/streams-over-time/",
}


@dataclass(frozen=True, slots=True)
class AdminState:
    """The app an admin UI shows and how (``create_admin_routes``' arguments, resolved)."""

    app: Chronik
    projections: ProjectionAdmin
    meter: Meter
    templates: jinja2.Environment
    runner: ProjectionRunner | None = None
    auth: HttpAuth | None = None
    base: str = "/admin"
    #: the transport whose dead letters the UI shows: a Transport, or a URL opened per request
    transport: Transport | str | None = None

    @classmethod
    def create(
        cls,
        app: Chronik,
        *,
        runner: ProjectionRunner | None = None,
        auth: HttpAuth | None = None,
        base: str = "/admin",
        docs_url: str | None = None,
        transport: Transport | str | None = None,
    ) -> AdminState:
        """The state of an admin UI of ``app`` mounted under ``base`` (with ``docs_url``, the
        docs site's root, each page links to its docs page)."""
        templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

        def stream_href(stream: StreamId) -> str:
            href = f"{base}/streams/{stream.domain}/{quote(stream.aggregate_id, safe='')}"
            return f"{href}?{urlencode({'tenant': stream.tenant})}" if stream.tenant else href

        templates.globals.update(
            base=base,
            auth=auth is not None,
            stream_href=stream_href,
            docs=docs_url,
            doc_pages=DOC_PAGES,
        )
        templates.filters["q"] = lambda s: quote(str(s), safe="")
        if transport is None:  # the app's outbox transport, if it has one
            transport = app.outbox_transport
        admin = ProjectionAdmin(app.store)
        return cls(app, admin, Meter(), templates, runner, auth, base, transport)

    @property
    def store(self) -> EventStore:
        """The app's event store."""
        return self.app.store


def writes_shown(state: AdminState, request: Request) -> bool:
    """Whether pages show buttons that write: with auth the admin right decides on click;
    without it only where the HTTP app enabled admin writes."""
    if state.auth is not None:
        return True
    app = request.scope.get("app")
    return bool(getattr(getattr(app, "state", None), "admin_writes", False))


def render(
    state: AdminState, request: Request, template: str, code: int = 200, **context: Any
) -> HTMLResponse:
    """``template`` rendered with ``context`` (and ``writes``), with the security headers."""
    context.setdefault("writes", writes_shown(state, request))
    html = state.templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=code, headers=SECURITY_HEADERS)
