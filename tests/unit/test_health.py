"""Health tells the truth: supervised tasks, loop lag, store writer, projections in readyz."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import chronik
from chronik.errors import StoreUnavailable
from chronik.health import Supervisor
from chronik.projections import (
    ErrorPolicy,
    Projection,
    ProjectionAdmin,
    ProjectionProcessor,
    ProjectionRunner,
    ReadModel,
)
from chronik.server.admin import create_admin_routes
from chronik.server.http import create_http_app
from chronik.store.lifecycle import ChangeSignal, Wanted
from chronik.testing.faults import inject, sqlite_error


class Boom(BaseException):
    """Not even an Exception: what a supervised task must survive too."""


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.02)


def projection(name: str, fails: dict[str, bool], then: Any = "stop") -> Projection:
    p = Projection(name, policy=ErrorPolicy(retries=0, backoff=0, then=then))

    @p.on("thing.made")
    def made(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        if fails["now"]:
            raise ValueError("cannot handle this")

    return p


@pytest.fixture
async def sqlite_app(tmp_path: Path) -> AsyncIterator[chronik.Chronik]:
    app = chronik.Chronik(f"sqlite:///{tmp_path}/h.db")
    async with app:
        yield app


def client(app: chronik.Chronik, runner: ProjectionRunner | None = None) -> httpx.AsyncClient:
    admin = create_admin_routes(app, runner=runner)
    http = create_http_app(app, runner=runner, extra_routes=admin)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=http), base_url="http://t")


async def make(store: chronik.EventStore, n: int = 1, kind: str = "thing.made") -> None:
    for _ in range(n):
        await store.append(chronik.StreamId("thing", "t1"), [chronik.EventData(kind, {})])


async def test_a_crashed_loop_restarts_with_backoff_and_is_reported_meanwhile() -> None:
    """A task that dies of any exception shows as restarting (readyz lists it), then runs
    again; liveness is unaffected while it restarts."""
    health = Supervisor()
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise Boom("injected")
        await asyncio.sleep(3600)

    info = health.supervise("worker", loop, backoff=0.3)
    await asyncio.sleep(0.1)
    assert info.state == "restarting" and health.problems() == [
        "task worker: restarting after Boom: injected"
    ]
    assert health.fatal() == []
    await asyncio.sleep(0.4)
    assert (info.state, runs, health.problems()) == ("running", 2, [])
    await health.stop()
    assert info.state == "stopped"


async def test_a_vital_task_that_is_not_restarted_is_dead_and_fails_liveness() -> None:
    """restart=False: a crash leaves the task dead with its exception; a vital one fails
    liveness (fatal), a non-vital one only readiness."""
    health = Supervisor()

    async def crash() -> None:
        raise RuntimeError("gone")

    health.supervise("vital", crash, restart=False)
    health.supervise("optional", crash, restart=False, vital=False)
    await asyncio.sleep(0.05)
    assert health.fatal() == ["task vital: dead (RuntimeError: gone)"]
    assert sorted(health.problems()) == [
        "task optional: dead (RuntimeError: gone)",
        "task vital: dead (RuntimeError: gone)",
    ]
    assert health.counts()["dead"] == 2


async def test_a_watched_task_that_ends_unasked_is_dead_unless_stopped() -> None:
    """A task started elsewhere is dead when it ends by itself; not after stopping(name)."""
    health = Supervisor()
    t1 = asyncio.create_task(asyncio.sleep(0))
    t2 = asyncio.create_task(asyncio.sleep(0))
    health.watch("one", t1)
    health.watch("two", t2)
    health.stopping("two")
    await asyncio.sleep(0.01)
    assert health.problems() == ["task one: dead (ended)"]


async def test_a_blocked_event_loop_fails_liveness_for_a_while() -> None:
    """The loop-lag monitor sees the loop blocked past the limit (fatal names it), and the
    verdict clears once the lag window has passed."""
    health = Supervisor(loop_lag_limit=0.3, lag_interval=0.05, lag_window=0.5)
    health.start()
    await asyncio.sleep(0.2)
    assert health.fatal() == [] and health.loop_lag < 0.3
    time.sleep(0.6)  # blocking the loop is the point
    assert health.fatal()[0].startswith("event loop blocked")
    await asyncio.sleep(0.1)
    assert health.fatal()[0].startswith("event loop blocked")  # still within the window
    await asyncio.sleep(0.6)
    assert health.fatal() == []
    await health.stop()


async def test_readyz_names_a_projection_stopped_by_its_policy_until_it_is_repaired(
    sqlite_app: chronik.Chronik,
) -> None:
    """A projection that raises on every event with policy stop makes /readyz 503 naming
    it; once the handler is fixed and the projection resumed, /readyz is 200 again."""
    fails = {"now": True}
    runner = ProjectionRunner(sqlite_app.store, [projection("fragile", fails)], heartbeat=0.05)
    await runner.start()
    try:
        await make(sqlite_app.store)
        async with client(sqlite_app, runner) as http:

            async def not_ready() -> bool:
                r = await http.get("/readyz")
                return r.status_code == 503 and any(
                    "projection fragile: stopped" in p for p in r.json()["problems"]
                )

            await until(not_ready)
            assert (await http.get("/healthz")).status_code == 200  # alive, just not ready
            fails["now"] = False
            await ProjectionAdmin(sqlite_app.store).request("fragile", "resume")

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await until(ready)
    finally:
        await runner.stop()


async def test_readyz_metrics_and_status_show_a_failing_store_writer(
    sqlite_app: chronik.Chronik,
) -> None:
    """SQLite disk full: /readyz is 503 naming the store, chronik_store_healthy is 0 and the
    admin overview lists the problem; after the next successful write all are back."""
    store = sqlite_app.store
    async with client(sqlite_app) as http:
        with inject(store) as faults:
            faults.fail("commit", sqlite_error())
            with pytest.raises(StoreUnavailable):
                await make(store)
            r = await http.get("/readyz")
            assert r.status_code == 503
            assert any(p.startswith("store: writes are failing") for p in r.json()["problems"])
            assert "chronik_store_healthy 0.0" in (await http.get("/metrics")).text
            overview = (await http.get("/admin/_/overview")).text
            assert "store: writes are failing" in overview and 'id="health-problems"' in overview
        await make(store)
        assert (await http.get("/readyz")).status_code == 200
        assert "chronik_store_healthy 1.0" in (await http.get("/metrics")).text
        assert 'id="health-problems"' not in (await http.get("/admin/_/overview")).text


async def test_a_projection_task_killed_by_an_injected_exception_is_restarted(
    sqlite_app: chronik.Chronik,
) -> None:
    """A processor loop killed by a BaseException shows as restarting in readyz and metrics,
    then runs again and applies new events."""
    seen: list[str] = []
    p = Projection("counter")

    @p.on("thing.made")
    def made(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        seen.append(e.event_id)

    runner = ProjectionRunner(sqlite_app.store, [p], heartbeat=0.05, health=Supervisor())
    proc = runner["counter"]
    original = proc._idle
    killed = False

    async def idle(signal: ChangeSignal, wanted: Wanted | None = None) -> None:
        nonlocal killed
        if not killed:
            killed = True
            raise Boom("injected")
        await original(signal, wanted)

    proc._idle = idle  # type: ignore[method-assign]
    runner.health.max_backoff = 0.5
    await runner.start()
    try:
        async with client(sqlite_app, runner) as http:
            r = await http.get("/readyz")
            await until(lambda: _true(killed))
            r = await http.get("/readyz")
            assert r.status_code == 503
            assert (
                "task projection counter: restarting after Boom: injected" in r.json()["problems"]
            )
            metrics = (await http.get("/metrics")).text
            assert 'chronik_task_state{state="restarting",task="projection counter"} 1.0' in metrics
            await make(sqlite_app.store, 2)
            await until(lambda: _true(len(seen) == 2))
            assert runner.health.tasks["projection counter"].state == "running"
            await until(lambda: _ready(http))
    finally:
        await runner.stop()


async def _true(value: bool) -> bool:
    return value


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def test_failing_clears_once_reads_work_again_without_events_of_its_types(
    tmp_path: Path,
) -> None:
    """A projection failing because its reads fail returns to running as soon as a read at
    the head succeeds, though no event of its types arrives afterwards."""
    async with chronik.open_store(f"sqlite:///{tmp_path}/f.db") as store:
        await make(store)
        p = projection("watcher", {"now": False})
        async with ProjectionProcessor(store, p, heartbeat=0.05) as proc:
            head = await store.head()
            assert head is not None
            await proc.wait_for(head)
            with inject(store) as faults:
                faults.fail("fetch", StoreUnavailable("reads down"))
                await until(lambda: _true(proc.state == "failing"))
            await make(store, 3, kind="other.thing")  # events, none of its types
            await until(lambda: _true(proc.state == "running"), 5.0)
            admin = ProjectionAdmin(store)
            await until(lambda: _state_is(admin, "watcher", "running"), 5.0)


async def _state_is(admin: ProjectionAdmin, name: str, state: str) -> bool:
    return (await admin.status(name)).state == state
