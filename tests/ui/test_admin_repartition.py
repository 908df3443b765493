"""The admin UI's Repartition button, its handler called alone: the partitioned projection's
first partition row offers it; the count typed in its prompt (``HX-Prompt``) is queued for
partition 0, and a bad count is the typed error naming ``partitions``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request

import chronik
from chronik.app import Chronik
from chronik.errors import ValidationError
from chronik.projections import ProjectionRunner
from chronik.server.admin import actions, pages
from chronik.server.admin.routes import guarded
from chronik.server.admin.state import AdminState
from chronik.testing.takeover import NAME, drill_projection
from examples.shop.app import build_app

HOST = "admin.test:8080"


def post(path: str, name: str, prompt: str | None) -> Request:
    """A POST of the button as htmx sends it (same origin, the prompt's answer as a header)."""
    http = Starlette()
    http.state.admin_writes = True
    headers = [(b"host", HOST.encode()), (b"origin", f"http://{HOST}".encode())]
    if prompt is not None:
        headers.append((b"hx-prompt", prompt.encode()))
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "path_params": {"name": name, "action": "repartition"},
        "app": http,
    }
    return Request(scope)


@pytest.fixture
async def app() -> AsyncIterator[Chronik]:
    """A memory store whose drill projection ran in 2 partitions, then stopped (so a request
    stays pending)."""
    app = build_app("memory://")
    await app.open()
    await app.store.append(chronik.StreamId("drill", "a"), [chronik.EventData("tick", {"i": 1})])
    runner = ProjectionRunner(app.store, [drill_projection(2)], heartbeat=0.05, lease_ttl=1.0)
    await runner.start()
    head = await app.store.head()
    assert head is not None
    async with asyncio.timeout(10):
        await runner.wait_for(head)
    await runner.stop()
    yield app
    await app.close()


async def test_the_repartition_button_queues_the_typed_count(app: Chronik) -> None:
    """The fragment shows the button once (partition 0's row); the prompt's count is queued;
    a bad count is refused naming the field, nothing queued."""
    state = AdminState.create(app)
    fragment = await pages.projections_fragment(state, post("/admin/_/projections", NAME, None))
    assert bytes(fragment.body).decode().count("repartition-button") == 1
    click = guarded(state, actions.projection_action, "admin", post=True)
    path = f"/admin/projections/{NAME}/repartition"
    with pytest.raises(ValidationError) as caught:
        await actions.projection_action(state, post(path, NAME, "1"))
    assert caught.value.field == "partitions"
    with pytest.raises(ValidationError) as caught:
        await actions.projection_action(state, post(path, NAME, "four"))
    assert caught.value.field == "partitions"
    assert not await state.projections.pending_for(NAME)
    done = await click(post(path, NAME, "3"))
    assert done.status_code == 200
    assert f"repartition of {NAME} into 3 partitions requested" in bytes(done.body).decode()
    assert await state.projections.pending_for(NAME)
