"""DCB on a real PostgreSQL: forced races between conditional appends (a unit of work's
transaction held at its commit step, or the one-statement ``append_tagged`` function held in a
raw transaction), gap-safe query reads while a conditional transaction is held open, the one
round trip of a tagged append, and the migrations that add tags and that function."""

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
    Position,
    Query,
    QueryItem,
    StreamId,
    WrongExpectedVersion,
)
from chronik.store.base import WriteUnit
from chronik.store.postgres import PostgresEventStore
from chronik.store.postgres import schema as pg_schema
from chronik.store.postgres.dcb import tagged_args
from chronik.store.postgres.schema import quote_schema, split_url
from chronik.store.postgres.write import Statements, append_call, now_us
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
    ``release`` is called; it then commits, or rolls back with ``rollback``. It is a unit of
    work with a checkpoint beside the tagged append, so it takes the transaction path (a lone
    ``append_tagged`` is one autocommit statement, with no commit step to hold: see
    ``HeldStatement``); the contenders' ``store.append_tagged`` take the one-statement path."""

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
                async with other.transaction() as tx:
                    tx.append_tagged(self.events, self.condition)
                    tx.save_checkpoint("held", Position(1, 1))
                self.result = tx.results[0]
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


class HeldStatement:
    """The one-statement path held open: the ``append_tagged`` function the store runs for
    ``store.append_tagged(events, condition)``, called on a raw connection inside a transaction
    that stays open (locks taken, condition checked, events inserted) until the block ends;
    it then commits, or rolls back with ``rollback``."""

    def __init__(
        self,
        store: PostgresEventStore,
        events: list[EventData],
        condition: AppendCondition | None,
        rollback: bool = False,
    ) -> None:
        self.store, self.events, self.condition, self.rollback = store, events, condition, rollback
        self.status = -1
        self.positions: list[Position] = []

    async def __aenter__(self) -> HeldStatement:
        self.conn = await asyncpg.connect(split_url(self.store.url)[0])
        self.tx = self.conn.transaction()
        await self.tx.start()
        requests, check = self.store.prepare_tagged(self.events, self.condition)
        sql = self.store.statements
        args = tagged_args(requests, check, now_us(), (sql.lock_class, sql.dcb_lock_class))
        row = await self.conn.fetchrow(self.store.statements.append_tagged, *args)
        self.status = row["o_status"]
        self.positions = [Position(row["o_xid"], i) for i in row["o_ids"] or ()]
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await (self.tx.rollback() if self.rollback or exc[0] else self.tx.commit())
        finally:
            await self.conn.close()


def side_unit(
    store: PostgresEventStore, events: list[EventData], condition: AppendCondition
) -> asyncio.Task[list[AppendResult]]:
    """The tagged append as a unit of work with a checkpoint (the transaction path), running."""

    async def run() -> list[AppendResult]:
        async with store.transaction() as tx:
            tx.append_tagged(events, condition)
            tx.save_checkpoint("side", Position(1, 1))
        return tx.results

    return asyncio.create_task(run())


async def until_waiting(store: PostgresEventStore, count: int = 1) -> None:
    """Return once ``count`` advisory lock requests wait (fails after 5 s)."""
    for _ in range(100):
        if await waiting_on_a_lock(store) >= count:
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


async def test_held_statement_makes_both_paths_wait_then_fail_once_it_commits(
    store: PostgresEventStore,
) -> None:
    """While the append_tagged function's transaction is held, an overlapping conditional append
    on either path (one statement, unit of work) waits on its lock; once it commits, both fail
    with AppendConditionFailed at its position and nothing of theirs is stored."""
    before = await store.append_tagged([seat("c0")])
    cond = AppendCondition(course("c1"), after=before.position)
    async with HeldStatement(store, [seat("c1", 1)], cond) as held:
        assert held.status == 0
        fast = asyncio.create_task(store.append_tagged([seat("c1", 2)], cond))
        unit = side_unit(store, [seat("c1", 3)], cond)
        await until_waiting(store, 2)
        assert not fast.done() and not unit.done()
    for task in (fast, unit):
        with pytest.raises(AppendConditionFailed) as err:
            await asyncio.wait_for(task, 10)
        assert err.value.item == 0 and err.value.position == held.positions[0]
    assert [e.json()["n"] async for e in store.read_query(course("c1"))] == [1]


async def test_held_statement_rolled_back_lets_the_waiting_one_through(
    store: PostgresEventStore,
) -> None:
    """A uniqueness claim waiting on a held append_tagged call goes through (in one statement)
    when that transaction rolls back; the held event is nowhere."""
    cond = AppendCondition(Query.of(types=["username.claimed"], tags=["username:ada"]))
    claim = [EventData("username.claimed", {"n": 1}, tags=["username:ada"])]
    async with HeldStatement(store, claim, cond, rollback=True) as held:
        assert held.status == 0
        second = asyncio.create_task(
            store.append_tagged(
                [EventData("username.claimed", {"n": 2}, tags=["username:ada"])], cond
            )
        )
        await until_waiting(store)
        assert not second.done()
    result = await asyncio.wait_for(second, 10)
    got = [(e.json()["n"], e.position) async for e in store.read_query(cond.fail_if_events_match)]
    assert got == [(2, result.position)]


async def test_held_statement_excludes_a_plain_writer_and_passes_a_disjoint_one(
    store: PostgresEventStore,
) -> None:
    """A held append_tagged call with a condition on course c1 makes a plain append of a c1
    event wait (it then takes a later position); a conditional append on c2 goes through."""
    async with HeldStatement(store, [seat("c1", 1)], AppendCondition(course("c1"))) as held:
        plain = asyncio.create_task(store.append(StreamId("x", "x1"), [seat("c1", 2)]))
        await until_waiting(store)
        c2 = await asyncio.wait_for(
            store.append_tagged([seat("c2", 3)], AppendCondition(course("c2"))), 2
        )
        assert not plain.done()
    result = await asyncio.wait_for(plain, 10)
    assert held.positions[0] < result.position
    assert [e.json()["n"] async for e in store.read_query(course("c2"))] == [3]
    assert c2.position != result.position


async def test_a_tagged_append_is_one_statement_and_a_units_tagged_run_one_call(
    store: PostgresEventStore,
) -> None:
    """A conditional tagged append, and an unconditional one of several events, run without
    a transaction (no lock or commit step: one autocommit statement); a unit of work with a
    checkpoint writes its five tagged events with one call, in event order."""
    steps: list[str] = []

    def record(step: str, unit: WriteUnit | None) -> None:
        steps.append(step)

    store.fault_hook = record
    await store.append_tagged([seat("c1", 0)], AppendCondition(course("c1")))
    assert steps == ["begin", "append"]
    steps.clear()
    await store.append_tagged([seat("c2", i) for i in range(3)])
    assert steps == ["begin", "append"]
    steps.clear()
    async with store.transaction() as tx:
        tx.append_tagged([seat("c3", i) for i in range(5)], AppendCondition(course("c3")))
        tx.save_checkpoint("p", Position(1, 1))
    assert steps.count("append") == 1 and steps[-1] == "commit"
    store.fault_hook = None
    got = [(e.json()["n"], e.position) async for e in store.read_query(course("c3"))]
    assert got == [(i, p) for i, p in zip(range(5), tx.results[0].positions, strict=True)]
    assert sorted(tx.results[0].positions) == list(tx.results[0].positions)


async def test_one_statement_condition_finds_the_first_match_over_every_kind_of_item(
    store: PostgresEventStore,
) -> None:
    """The function's check covers tag-less items (by type), one-tag items and items with
    tags and types: the first match after ``after`` wins, the lowest item on a tie."""
    start = await store.append_tagged([seat("c0")])
    a = await store.append_tagged([EventData("course.closed", {}, tags=["course:c5"])])
    b = await store.append_tagged([EventData("seat.taken", {}, tags=["course:c6", "s:1"])])
    by_type = QueryItem(types=["course.closed"])
    one_tag = QueryItem(tags=["course:c5"])
    tags_and_type = QueryItem(types=["seat.taken"], tags=["course:c6", "s:1"])
    cases = [
        (Query([tags_and_type, one_tag]), start.position, 1, a.position),
        (Query([tags_and_type, by_type, one_tag]), start.position, 1, a.position),
        (Query([one_tag, by_type]), start.position, 0, a.position),
        (Query([QueryItem(types=["nothing"]), tags_and_type]), start.position, 1, b.position),
        (Query([tags_and_type, one_tag]), a.position, 0, b.position),
        (Query.all(), b.position, None, None),
        (Query([QueryItem(types=["seat.taken"], tags=["course:c6", "s:2"])]), None, None, None),
    ]
    for query, after, item, position in cases:
        call = store.append_tagged([seat("c9")], AppendCondition(query, after))
        if item is None:
            await call
            continue
        with pytest.raises(AppendConditionFailed) as err:
            await call
        assert (err.value.item, err.value.position) == (item, position), query


async def test_one_statement_hands_stored_ids_and_taken_streams_to_the_unit_path(
    store: PostgresEventStore,
) -> None:
    """An append whose events are partly stored keeps the stored one's original result and
    writes the other (its condition checked, as no retry); all stored, it is a retry (the
    original result, no check); a tagged event whose stream is taken by a plain append fails
    with WrongExpectedVersion."""
    old = seat("c4", 1)
    first = await store.append_tagged([old])
    new = seat("c4", 2)
    with pytest.raises(AppendConditionFailed):
        await store.append_tagged([old, new], AppendCondition(course("c4")))
    both = await store.append_tagged([old, new], AppendCondition(course("c9")))
    assert both.positions[0] == first.position and both.positions[1] > first.position
    again = await store.append_tagged([old, new], AppendCondition(course("c4")))
    assert again.positions == both.positions  # a retry: its condition is not checked
    await store.append(StreamId("dcb", "taken-1"), [EventData("x", {})])
    with pytest.raises(WrongExpectedVersion):
        await store.append_tagged(
            [EventData("x", {}, event_id="taken-1", tags=["k:v"])], AppendCondition(course("c9"))
        )
    assert [e.json()["n"] async for e in store.read_query(course("c4"))] == [1, 2]


_V1_APPEND_EVENT = """CREATE FUNCTION {s}.append_event(
    p_tenant text, p_domain text, p_aggregate_id text, p_expected bigint, p_event_id text,
    p_type text, p_version int, p_payload bytea, p_metadata bytea, p_content_type text,
    p_recorded_at bigint, OUT o_status int, OUT o_actual bigint, OUT o_xid bigint,
    OUT o_id bigint) LANGUAGE sql AS 'SELECT 1, NULL::bigint, NULL::bigint, NULL::bigint'"""


async def test_schema_3_is_migrated_to_the_latest_keeping_old_events_without_tags(
    postgres_url: str,
) -> None:
    """A schema at version 3 (an event stored, the old tag-less append function) opens at the
    latest version (5): the old event reads back without tags, its stream continues, tags work,
    the old function is gone and the tagged append function is there."""
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
        assert version == pg_schema.SCHEMA_VERSION
        functions = await conn.fetch(
            "SELECT p.proname, p.pronargs FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = $1 ORDER BY 1",
            schema,
        )
        assert [tuple(f) for f in functions] == [
            ("append_event", 12),
            ("append_events", 12),
            ("append_tagged", 17),  # schema 11: the caller's sorted lock keys (append_v11.py)
            ("append_tagged_one", 17),
            ("event_tenant", 0),  # schema 9: sets an event's tenant (store.postgres.tenancy)
            ("tag_in_tenant", 2),  # schema 9: row-level security of event_tags
        ]
    finally:
        await conn.close()


async def test_schema_4_is_migrated_to_5_and_its_tagged_events_take_the_new_path(
    postgres_url: str,
) -> None:
    """A tagged event written by a version-4 schema's append function is, after migration 5,
    a retry for the one-statement path (its original result) and a match for its conditions."""
    dsn, options = split_url(postgres_url)
    schema = options["schema"]
    conn = await asyncpg.connect(dsn)
    try:
        old = {v: pg_schema.MIGRATIONS[v] for v in (1, 2, 3, 4)}
        assert await pg_schema.migrate(conn, schema, old) == (0, 4)
        event = seat("c1", 1)
        statements = Statements.for_schema(schema)
        (request,), _ = PostgresEventStore(postgres_url).prepare_tagged([event], None)
        sql, args = append_call(statements, request, now_us())
        status, _, xid, row_id = await conn.fetchrow(sql, *args)
        assert status == 0
        async with chronik.open_store(postgres_url) as store:
            claim = AppendCondition(course("c1"))
            again = await store.append_tagged([event], claim)
            assert again.positions == (Position(xid, row_id),)
            with pytest.raises(AppendConditionFailed) as err:
                await store.append_tagged([seat("c1", 2)], claim)
            assert err.value.position == Position(xid, row_id)
            await store.append_tagged([seat("c2", 3)], AppendCondition(course("c2")))
            assert [e.json()["n"] async for e in store.read_query(Query.all())] == [1, 3]
        s = quote_schema(schema)
        latest = await conn.fetchval(f"SELECT max(version) FROM {s}.schema_migrations")
        assert latest == pg_schema.SCHEMA_VERSION
    finally:
        await conn.close()
