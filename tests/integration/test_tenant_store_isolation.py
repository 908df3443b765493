"""Tenants kept apart at the store and runtime level, on memory, SQLite and PostgreSQL: every
read API asked for tenant A returns none of tenant B's rows, and the tenant reads of SQLite
and PostgreSQL walk an index, not the log."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

import chronik
from chronik import AppendCondition, Command, EventData, Query, QueryItem, StreamId
from chronik.deadlines import (
    AGGREGATE_DEADLINES,
    DeadlineScheduler,
    ManualClock,
    aggregate_deadlines,
    pending_deadlines,
)
from chronik.lifecycle.export import export_events
from chronik.lifecycle.importer import import_events
from chronik.outbox import OutboxAdmin, record
from chronik.projections import Projection, ProjectionRunner, ReadModel, Table, query
from chronik.saga_record import recorded_decisions
from chronik.sagas import Saga, SagaContext
from chronik.store.postgres.schema import split_url
from chronik.store.records import WriteUnit
from chronik.transports.message import Message

registry = chronik.EventRegistry()
TENANTS = ("acme", "beta", "")


@registry.event()
class Opened(msgspec.Struct):
    """An account opened."""


@registry.event()
class Reviewed(msgspec.Struct):
    """An account reviewed (its deadline's command)."""


class Account(chronik.Aggregate):
    """An account with a deadline (per tenant, like its stream)."""

    domain = "account"

    @chronik.command("Open")
    def open(self, payload: dict[str, Any]) -> None:
        self.emit(Opened())
        self.schedule("review", after=60, command="Review")

    @chronik.command("Review")
    def review(self, payload: dict[str, Any]) -> None:
        self.emit(Reviewed())

    @chronik.apply
    def _opened(self, event: Opened) -> None:
        pass

    @chronik.apply
    def _reviewed(self, event: Reviewed) -> None:
        pass


def _per_tenant() -> Projection:
    p = Projection("seen", tables=[Table("seen", {"id": str, "n": int}, "id", per_tenant=True)])

    @p.on("Opened")
    async def opened(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("seen", id=e.stream.aggregate_id)
        rm.upsert("seen", id=e.stream.aggregate_id, n=(row["n"] if row else 0) + 1)

    return p


class Watch(msgspec.Struct):
    """A saga instance's state."""

    opened: int = 0


def _watch() -> Saga[Watch]:
    """A saga whose instance ids (the account ids) repeat in every tenant: on Opened it sends
    Review to the account and arms a deadline."""
    saga: Saga[Watch] = Saga(
        "watch", state=Watch, associate=lambda e: e.stream.aggregate_id or None
    )

    @saga.starts_with("Opened")
    def opened(state: Watch, event: chronik.RecordedEvent, ctx: SagaContext) -> Watch:
        ctx.send(Command(domain="account", aggregate_id=ctx.instance_id, type="Review"))
        ctx.schedule("nudge", after=3600)
        return Watch(state.opened + 1)

    return saga


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[chronik.Chronik]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/i.db"
    app = chronik.Chronik(store=url, registry=registry)
    app.add_aggregate(Account)
    async with app:
        yield app


async def _seed(app: chronik.Chronik) -> None:
    """The same ids in every tenant: streams, tagged events, outbox rows, deadlines, rows."""
    store = app.store
    for tenant in TENANTS:
        for n in range(3):
            await app.dispatch(
                Command(domain="account", aggregate_id=f"a{n}", type="Open", tenant=tenant)
            )
        await store.append_tagged([EventData("tagged", {"t": tenant}, tags=["k:1"])], tenant=tenant)
        async with store.transaction() as tx:
            record(
                tx,
                Message(topic="t", body=tenant.encode() or b"-", id=f"m-{tenant}"),
                tenant=tenant,
            )
    watch = _watch().projection(app.dispatch)
    runner = ProjectionRunner(store, [_per_tenant(), aggregate_deadlines(app.dispatch), watch])
    async with runner:
        for _ in range(2):  # the events, then those of the saga's commands
            head = await store.head()
            assert head is not None
            async with asyncio.timeout(15):
                await runner.wait_for(head)


async def test_every_read_of_one_tenant_sees_none_of_another(app: chronik.Chronik) -> None:
    """read_all, read_query, read_query_payloads, read_page, subscribe, list_streams,
    per-tenant tables, outbox messages, pending deadlines, a saga's instances, deadlines and
    decision record, and exports of tenant A hold no row of B (checked for each tenant, the
    default one included)."""
    await _seed(app)
    store = app.store
    q = Query([QueryItem(tags=["k:1"])])
    for tenant in TENANTS:
        events = [e async for e in store.read_all(tenant=tenant)]
        assert events and {e.stream.tenant for e in events} == {tenant}
        assert len([e for e in events if e.type == "Opened"]) == 3
        found = [e async for e in store.read_query(q, tenant=tenant)]
        assert [e.json()["t"] for e in found] == [tenant]
        assert len(await store.read_query_payloads(q, tenant=tenant)) == 1
        page = await store.read_page(None, 1000, tenant=tenant)
        assert page.events == events
        async with store.subscribe(tenant=tenant) as sub:
            got = [await asyncio.wait_for(sub.__anext__(), 10) for _ in events]
        assert got == events
        streams = [i.stream async for i in store.list_streams(tenant=tenant)]
        assert streams and {s.tenant for s in streams} == {tenant}
        rows = await query(store, "seen", "seen", tenant=tenant)
        assert sorted((r["tenant"], r["id"], r["n"]) for r in rows) == [
            (tenant, f"a{n}", 1) for n in range(3)
        ]
        outbox = await OutboxAdmin(store).messages(tenant=tenant)
        assert [m["id"] for m in outbox] == [f"m-{tenant}"]
        deadlines = await pending_deadlines(store, tenant)
        assert sorted(d["instance_id"] for d in deadlines) == [
            str(StreamId("account", f"a{n}", tenant)) for n in range(3)
        ]
        instances = await query(store, "watch", "watch_instances", tenant=tenant)
        assert sorted((r["tenant"], r["instance_id"]) for r in instances) == [
            (tenant, f"a{n}") for n in range(3)
        ]
        nudges = await pending_deadlines(store, tenant, owner="watch")
        assert sorted((d["tenant"], d["instance_id"]) for d in nudges) == [
            (tenant, f"a{n}") for n in range(3)
        ]
        sent = await recorded_decisions(store, "watch", tenant)
        assert sorted((d["tenant"], d["instance_id"], d["outcome"]) for d in sent) == [
            (tenant, f"a{n}", "accepted") for n in range(3)
        ]
        reviewed = [e.stream.aggregate_id for e in events if e.type == "Reviewed"]
        assert sorted(reviewed) == [f"a{n}" for n in range(3)]  # the saga's, in its tenant
        out = io.BytesIO()
        report = await export_events(store, out, tenant=tenant)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        exported = {line.get("tenant", "") for line in lines if "event_id" in line}
        assert exported == {tenant} and report.events == len(events)
    assert len(await query(store, "seen", "seen")) == 9  # every tenant's, when not asked
    assert len(await query(store, "watch", "watch_instances")) == 9


async def test_a_tenant_export_imports_with_its_tenant(
    app: chronik.Chronik, tmp_path: Path
) -> None:
    """An export of one tenant imported elsewhere holds that tenant's events, still in it."""
    await _seed(app)
    out = io.BytesIO()
    await export_events(app.store, out, tenant="acme")
    async with chronik.open_store(f"sqlite:///{tmp_path}/copy.db") as copy:
        await import_events(copy, iter(out.getvalue().splitlines(keepends=True)))
        copied = [e async for e in copy.read_all()]
        source = [e async for e in app.store.read_all(tenant="acme")]
        assert [(e.event_id, e.stream) for e in copied] == [(e.event_id, e.stream) for e in source]


async def test_fired_deadlines_are_appended_in_their_tenant(app: chronik.Chronik) -> None:
    """A due aggregate deadline of tenant A fires into A's log, not the default tenant's; the
    commands it sends are recorded with their tenant; a saga's deadlines (the same instance ids
    in every tenant) fire into their instance's tenant too."""
    await _seed(app)
    clock = ManualClock()
    clock.advance(3601)
    saga = _watch()
    scheduler = DeadlineScheduler(app.store, [saga], clock=clock)
    assert await scheduler.fire_due() == 18
    fired = [e async for e in app.store.read_all(tenant="acme", types=["chronik.DeadlineFired"])]
    assert len(fired) == 6
    mine = [e.json() for e in fired if e.json()["owner"] == AGGREGATE_DEADLINES]
    assert {StreamId.parse(body["instance_id"]).tenant for body in mine} == {"acme"}
    nudges = sorted(
        (b["tenant"], b["instance_id"]) for b in (e.json() for e in fired) if b["owner"] == "watch"
    )
    assert nudges == [("acme", f"a{n}") for n in range(3)]
    projections = [aggregate_deadlines(app.dispatch), saga.projection(app.dispatch)]
    async with ProjectionRunner(app.store, projections) as runner:
        head = await app.store.head()
        assert head is not None
        async with asyncio.timeout(15):
            await runner.wait_for(head)
    for tenant in TENANTS:
        sent = await recorded_decisions(app.store, AGGREGATE_DEADLINES, tenant)
        assert len(sent) == 3 and {r["tenant"] for r in sent} == {tenant}
        reviewed = [e async for e in app.store.read_all(tenant=tenant, types=["Reviewed"])]
        assert len(reviewed) == 6  # 3 sent by the saga, 3 by the aggregates' deadlines
        assert await pending_deadlines(app.store, tenant, owner="watch") == []


async def test_tagged_append_conditions_are_scoped_by_the_store_itself(
    app: chronik.Chronik,
) -> None:
    """Memory and SQLite check a condition against its tenant's events in the write itself
    (no retry), as PostgreSQL's append_tagged functions do; the unit still fails on the
    tenant's own event."""
    store = app.store
    await store.append_tagged([EventData("held", {}, tags=["seat:9"])], tenant="beta")
    cond = AppendCondition(Query([QueryItem(tags=["seat:9"])]), None)
    for tags in (["x:1"], ["x:2", "x:3"]):  # one event: append_tagged_one; two: append_tagged
        events = [EventData("held", {}, tags=[tag]) for tag in tags]
        requests, check = store.prepare_tagged(events, cond, "dcb", "acme")
        await store._write(WriteUnit(requests, [], [], conditions=[check] if check else []))
    requests, check = store.prepare_tagged([EventData("held", {})], cond, "dcb", "beta")
    with pytest.raises(chronik.AppendConditionFailed):
        await store._write(WriteUnit(requests, [], [], conditions=[check] if check else []))


def _big_and_rare(n: int) -> list[tuple[str, int]]:
    return [("big", i) for i in range(n)] + [("rare", i) for i in range(3)]


async def test_sqlite_reads_one_tenant_through_its_index(tmp_path: Path) -> None:
    """The tenant read of SQLite searches the (tenant, position) index."""
    import sqlite3

    path = tmp_path / "plan.db"
    async with chronik.open_store(f"sqlite:///{path}") as store:
        for tenant, i in _big_and_rare(200):
            await store.append(StreamId("d", f"s{i % 7}", tenant), [EventData("e", {})])
        rare = [e async for e in store.read_all(tenant="rare")]
        assert len(rare) == 3
    conn = sqlite3.connect(path)
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM chronik_events WHERE tenant = ? AND position > ? "
        "ORDER BY position LIMIT 10",
        ("rare", 0),
    ).fetchall()
    conn.close()
    text = " ".join(str(row[-1]) for row in plan)
    assert "chronik_events_tenant" in text and "SCAN" not in text, text


async def test_postgres_reads_one_tenant_through_its_index(postgres_url: str) -> None:
    """The tenant read of PostgreSQL searches the (tenant, xid, id) index, not the log, and
    its generic plan (what a cached prepared statement runs) does too."""
    async with chronik.open_store(postgres_url) as store:
        for tenant, i in _big_and_rare(2000):
            await store.append(StreamId("d", f"s{i % 50}", tenant), [EventData("e", {})])
        assert len([e async for e in store.read_all(tenant="rare")]) == 3
    dsn, options = split_url(postgres_url)
    schema = options["schema"]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'ANALYZE "{schema}".events')
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        rows = await conn.fetch(
            f'EXPLAIN SELECT * FROM "{schema}".events e WHERE e.tenant = $1 '
            "AND (e.xid, e.id) > ($2, $3) ORDER BY e.xid, e.id LIMIT 100",
            "rare",
            0,
            0,
        )
    finally:
        await conn.close()
    plan = "\n".join(r[0] for r in rows)
    assert "events_tenant_position" in plan and "Seq Scan" not in plan, plan
