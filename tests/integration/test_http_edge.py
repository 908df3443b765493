"""The HTTP edge under bad input and faults: values, positions, waits, methods, admin writes,
undecodable events. Every answer is a typed problem (never a 500) and nothing half-written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import chronik
from chronik.projections import ProjectionAdmin, ProjectionRunner
from chronik.server.admin import create_admin_routes
from chronik.server.auth import Auth
from chronik.server.http import create_http_app
from chronik.server.http_auth import HttpAuth
from chronik.server.http_server import HttpServer
from examples.shop.app import build_app, projections

INT64_MAX = 2**63 - 1


def command(aggregate_id: str, type_: str, **payload: Any) -> dict[str, Any]:
    return {"domain": "customer", "aggregate_id": aggregate_id, "type": type_, "payload": payload}


def create(aggregate_id: str = "c1") -> dict[str, Any]:
    return command(aggregate_id, "CreateCustomer", name="Ada", email="a@x")


class Served:
    """A shop app served over HTTP, and a client for it."""

    def __init__(self, app: chronik.Chronik, http: httpx.AsyncClient, runner: Any) -> None:
        self.app = app
        self.http = http
        self.runner = runner

    async def events(self) -> list[dict[str, Any]]:
        r = await self.http.get("/v1/events")
        assert r.status_code == 200
        events: list[dict[str, Any]] = r.json()["events"]
        return events


async def serve(
    store: str = "memory://", *, runner: bool = False, **options: Any
) -> AsyncIterator[Served]:
    app = build_app(store)
    await app.open()
    run = ProjectionRunner(app.store, projections(app)) if runner else None
    if run is not None:
        await run.start()
    server = HttpServer(create_http_app(app, runner=run, **options), port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as c:
            yield Served(app, c, run)
    finally:
        await server.stop()
        if run is not None:
            await run.stop()
        await app.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for s in serve():
        yield s


def assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = r.json()
    if field is not None:
        assert problem["field"] == field, problem
        assert field in problem["detail"], problem
    assert "Traceback" not in r.text and "truncated" not in r.text
    return problem


# --- values -----------------------------------------------------------------------------------


HEAD = b'{"domain": "customer", "aggregate_id": "c1", "type": "AddLoyaltyPoints", "payload": '


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"points": 99999999999999999999999}', "payload.points"),
        (b'{"points": NaN}', "payload.points"),
        (b'{"points": Infinity}', "payload.points"),
        (b'{"points": 1e999}', "payload.points"),
        (b'{"points": 1, "note": "\\ud800"}', "payload.note"),
        (b'{"points": ' + b"[" * 3000 + b"]" * 3000 + b"}", "body"),
        (b'{"points": ' + b"[" * 100 + b"]" * 100 + b"}", "payload.points" + "[0]" * 62),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
    ],
)
async def test_values_out_of_the_rule_are_400_naming_the_field(
    served: Served, payload: bytes, field: str
) -> None:
    """Huge ints, NaN/Infinity in a raw body, lone surrogates, 3,000 and 100,000 nesting levels:
    400 problem+json naming the field; nothing is stored."""
    assert (await served.http.post("/v1/commands", json=create())).status_code == 200
    body = payload if payload.startswith(b"[") else HEAD + payload + b"}"
    r = await served.http.post(
        "/v1/commands", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(r, 400, field)
    assert len(await served.events()) == 1


async def test_metadata_and_body_fields_are_named(served: Served) -> None:
    """A lone surrogate in metadata and a wrong type of a body field name those fields."""
    body = b'{"domain": "customer", "aggregate_id": "c1", "type": "CreateCustomer", '
    r = await served.http.post("/v1/commands", content=body + b'"metadata": {"trace": "\\udc00"}}')
    assert_problem(r, 400, "metadata.trace")
    r = await served.http.post("/v1/commands", json={**create(), "domain": 7})
    assert_problem(r, 400, "domain")
    r = await served.http.post("/v1/commands", json={**create(), "expected_sequence": -1})
    assert_problem(r, 400, "expected_sequence")
    assert await served.events() == []


# --- ?wait=projections ------------------------------------------------------------------------


async def test_wait_answers_pending_when_a_projection_is_paused() -> None:
    """With a paused projection, ?wait=projections answers 202 with the committed result and
    "projections": "pending" after wait_timeout; the retry is a duplicate, not a second apply."""
    async for s in serve(runner=True):
        admin = ProjectionAdmin(s.app.store)
        await admin.request("customer_summary", "pause")
        async with asyncio.timeout(10):
            while not any(
                st.name == "customer_summary" and st.state == "paused"
                for st in await admin.statuses()
            ):
                await asyncio.sleep(0.02)
        body = {**create("w1"), "command_id": "cmd-w1"}
        r = await s.http.post("/v1/commands?wait=projections&wait_timeout=0.3", json=body)
        assert r.status_code == 202, r.text
        answer = r.json()
        assert answer["projections"] == "pending" and answer["version"] == 0
        assert [e["type"] for e in answer["events"]] == ["CustomerCreated"]
        again = await s.http.post("/v1/commands?wait=projections&wait_timeout=0.3", json=body)
        assert again.status_code == 202 and again.json()["duplicate"] is True
        assert len(await s.events()) == 1
        await admin.request("customer_summary", "resume")
        r = await s.http.post(
            "/v1/commands?wait=projections",
            json=command("w1", "AddLoyaltyPoints", points=5),
        )
        assert r.status_code == 200 and r.json()["projections"] == "caught_up"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("wait=projections&wait_timeout=0", "wait_timeout"),
        ("wait=projections&wait_timeout=61", "wait_timeout"),
        ("wait=projections&wait_timeout=nan", "wait_timeout"),
        ("wait=projections&wait_timeout=soon", "wait_timeout"),
        ("wait_timeout=1", "wait_timeout"),
        ("wait=forever", "wait"),
    ],
)
async def test_invalid_wait_parameters_are_400_and_store_nothing(
    served: Served, query: str, field: str
) -> None:
    """A bad wait or wait_timeout is refused before the command runs, naming the parameter."""
    assert_problem(await served.http.post(f"/v1/commands?{query}", json=create()), 400, field)
    assert await served.events() == []


# --- positions --------------------------------------------------------------------------------


async def check_positions(s: Served) -> None:
    for url, field in [
        ("/v1/events?after=100000000000000000000", "after"),
        ("/v1/events?after=-1", "after"),
        ("/v1/events?before=1:99999999999999999999", "before"),
        ("/v1/streams/customer/c1/events?from=100000000000000000000", "from"),
        ("/v1/streams/customer/c1/events?from=%C2%B2", "from"),
    ]:
        assert_problem(await s.http.get(url), 400, field)
    beyond = await s.http.get(f"/v1/events?after={INT64_MAX}:{INT64_MAX}")
    assert beyond.status_code == 200 and beyond.json()["events"] == []
    head = (await s.events())[-1]["position"]
    r = await s.http.post("/v1/projections/receipts/reset?to=100000000000000000000")
    assert_problem(r, 400, "to")
    r = await s.http.post(f"/v1/projections/receipts/reset?to={INT64_MAX}")
    problem = assert_problem(r, 400, "to")
    assert f"past the head {head}" in problem["detail"]
    assert (await s.http.post(f"/v1/projections/receipts/reset?to={head}")).status_code == 202
    r = await s.http.post(f"/v1/projections/receipts/pause?to={head}")
    assert_problem(r, 400, "to")
    headers = {"last-event-id": "99999999999999999999999"}
    assert_problem(await s.http.get("/v1/events/stream", headers=headers), 400, "Last-Event-ID")
    assert (await s.http.post("/v1/commands", json=create("c2"))).status_code == 200


async def test_positions_are_checked_on_memory() -> None:
    """Positions beyond int64, negative or garbage are 400 naming the parameter; a position
    beyond the head reads nothing and is refused for a reset (memory)."""
    async for s in serve(runner=True, admin_writes=True):
        assert (await s.http.post("/v1/commands", json=create())).status_code == 200
        await check_positions(s)


async def test_positions_are_checked_on_sqlite(tmp_path: Path) -> None:
    """The same on SQLite, where a position beyond int64 used to be a 500."""
    async for s in serve(f"sqlite:///{tmp_path / 'e.db'}", runner=True, admin_writes=True):
        assert (await s.http.post("/v1/commands", json=create())).status_code == 200
        await check_positions(s)


async def test_positions_are_checked_on_postgres(postgres_url: str) -> None:
    """The same on PostgreSQL, whose positions are (transaction id, row id) pairs."""
    async for s in serve(postgres_url, runner=True, admin_writes=True):
        assert (await s.http.post("/v1/commands", json=create())).status_code == 200
        await check_positions(s)


async def test_reset_on_an_empty_store_is_refused_past_the_start() -> None:
    """With no events, a reset to 5 is past the head (400); a reset to 0 is accepted."""
    async for s in serve(runner=True, admin_writes=True):
        problem = assert_problem(await s.http.post("/v1/projections/receipts/reset?to=5"), 400)
        assert "store is empty" in problem["detail"]
        assert (await s.http.post("/v1/projections/receipts/reset?to=0")).status_code == 202


# --- query parameters and methods -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/events?order=AAA", "order"),
        ("/v1/events?domain=Bad%20Domain", "domain"),
        ("/v1/events?type=%00", "type"),
        ("/v1/events?limit=%C2%B2", "limit"),
        ("/v1/streams?domain=NO", "domain"),
        ("/v1/streams?prefix=a%00b", "prefix"),
    ],
)
async def test_query_parameters_are_validated(served: Served, url: str, field: str) -> None:
    """Each query parameter out of its documented shape is 400 naming it."""
    assert_problem(await served.http.get(url), 400, field)


async def test_405_answers_carry_allow(served: Served) -> None:
    """TRACE (or any method a route lacks) is 405 problem+json with an Allow header."""
    r = await served.http.request("TRACE", "/v1/events")
    assert_problem(r, 405)
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    r = await served.http.get("/v1/commands")
    assert_problem(r, 405)
    assert r.headers["allow"] == "POST"


# --- admin writes -----------------------------------------------------------------------------


ADMIN_WRITES = [
    "/v1/projections/receipts/reset",
    "/v1/projections/receipts/rebuild",
    "/v1/projections/receipts/pause",
    "/v1/projections/receipts/resume",
    "/v1/projections/receipts/dead-letters/retry",
    "/v1/projections/receipts/dead-letters/drop",
]


async def test_admin_writes_are_off_without_auth() -> None:
    """With no auth configured, every admin write is 403 saying how to enable it; reads work;
    nothing is queued. admin_writes=True enables them."""
    async for s in serve(runner=True):
        for url in ADMIN_WRITES:
            problem = assert_problem(await s.http.post(url), 403)
            assert problem["title"] == "AdminWritesDisabled"
            assert "http.admin_writes: true" in problem["detail"]
        assert (await s.http.get("/v1/projections")).status_code == 200
        assert not await ProjectionAdmin(s.app.store).pending_for("receipts")
    async for s in serve(runner=True, admin_writes=True):
        assert (await s.http.post("/v1/projections/receipts/pause")).status_code == 202


async def test_admin_ui_buttons_are_off_without_auth() -> None:
    """The admin UI's POST actions are refused the same way unless the HTTP app enables them."""
    for enabled, status in ((False, 403), (True, 400)):  # 400: no such message, but let in
        app = build_app("memory://")
        await app.open()
        http = create_http_app(app, extra_routes=create_admin_routes(app), admin_writes=enabled)
        server = HttpServer(http, port=0)
        await server.start()
        try:
            url = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=url) as c:
                await c.post("/v1/commands", json=create())
                r = await c.post(
                    "/admin/outbox/retry?id=x", headers={"origin": url, "hx-request": "true"}
                )
                assert r.status_code == status, r.text
                if not enabled:
                    assert "admin writes are disabled" in r.text
        finally:
            await server.stop()
            await app.close()


async def test_admin_writes_with_auth_need_the_admin_right() -> None:
    """With auth configured, admin writes depend on the admin right, not on admin_writes."""
    keys = Auth.from_config(
        [
            {"name": "ops", "key": "ops-key-1234567890", "admin": True, "read": True},
            {"name": "viewer", "key": "view-key-1234567890", "read": True},
        ]
    )
    async for s in serve(runner=True, auth=HttpAuth(keys)):
        url = "/v1/projections/receipts/pause"
        r = await s.http.post(url, headers={"x-api-key": "view-key-1234567890"})
        assert assert_problem(r, 403)["title"] == "PermissionDenied"
        r = await s.http.post(url, headers={"x-api-key": "ops-key-1234567890"})
        assert r.status_code == 202


# --- undecodable events -----------------------------------------------------------------------


async def poison(app: chronik.Chronik) -> str:
    stream = chronik.StreamId("customer", "poison1")
    event = chronik.EventData("CustomerCreated", {"foo": "bar"})
    await app.store.append(stream, [event], chronik.NO_STREAM)
    return event.event_id


async def test_an_undecodable_event_is_a_clear_422_over_http(served: Served) -> None:
    """A stored event that no longer decodes fails the command with 422 UndecodableEvent naming
    the event and the repair, never a 500; other streams keep working."""
    event_id = await poison(served.app)
    r = await served.http.post(
        "/v1/commands", json=command("poison1", "AddLoyaltyPoints", points=1)
    )
    problem = assert_problem(r, 422)
    assert problem["title"] == "UndecodableEvent"
    assert problem["event_id"] == event_id and problem["stream"] == "customer/poison1"
    assert (problem["sequence"], problem["event_type"], problem["schema_version"]) == (
        0,
        "CustomerCreated",
        1,
    )
    assert "upcaster for CustomerCreated v1" in problem["detail"]
    assert (await served.http.post("/v1/commands", json=create("fine"))).status_code == 200


async def test_an_undecodable_event_is_typed_when_embedded() -> None:
    """Embedded, the dispatch raises UndecodableEvent (a DeserializationError) with the event."""
    app = build_app("memory://")
    async with app:
        event_id = await poison(app)
        with pytest.raises(chronik.UndecodableEvent) as caught:
            await app.dispatch(
                chronik.Command(
                    domain="customer",
                    aggregate_id="poison1",
                    type="AddLoyaltyPoints",
                    payload={"points": 1},
                )
            )
        assert caught.value.event_id == event_id and caught.value.sequence == 0
