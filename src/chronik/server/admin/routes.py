"""The admin UI's routes: pages (jinja2, autoescaped), htmx fragments, POST actions, live ticks."""

from __future__ import annotations

import contextvars
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from chronik.app import Chronik
from chronik.errors import (
    AuthenticationError,
    ChronikError,
    PermissionDenied,
    ValidationError,
)
from chronik.messages import StreamId
from chronik.projections import ProjectionAdmin, ProjectionRunner
from chronik.server.admin import data, panels
from chronik.server.admin.live import ticks
from chronik.server.admin.security import (
    SECURITY_HEADERS,
    authorize,
    check_same_origin,
    clear_credential,
    safe_next,
    set_credential,
)
from chronik.server.http_auth import HttpAuth
from chronik.server.problems import error_response

__all__ = ["create_admin_routes"]

log = logging.getLogger("chronik.admin")
HERE: Final = Path(__file__).parent
STATIC: Final = {
    "htmx.min.js": "text/javascript",
    "admin.js": "text/javascript",
    "admin.css": "text/css",
}
STREAMS_PAGE: Final = 100
EVENTS_PAGE: Final = 50
LETTERS_PAGE: Final = 100
RECENT: Final = 10
MAX_LOGIN_BODY: Final = 16_384
ACTIONS: Final = ("pause", "resume", "rebuild")
Handler = Callable[[Request], Awaitable[Response]]


_writes: contextvars.ContextVar[bool] = contextvars.ContextVar("admin_writes", default=False)


#: the docs page (under the docs site's root) each admin page links to
DOC_PAGES: Final = {
    "overview": "",
    "streams": "concepts/log-positions/",
    "projections": "how-to/rebuilds-resets/",
    "dead-letters": "how-to/dead-letters/",
    "sagas": "how-to/sagas-deadlines/",
    "outbox": "concepts/delivery/",
}


def create_admin_routes(
    app: Chronik,
    *,
    runner: ProjectionRunner | None = None,
    auth: HttpAuth | None = None,
    base: str = "/admin",
    docs_url: str | None = None,
) -> list[Route]:
    """The admin UI under ``base``, for ``create_http_app(..., extra_routes=...)``; with
    ``docs_url`` (the docs site's root, e.g. ``/docs/``) each page links to its docs page."""
    store = app.store
    padmin = ProjectionAdmin(store)
    meter = data.Meter()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def stream_href(stream: StreamId) -> str:
        href = f"{base}/streams/{stream.domain}/{quote(stream.aggregate_id, safe='')}"
        return f"{href}?{urlencode({'tenant': stream.tenant})}" if stream.tenant else href

    env.globals.update(
        base=base,
        auth=auth is not None,
        stream_href=stream_href,
        docs=docs_url,
        doc_pages=DOC_PAGES,
    )
    env.filters["q"] = lambda s: quote(str(s), safe="")

    def render(template: str, code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("writes", _writes.get())
        html = env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=code, headers=SECURITY_HEADERS)

    def guarded(handler: Handler, action: str = "read", post: bool = False) -> Handler:
        async def call(request: Request) -> Response:
            htmx = request.headers.get("hx-request") == "true"
            try:
                if post:
                    check_same_origin(request)
                authorize(auth, request, action)
                # Buttons that write show only where they can work (with auth the admin
                # right decides on click; without it only when admin writes are enabled).
                _writes.set(auth is not None or bool(getattr(request.app.state, "admin_writes", 0)))
                return await handler(request)
            except AuthenticationError as exc:
                log.warning("admin: refused %s %s: %s", request.method, request.url.path, exc)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                login = f"{base}/login?{urlencode({'next': target})}"
                if htmx or post:
                    return Response(status_code=401, headers={"hx-redirect": login})
                return RedirectResponse(login, status_code=303)
            except Exception as exc:
                status = error_response(exc).status_code
                if isinstance(exc, PermissionDenied):
                    log.warning("admin: refused %s %s: %s", request.method, request.url.path, exc)
                ours = isinstance(exc, ChronikError)
                title = type(exc).__name__ if ours else "InternalError"
                detail = str(exc) if ours else "internal error"
                name = "_error.html" if htmx else "error.html"
                return render(name, status, status=status, title=title, detail=detail)

        return call

    async def statuses() -> list[data.ProjectionView]:
        return [data.projection_view(s) for s in await padmin.statuses()]

    async def pending(views: list[data.ProjectionView]) -> set[str]:
        names = {v.status.name.split("/")[0] for v in views}
        return {n for n in names if await padmin.pending_for(n)}

    # --- overview -----------------------------------------------------------------------------

    async def overview_context() -> dict[str, Any]:
        problems = data.health_problems(app, runner)
        ov = await data.overview(store, await padmin.statuses(), meter, problems)
        recent = [data.event_view(e) async for e in store.read_all(backward=True, limit=RECENT)]
        return {"ov": ov, "recent": recent}

    async def overview(request: Request) -> Response:
        return render("overview.html", page="overview", **await overview_context())

    async def overview_fragment(request: Request) -> Response:
        return render("_overview.html", **await overview_context())

    # --- streams ------------------------------------------------------------------------------

    async def streams(request: Request) -> Response:
        q = request.query_params
        domain, prefix = q.get("domain", "").strip(), q.get("prefix", "").strip()
        if len(prefix) > 256:
            raise ValidationError("prefix: at most 256 characters", field="prefix")
        found = [i async for i in store.list_streams(domain or None, prefix or None, STREAMS_PAGE)]
        return render(
            "streams.html",
            page="streams",
            domains=app.bus.domains,
            domain=domain,
            prefix=prefix,
            streams=found,
            more=len(found) == STREAMS_PAGE,
        )

    async def stream(request: Request) -> Response:
        p, q = request.path_params, request.query_params
        sid = StreamId(p["domain"], p["aggregate_id"], q.get("tenant", ""))
        raw = q.get("from", "0")
        if not raw.isdigit():
            raise ValidationError(f"invalid from {raw!r}", field="from")
        start = int(raw)
        version = await store.stream_version(sid)
        events = (
            []
            if version is None
            else [
                data.event_view(e) async for e in store.read_stream(sid, start, limit=EVENTS_PAGE)
            ]
        )
        return render(
            "stream.html",
            200 if version is not None else 404,
            page="streams",
            stream=sid,
            version=version,
            events=events,
            start=start,
            page_size=EVENTS_PAGE,
        )

    async def chain(request: Request) -> Response:
        corr, links = await data.correlation_chain(store, request.path_params["event_id"])
        return render("_chain.html", correlation_id=corr, links=links, window=data.CHAIN_WINDOW)

    # --- projections --------------------------------------------------------------------------

    async def projections_context(flash: str = "") -> dict[str, Any]:
        views = await statuses()
        return {"views": views, "pending": await pending(views), "flash": flash}

    async def projections(request: Request) -> Response:
        return render("projections.html", page="projections", **await projections_context())

    async def projections_fragment(request: Request) -> Response:
        return render("_projections.html", **await projections_context())

    async def projection_action(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ACTIONS:
            raise ValidationError(f"unknown action {action!r}", field="action")
        await padmin.request(name, action)
        log.info("admin: %s requested for projection %s", action, name)
        flash = f"{action} requested for {name}"
        return render("_projections.html", **await projections_context(flash))

    # --- dead letters -------------------------------------------------------------------------

    async def letters_context(projection: str, flash: str = "") -> dict[str, Any]:
        letters = await padmin.dead_letters(projection or None)
        views = [await data.dead_letter_view(store, d) for d in letters[:LETTERS_PAGE]]
        names = {d.projection.split("/")[0] for d in letters}
        waiting = {n for n in names if await padmin.pending_for(n)}
        raw = repr([(d.projection, d.event_id, d.attempts, d.error) for d in letters])
        sig = hashlib.sha256(f"{raw}{sorted(waiting)}".encode()).hexdigest()[:16]
        return {
            "letters": views,
            "total": len(letters),
            "projection": projection,
            "waiting": waiting,
            "sig": sig,
            "flash": flash,
        }

    async def dead_letters(request: Request) -> Response:
        projection = request.path_params.get("name", "")
        context = await letters_context(projection)
        return render("dead_letters.html", page="dead-letters", **context)

    async def letters_fragment(request: Request) -> Response:
        q = request.query_params
        context = await letters_context(q.get("projection", ""))
        if q.get("sig") == context["sig"]:
            return Response(status_code=204)  # unchanged: leave open <details> alone
        return render("_dead_letters.html", **context)

    async def letter_action(request: Request) -> Response:
        q, action = request.query_params, request.path_params["action"]
        projection, event_id = q.get("projection", ""), q.get("event_id", "")
        if not projection or not event_id:
            raise ValidationError("projection and event_id are required", field="event_id")
        if action == "retry":
            await padmin.request(projection, "retry", event_id)
            flash = f"retry of {event_id} requested"
        elif action == "drop":
            n = await padmin.drop_dead_letters(projection, event_id)
            flash = f"dropped {n} dead letter{'s' if n != 1 else ''}"
        else:
            raise ValidationError(f"unknown action {action!r}", field="action")
        log.info("admin: %s of dead letter %s (%s)", action, event_id, projection)
        return render("_dead_letters.html", **await letters_context(q.get("filter", ""), flash))

    # --- panels of parts chronik does not have yet -----------------------------------------

    async def sagas(request: Request) -> Response:
        runners = [r for r in (runner, app.runner) if r is not None]
        context = await panels.sagas_context(store, runners)
        return render("sagas.html", page="sagas", **context)

    async def outbox(request: Request) -> Response:
        return render("outbox.html", page="outbox", **await panels.outbox_context(store))

    async def outbox_fragment(request: Request) -> Response:
        return render("_outbox.html", **await panels.outbox_context(store))

    async def outbox_action(request: Request) -> Response:
        from chronik.outbox import OutboxAdmin

        action, message_id = request.path_params["action"], request.query_params.get("id", "")
        if not message_id:
            raise ValidationError("id is required", field="id")
        if action == "retry":
            n = await OutboxAdmin(store).retry(message_id)
            flash = f"{n} message{'s' if n != 1 else ''} pending again"
        elif action == "drop":
            n = await OutboxAdmin(store).drop(message_id)
            flash = f"dropped {n} message{'s' if n != 1 else ''}"
        else:
            raise ValidationError(f"unknown action {action!r}", field="action")
        log.info("admin: outbox %s of %s", action, message_id)
        return render("_outbox.html", **await panels.outbox_context(store, flash))

    # --- live ticks -----------------------------------------------------------------------

    async def live(request: Request) -> Response:
        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
        body = ticks(store, request.query_params.get("head"))
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    # --- sign-in ----------------------------------------------------------------------------

    async def login(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"), base)
        if auth is None:
            return RedirectResponse(target, status_code=303)
        if request.method == "GET":
            return render("login.html", next=target, error="")
        try:
            check_same_origin(request)
        except PermissionDenied as exc:
            return render("login.html", 403, next=target, error=str(exc))
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                return render("login.html", 413, next=target, error="request too large")
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        token = (fields.get("credential") or [""])[0].strip()
        target = safe_next((fields.get("next") or [target])[0], base)
        try:
            auth.check({"authorization": f"Bearer {token}"}, "read")
        except (AuthenticationError, PermissionDenied) as exc:
            log.warning("admin: sign-in refused: %s", exc)
            status = 401 if isinstance(exc, AuthenticationError) else 403
            return render("login.html", status, next=target, error=str(exc))
        response = RedirectResponse(target, status_code=303)
        set_credential(response, request, token, base)
        return response

    async def logout(request: Request) -> Response:
        try:
            check_same_origin(request)
        except PermissionDenied as exc:
            return render("error.html", 403, status=403, title="PermissionDenied", detail=str(exc))
        response = RedirectResponse(f"{base}/login", status_code=303)
        clear_credential(response, base)
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        body = (HERE / "static" / name).read_bytes()
        return Response(
            body,
            media_type=STATIC[name],
            headers={"cache-control": "public, max-age=300", "x-content-type-options": "nosniff"},
        )

    return [
        Route(base, guarded(overview)),
        Route(f"{base}/", guarded(overview)),
        Route(f"{base}/_/overview", guarded(overview_fragment)),
        Route(f"{base}/streams", guarded(streams)),
        Route(f"{base}/streams/{{domain}}/{{aggregate_id:path}}", guarded(stream)),
        Route(f"{base}/_/chain/{{event_id}}", guarded(chain)),
        Route(f"{base}/projections", guarded(projections)),
        Route(f"{base}/_/projections", guarded(projections_fragment)),
        Route(
            f"{base}/projections/{{name}}/{{action}}",
            guarded(projection_action, "admin", post=True),
            methods=["POST"],
        ),
        Route(f"{base}/dead-letters", guarded(dead_letters)),
        Route(f"{base}/projections/{{name}}/dead-letters", guarded(dead_letters)),
        Route(f"{base}/_/dead-letters", guarded(letters_fragment)),
        Route(
            f"{base}/dead-letters/{{action}}",
            guarded(letter_action, "admin", post=True),
            methods=["POST"],
        ),
        Route(f"{base}/sagas", guarded(sagas)),
        Route(f"{base}/outbox", guarded(outbox)),
        Route(f"{base}/_/outbox", guarded(outbox_fragment)),
        Route(
            f"{base}/outbox/{{action}}",
            guarded(outbox_action, "admin", post=True),
            methods=["POST"],
        ),
        Route(f"{base}/live", guarded(live)),
        Route(f"{base}/login", login, methods=["GET", "POST"]),
        Route(f"{base}/logout", logout, methods=["POST"]),
        Route(f"{base}/static/{{name}}", static),
    ]
