"""The admin UI over plain HTTP: escaping, CSRF refusal, sign-in and permissions, security
headers, live ticks, static files, and correlation chains with forged causation cycles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chronik.messages import EventData, StreamId
from chronik.projections import ProjectionRunner
from chronik.server.admin import create_admin_routes
from chronik.server.admin.data import RATE_WINDOW, Meter, correlation_chain
from chronik.server.admin.routes import DOC_PAGES
from chronik.server.auth import ApiKey, Auth
from chronik.server.http import create_http_app
from chronik.server.http_auth import HttpAuth
from chronik.server.http_server import HttpServer
from chronik.store.memory import MemoryEventStore
from examples.shop.app import build_app, projections
from examples.shop.projections import loyalty

READER, ADMIN = "reader-key-123", "admin-key-456"
EVIL = '<script>alert("x")</script>'


async def serve(
    auth: HttpAuth | None, admin_writes: bool = True, docs_url: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app("memory://")
    await app.open()
    runner = ProjectionRunner(app.store, projections(app))
    await runner.start()
    routes = create_admin_routes(app, runner=runner, auth=auth, docs_url=docs_url)
    http = create_http_app(
        app, runner=runner, auth=auth, extra_routes=routes, admin_writes=admin_writes
    )
    server = HttpServer(http, port=0)
    await server.start()
    url = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        body = {
            "domain": "customer",
            "aggregate_id": f'x"><b>{EVIL}',
            "type": "CreateCustomer",
            "payload": {"name": EVIL, "email": "e@x"},
        }
        headers = {"x-api-key": ADMIN} if auth else {}
        r = await c.post("/v1/commands?wait=projections", json=body, headers=headers)
        assert r.status_code == 200, r.text
        yield c
    await server.stop()
    await runner.stop()
    await app.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An admin UI without auth, one customer with a hostile name and id."""
    async for c in serve(None):
        yield c


@pytest.fixture
async def secured() -> AsyncIterator[httpx.AsyncClient]:
    """An admin UI behind API keys (reader: read only; ops: admin too)."""
    ops = ApiKey("ops", ADMIN, admin=True, commands={"customer": "*"})
    keys = Auth([ApiKey("reader", READER), ops])
    async for c in serve(HttpAuth(keys)):
        yield c


@pytest.fixture
async def readonly() -> AsyncIterator[httpx.AsyncClient]:
    """An admin UI without auth and without admin writes enabled (the default)."""
    async for c in serve(None, admin_writes=False):
        yield c


async def test_without_auth_or_admin_writes_the_ui_shows_no_write_buttons(
    readonly: httpx.AsyncClient,
) -> None:
    """With admin writes off, pages say read-only instead of offering buttons, and a forged
    post is refused with the message that says how to enable them."""
    page = await readonly.get("/admin/projections")
    assert page.status_code == 200 and "read-only: admin writes are off" in page.text
    assert "rebuild-button" not in page.text and 'class="pause"' not in page.text
    r = await readonly.post("/admin/projections/receipts/rebuild", headers=origin(readonly))
    assert r.status_code == 403 and "admin_writes" in r.text


async def test_each_page_links_to_its_docs_page_and_the_pages_exist() -> None:
    """With a docs site, every admin page links to the docs page about it, and each linked
    page is one the docs site has (docs/PATH.md or docs/PATH/index.md)."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    for page in DOC_PAGES.values():
        path = page.rstrip("/")
        assert not path or (docs / f"{path}.md").is_file() or (docs / path / "index.md").is_file()
    async for c in serve(None, docs_url="/docs/"):
        for name, page in [("projections", "how-to/rebuilds-resets/"), ("outbox", "concepts/")]:
            html = (await c.get(f"/admin/{name}")).text
            assert f'class="docs" href="/docs/{page}' in html
    async for c in serve(None):  # no docs site: no link
        assert 'class="docs"' not in (await c.get("/admin/projections")).text


def origin(c: httpx.AsyncClient) -> dict[str, str]:
    return {"origin": str(c.base_url).rstrip("/")}


async def test_everything_shown_is_escaped(http: httpx.AsyncClient) -> None:
    """Hostile payloads and aggregate ids appear escaped on the overview, list and stream page."""
    stream = (await http.get("/v1/streams")).json()["streams"][0]
    href = "/admin/streams/customer/" + httpx.URL(path=stream["aggregate_id"]).raw_path.decode()
    for path in ("/admin", "/admin/streams?domain=customer", href):
        r = await http.get(path)
        assert r.status_code == 200, (path, r.text)
        assert "<script>alert" not in r.text and "<b>" not in r.text, path
    page = (await http.get(href)).text
    assert "&lt;script&gt;alert(\\&#34;x\\&#34;)&lt;/script&gt;" in page


async def test_posts_from_another_origin_are_refused(http: httpx.AsyncClient) -> None:
    """A POST without Origin/Referer, or from another site, is 403; same origin is allowed."""
    url = "/admin/projections/receipts/pause"
    assert (await http.post(url)).status_code == 403
    assert (await http.post(url, headers={"origin": "http://evil.example"})).status_code == 403
    assert (await http.post(url, headers={"origin": "null"})).status_code == 403
    referer = {"referer": f"{str(http.base_url).rstrip('/')}/admin/projections"}
    assert (await http.post(url, headers=referer)).status_code == 200
    r = await http.post(url, headers=origin(http))
    assert r.status_code == 200 and "pause requested for receipts" in r.text


async def test_pages_carry_security_headers(http: httpx.AsyncClient) -> None:
    """Pages forbid inline scripts, framing and sniffing; static files are an allowlist."""
    r = await http.get("/admin/projections")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    js = await http.get("/admin/static/htmx.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert (await http.get("/admin/static/..%2Fsecurity.py")).status_code == 404
    assert (await http.get("/admin/static/data.py")).status_code == 404


async def test_unknown_things_are_error_pages(http: httpx.AsyncClient) -> None:
    """Unknown projections and bad stream ids answer 404 / 400 pages, never a traceback."""
    r = await http.get("/admin/projections/nope/dead-letters")
    assert r.status_code == 404 and "UnknownProjection" in r.text
    r = await http.get("/admin/streams/Bad%20Domain/x")
    assert r.status_code == 400 and "Traceback" not in r.text
    r = await http.get("/admin/streams/customer/nobody")
    assert r.status_code == 404 and "no events" in r.text
    r = await http.post("/admin/projections/receipts/explode", headers=origin(http))
    assert r.status_code == 400


async def test_sign_in_cookie_and_permissions(secured: httpx.AsyncClient) -> None:
    """No credentials: to the sign-in page; a read key reads but may not act; admin may."""
    r = await secured.get("/admin/projections")
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/login?next=")
    r = await secured.get("/admin/_/projections", headers={"hx-request": "true"})
    assert r.status_code == 401 and r.headers["hx-redirect"].startswith("/admin/login")
    assert (await secured.get("/admin/live")).status_code == 303
    form = {"credential": "not-a-key", "next": "/admin/streams"}
    r = await secured.post("/admin/login", data=form, headers=origin(secured))
    assert r.status_code == 401 and "unknown credentials" in r.text
    form["credential"] = READER
    r = await secured.post("/admin/login", data=form, headers=origin(secured))
    assert r.status_code == 303 and r.headers["location"] == "/admin/streams"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
    assert (await secured.get("/admin/projections")).status_code == 200
    r = await secured.post("/admin/projections/receipts/pause", headers=origin(secured))
    assert r.status_code == 403 and "reader may not admin" in r.text
    headers = {**origin(secured), "x-api-key": ADMIN}
    r = await secured.post("/admin/projections/receipts/pause", headers=headers)
    assert r.status_code == 200
    r = await secured.post("/admin/logout", headers=origin(secured))
    assert r.status_code == 303
    assert (await secured.get("/admin/projections")).status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example", "/v1/events"])
async def test_sign_in_never_redirects_off_the_admin_ui(
    secured: httpx.AsyncClient, target: str
) -> None:
    """`next` pointing to another site (or outside /admin) lands on /admin instead."""
    form = {"credential": ADMIN, "next": target}
    r = await secured.post("/admin/login", data=form, headers=origin(secured))
    assert r.status_code == 303 and r.headers["location"] == "/admin"


async def test_live_ticks_follow_appends(http: httpx.AsyncClient) -> None:
    """/admin/live says hello, then sends a tick with the new head after a command."""
    head = (await http.get("/v1/events?order=desc&limit=1")).json()["events"][0]["position"]
    lines: list[str] = []
    async with asyncio.timeout(10), http.stream("GET", f"/admin/live?head={head}") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        stream = r.aiter_lines()
        async for line in stream:
            lines.append(line)
            if line == "event: hello":
                body = {
                    "domain": "customer",
                    "aggregate_id": "c-live",
                    "type": "CreateCustomer",
                    "payload": {"name": "Live", "email": "l@x"},
                }
                assert (await http.post("/v1/commands", json=body)).status_code == 200
            if line == "event: tick":
                break
        data = await anext(stream)
    assert data.startswith("data: ") and data[6:] != head


async def test_correlation_chain_survives_a_forged_cycle() -> None:
    """Events whose causation ids point at each other are all listed, once, without hanging."""
    async with MemoryEventStore() as store:
        meta: dict[str, Any] = {"correlation_id": "k"}
        a = EventData("a.happened", {}, {**meta, "causation_id": "e-b"}, event_id="e-a")
        b = EventData("b.happened", {}, {**meta, "causation_id": "e-a"}, event_id="e-b")
        c = EventData("c.happened", {}, {**meta, "causation_id": "cmd-1"}, event_id="e-c")
        d = EventData("d.happened", {}, {**meta, "causation_id": "r:e-c:0"}, event_id="e-d")
        other = EventData("x.happened", {}, {"correlation_id": "other"}, event_id="e-x")
        await store.append(StreamId("t", "1"), [a, b, c, other, d])
        corr, links = await correlation_chain(store, "e-a")
    assert corr == "k"
    assert sorted(link.event.event_id for link in links) == ["e-a", "e-b", "e-c", "e-d"]
    depth = {link.event.event_id: link.depth for link in links}
    assert depth["e-c"] == 0 and depth["e-d"] == 1
    assert [link.current for link in links].count(True) == 1


def test_meter_measures_events_per_second_once_a_minute_is_covered() -> None:
    """No rate before a minute of samples; then the head's growth over the last minute."""
    meter = Meter()
    assert meter.rate(1000.0, 10) is None
    for t in range(1, int(RATE_WINDOW)):
        assert meter.rate(1000.0 + t, 10 + 2 * t) is None
    assert meter.rate(1000.0 + RATE_WINDOW, 10 + 2 * int(RATE_WINDOW)) == 2.0
    assert meter.rate(1000.0 + RATE_WINDOW + 1, 10 + 2 * int(RATE_WINDOW) + 2) == 2.0
    assert len(meter.samples) <= RATE_WINDOW + 2
    assert meter.rate(5000.0, 500) is None  # the samples are stale after a long pause


async def test_outbox_actions_need_same_origin_and_act_on_failed_messages(
    http: httpx.AsyncClient,
) -> None:
    """Outbox retry/drop are refused cross-site, 400 on a message that did not fail."""
    page = await http.get("/admin/outbox")
    assert page.status_code == 200 and "customer.registered" in page.text
    assert "&lt;script&gt;" in page.text and "<script>alert" not in page.text
    pending = (await http.get("/admin/_/outbox")).text
    assert 'id="outbox-pending">1<' in pending
    r = await http.post("/admin/outbox/drop?id=nope")
    assert r.status_code == 403
    r = await http.post("/admin/outbox/drop?id=nope", headers=origin(http))
    assert r.status_code == 400 and "no failed outbox message" in r.text
    r = await http.post("/admin/outbox/explode?id=x", headers=origin(http))
    assert r.status_code == 400


async def test_sagas_page_lists_the_loyalty_saga(http: httpx.AsyncClient) -> None:
    """The sagas page shows the shop's loyalty saga (no instance yet) and aggregate deadlines."""
    r = await http.get("/admin/sagas")
    assert r.status_code == 200
    assert 'id="saga-loyalty"' in r.text and "No instance yet" in r.text
    assert "chronik_deadlines" in r.text  # this test server does not run that projection


async def test_sagas_added_to_the_app_are_found_without_a_server_runner() -> None:
    """A saga added with app.add_projection shows on the sagas page of a server without one."""
    app = build_app("memory://")
    app.add_projection(loyalty(app.dispatch))
    await app.open()
    server = HttpServer(create_http_app(app, extra_routes=create_admin_routes(app)), port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            page = (await c.get("/admin/sagas")).text
        assert 'id="saga-loyalty"' in page and "No saga configured" not in page
    finally:
        await server.stop()
        await app.close()
