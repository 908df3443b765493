"""The admin UI's handlers called alone: a constructed AdminState and a constructed request,
no HTTP server, no route table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request

from chronik.app import Chronik
from chronik.errors import ValidationError
from chronik.messages import Command
from chronik.projections import ProjectionRunner
from chronik.server.admin import actions, pages
from chronik.server.admin.routes import guarded
from chronik.server.admin.state import AdminState
from examples.shop.app import build_app, projections

HOST = "admin.test:8080"


def request(
    path: str,
    *,
    method: str = "GET",
    query: str = "",
    path_params: dict[str, str] | None = None,
    writes: bool = False,
) -> Request:
    """A request as Starlette would hand it over, from an HTTP app with ``admin_writes``."""
    http = Starlette()
    http.state.admin_writes = writes
    headers = [(b"host", HOST.encode()), (b"origin", f"http://{HOST}".encode())]
    scope = {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "path_params": path_params or {},
        "app": http,
    }
    return Request(scope)


@pytest.fixture
async def app() -> AsyncIterator[Chronik]:
    """The shop on a memory store, one customer, its projections run once then stopped (so
    requests queued by a test stay pending)."""
    app = build_app("memory://")
    await app.open()
    runner = ProjectionRunner(app.store, projections(app))
    await runner.start()
    payload = {"name": "Ada", "email": "ada@example.com"}
    result = await app.dispatch(
        Command(domain="customer", aggregate_id="c-1", type="CreateCustomer", payload=payload)
    )
    assert result.position is not None
    await runner.wait_for(result.position)
    await runner.stop()
    yield app
    await app.close()


async def test_a_page_handler_runs_alone_over_the_state_it_is_given(app: Chronik) -> None:
    """pages.streams answers from the state's store and links under the state's base; a bad
    parameter is the typed error naming the field (the guard turns it into a page)."""
    state = AdminState.create(app, base="/ops")
    response = await pages.streams(state, request("/ops/streams", query="domain=customer"))
    body = bytes(response.body).decode()
    assert response.status_code == 200
    assert 'href="/ops/streams/customer/c-1"' in body
    assert 'data-base="/ops"' in body and 'href="/admin' not in body
    with pytest.raises(ValidationError) as caught:
        await pages.streams(state, request("/ops/streams", query="prefix=" + "x" * 257))
    assert caught.value.field == "prefix"


async def test_write_buttons_follow_the_http_apps_admin_writes(app: Chronik) -> None:
    """Without auth, a fragment offers write buttons only where the HTTP app enabled admin
    writes; with auth it always does (the admin right decides on click)."""
    state = AdminState.create(app)
    off = await pages.projections_fragment(state, request("/admin/_/projections"))
    on = await pages.projections_fragment(state, request("/admin/_/projections", writes=True))
    assert "read-only: admin writes are off" in bytes(off.body).decode()
    assert "read-only: admin writes are off" not in bytes(on.body).decode()


async def test_a_guarded_write_is_refused_when_admin_writes_are_off(app: Chronik) -> None:
    """The guarded pause button over a constructed state: 403 AdminWritesDisabled and nothing
    queued while admin writes are off; once on, the request is queued and the fragment says so."""
    state = AdminState.create(app)
    pause = guarded(state, actions.projection_action, "admin", post=True)
    where = {"name": "receipts", "action": "pause"}
    path = "/admin/projections/receipts/pause"
    refused = await pause(request(path, method="POST", path_params=where))
    assert refused.status_code == 403
    assert "AdminWritesDisabled" in bytes(refused.body).decode()
    assert not await state.projections.pending_for("receipts")
    done = await pause(request(path, method="POST", path_params=where, writes=True))
    assert done.status_code == 200
    assert "pause requested for receipts" in bytes(done.body).decode()
    assert await state.projections.pending_for("receipts")
