"""The admin UI's transport dead-letters page, its handlers called alone over a constructed
AdminState and a memory transport: list, inspect, retry to one group, drop, secure by default."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from chronik.app import Chronik
from chronik.server.admin import transport_letters as letters
from chronik.server.admin.routes import create_admin_routes, guarded
from chronik.server.admin.state import AdminState
from chronik.testing.transport_kit import FAST, Recorder, eventually
from chronik.transports import Message, Transport, open_transport

HOST = "admin.test:8080"
DLQ = "orders.billing.dead"


def request(path: str, *, method: str = "GET", query: str = "", **kw: object) -> Request:
    """A request as Starlette would hand it over (``writes``: the app's admin_writes)."""
    http = Starlette()
    http.state.admin_writes = kw.get("writes", False)
    headers = [(b"host", HOST.encode()), (b"origin", f"http://{HOST}".encode())]
    scope = {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "path_params": kw.get("path_params", {}),
        "app": http,
        "client": ("10.0.0.7", 5555),
    }
    return Request(scope)


def text(response: Response) -> str:
    return bytes(response.body).decode()


@pytest.fixture
async def transport() -> AsyncIterator[tuple[Transport, Recorder, Recorder]]:
    """A memory transport where group ``billing`` gave up on two messages of ``orders``."""
    async with open_transport("memory://") as t:
        billing = Recorder(lambda d: d.body != b"fixed")
        mail = Recorder()
        consumer = await t.subscribe("orders", "billing", billing, policy=FAST)
        await t.subscribe("orders", "mail", mail)
        for i in range(2):
            await t.publish(Message(topic="orders", body=f'{{"n": {i}}}'.encode(), id=f"m-{i}"))
        await eventually(lambda: consumer.dead_lettered == 2 and len(mail.got) == 2)
        yield t, billing, mail


async def test_the_page_lists_a_queue_and_shows_one_letter(
    transport: tuple[Transport, Recorder, Recorder],
) -> None:
    """The list names origin, attempts and reason; the show page has the whole body; the
    consumers' dead-letter queues are offered; nothing is consumed."""
    t, _, _ = transport
    state = AdminState.create(Chronik("memory://"), transport=t)
    page = await letters.transport_letters(state, request("/admin/transport/dead-letters"))
    assert "orders.billing.dead" in text(page) and "Name a dead-letter queue" in text(page)
    listed = await letters.transport_letters(
        state, request("/admin/transport/dead-letters", query=f"queue={DLQ}")
    )
    body = text(listed)
    assert body.count('class="transport-letter"') == 2 and "orders/billing" in body
    assert "RuntimeError" in body and "read-only: admin writes are off" in body
    first = (await t.dead_letters(DLQ))[0]
    shown = await letters.transport_letter(
        state, request("/admin/transport/dead-letters/show", query=f"queue={DLQ}&id={first.id}")
    )
    assert "{&#34;n&#34;: 0}" in text(shown) and "m-0" in text(shown)
    assert len(await t.dead_letters(DLQ)) == 2


async def test_writes_are_refused_unless_enabled_then_act_once_and_are_logged(
    transport: tuple[Transport, Recorder, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    """Retry and drop are 403 with admin writes off; on, retry reaches the billing group
    only, drop deletes, a second try is 404, and both are logged with who did them."""
    t, billing, mail = transport
    state = AdminState.create(Chronik("memory://"), transport=t)
    act = guarded(state, letters.transport_letter_action, "admin", post=True)
    first, second = await t.dead_letters(DLQ)

    def post(action: str, letter: str, writes: bool) -> Request:
        return request(
            f"/admin/transport/dead-letters/{action}",
            method="POST",
            query=f"queue={DLQ}&id={letter}",
            path_params={"action": action},
            writes=writes,
        )

    refused = await act(post("retry", first.id, writes=False))
    assert refused.status_code == 403 and "AdminWritesDisabled" in text(refused)
    assert len(await t.dead_letters(DLQ)) == 2
    billing.fail = None  # the bug is fixed
    seen_by_mail = len(mail.got)
    with caplog.at_level(logging.WARNING, logger="chronik.transports.dead_letters"):
        done = await act(post("retry", first.id, writes=True))
        assert done.status_code == 200 and "retried" in text(done)
        await eventually(lambda: billing.ids().count("m-0") == FAST.retries + 2)
        dropped = await act(post("drop", second.id, writes=True))
        assert dropped.status_code == 200 and f"dropped {second.id}" in text(dropped)
    assert "by admin UI without auth from 10.0.0.7" in caplog.text
    assert len(mail.got) == seen_by_mail and await t.dead_letters(DLQ) == []
    again = await act(post("retry", first.id, writes=True))
    assert again.status_code == 404 and "NotFound" in text(again)
    unknown = await act(post("resend", first.id, writes=True))
    assert unknown.status_code == 400


async def test_without_a_transport_the_page_says_so() -> None:
    """An app with no transport: the page explains, and the routes are registered."""
    state = AdminState.create(Chronik("memory://"))
    page = await letters.transport_letters(state, request("/admin/transport/dead-letters"))
    assert 'id="no-transport"' in text(page)
    paths = {getattr(r, "path", "") for r in create_admin_routes(Chronik("memory://"))}
    assert "/admin/transport/dead-letters/{action}" in paths
