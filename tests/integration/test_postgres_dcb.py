"""DCB on a real PostgreSQL: forced races between conditional appends, gap-safe query reads
while a conditional transaction is held open, and the migration that adds tags."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import asyncpg
import pytest

import chronik
from chronik import (
    AppendCondition,
    AppendConditionFailed,
    AppendResult,
    EventData,
    Query,
    QueryItem,
    StreamId,
)
from chronik.store.postgres import PostgresEventStore
from chronik.store.postgres import schema as pg_schema
from chronik.store.postgres.schema import quote_schema, split_url
from chronik.testing.faults import inject

pytestmark = pytest.mark.timeout(60)


def course(c: str) -> Query:
    """The events tagged with course ``c``."""
    return Query.of(tags=[f"course:{c}"])


def seat(c: str, n: int = 0) -> EventData:
    """A seat taken in course ``c``."""
    return EventData("seat.taken", {"n": n}, tags=[f"course:{c}"])


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresEventStore]:
    """An open PostgreSQL store on a fresh schema."""
    s = chronik.open_store(postgres_url)
    assert isinstance(s, PostgresEventStore)
    async with s:
        yield s


class Held:
    """A conditional append by another store, in its own thread and event loop, whose
    transaction stops at the ``commit`` step (locks taken, checks passed, event inserted) until
    ``release`` is called; it then commits, or rolls back with ``rollback``."""

    def __init__(
        self, url: str, events: list[EventData], condition: AppendCondition, rollback: bool
    ) -> None:
        self.url, self.events, self.condition, self.rollback = url, events, condition, rollback
        self.at_commit = threading.Event()
        self._go = threading.Event()
        self.result: AppendResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def _pause(self) -> None:
        self.at_commit.set()
        self._go.wait(30)
        if self.rollback:
            raise OverflowError("rolled back on purpose")

    async def _run(self) -> None:
        async with chronik.open_store(self.url) as other:
            inject(other).install().pause("commit", self._pause)
            try:
                self.result = await other.append_tagged(self.events, self.condition)
            except Exception as exc:
                self.error = exc

    async def __aenter__(self) -> Held:
        self._thread.start()
        assert await asyncio.to_thread(self.at_commit.wait, 20), "never reached the commit"
        return self

    def release(self) -> None:
        """Let the held transaction finish."""
        self._go.set()

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        await asyncio.to_thread(self._thread.join, 20)


async def waiting_on_a_lock(store: PostgresEventStore) -> int:
    """How many advisory lock requests of the cluster wait right now."""
    conn = await asyncpg.connect(split_url(store.url)[0])
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
        )
    finally:
        await conn.close()


async def until_waiting(store: PostgresEventStore) -> None:
    """Return once some advisory lock request waits (fails after 5 s)."""
    for _ in range(100):
        if await waiting_on_a_lock(store):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("nothing waits on a lock")


async def test_overlapping_condition_waits_then_fails_once_the_first_commits(
    store: PostgresEventStore,
) -> None:
    """A conditional append overlapping a held one waits on its lock; when the first commits
    it fails with AppendConditionFailed at the first one's position."""
    before = await store.append_tagged([seat("c0")])  # the schema is in use; a known position
    cond = AppendCondition(course("c1"), after=before.position)
    async with Held(store.url, [seat("c1", 1)], cond, rollback=False) as held:
        second = asyncio.create_task(store.append_tagged([seat("c1", 2)], cond))
        await until_waiting(store)
        assert not second.done()
        held.release()
        with pytest.raises(AppendConditionFailed) as err:
            await asyncio.wait_for(second, 10)
    assert held.error is None and held.result is not None
    assert err.value.item == 0 and err.value.position == held.result.position
    got = [e.json()["n"] async for e in store.read_query(course("c1"))]
    assert got == [1]


async def test_overlapping_condition_succeeds_if_the_first_rolls_back(
    store: PostgresEventStore,
) -> None:
    """The waiting conditional append goes through when the held one rolls back; the held
    one's event is nowhere."""
    cond = AppendCondition(Query.of(types=["username.claimed"], tags=["username:ada"]))
    claim = [EventData("username.claimed", {"n": 1}, tags=["username:ada"])]
    async with Held(store.url, claim, cond, rollback=True) as held:
        second = asyncio.create_task(
            store.append_tagged(
                [EventData("username.claimed", {"n": 2}, tags=["username:ada"])], cond
            )
        )
        await until_waiting(store)
        held.release()
        result = await asyncio.wait_for(second, 10)
    assert held.error is not None and held.result is None
    got = [(e.json()["n"], e.position) async for e in store.read_query(cond.fail_if_events_match)]
    assert got == [(2, result.position)]


async def test_condition_excludes_a_plain_writer_of_a_matching_event(
    store: PostgresEventStore,
) -> None:
    """An unconditional append of an event the held condition could match waits, then takes a
    position after the held one: the condition's ``after`` stays true."""
    async with Held(store.url, [seat("c1", 1)], AppendCondition(course("c1")), False) as held:
        plain = asyncio.create_task(store.append(StreamId("x", "x1"), [seat("c1", 2)]))
        await until_waiting(store)
        assert not plain.done()
        held.release()
        result = await asyncio.wait_for(plain, 10)
    assert held.result is not None and result.position > held.result.position


async def test_disjoint_writers_do_not_wait_and_readers_do_not_pass_the_held_one(
    store: PostgresEventStore,
) -> None:
    """While a conditional append on course c1 is held, a conditional append on c2 and a plain
    one on c3 go through at once; a query read started meanwhile returns nothing past the held
    transaction, and everything in order once it commits."""
    both = Query([QueryItem(tags=["course:c1"]), QueryItem(tags=["course:c2"])])
    async with Held(store.url, [seat("c1", 1)], AppendCondition(course("c1")), False) as held:
        c2 = await asyncio.wait_for(
            store.append_tagged([seat("c2", 2)], AppendCondition(course("c2"))), 2
        )
        c3 = await asyncio.wait_for(store.append(StreamId("x", "x1"), [seat("c3", 3)]), 2)
        assert [e async for e in store.read_query(both)] == []
        assert [e async for e in store.read_query(Query.all())] == []
        assert [e async for e in store.read_query(both, backward=True)] == []
        held.release()
    assert held.result is not None and held.result.position < c2.position < c3.position
    got = [e.json()["n"] async for e in store.read_query(both)]
    assert got == [1, 2]
    assert [e.json()["n"] async for e in store.read_query(both, backward=True)] == [2, 1]
    assert [e.tags async for e in store.read_all()] == [
        ("course:c1",),
        ("course:c2",),
        ("course:c3",),
    ]


_V1_APPEND_EVENT = """CREATE FUNCTION {s}.append_event(
    p_tenant text, p_domain text, p_aggregate_id text, p_expected bigint, p_event_id text,
    p_type text, p_version int, p_payload bytea, p_metadata bytea, p_content_type text,
    p_recorded_at bigint, OUT o_status int, OUT o_actual bigint, OUT o_xid bigint,
    OUT o_id bigint) LANGUAGE sql AS 'SELECT 1, NULL::bigint, NULL::bigint, NULL::bigint'"""


async def test_schema_3_is_migrated_to_4_keeping_old_events_without_tags(
    postgres_url: str,
) -> None:
    """A schema at version 3 (an event stored, the old tag-less append function) opens at
    version 4: the old event reads back without tags, its stream continues, tags work, and the
    old function is gone."""
    dsn, options = split_url(postgres_url)
    schema = options["schema"]
    s = quote_schema(schema)
    conn = await asyncpg.connect(dsn)
    try:
        old = {v: pg_schema.MIGRATIONS[v] for v in (1, 2, 3)}
        assert await pg_schema.migrate(conn, schema, old) == (0, 3)
        await conn.execute(_V1_APPEND_EVENT.replace("{s}", s))
        await conn.execute(
            f"INSERT INTO {s}.streams (tenant, domain, aggregate_id, version) "
            "VALUES ('', 'order', 'o1', 0)"
        )
        await conn.execute(
            f"INSERT INTO {s}.events (xid, stream_id, sequence, event_id, type, schema_version, "
            "payload, recorded_at) SELECT pg_current_xact_id()::text::bigint, id, 0, 'old-1', "
            f"'order.placed', 1, '{{}}'::bytea, 1 FROM {s}.streams"
        )
        async with chronik.open_store(postgres_url) as store:
            events = [e async for e in store.read_all()]
            assert [(e.event_id, e.tags) for e in events] == [("old-1", ())]
            await store.append(StreamId("order", "o1"), [seat("c1")], 0)
            assert [e.sequence async for e in store.read_query(Query.all())] == [0, 1]
            assert [e.sequence async for e in store.read_query(course("c1"))] == [1]
        version = await conn.fetchval(f"SELECT max(version) FROM {s}.schema_migrations")
        assert version == pg_schema.SCHEMA_VERSION == 4
        functions = await conn.fetch(
            "SELECT p.proname, p.pronargs FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = $1 ORDER BY 1",
            schema,
        )
        assert [tuple(f) for f in functions] == [("append_event", 12), ("append_events", 12)]
    finally:
        await conn.close()
