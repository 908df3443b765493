"""The HTTP gateway: every route, its errors as problem+json, SSE, live queries, health, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from chronik.projections import ProjectionRunner
from chronik.server.http import LOOPBACK_HOSTS, LiveQuery, create_http_app
from chronik.server.http_server import HttpServer
from examples.shop.app import build_app, projections

ITEMS = [
    {"sku": "book", "price_cents": 1500, "qty": 2},
    {"sku": "pen", "price_cents": 250, "qty": 3},
]
QUERIES = [
    LiveQuery("customer", "customer_summary", "customer_summary", ("customer_id",)),
    LiveQuery("receipts", "receipts", "receipts", ("customer_id",)),
]


def command(domain: str, aggregate_id: str, type_: str, **extra: Any) -> dict[str, Any]:
    return {"domain": domain, "aggregate_id": aggregate_id, "type": type_, **extra}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = build_app("memory://")
    await app.open()
    runner = ProjectionRunner(app.store, projections(app))
    await runner.start()
    server = HttpServer(
        create_http_app(
            app, runner=runner, queries=QUERIES, max_body_bytes=4096, admin_writes=True
        ),
        port=0,
    )
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as c:
        yield c
    await server.stop()
    await runner.stop()
    await app.close()


async def buy(http: httpx.AsyncClient, customer: str = "c1", txn: str = "t1") -> httpx.Response:
    for body in (
        command("customer", customer, "CreateCustomer", payload={"name": "Ada", "email": "a@x"}),
        command(
            "transaction",
            txn,
            "CreateTransaction",
            payload={"customer_id": customer, "items": ITEMS},
        ),
    ):
        assert (await http.post("/v1/commands", json=body)).status_code == 200
    return await http.post(
        "/v1/commands?wait=projections", json=command("transaction", txn, "CompleteTransaction")
    )


async def test_post_command_returns_its_events(http: httpx.AsyncClient) -> None:
    """POST /v1/commands answers 200 with the events; the same command id is a duplicate."""
    body = command(
        "customer",
        "c1",
        "CreateCustomer",
        payload={"name": "Ada", "email": "a@x"},
        command_id="k-1",
        metadata={"correlation_id": "web-1"},
    )
    r = await http.post("/v1/commands", json=body)
    assert r.status_code == 200
    result = r.json()
    assert result["version"] == 0 and not result["duplicate"]
    (event,) = result["events"]
    assert event["type"] == "CustomerCreated" and event["payload"] == {
        "name": "Ada",
        "email": "a@x",
    }
    assert event["metadata"] == {"correlation_id": "web-1", "causation_id": "k-1"}
    again = (await http.post("/v1/commands", json=body)).json()
    assert again["duplicate"] and again["events"] == result["events"]


@pytest.mark.parametrize(
    ("body", "status", "title"),
    [
        (
            command("customer", "c1", "CreateCustomer", payload={"name": "Bo", "email": "b@x"}),
            422,
            "CommandRejected",
        ),
        (
            command(
                "customer", "c1", "AddLoyaltyPoints", payload={"points": 1}, expected_sequence=4
            ),
            409,
            "WrongExpectedVersion",
        ),
        (command("customer", "c2", "CreateCustomer", payload={"name": 1}), 400, "InvalidCommand"),
        (
            command("customer", "c2", "CreateCustomer", payload={}, surprise=1),
            400,
            "ValidationError",
        ),
        (command("warehouse", "w1", "Restock"), 404, "UnknownDomain"),
        (command("customer", "c1", "Delete"), 404, "UnknownCommandType"),
        (command("Bad Domain", "c1", "X"), 400, "InvalidStreamId"),
        ({"domain": "customer"}, 400, "ValidationError"),
        (
            command("customer", "c3", "CreateCustomer", payload={"name": "x" * 5000, "email": "e"}),
            413,
            "PayloadTooLarge",
        ),
    ],
)
async def test_command_errors_are_problem_documents(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, title: str
) -> None:
    """Each failure has its status, a problem+json body naming the error, and stores nothing."""
    await http.post(
        "/v1/commands",
        json=command("customer", "c1", "CreateCustomer", payload={"name": "Ada", "email": "a@x"}),
    )
    r = await http.post("/v1/commands", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["title"] == title and problem["status"] == status and problem["detail"]
    assert "Traceback" not in r.text
    events = (await http.get("/v1/events")).json()["events"]
    assert len(events) == 1


async def test_rejection_carries_the_reason(http: httpx.AsyncClient) -> None:
    """A 422 problem has the business reason in `reason`."""
    body = command("customer", "c1", "CreateCustomer", payload={"name": " ", "email": "a@x"})
    problem = (await http.post("/v1/commands", json=body)).json()
    assert problem["reason"] == "Customer name is required"


async def test_malformed_bodies_and_parameters(http: httpx.AsyncClient) -> None:
    """Non-JSON bodies, bad limits and positions are 400; unknown routes 404; wrong methods 405."""
    r = await http.post(
        "/v1/commands", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    for url in (
        "/v1/events?limit=0",
        "/v1/events?limit=x",
        "/v1/events?after=zz",
        "/v1/streams/customer/c1/events?from=-1",
    ):
        r = await http.get(url)
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", url
    assert (await http.get("/v1/nowhere")).status_code == 404
    assert (await http.get("/v1/commands")).status_code == 405


async def test_streams_and_events(http: httpx.AsyncClient) -> None:
    """Streams are listed by domain and prefix; events read by stream, filter and position."""
    await buy(http)
    streams = (await http.get("/v1/streams?domain=transaction")).json()["streams"]
    assert [(s["aggregate_id"], s["version"]) for s in streams] == [("t1", 1)]
    assert (await http.get("/v1/streams?prefix=c")).json()["streams"][0]["stream"] == "customer/c1"
    events = (await http.get("/v1/streams/transaction/t1/events?from=1")).json()["events"]
    assert [e["type"] for e in events] == ["TransactionCompleted"]
    everything = (await http.get("/v1/events")).json()["events"]
    after = (
        await http.get(f"/v1/events?after={everything[0]['position']}&type=TransactionCreated")
    ).json()
    assert [e["type"] for e in after["events"]] == ["TransactionCreated"]
    newest = (await http.get("/v1/events?order=desc&limit=1")).json()["events"]
    assert newest[0]["position"] == everything[-1]["position"]
    assert len((await http.get("/v1/events?domain=customer")).json()["events"]) >= 1


async def read_sse(lines: AsyncIterator[str], count: int) -> list[dict[str, str]]:
    """The next ``count`` SSE messages from a response's lines (comments skipped)."""
    messages: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async for line in lines:
        if not line:
            if current:
                messages.append(current)
                current = {}
                if len(messages) == count:
                    return messages
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(": ")
        current[key] = value
    return messages


async def test_event_stream_is_live_and_resumable(http: httpx.AsyncClient) -> None:
    """GET /v1/events/stream?from=start sends stored then live events; Last-Event-ID resumes."""
    body = command("customer", "s1", "CreateCustomer", payload={"name": "A", "email": "e"})
    await http.post("/v1/commands", json=body)
    async with asyncio.timeout(10), http.stream("GET", "/v1/events/stream?from=start") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.aiter_lines()
        first = await read_sse(lines, 1)
        assert first[0]["event"] == "CustomerCreated"
        assert "chronik_subscriptions 1.0" in (await http.get("/metrics")).text
        await http.post(
            "/v1/commands",
            json=command("customer", "s2", "CreateCustomer", payload={"name": "B", "email": "e"}),
        )
        (live,) = await read_sse(lines, 1)
        assert json.loads(live["data"])["aggregate_id"] == "s2"
    headers = {"last-event-id": first[0]["id"]}
    async with asyncio.timeout(10), http.stream("GET", "/v1/events/stream", headers=headers) as r:
        (resumed,) = await read_sse(r.aiter_lines(), 1)
        assert resumed["id"] == live["id"]


async def test_event_stream_starts_from_now(http: httpx.AsyncClient) -> None:
    """Without from/after the stream starts at the head: stored events are not replayed, the
    first frame only sets the reconnect id, and reconnecting with it misses nothing."""
    for name in ("old1", "old2"):
        body = command("customer", name, "CreateCustomer", payload={"name": "A", "email": "e"})
        await http.post("/v1/commands", json=body)
    head = (await http.get("/v1/events?order=desc&limit=1")).json()["events"][0]["position"]
    async with asyncio.timeout(10), http.stream("GET", "/v1/events/stream") as r:
        lines = r.aiter_lines()
        (mark,) = await read_sse(lines, 1)
        assert mark == {"id": head}  # no event: nothing stored is sent
        await http.post(
            "/v1/commands",
            json=command("customer", "new", "CreateCustomer", payload={"name": "B", "email": "e"}),
        )
        (live,) = await read_sse(lines, 1)
        assert json.loads(live["data"])["aggregate_id"] == "new"
    headers = {"last-event-id": mark["id"]}  # what EventSource sends on reconnect
    async with asyncio.timeout(10), http.stream("GET", "/v1/events/stream", headers=headers) as r:
        (resumed,) = await read_sse(r.aiter_lines(), 1)
        assert resumed["id"] == live["id"]
    async with asyncio.timeout(10), http.stream("GET", f"/v1/events/stream?after={head}") as r:
        (after,) = await read_sse(r.aiter_lines(), 1)
        assert after["id"] == live["id"]


@pytest.mark.parametrize(
    ("query", "field"),
    [("from=then", "from"), ("from=start&after=1", "from"), ("after=x", "after")],
)
async def test_event_stream_start_is_checked(
    http: httpx.AsyncClient, query: str, field: str
) -> None:
    """A bad from, or from together with after, is a 400 naming the field."""
    r = await http.get(f"/v1/events/stream?{query}")
    assert r.status_code == 400 and r.json()["field"] == field, r.text


async def test_live_query_and_its_updates(http: httpx.AsyncClient) -> None:
    """A query returns read-model rows; as SSE it sends the first page, then changed rows."""
    await buy(http)
    rows = (await http.get("/v1/queries/receipts?customer_id=c1")).json()["rows"]
    assert rows == [{"transaction_id": "t1", "customer_id": "c1", "amount_cents": 3750}]
    assert (await http.get("/v1/queries/nope")).status_code == 404
    assert (await http.get("/v1/queries/receipts?colour=red")).status_code == 400
    headers = {"accept": "text/event-stream"}
    async with (
        asyncio.timeout(15),
        http.stream("GET", "/v1/queries/customer?customer_id=c1", headers=headers) as r,
    ):
        lines = r.aiter_lines()
        (initial,) = await read_sse(lines, 1)
        assert initial["event"] == "page"
        points = json.loads(initial["data"])["rows"][0]["loyalty_points"]
        await http.post(
            "/v1/commands",
            json=command("customer", "c1", "AddLoyaltyPoints", payload={"points": 5}),
        )
        while True:
            (update,) = await read_sse(lines, 1)
            assert update["event"] == "upsert"
            if json.loads(update["data"])["loyalty_points"] == points + 5:
                break


async def test_projections_status_and_actions(http: httpx.AsyncClient) -> None:
    """GET /v1/projections lists status fields; actions are accepted; unknown names are 404."""
    await buy(http)
    statuses = (await http.get("/v1/projections")).json()
    names = {s["name"] for s in statuses}
    assert {"receipts", "customer_summary", "loyalty"} <= names
    for s in statuses:
        assert {
            "name",
            "state",
            "position",
            "head",
            "lag_events",
            "lag_seconds",
            "last_error",
        } <= s.keys()
    r = await http.post("/v1/projections/receipts/pause")
    assert r.status_code == 202 and r.json()["action"] == "pause"
    assert (await http.post("/v1/projections/receipts/resume")).status_code == 202
    assert (await http.post("/v1/projections/nope/pause")).status_code == 404
    assert (await http.post("/v1/projections/receipts/explode")).status_code == 400
    assert (await http.get("/v1/projections/receipts/dead-letters")).json() == []


async def test_health_readiness_metrics_and_openapi(http: httpx.AsyncClient) -> None:
    """/healthz, /readyz, /metrics and /openapi.json answer; metrics count commands."""
    await buy(http)
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = (await http.get("/metrics")).text
    assert 'chronik_commands_total{domain="customer",outcome="ok"}' in metrics
    assert "chronik_command_seconds_bucket" in metrics and "chronik_append_seconds_count" in metrics
    assert 'chronik_projection_lag_events{projection="receipts"}' in metrics
    assert "chronik_outbox_pending 1.0" in metrics  # the new customer, not dispatched here
    spec = (await http.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.") and "/v1/commands" in spec["paths"]


async def test_invalid_utf8_is_a_bad_request(http: httpx.AsyncClient) -> None:
    """A body with invalid UTF-8 is a 400 problem, not a server error."""
    body = (
        b'{"domain": "customer", "aggregate_id": "c1", "type": "CreateCustomer", '
        b'"payload": {"name": "\xff"}}'
    )
    r = await http.post("/v1/commands", content=body)
    problem = r.json()
    assert r.status_code == 400 and problem["title"] == "SerializationError"
    assert problem["field"] == "body" and "UTF-8" in problem["detail"]


async def test_dead_letters_over_http() -> None:
    """A parked event is listed, retried (202) and dropped over HTTP."""
    from chronik.projections import ErrorPolicy, Projection, ReadModel

    fragile = Projection("fragile", policy=ErrorPolicy(retries=0, backoff=0, then="park"))

    @fragile.on("CustomerCreated")
    def handle(event: Any, rm: ReadModel) -> None:
        if event.json()["name"] == "poison":
            raise ValueError("cannot handle poison")

    app = build_app("memory://")
    await app.open()
    runner = ProjectionRunner(app.store, [fragile])
    await runner.start()
    server = HttpServer(create_http_app(app, runner=runner, admin_writes=True), port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            body = command(
                "customer", "p1", "CreateCustomer", payload={"name": "poison", "email": "p@x"}
            )
            assert (await http.post("/v1/commands", json=body)).status_code == 200
            async with asyncio.timeout(10):
                while not (
                    letters := (await http.get("/v1/projections/fragile/dead-letters")).json()
                ):
                    await asyncio.sleep(0.02)
            assert letters[0]["stream"] == "customer/p1" and "poison" in letters[0]["error"]
            event_id = letters[0]["event_id"]
            dropped = await http.post(
                f"/v1/projections/fragile/dead-letters/drop?event_id={event_id}"
            )
            assert dropped.status_code == 200 and dropped.json()["dropped"] == 1
            assert (await http.get("/v1/projections/fragile/dead-letters")).json() == []
            retried = await http.post("/v1/projections/fragile/dead-letters/retry")
            assert retried.status_code == 202 and retried.json()["request_id"]
            assert (
                await http.post("/v1/projections/fragile/dead-letters/explode")
            ).status_code == 400
            assert (await http.get("/v1/projections/nope/dead-letters")).status_code == 404
    finally:
        await server.stop()
        await runner.stop()
        await app.close()


async def test_a_host_name_not_served_is_refused() -> None:
    """With allowed_hosts, a request naming another host (a DNS name rebound to this server)
    gets 421 problem+json and reaches no route; the loopback names, with or without port, pass."""
    app = build_app("memory://")
    await app.open()
    server = HttpServer(create_http_app(app, allowed_hosts=LOOPBACK_HOSTS), port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            body = command("customer", "c1", "CreateCustomer", payload={"name": "A", "email": "a"})
            r = await c.post("/v1/commands", json=body, headers={"host": "evil.example"})
            assert r.status_code == 421
            assert r.headers["content-type"] == "application/problem+json"
            assert "evil.example" in r.json()["detail"]
            assert [e async for e in app.store.read_all()] == []  # nothing reached the app
            for host in (f"127.0.0.1:{server.port}", "localhost", f"[::1]:{server.port}"):
                assert (await c.get("/healthz", headers={"host": host})).status_code == 200
    finally:
        await server.stop()
        await app.close()


async def test_wait_for_projections_covers_the_apps_own_projections() -> None:
    """?wait=projections also waits for the projections the app itself runs (app.add_projection),
    not only those the server was given."""
    from chronik.projections import Projection, ReadModel, Table

    app = build_app("memory://")
    slow = Projection(
        "slow_names", tables=[Table("slow_names", {"id": str, "name": str}, primary_key="id")]
    )

    @slow.on("CustomerCreated")
    async def created(event: Any, rm: ReadModel) -> None:
        await asyncio.sleep(0.3)
        rm.upsert("slow_names", id=event.stream.aggregate_id, name=event.json()["name"])

    app.add_projection(slow)
    async with app:
        names = LiveQuery("names", "slow_names", "slow_names", ("id",))
        server = HttpServer(create_http_app(app, queries=[names]), port=0)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
                body = command("customer", "c9", "CreateCustomer")
                body["payload"] = {"name": "Ada", "email": "a@x"}
                r = await c.post("/v1/commands?wait=projections", json=body)
                assert r.status_code == 200 and r.json()["projections"] == "caught_up"
                rows = (await c.get("/v1/queries/names", params={"id": "c9"})).json()["rows"]
                assert [row["name"] for row in rows] == ["Ada"]
        finally:
            await server.stop()
