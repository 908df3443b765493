"""Failover drill: a synchronous hot standby promoted under load after the primary is killed.

A primary and its synchronous standby (``synchronous_commit=on``) on loopback; writers append
continuously through a multi-host URL (``target_session_attrs=read-write``), retrying an
append whose outcome is unknown with the same event ids; a subscription and a projection run
on a second store of that URL (LISTEN/NOTIFY wake-ups, as another process), and a second
subscription on a store opened on the standby itself. The primary's processes are killed with
SIGKILL mid-load, the standby is promoted, and everything carries on against it. Then: every
acknowledged append is there exactly once with its ids and the position it was acknowledged
with, nothing else is; each subscription saw every event once, in position order; the
projection's table is the fold of the events. ``make test`` runs ~2 s of load on each side of
the failover; ``make soak`` (CHRONIK_SOAK=10) ten times as long.

Also: a multi-host URL whose first host is frozen (accepts TCP, never answers) still connects,
to the next host, within that host's share of the timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

import chronik
from chronik import NO_STREAM, EventData, Position, StreamId
from chronik.projections import Projection, ProjectionProcessor, ReadModel, Table, query
from chronik.store import open_store
from chronik.store.postgres import PostgresEventStore
from chronik.store.postgres.failover import HostList
from chronik.testing.replica import PostgresReplica, crash, failover_url
from chronik.testing.service_base import ServiceNotStarted, unavailable
from chronik.testing.services import PostgresService

WRITERS = 4
STREAMS_PER_WRITER = 3
SCHEMA = "failover"


@dataclass(frozen=True)
class Ack:
    """One acknowledged append: what was sent and what the store answered."""

    stream: StreamId
    event_ids: tuple[str, ...]
    positions: tuple[Position, ...]
    at: float  # time.monotonic() of the acknowledgement


@dataclass
class Load:
    """The writers' shared record."""

    acks: list[Ack]
    unknown: int = 0  # appends that failed with outcome_unknown (then retried)
    refused: int = 0  # appends that failed with the outcome known (nothing sent)
    killed_at: float = 0.0  # time.monotonic() once the primary's processes are all dead


@pytest.fixture
async def pair() -> AsyncIterator[tuple[PostgresService, PostgresReplica]]:
    """A primary of its own (it gets killed) and a synchronous hot standby of it."""
    primary = PostgresService(durable=False)
    standby = PostgresReplica(primary, application_name="drill_standby")
    try:
        await asyncio.to_thread(primary.start)
        await asyncio.to_thread(standby.start)
        await standby.make_synchronous("on")
    except ServiceNotStarted as exc:
        standby.stop()
        primary.stop()
        unavailable(f"PostgreSQL primary + standby unavailable: {exc}")
    try:
        yield primary, standby
    finally:
        await asyncio.to_thread(standby.stop)
        await asyncio.to_thread(primary.stop)


def balances() -> Projection:
    """Per stream: how many events, and the sequence of the last one (a duplicate or a gap
    shows in one of them)."""
    table = Table("balances", {"id": str, "n": int, "last": int}, primary_key="id")
    p = Projection("balances", tables=[table], batch_size=50)

    @p.on("deposited")
    async def deposited(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("balances", id=e.stream.aggregate_id)
        n = 0 if row is None else row["n"]
        rm.upsert("balances", id=e.stream.aggregate_id, n=n + 1, last=e.sequence)

    return p


async def write(store: chronik.EventStore, w: int, load: Load, stop: asyncio.Event) -> None:
    """Append two events at a time to this writer's streams, each with its exact expected
    version; an append that fails is retried with the same events until acknowledged."""
    versions: dict[StreamId, int] = {}
    n = 0
    while not stop.is_set():
        stream = StreamId("acct", f"w{w}-{n % STREAMS_PER_WRITER}")
        events = [EventData("deposited", {"w": w, "n": n, "k": k}) for k in range(2)]
        expected = versions.get(stream, NO_STREAM)
        while True:
            try:
                r = await store.append(stream, events, expected=expected)
                break
            except chronik.StoreUnavailable as exc:
                if exc.outcome_unknown:
                    load.unknown += 1
                else:
                    load.refused += 1
                await asyncio.sleep(0.01)
        load.acks.append(
            Ack(stream, tuple(e.event_id for e in events), r.positions, time.monotonic())
        )
        versions[stream] = r.last_sequence
        n += 1


async def follow(store: chronik.EventStore, seen: list[tuple[str, Position]]) -> None:
    """Record every event a subscription delivers, forever."""
    async for e in store.subscribe():
        seen.append((e.event_id, e.position))


async def wait_until(what: str, check: object, seconds: float = 60) -> None:
    """Poll ``check()`` until true."""
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.drill
async def test_failover_under_load_loses_and_repeats_nothing(
    pair: tuple[PostgresService, PostgresReplica], scale: int
) -> None:
    """Kill -9 the primary under load, promote the synchronous standby: every acknowledged
    append survives once with its ids and position, subscriptions see every event once in
    order (also one on the standby itself, which notices its promotion), the projection's
    table equals the fold of the events, and writers carry on against the new primary."""
    primary, standby = pair
    url = failover_url(primary, standby, schema=SCHEMA)
    writers_store = await open_store(url, pool_max_size=WRITERS + 2).open()
    readers_store = await open_store(url).open()  # another "process": woken by LISTEN/NOTIFY
    on_standby = await open_store(standby.url("postgres", schema=SCHEMA)).open()
    assert isinstance(on_standby, PostgresEventStore) and on_standby.standby
    assert isinstance(readers_store, PostgresEventStore)
    load = Load([])
    stop = asyncio.Event()
    seen: list[tuple[str, Position]] = []
    seen_on_standby: list[tuple[str, Position]] = []
    listening: list[bool] = []
    tasks = [asyncio.create_task(follow(readers_store, seen))]
    tasks.append(asyncio.create_task(follow(on_standby, seen_on_standby)))
    seconds = 2.0 * scale
    try:
        async with ProjectionProcessor(readers_store, balances(), heartbeat=0.05) as proc:
            writers = [
                asyncio.create_task(write(writers_store, w, load, stop)) for w in range(WRITERS)
            ]
            tasks += writers
            started = time.monotonic()
            await asyncio.sleep(seconds)
            before = len(load.acks)
            acked_before = list(load.acks)
            listening.append(readers_store.listening)
            await asyncio.to_thread(crash, primary)
            load.killed_at = time.monotonic()  # from now on only the promoted standby acks
            await asyncio.sleep(0.3)  # the operator (or Patroni) notices, then promotes
            promote_seconds = await asyncio.to_thread(standby.promote)
            promoted_at = time.monotonic()
            await wait_until(
                "a write on the new primary", lambda: load.acks[-1].at > load.killed_at
            )
            recovered_at = min(a.at for a in load.acks if a.at > load.killed_at)
            await asyncio.sleep(seconds)
            stop.set()
            async with asyncio.timeout(60):
                await asyncio.gather(*writers)
            ended = load.acks[-1].at
            after = sum(1 for a in load.acks if a.at >= recovered_at)
            last = max(p for a in load.acks for p in a.positions)
            stored = [e async for e in writers_store.read_all()]
            drain = {"stopped": time.monotonic()}
            await wait_until("the subscription", lambda: len(seen) >= len(stored), 60 * scale)
            drain["subscription"] = time.monotonic()
            await wait_until(
                "the standby's subscription",
                lambda: len(seen_on_standby) >= len(stored),
                60 * scale,
            )
            drain["standby_subscription"] = time.monotonic()
            async with asyncio.timeout(60 * scale):
                await proc.wait_for(last)
            drain["projection"] = time.monotonic()
            await wait_until("LISTEN on the new primary", lambda: readers_store.listening, 30)
            rows = await query(readers_store, "balances", "balances", order_by=("id",))
        # --- every acknowledged append once, as acknowledged; nothing else --------------------
        ids = [e.event_id for e in stored]
        assert len(ids) == len(set(ids)), "an event is stored twice"
        where = {e.event_id: e.position for e in stored}
        acked = {i: p for a in load.acks for i, p in zip(a.event_ids, a.positions, strict=True)}
        assert where == acked  # same ids, same positions, nothing unacknowledged
        before_ids = [
            i for a in sorted(acked_before, key=lambda a: a.positions) for i in a.event_ids
        ]
        earlier = set(before_ids)
        assert [i for i in ids if i in earlier] == before_ids  # their order holds
        by_stream: dict[StreamId, list[int]] = {}
        for e in stored:
            by_stream.setdefault(e.stream, []).append(e.sequence)
        assert all(seqs == list(range(len(seqs))) for seqs in by_stream.values())
        # --- subscriptions: every event once, in position order ------------------------------
        for got in (seen, seen_on_standby):
            assert [i for i, _ in got] == ids
            assert all(a[1] < b[1] for a, b in itertools.pairwise(got))
        assert not on_standby.standby  # it noticed the promotion
        # --- the projection's table is the fold of the events --------------------------------
        fold = Counter(e.stream.aggregate_id for e in stored)
        lasts = {e.stream.aggregate_id: e.sequence for e in stored}
        assert {r["id"]: (r["n"], r["last"]) for r in rows} == {
            k: (n, lasts[k]) for k, n in fold.items()
        }
        # --- the store on the promoted standby takes writes now -------------------------------
        r = await on_standby.append(StreamId("acct", "after"), [EventData("deposited", {})])
        assert r.first_sequence == 0
        figures = {
            "kill_to_first_append_s": round(recovered_at - load.killed_at, 3),
            "promote_s": round(promote_seconds, 3),
            "promoted_to_first_append_s": round(recovered_at - promoted_at, 3),
            "appends_per_s_before": round(before / (load.killed_at - started), 1),
            "appends_per_s_after": round(after / max(1e-9, ended - recovered_at), 1),
            "acked_appends": len(load.acks),
            "events": len(stored),
            "outcome_unknown_retries": load.unknown,
            "refused_while_down": load.refused,
            **{
                f"{k}_drained_s": round(t - drain["stopped"], 2)
                for k, t in drain.items()
                if k != "stopped"
            },
        }
        print(f"\nfailover drill (scale {scale}): {figures}")
        assert load.unknown + load.refused > 0  # the drill did hit the outage
        assert listening == [True]  # LISTEN was up before the kill and is up again after
    finally:
        # Closing a store ends its subscriptions and fails its writers' appends (StoreClosed);
        # a task still running after that is cancelled.
        stop.set()
        for store in (writers_store, readers_store, on_standby):
            async with asyncio.timeout(30):
                await store.close()
        _, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()


async def test_a_frozen_first_host_costs_its_share_of_the_timeout_once(
    postgres_server: PostgresService,
) -> None:
    """asyncpg alone spends the whole timeout on a frozen first host; HostList gives it its
    share, connects to the next host, and starts from that host the next time."""
    with socket.socket() as frozen:  # the kernel completes the handshake; nobody answers
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(64)
        url = failover_url(postgres_server, postgres_server)
        url = url.replace(f":{postgres_server.port},", f":{frozen.getsockname()[1]},", 1)
        with pytest.raises(TimeoutError):
            await asyncpg.connect(url, timeout=1.0)
        hosts = HostList(url, 1.0, min_host_timeout=0.2)
        started = time.monotonic()
        conn = await hosts.connect()
        took = time.monotonic() - started
        await conn.close()
        assert 0.45 <= took < 0.95  # the frozen host's half of the second, then the next
        started = time.monotonic()
        conn = await hosts.connect()
        took = time.monotonic() - started
        await conn.close()
        assert took < 0.45  # straight to the host that answered last
