"""PostgreSQL connection warm-up and the change feed: no request pays a new connection's type
lookups, the warm-up writes nothing, every commit reaches another process's listener promptly
while NOTIFYs stay coalesced, and a NOTIFY's echoes wake readers shortly after, never idle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest

import chronik
from chronik import NO_STREAM, AppendCondition, EventData, Query, QueryItem, StreamId
from chronik.store.postgres import PostgresEventStore
from chronik.store.postgres.feed import ECHOES, NOTIFY_INTERVAL
from chronik.store.postgres.locks import LOCK_SQL
from chronik.store.postgres.pool import WARM_TYPES, ConnectionPool
from chronik.store.postgres.schema import dcb_lock_class
from chronik.transports import Delivery, Message, open_transport

pytestmark = pytest.mark.timeout(60)

#: The recursive catalog query asyncpg runs to look up a type it has no codec for.
INTROSPECTION = "typeinfo_tree"


class Statements:
    """Every statement run on every asyncpg connection opened while it is installed
    (``asyncpg.connect`` wrapped: the real driver, each connection with a query logger)."""

    def __init__(self) -> None:
        self.by_conn: dict[int, list[str]] = {}

    @property
    def queries(self) -> list[str]:
        """Every statement, connection by connection."""
        return [q for qs in self.by_conn.values() for q in qs]

    def logger(self, conn: asyncpg.Connection) -> Callable[[Any], None]:
        """A query logger keeping ``conn``'s statements."""
        queries = self.by_conn.setdefault(id(conn), [])
        return lambda record: queries.append(record.query)

    async def lookups(self) -> int:
        """How many type lookups ran so far outside a connection's warm-up (one is the warm-up
        when the next statement of its connection, its jit settings aside, is WARM_TYPES)."""
        await asyncio.sleep(0)  # asyncpg calls the loggers soon after each statement
        n = 0
        for queries in self.by_conn.values():
            rest = [q for q in queries if "set_config('jit'" not in q]
            for i, q in enumerate(rest):
                n += INTROSPECTION in q and rest[i + 1 : i + 2] != [WARM_TYPES]
        return n


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[Statements]:
    """Log the statements of every connection opened during the test."""
    seen = Statements()
    real_connect: Callable[..., Any] = asyncpg.connect

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        conn = await real_connect(*args, **kwargs)
        conn.add_query_logger(seen.logger(conn))
        return conn

    monkeypatch.setattr(asyncpg, "connect", connect)
    yield seen


async def test_the_check_sees_a_cold_connection_look_types_up(
    postgres_url: str, statements: Statements
) -> None:
    """Control: on a bare connection the lock statement's int[] and bool[] parameters make
    asyncpg run its type lookup, which the logger sees; WARM_TYPES on a new connection first
    leaves nothing to look up."""
    dsn = postgres_url.split("?")[0]
    args = ([1], ["k"], [False])
    cold = await asyncpg.connect(dsn)
    try:
        async with cold.transaction():
            await cold.execute(LOCK_SQL, *args)
    finally:
        await cold.close()
    assert await statements.lookups() == 1
    warm = await asyncpg.connect(dsn)
    try:
        await warm.fetchrow(WARM_TYPES)
        before = await statements.lookups()
        async with warm.transaction():
            await warm.execute(LOCK_SQL, *args)
            await warm.fetchval("SELECT $1::bigint[], $2::bytea[]", [1], [b""])
    finally:
        await warm.close()
    assert await statements.lookups() == before == 1


async def test_a_fresh_store_pays_no_type_lookup_in_its_requests(
    postgres_url: str, statements: Statements
) -> None:
    """Every kind of write on a just-opened store (one event, a batch, a unit of work that
    takes its locks with LOCK_SQL, a tagged append with a condition), on each connection of
    its pool, runs no type lookup: the pool warmed the connections when it opened them."""
    async with chronik.open_store(postgres_url + "&pool_min_size=2&pool_max_size=2") as store:
        assert isinstance(store, PostgresEventStore)
        opened = await statements.lookups()
        assert opened == 0
        assert statements.queries.count(WARM_TYPES) == 2

        async def writes(k: int) -> None:
            one = StreamId("warm", f"one{k}")
            await store.append(one, [EventData("warm.done", {"k": k})], NO_STREAM)
            batch = [EventData("warm.done", {"n": n}) for n in range(3)]
            await store.append(StreamId("warm", f"batch{k}"), batch, NO_STREAM)
            async with store.transaction() as unit:
                unit.append(StreamId("warm", f"unit{k}"), [EventData("warm.done", {})])
                unit.save_checkpoint(f"p{k}", (await store.head()) or chronik.Position(0, 0))
            condition = AppendCondition(Query([QueryItem(tags=[f"k:{k}"])]))
            await store.append_tagged([EventData("warm.done", {}, tags=[f"k:{k}"])], condition)

        await asyncio.gather(writes(0), writes(1))  # both connections busy at once
        assert await statements.lookups() == opened
        # a connection opened later, on demand, is warmed too
        async with chronik.open_store(postgres_url + "&pool_min_size=1&pool_max_size=3") as more:
            opened = await statements.lookups()
            await asyncio.gather(*(writes(k) for k in range(10, 13)))
            assert await statements.lookups() == opened
            assert await more.head() == await store.head()


async def test_the_warm_up_writes_nothing(postgres_url: str, statements: Statements) -> None:
    """The warm-up runs both stream append functions on each new connection, and they store
    nothing: no stream, no event, no transaction id taken."""
    async with chronik.open_store(postgres_url + "&pool_min_size=3&pool_max_size=3") as store:
        assert isinstance(store, PostgresEventStore)
        calls = [q for q in statements.queries if q.startswith("SELECT o_status")]
        assert sum(".append_event(" in q for q in calls) == 3
        assert sum(".append_events(" in q for q in calls) == 3
        assert await store.head() is None
        rows = await asyncpg.connect(postgres_url.split("?")[0])
        try:
            s = f'"{store.schema}"'
            assert await rows.fetchval(f"SELECT count(*) FROM {s}.streams") == 0
            assert await rows.fetchval(f"SELECT count(*) FROM {s}.events") == 0
        finally:
            await rows.close()


async def test_a_pool_discards_a_connection_its_init_fails_on(postgres_url: str) -> None:
    """An owner's init that fails on a new connection fails the acquire with its error and
    leaves no connection counted: the next acquire opens a new one."""
    failures = [RuntimeError("init failed")]

    async def init(conn: asyncpg.Connection) -> None:
        if failures:
            raise failures.pop()

    pool = ConnectionPool(postgres_url.split("?")[0], 1, 1, init=init)
    with pytest.raises(RuntimeError, match="init failed"):
        await pool.open()
    async with pool.connection() as conn:
        assert await conn.fetchval("SELECT 1") == 1
    await pool.close()


async def test_the_transport_pays_no_type_lookup_on_its_paths(
    postgres_url: str, statements: Statements
) -> None:
    """The PostgreSQL transport's publish, claim and batched ack (bigint[] ids) run no type
    lookup after its pools opened their connections."""
    async with open_transport(postgres_url) as transport:
        got: list[bytes] = []
        done = asyncio.Event()

        async def handle(d: Delivery) -> None:
            got.append(d.body)
            if len(got) == 20:
                done.set()

        await transport.subscribe("warm.topic", "g", handle)
        opened = await statements.lookups()
        for n in range(20):
            await transport.publish(Message(topic="warm.topic", body=b"%d" % n))
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.sleep(0.2)  # the acks' flush
        assert any("DELETE FROM" in q for q in statements.queries)
        assert await statements.lookups() == opened


async def test_every_commit_reaches_another_listener_promptly(postgres_url: str) -> None:
    """Appends one after another (each within NOTIFY_INTERVAL of the last NOTIFY) each wake
    a store listening in another connection within a second (the keepalive is 5 s), the last
    of a burst included."""
    async with chronik.open_store(postgres_url) as writer, chronik.open_store(postgres_url) as b:
        assert isinstance(b, PostgresEventStore)
        while not (b.listening and writer.listening):  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        stream = StreamId("feed", "s")
        for n in range(8):
            signal = b.change_signal()
            await writer.append(stream, [EventData("feed.ticked", {"n": n})])
            await asyncio.wait_for(signal.wait(), 1.0)
        burst = [
            writer.append(StreamId("feed", f"b{n}"), [EventData("feed.x", {})]) for n in range(30)
        ]
        await asyncio.gather(*burst)
        signal = b.change_signal()
        await writer.append(stream, [EventData("feed.ticked", {"n": -1})])
        await asyncio.wait_for(signal.wait(), 1.0)


async def test_notifications_stay_coalesced_under_many_commits(postgres_url: str) -> None:
    """Many concurrent appends send at most one NOTIFY per NOTIFY_INTERVAL (plus the first),
    not one per commit: the commits pace the feed, they do not multiply it."""
    async with chronik.open_store(postgres_url + "&pool_max_size=8") as writer:
        assert isinstance(writer, PostgresEventStore)
        while not writer.listening:
            await asyncio.sleep(0.01)
        listener = await asyncpg.connect(postgres_url.split("?")[0])
        heard: list[float] = []
        await listener.add_listener(f"chronik.{writer.schema}", lambda *_: heard.append(1))
        try:

            async def appender(k: int) -> None:
                for n in range(40):
                    await writer.append(StreamId("feed", f"c{k}"), [EventData("feed.x", {"n": n})])

            start = time.monotonic()
            await asyncio.gather(*(appender(k) for k in range(8)))
            elapsed = time.monotonic() - start
            await asyncio.sleep(0.2)  # the last NOTIFY
        finally:
            await listener.close()
        assert 1 <= len(heard) <= elapsed / NOTIFY_INTERVAL + 2 < 320


async def test_a_notify_wakes_readers_then_echoes_then_stops(postgres_url: str) -> None:
    """One commit in another store wakes a listening store's readers once, then once per
    ECHOES delay (what committed just after the NOTIFY is read without waiting for the next),
    and then never again while nothing is committed: no polling when idle."""
    async with chronik.open_store(postgres_url) as writer, chronik.open_store(postgres_url) as b:
        assert isinstance(b, PostgresEventStore)
        while not (b.listening and writer.listening):  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)

        async def wakes(within: float) -> int:
            n = 0
            end = time.monotonic() + within
            while (left := end - time.monotonic()) > 0:
                signal = b.change_signal()
                try:
                    await asyncio.wait_for(signal.wait(), left)
                except TimeoutError:
                    break
                n += 1
            return n

        counting = asyncio.create_task(wakes(sum(ECHOES) + 0.3))
        await asyncio.sleep(0.01)
        await writer.append(StreamId("feed", "echo"), [EventData("feed.ticked", {})])
        assert await counting == 1 + len(ECHOES)
        assert await wakes(0.3) == 0


async def test_a_held_dcb_lock_does_not_hold_a_new_connection_back(postgres_url: str) -> None:
    """While another session holds the DCB lock on everything ('*', as an append conditioned
    on Query.all() does), a store still opens and reads at once: the warm-up gives up after
    100 ms instead of waiting; appends still wait for the lock."""
    schema = postgres_url.split("schema=")[1].split("&")[0]
    async with chronik.open_store(postgres_url) as first:
        assert await first.head() is None  # the schema exists
    holder = await asyncpg.connect(postgres_url.split("?")[0])
    try:
        async with holder.transaction():
            await holder.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext('*'))", dcb_lock_class(schema)
            )
            async with asyncio.timeout(5):
                store = chronik.open_store(postgres_url + "&pool_min_size=2&pool_max_size=2")
                await store.open()
            assert await store.head() is None
            blocked = asyncio.create_task(
                store.append(StreamId("warm", "w"), [EventData("warm.done", {})])
            )
            await asyncio.sleep(0.3)
            assert not blocked.done()  # the append waits for the held lock
        async with asyncio.timeout(5):
            await blocked  # the lock released: the append goes through
        await store.close()
    finally:
        await holder.close()
