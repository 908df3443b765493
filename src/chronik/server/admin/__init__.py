"""The admin UI at /admin: jinja2 pages with htmx, live through Server-Sent Events.

``create_admin_routes(app, runner=..., auth=...)`` returns the routes to pass to
``create_http_app(..., extra_routes=...)``; ``chronik serve`` mounts them by default. Pages:
overview, stream browser and stream pages (payloads, metadata, correlation chains), projections
(pause / resume / rebuild with progress), dead letters (inspect / retry / drop), and panels for
sagas, deadlines and the outbox. See chronik.server.admin.security for sign-in and CSRF.

Handlers are module-level functions ``handler(state, request)`` over an explicit ``AdminState``
(``state``): ``pages`` (what a page or fragment shows), ``actions`` (the POST buttons and
sign-in); ``routes`` only assembles them behind their checks. ``data``, ``panels`` and ``live``
read the store for them (no HTML), the templates render it.

Its modules import chronik's core and ``chronik.server`` (problems, status, http_auth), never
``chronik.cli`` or ``chronik.server.http``.
"""

from __future__ import annotations

from chronik.server.admin.routes import create_admin_routes

__all__ = ["create_admin_routes"]
