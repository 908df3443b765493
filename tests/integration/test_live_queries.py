"""Live queries over HTTP on memory, SQLite and PostgreSQL: typed filters (range, in), order,
limit and cursor paging run in the database; as SSE a page, then row upserts and deletes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import chronik
from chronik import EventData, StreamId
from chronik.projections import Projection, ReadModel, Table
from chronik.server.http import LiveQuery, create_http_app
from chronik.server.http_server import HttpServer
from tests.integration.test_http import read_sse

ORDERS = [  # id, amount, status, score
    ("o1", 5, "open", 1.5),
    ("o2", 10, "paid", 2.0),
    ("o3", 50, "open", 2.5),
    ("o4", 99, "void", 0.5),
    ("o5", 100, "paid", 3.0),
    ("o6", 10, "open", 1.0),
]
QUERY = LiveQuery("orders", "orders", "orders", ("amount", "status", "score"))


def orders_projection() -> Projection:
    """orders: one row per placed order, gone when it is cancelled."""
    projection = Projection(
        "orders",
        tables=[
            Table(
                "orders",
                {"id": str, "amount": int, "status": str, "score": float},
                primary_key="id",
            )
        ],
    )

    @projection.on("order.placed")
    def _placed(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        rm.upsert("orders", id=event.stream.aggregate_id, **event.json())

    @projection.on("order.cancelled")
    def _cancelled(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        rm.delete("orders", id=event.stream.aggregate_id)

    return projection


async def place(app: chronik.Chronik, oid: str, amount: int, status: str, score: float) -> None:
    """Append an order.placed event and wait until the projection has it."""
    payload = {"amount": amount, "status": status, "score": score}
    result = await app.store.append(StreamId("order", oid), [EventData("order.placed", payload)])
    async with asyncio.timeout(10):
        await app.wait_for(result.position)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def served(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[chronik.Chronik, httpx.AsyncClient]]:
    """The orders projection served over HTTP on each store, with ORDERS placed."""
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/live.db"}.get(request.param)
    if url is None:
        url = request.getfixturevalue("postgres_url")
    app = chronik.Chronik(store=url)
    app.add_projection(orders_projection())
    await app.open()
    for order in ORDERS:
        await place(app, *order)
    server = HttpServer(create_http_app(app, queries=[QUERY]), port=0)
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as c:
        yield app, c
    await server.stop()
    await app.close()


async def ids(http: httpx.AsyncClient, query: str) -> list[str]:
    """The ids of the rows a query answers (asserting a 200)."""
    r = await http.get(f"/v1/queries/orders?{query}")
    assert r.status_code == 200, r.text
    return [row["id"] for row in r.json()["rows"]]


async def test_filters_are_typed_ranges_and_sets(
    served: tuple[chronik.Chronik, httpx.AsyncClient],
) -> None:
    """Equality, gt/gte/lt/lte and in filter with values of the column's type."""
    _, http = served
    assert await ids(http, "status=open") == ["o1", "o3", "o6"]
    assert await ids(http, "amount.gte=10&amount.lt=100&status.in=open,paid") == [
        "o2",
        "o3",
        "o6",
    ]
    assert await ids(http, "amount=10") == ["o2", "o6"]
    assert await ids(http, "score.gt=1.5&score.lte=3") == ["o2", "o3", "o5"]
    assert await ids(http, "status.in=void,nope") == ["o4"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("amount.gte=ten", "amount.gte"),
        ("amount=1.5", "amount"),
        ("score.lt=nan", "score.lt"),
        ("amount=99999999999999999999", "amount"),
        ("colour=red", "colour"),
        ("amount.like=1", "amount.like"),
        ("status=open&status.in=paid", "status.in"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("order=name", "order"),
        ("order=id,-id", "order"),
        ("cursor=abc", "cursor"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    served: tuple[chronik.Chronik, httpx.AsyncClient], query: str, field: str
) -> None:
    """A bad value, operator, limit, order or cursor is a 400 naming the parameter."""
    _, http = served
    r = await http.get(f"/v1/queries/orders?{query}")
    assert r.status_code == 400 and r.json()["field"] == field, r.text


async def test_order_limit_and_cursor_page_through(
    served: tuple[chronik.Chronik, httpx.AsyncClient],
) -> None:
    """limit pages through the rows in order (key as tie-break); next_cursor continues,
    is null on the last page, and a changed cursor or one of another order is a 400."""
    _, http = served
    for order, expected in (
        ("amount", ["o1", "o2", "o6", "o3", "o4", "o5"]),
        ("-amount", ["o5", "o4", "o3", "o2", "o6", "o1"]),
        ("status,-score", ["o3", "o1", "o6", "o5", "o2", "o4"]),
    ):
        seen: list[str] = []
        cursor = ""
        while True:
            r = await http.get(f"/v1/queries/orders?order={order}&limit=4{cursor}")
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [row["id"] for row in body["rows"]]
            if body["next_cursor"] is None:
                break
            cursor = f"&cursor={body['next_cursor']}"
        assert seen == expected, order
    first = (await http.get("/v1/queries/orders?order=amount&limit=2")).json()
    token: str = first["next_cursor"]
    assert await ids(http, f"order=amount&limit=2&cursor={token}") == ["o6", "o3"]
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    for bad in (f"order=amount&cursor={tampered}", f"order=-amount&cursor={token}"):
        r = await http.get(f"/v1/queries/orders?{bad}")
        assert r.status_code == 400 and r.json()["field"] == "cursor", r.text
    assert (await http.get("/v1/queries/orders?limit=100")).json()["next_cursor"] is None


async def test_sse_sends_a_page_then_row_changes(
    served: tuple[chronik.Chronik, httpx.AsyncClient],
) -> None:
    """As SSE: event page (the first page), then upsert for a row that enters or changes and
    delete (its key) for one that leaves, each with a resume token (the projection's
    checkpoint the page reflects) as its id."""
    app, http = served
    headers = {"accept": "text/event-stream"}
    url = "/v1/queries/orders?status=open&order=amount&limit=10"
    async with asyncio.timeout(20), http.stream("GET", url, headers=headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.aiter_lines()
        (page,) = await read_sse(lines, 1)
        assert page["event"] == "page" and page["id"]
        body = json.loads(page["data"])
        assert body["reset"] is False
        assert [row["id"] for row in body["rows"]] == ["o1", "o6", "o3"]
        assert body["next_cursor"] is None
        await place(app, "o7", 7, "open", 0.0)
        (upsert,) = await read_sse(lines, 1)
        assert upsert["event"] == "upsert"
        assert json.loads(upsert["data"]) == {
            "id": "o7",
            "amount": 7,
            "status": "open",
            "score": 0.0,
        }
        assert upsert["id"] != page["id"]
        await place(app, "o1", 5, "paid", 1.5)  # no longer matches: it leaves the result
        (delete,) = await read_sse(lines, 1)
        assert delete["event"] == "delete" and json.loads(delete["data"]) == {"id": "o1"}
        result = await app.store.append(StreamId("order", "o3"), [EventData("order.cancelled", {})])
        await app.wait_for(result.position)
        (gone,) = await read_sse(lines, 1)
        assert gone["event"] == "delete" and json.loads(gone["data"]) == {"id": "o3"}
        assert gone["id"].startswith(f"{result.position}.g1.")


async def test_a_query_of_a_projection_not_run_here_is_404(
    served: tuple[chronik.Chronik, httpx.AsyncClient],
) -> None:
    """A live query whose projection this server does not run answers 404, not a 5xx."""
    app, _ = served
    query = LiveQuery("ghost", "ghost", "ghost", ("x",))
    server = HttpServer(create_http_app(app, queries=[query]), port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            r = await c.get("/v1/queries/ghost?x=1")
        assert r.status_code == 404 and r.json()["title"] == "UnknownProjection", r.text
    finally:
        await server.stop()


URL = "/v1/queries/orders?status=open&order=amount&limit=10"
SSE = {"accept": "text/event-stream"}


async def next_change(lines: AsyncIterator[str]) -> dict[str, str]:
    """The next SSE message that is an event (id-only messages skipped)."""
    while True:
        (message,) = await read_sse(lines, 1)
        if "event" in message:
            return message


async def first_page_id(http: httpx.AsyncClient, url: str = URL) -> str:
    """The id of the first page a live query sends over SSE (then disconnects)."""
    async with asyncio.timeout(20), http.stream("GET", url, headers=SSE) as r:
        page = await next_change(r.aiter_lines())
    assert page["event"] == "page", page
    return page["id"]


async def test_a_reconnect_with_an_unchanged_id_gets_only_what_changes_after_it(
    served: tuple[chronik.Chronik, httpx.AsyncClient],
) -> None:
    """Reconnecting with Last-Event-ID while the projection has not moved sends no page
    again: the first message is the change made after the reconnect."""
    app, http = served
    last = await first_page_id(http)
    headers = {**SSE, "last-event-id": last}
    async with asyncio.timeout(20), http.stream("GET", URL, headers=headers) as r:
        assert r.status_code == 200
        lines = r.aiter_lines()
        await asyncio.sleep(0.3)  # a page, if one were (wrongly) sent, comes first
        await place(app, "o7", 7, "open", 0.0)
        change = await next_change(lines)
    assert change["event"] == "upsert" and json.loads(change["data"])["id"] == "o7", change
    assert change["id"] != last


async def test_a_reconnect_after_changes_gets_the_page_marked_as_reset(
    served: tuple[chronik.Chronik, httpx.AsyncClient],
) -> None:
    """Reconnecting with an id older than the projection's checkpoint sends the current page
    marked reset (the client replaces its rows), with a new id."""
    app, http = served
    last = await first_page_id(http)
    await place(app, "o7", 7, "open", 0.0)
    headers = {**SSE, "last-event-id": last}
    async with asyncio.timeout(20), http.stream("GET", URL, headers=headers) as r:
        page = await next_change(r.aiter_lines())
    body = json.loads(page["data"])
    assert page["event"] == "page" and body["reset"] is True, page
    assert [row["id"] for row in body["rows"]] == ["o1", "o7", "o6", "o3"]
    assert page["id"] != last


async def test_a_bad_last_event_id_is_400_naming_it(
    served: tuple[chronik.Chronik, httpx.AsyncClient],
) -> None:
    """A Last-Event-ID that is garbage, tampered with, too long or sent by another query
    (other filters) is a 400 naming Last-Event-ID, before any stream starts."""
    _, http = served
    last = await first_page_id(http)
    other = await first_page_id(http, "/v1/queries/orders?status=paid")
    tampered = last[:-2] + ("AA" if not last.endswith("AA") else "BB")
    for bad in ("garbage", "1.g1.", tampered, last + "x" * 600, other, "é.g1.AAAA".encode()):
        r = await http.get(URL, headers={"accept": SSE["accept"], "last-event-id": bad})
        assert r.status_code == 400 and r.json()["field"] == "Last-Event-ID", (bad, r.text)
