"""Health drills on a real PostgreSQL: a server restart under load, a transaction holding
readers back (the horizon)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import httpx
import pytest

import chronik
from chronik.health import horizon_problems
from chronik.projections import Projection, ProjectionAdmin, ReadModel
from chronik.server.http import create_http_app

pytestmark = pytest.mark.drill


def watcher() -> Projection:
    p = Projection("watcher")

    @p.on("thing.made")
    def made(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        pass

    return p


async def test_readyz_recovers_after_a_postgres_restart_without_events_of_its_types(
    postgres_url: str, postgres_restart: Callable[[], None]
) -> None:
    """PostgreSQL restarts under appends with a projection running: /readyz goes 503, and
    is 200 again within 30 s of the restart though no event of the projection's types is
    appended afterwards."""
    app = chronik.Chronik(postgres_url)
    app.add_projection(watcher())
    async with app:
        store = app.store
        made = await store.append(
            chronik.StreamId("thing", "t1"), [chronik.EventData("thing.made", {})]
        )
        assert app.runner is not None
        async with asyncio.timeout(10):
            await app.wait_for(made.position)
        http = create_http_app(app, runner=app.runner)
        stop = asyncio.Event()
        seen: list[int] = []

        async def append_others() -> None:  # load of other types, through the restart
            while not stop.is_set():
                with contextlib.suppress(chronik.ChronikError):
                    await store.append(
                        chronik.StreamId("other", "o1"), [chronik.EventData("other.thing", {})]
                    )
                await asyncio.sleep(0.01)

        async def probe(client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                seen.append((await client.get("/readyz")).status_code)
                await asyncio.sleep(0.05)

        transport = httpx.ASGITransport(app=http)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/readyz")).status_code == 200
            tasks = [asyncio.create_task(append_others()), asyncio.create_task(probe(client))]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(postgres_restart)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)
            assert 503 in seen, seen  # the restart was noticed
            async with asyncio.timeout(30):
                while (await client.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.1)
            status = await ProjectionAdmin(store).status("watcher")
            assert status.state == "running" and status.alive


async def test_a_transaction_holding_readers_back_shows_as_horizon_lag(postgres_url: str) -> None:
    """Events committed behind an older open transaction are held back from every reader:
    projection status shows them as horizon lag, and readiness names the transaction."""
    async with chronik.open_store(postgres_url) as store:
        await store.append(chronik.StreamId("thing", "t0"), [chronik.EventData("thing.made", {})])
        dsn = postgres_url.split("?", 1)[0]
        conn = await asyncpg.connect(dsn)
        try:
            tx = conn.transaction()
            await tx.start()
            await conn.fetchval("SELECT pg_current_xact_id()")  # holds an xid: the horizon
            for _ in range(3):
                await store.append(
                    chronik.StreamId("thing", "t1"), [chronik.EventData("thing.made", {})]
                )
            p = watcher()
            proc = chronik.projections.ProjectionProcessor(store, p, heartbeat=0.05)
            async with proc:
                admin = ProjectionAdmin(store)
                async with asyncio.timeout(10):  # caught up with what readers may see
                    while not [
                        s
                        for s in await admin.statuses()
                        if s.name == "watcher" and s.position is not None and not s.lag_events
                    ]:
                        await asyncio.sleep(0.05)
                status = await admin.status("watcher")
                assert status.horizon_events == 3 and status.horizon_seconds > 0
                await asyncio.sleep(0.3)
                (problem,) = await horizon_problems(store, limit=0.2)
                assert "3 committed events held back" in problem
            await tx.rollback()
            assert await horizon_problems(store, limit=0.0) == []
        finally:
            await conn.close()
