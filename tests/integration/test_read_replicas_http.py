"""What ``chronik serve`` on an ``rw://`` store reads from the hot standby: the HTTP GETs of
the log and of streams, live queries (``reads="all"``) and projection catch-up."""

from __future__ import annotations

import asyncio
import itertools

import httpx

import chronik
from chronik import EventData, StreamId
from chronik.server.http import create_http_app
from chronik.server.http_server import HttpServer
from chronik.store import ReadWriteStore
from chronik.store.composite_urls import rw_url
from chronik.testing.replica import PostgresReplica
from chronik.testing.services import PostgresService
from tests.integration.test_live_queries import QUERY, orders_projection

_fresh = itertools.count(1)
ORDER = {"amount": 5, "status": "open", "score": 1.0}


async def _reads(http: httpx.AsyncClient) -> tuple[list[str], list[int], list[str]]:
    """What the three GETs show: the log's streams, o2's sequences, the live query's ids."""
    log = (await http.get("/v1/events")).json()["events"]
    o2 = (await http.get("/v1/streams/order/o2/events")).json()["events"]
    rows = (await http.get("/v1/queries/orders")).json()["rows"]
    return (
        [e["aggregate_id"] for e in log],
        [e["sequence"] for e in o2],
        [r["id"] for r in rows],
    )


async def test_served_reads_and_projection_catch_up_come_from_the_standby(
    postgres_server: PostgresService, postgres_replica: PostgresReplica
) -> None:
    """With the standby's replay paused, a write made on the primary is missing from GET
    /v1/events, the stream GET and the live query, and the projection does not apply it:
    they all read the standby; once replay resumes all show it, and no read fell back."""
    schema = f"served{next(_fresh)}"
    url = rw_url(
        postgres_server.url("postgres", schema=schema),
        postgres_replica.url("postgres", schema=schema),
        max_lag=10,
        reads="all",
    )
    app = chronik.Chronik(store=url)
    app.add_projection(orders_projection())
    async with app:
        store = app.store
        assert isinstance(store, ReadWriteStore)
        first = await store.append(StreamId("order", "o1"), [EventData("order.placed", ORDER)])
        async with asyncio.timeout(10):
            await app.wait_for(first.position)
        await postgres_replica.wait_caught_up()
        server = HttpServer(create_http_app(app, queries=[QUERY]), port=0)
        await server.start()
        try:
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                assert await _reads(http) == (["o1"], [], ["o1"])
                await postgres_replica.pause_replay()
                try:  # a write this store's read-your-writes floor does not know of
                    o2 = StreamId("order", "o2")
                    second = await store.writer.append(o2, [EventData("order.placed", ORDER)])
                    await asyncio.sleep(0.5)  # time enough to apply it from the primary
                    assert await _reads(http) == (["o1"], [], ["o1"])
                    assert app.runner is not None
                    applied = app.runner["orders"].position
                    assert applied is not None and applied < second.position
                finally:
                    await postgres_replica.resume_replay()
                async with asyncio.timeout(10):
                    await app.wait_for(second.position)
                await postgres_replica.wait_caught_up()
                assert await _reads(http) == (["o1", "o2"], [0], ["o1", "o2"])
        finally:
            await server.stop()
        assert store.fallbacks == 0
