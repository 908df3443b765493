"""Forced races on a real MariaDB (mysql://): a writer held between taking its positions and
committing, concurrent writers with tailing readers, one-stream contention, overlapping DCB
conditions, connections lost mid-unit and a server restart."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncmy
import pytest

import chronik
from chronik import (
    NO_STREAM,
    AppendCondition,
    AppendConditionFailed,
    AppendResult,
    EventData,
    Position,
    Query,
    RecordedEvent,
    StreamId,
)
from chronik.store.base import UnitOfWork
from chronik.store.mysql import MySQLEventStore
from chronik.store.mysql.schema import MySQLOptions
from chronik.testing.dcb_scenario import check_log, run_in_processes, run_writers
from chronik.testing.faults import inject
from chronik.testing.mariadb_server import MariaDBService

pytestmark = pytest.mark.timeout(120)


def ev(n: int) -> EventData:
    """An event carrying ``n``."""
    return EventData("t.happened", {"n": n})


def course(c: str) -> Query:
    """The events tagged with course ``c``."""
    return Query.of(tags=[f"course:{c}"])


def seat(c: str, n: int = 0) -> EventData:
    """A seat taken in course ``c``."""
    return EventData("seat.taken", {"n": n}, tags=[f"course:{c}"])


@pytest.fixture
async def store(mysql_url: str) -> AsyncIterator[MySQLEventStore]:
    """An open store on a fresh database (its writers wait up to 30 s for a lock)."""
    s = chronik.open_store(mysql_url, pool_max_size=24, lock_wait_timeout=30)
    assert isinstance(s, MySQLEventStore)
    async with s:
        yield s


async def raw(url: str) -> asyncmy.Connection:
    """A connection of our own to the store's database, outside any pool."""
    o = MySQLOptions.parse(url, {})
    conn: asyncmy.Connection = await asyncmy.connect(
        host=o.host,
        port=o.port,
        user=o.user,
        password=o.password,
        database=o.database,
        autocommit=True,
    )
    return conn


async def scalar(url: str, sql: str) -> Any:
    """The first column of the first row of ``sql``."""
    conn = await raw(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            row = await cur.fetchone()
            return None if row is None else row[0]
    finally:
        conn.close()


async def until_lock_waits(url: str, count: int = 1) -> None:
    """Return once ``count`` InnoDB transactions wait on a lock (fails after 10 s, before the
    store's lock wait timeout). InnoDB refreshes ``innodb_trx`` only when it was last read more
    than 0.1 s ago: poll slower than that."""
    for _ in range(50):
        await asyncio.sleep(0.2)
        waiting = await scalar(
            url, "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
        )
        if waiting >= count:
            return
    trx = await rows(url, "SELECT trx_state, trx_query FROM information_schema.innodb_trx")
    raise AssertionError(f"fewer than {count} transactions wait on a lock: {trx}")


async def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql``."""
    conn = await raw(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return list(await cur.fetchall())
    finally:
        conn.close()


async def all_events(store: MySQLEventStore) -> list[RecordedEvent]:
    """read_all from the start."""
    return [e async for e in store.read_all()]


class Held:
    """A unit of work by another store, in its own thread and event loop, stopped at its
    ``commit`` step: its positions taken (the counter's row lock held), its events inserted,
    not committed. ``release`` lets it commit, or roll back with ``rollback=True``."""

    def __init__(
        self, url: str, build: Callable[[UnitOfWork], None], rollback: bool = False
    ) -> None:
        self.url, self.build, self.rollback = url, build, rollback
        self.at_commit = threading.Event()
        self._go = threading.Event()
        self.results: list[AppendResult] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def _pause(self) -> None:
        self.at_commit.set()
        self._go.wait(60)
        if self.rollback:
            raise OverflowError("rolled back on purpose")

    async def _run(self) -> None:
        async with chronik.open_store(self.url) as other:
            inject(other).install().pause("commit", self._pause)
            try:
                async with other.transaction() as tx:
                    self.build(tx)
                self.results = tx.results
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


# --- a writer held between its positions and its commit ------------------------------------------


async def test_held_writer_is_never_passed_and_delivered_first(
    store: MySQLEventStore, mysql_url: str
) -> None:
    """A writer held after taking its position makes later writers wait for it: no reader sees
    past it, and once it commits it is delivered before them, positions gapless."""
    pre = await store.append(StreamId("pre", "p"), [ev(-1)])
    sub = store.subscribe(after=pre.position)
    async with Held(mysql_url, lambda tx: tx.append(StreamId("held", "early"), [ev(0)])) as held:
        later = asyncio.create_task(store.append(StreamId("held", "late"), [ev(1)]))
        await until_lock_waits(mysql_url)
        assert not later.done()  # it waits for the held one's commit, not for a reader
        assert [e.json()["n"] for e in await all_events(store)] == [-1]
        assert await store.head() == pre.position
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(sub), 0.3)
        held.release()
        late = await asyncio.wait_for(later, 10)
    assert held.error is None
    assert held.results[0].position == Position(2) and late.position == Position(3)
    got = [await asyncio.wait_for(anext(sub), 10) for _ in range(2)]
    assert [e.json()["n"] for e in got] == [0, 1]
    assert await all_events(store) == [(await all_events(store))[0], *got]
    await sub.close()


async def test_held_writer_that_rolls_back_leaves_no_hole(
    store: MySQLEventStore, mysql_url: str
) -> None:
    """A held writer that rolls back gives its position back: the next writer takes it, and
    readers see no hole and nothing of the rolled-back unit."""
    pre = await store.append(StreamId("pre", "p"), [ev(-1)])
    build = lambda tx: tx.append(StreamId("held", "early"), [ev(0)])  # noqa: E731
    async with Held(mysql_url, build, rollback=True) as held:
        later = asyncio.create_task(store.append(StreamId("held", "late"), [ev(1)]))
        await until_lock_waits(mysql_url)
        held.release()
        late = await asyncio.wait_for(later, 10)
    assert isinstance(held.error, chronik.StoreUnavailable)
    assert late.position == Position(pre.position.commit + 1)
    assert [e.json()["n"] for e in await all_events(store)] == [-1, 1]
    assert await store.stream_version(StreamId("held", "early")) is None


async def test_held_conditional_append_fails_the_overlapping_one_and_orders_the_other(
    store: MySQLEventStore, mysql_url: str
) -> None:
    """A conditional tagged append held at its commit: an overlapping conditional append waits,
    then fails at the held one's position; a disjoint one waits too (the counter), then
    succeeds after it; a query read never passes the held append."""
    before = await store.append_tagged([seat("c0")])
    cond = AppendCondition(course("c1"), after=before.position)

    def build(tx: UnitOfWork) -> None:
        tx.append_tagged([seat("c1", 1)], cond)
        tx.save_checkpoint("held", Position(1))

    async with Held(mysql_url, build) as held:
        clash = asyncio.create_task(store.append_tagged([seat("c1", 2)], cond))
        other = asyncio.create_task(
            store.append_tagged([seat("c2", 3)], AppendCondition(course("c2"), before.position))
        )
        await until_lock_waits(mysql_url, 2)
        assert not clash.done() and not other.done()
        assert [e async for e in store.read_query(course("c1"))] == []
        held.release()
        with pytest.raises(AppendConditionFailed) as err:
            await asyncio.wait_for(clash, 10)
        disjoint = await asyncio.wait_for(other, 10)
    assert held.error is None
    assert err.value.item == 0 and err.value.position == held.results[0].position
    assert disjoint.position > held.results[0].position
    assert [e.json()["n"] async for e in store.read_query(course("c1"))] == [1]
    assert [e.json()["n"] async for e in store.read_query(course("c2"))] == [3]


async def test_held_conditional_append_rolled_back_lets_the_overlapping_one_through(
    store: MySQLEventStore, mysql_url: str
) -> None:
    """The waiting overlapping conditional append succeeds when the held one rolls back."""
    before = await store.append_tagged([seat("c0")])
    cond = AppendCondition(course("c1"), after=before.position)

    def build(tx: UnitOfWork) -> None:
        tx.append_tagged([seat("c1", 1)], cond)

    async with Held(mysql_url, build, rollback=True):
        second = asyncio.create_task(store.append_tagged([seat("c1", 2)], cond))
        await until_lock_waits(mysql_url)
    result = await asyncio.wait_for(second, 10)
    assert result.position == Position(before.position.commit + 1)
    assert [e.json()["n"] async for e in store.read_query(course("c1"))] == [2]


# --- concurrency ----------------------------------------------------------------------------------


async def test_concurrent_writers_and_tailing_readers_see_every_position_once_in_order(
    store: MySQLEventStore, mysql_url: str
) -> None:
    """12 writers on two stores (single appends, two-stream units, tagged appends) while a
    subscriber of each store tails: each sees positions 1..N once, in order, as read_all."""
    async with chronik.open_store(mysql_url, pool_max_size=8) as second:
        total = 12 * 20 + 12 * 10 * 2 + 12 * 10

        async def writer(k: int) -> None:
            s = store if k % 2 else second
            for i in range(20):
                await s.append(StreamId("w", f"w{k}"), [ev(i)])
                if i % 2:
                    async with s.transaction() as tx:
                        tx.append(StreamId("u", f"a{k}.{i}"), [ev(i)], NO_STREAM)
                        tx.append(StreamId("u", f"b{k}.{i}"), [ev(i)], NO_STREAM)
                    await s.append_tagged([seat(f"c{k % 3}", i)])

        async def tail(s: chronik.EventStore) -> list[RecordedEvent]:
            out: list[RecordedEvent] = []
            async with s.subscribe() as sub:
                async for e in sub:
                    out.append(e)
                    if len(out) == total:
                        return out
            return out

        readers = [asyncio.create_task(tail(s)) for s in (store, second)]
        await asyncio.gather(*(writer(k) for k in range(12)))
        seen = await asyncio.wait_for(asyncio.gather(*readers), 30)
        log = await all_events(store)
        assert [e.position for e in log] == [Position(i) for i in range(1, total + 1)]
        for got in seen:
            assert got == log


async def test_sixteen_appenders_one_stream_one_winner_per_version(
    store: MySQLEventStore, mysql_url: str
) -> None:
    """16 concurrent appenders (two stores) to one stream: exactly one winner per version."""
    async with chronik.open_store(mysql_url, pool_max_size=8) as other:
        s = StreamId("race", "one")
        expected: chronik.Expected = NO_STREAM
        for round_ in range(12):
            calls = [
                (store if i % 2 else other).append(
                    s, [EventData("t", {"r": round_, "i": i})], expected
                )
                for i in range(16)
            ]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            wins = [o for o in outcomes if isinstance(o, chronik.AppendResult)]
            assert len(wins) == 1, outcomes
            losers = [o for o in outcomes if not isinstance(o, chronik.AppendResult)]
            assert all(isinstance(o, chronik.WrongExpectedVersion) for o in losers), losers
            assert wins[0].last_sequence == round_
            expected = round_
        events = [e async for e in store.read_stream(s)]
        assert [e.sequence for e in events] == list(range(12))
        assert [e.json()["r"] for e in events] == list(range(12))


async def test_claimants_of_a_new_lease_one_wins_the_others_are_refused(
    store: MySQLEventStore, mysql_url: str
) -> None:
    """12 owners (two stores) claim a lease no one held yet at once: one gets epoch 1, every
    other one LeaseHeld (not an outage), in every round."""
    async with chronik.open_store(mysql_url, pool_max_size=8) as other:
        for round_ in range(5):
            outcomes = await asyncio.gather(
                *(
                    (store if i % 2 else other).acquire_lease(f"l{round_}", f"o{i}", 30.0)
                    for i in range(12)
                ),
                return_exceptions=True,
            )
            assert sorted(o for o in outcomes if isinstance(o, int)) == [1], outcomes
            assert sum(isinstance(o, chronik.LeaseHeld) for o in outcomes) == 11, outcomes


@pytest.mark.drill
async def test_overlapping_conditions_serialise_no_match_slips_in(
    store: MySQLEventStore, mysql_url: str, scale: int
) -> None:
    """20 concurrent conditional writers on one store, then 20 over two processes: 0
    violations, 0 false conflicts, refusals name the first match (dcb_scenario)."""
    seconds = 2.0 * scale
    attempts = await run_writers(store, writers=20, seconds=seconds, seed=1)
    report = await check_log(store, attempts, seconds)
    print(report.summary())
    assert report.violations == [] and report.false_conflicts == [] and report.misreported == []
    assert report.appended > 0 and report.conflicts > 0, report.summary()
    url = f"{mysql_url}_p"
    async with chronik.open_store(url) as shared:
        attempts = await run_in_processes(  # both start 1 s from now (spawned in ~0.2 s)
            url, writers=20, seconds=seconds, seed=2, startup=1.0
        )
        assert {a.writer[:2] for a in attempts} == {"p0", "p1"}
        report = await check_log(shared, attempts, seconds)
    print(report.summary())
    assert report.violations == [] and report.false_conflicts == [] and report.misreported == []
    assert report.appended > 0 and report.conflicts > 0, report.summary()


# --- failures -------------------------------------------------------------------------------------


async def kill_holder(url: str) -> None:
    """Kill the connection of the one transaction running on the server (a held writer)."""
    await asyncio.sleep(0.2)  # innodb_trx is refreshed only when not read for 0.1 s
    conn = await raw(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT trx_mysql_thread_id FROM information_schema.innodb_trx")
            ids = [r[0] for r in await cur.fetchall()]
            assert len(ids) == 1, ids
            await cur.execute(f"KILL CONNECTION {int(ids[0])}")
    finally:
        conn.close()


class HeldAt(Held):
    """Held, stopped at ``step`` instead of ``commit``."""

    def __init__(self, url: str, build: Callable[[UnitOfWork], None], step: str) -> None:
        super().__init__(url, build)
        self.step = step

    async def _run(self) -> None:
        async with chronik.open_store(self.url) as other:
            inject(other).install().pause(self.step, self._pause)
            try:
                async with other.transaction() as tx:
                    self.build(tx)
                self.results = tx.results
            except Exception as exc:
                self.error = exc


async def test_connection_lost_at_commit_is_typed_unknown_and_nothing_half_written(
    store: MySQLEventStore, mysql_url: str
) -> None:
    """The connection killed while a unit waits at its commit: StoreUnavailable with
    outcome_unknown; nothing of the unit is stored (no stream, no event, no checkpoint, the
    position not taken) and a retry with the same events stores them once."""
    a, b = StreamId("lost", "a"), StreamId("lost", "b")
    events, other = [ev(1), ev(2)], [ev(3)]  # the same ids on every try

    def build(tx: UnitOfWork) -> None:
        tx.append(a, events, NO_STREAM)
        tx.append(b, other, NO_STREAM)
        tx.save_checkpoint("lost", Position(7))

    async with Held(mysql_url, build) as held:
        await kill_holder(mysql_url)
    err = held.error
    assert isinstance(err, chronik.StoreUnavailable) and err.outcome_unknown, err
    assert await store.stream_version(a) is None and await store.stream_version(b) is None
    assert await all_events(store) == [] and await store.load_checkpoint("lost") is None
    assert await scalar(mysql_url, "SELECT `last` FROM log_head") == 0
    async with store.transaction() as tx:
        build(tx)
    assert [r.positions for r in tx.results] == [(Position(1), Position(2)), (Position(3),)]
    async with store.transaction() as tx2:  # the retry after an unknown outcome: no change
        build(tx2)
    assert tx2.results == tx.results
    assert len(await all_events(store)) == 3


async def test_connection_lost_before_commit_runs_the_unit_again(
    store: MySQLEventStore, mysql_url: str
) -> None:
    """The connection killed while a unit is between its stream locks and its commit: the
    server rolled it back, the store runs it again on a new connection, stored once."""
    s = StreamId("again", "a")
    async with HeldAt(mysql_url, lambda tx: tx.append(s, [ev(1)], NO_STREAM), "append") as held:
        await kill_holder(mysql_url)
    assert held.error is None, held.error
    assert held.results[0].position == Position(1)
    assert [e.json()["n"] for e in await all_events(store)] == [1]


async def test_writers_behind_a_frozen_one_time_out_typed_then_recover(mysql_url: str) -> None:
    """A writer frozen at its commit holds the counter: a later append gives up after
    lock_wait_timeout with StoreUnavailable (outcome known: nothing written) and the store
    reports unhealthy; once the frozen one is gone, appends work and health is ok again."""
    async with chronik.open_store(mysql_url, lock_wait_timeout=1) as store:
        await store.append(StreamId("pre", "p"), [ev(0)])
        async with Held(mysql_url, lambda tx: tx.append(StreamId("f", "frozen"), [ev(1)])):
            with pytest.raises(chronik.StoreUnavailable) as err:
                await store.append(StreamId("f", "later"), [ev(2)])
            assert not err.value.outcome_unknown and "1205" in str(err.value)
            assert not store.health.ok
        late = await store.append(StreamId("f", "later"), [ev(2)])
        assert late.position == Position(3) and store.health.ok
        assert await store.stream_version(StreamId("f", "frozen")) == 0


async def test_server_restart_the_store_reconnects(
    store: MySQLEventStore, mariadb_server: MariaDBService
) -> None:
    """After a restart of the server every pooled connection is dead: appends, reads and a
    live subscription go on without the caller seeing an error."""
    s = StreamId("restart", "r")
    first = await store.append(s, [ev(0)])
    sub = store.subscribe()
    assert (await asyncio.wait_for(anext(sub), 10)).position == first.position
    await asyncio.to_thread(mariadb_server.restart)
    second = await store.append(s, [ev(1)], expected=0)
    assert second.position == Position(2)
    assert (await asyncio.wait_for(anext(sub), 10)).position == second.position
    assert [e.sequence async for e in store.read_stream(s)] == [0, 1]
    assert store.health.ok
    await sub.close()
