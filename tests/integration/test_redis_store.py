"""The Redis store against a real redis-server: forced races between connections and OS
processes, kill -9 of the server, a unit refused mid-way, pub/sub across processes, the
durability check and the URL options."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

import chronik
from chronik import ANY, NO_STREAM, EventData, RecordedEvent, StreamId
from chronik.store.base import TableSpec, TableWrite
from chronik.store.redis import RedisEventStore
from chronik.testing.redis_server import RedisService
from chronik.testing.service_base import ServiceNotStarted, unavailable

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """Start a python child running ``code`` with ``args`` in sys.argv."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


async def finish(child: subprocess.Popen[str]) -> str:
    """Wait for a child; its stdout (fails the test with its stderr if it failed)."""
    out, err = await asyncio.to_thread(child.communicate, timeout=90)
    assert child.returncode == 0, err
    return out


def open_store(url: str, **options: object) -> RedisEventStore:
    """A Redis store (typed)."""
    store = chronik.open_store(url, **options)
    assert isinstance(store, RedisEventStore)
    return store


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisEventStore]:
    """An open Redis store under a fresh prefix."""
    async with open_store(redis_url) as s:
        yield s


@pytest.fixture
def own_server() -> RedisService:
    """A redis-server of this test alone (it is killed, reconfigured ...)."""
    server = RedisService()
    try:
        server.start()
    except ServiceNotStarted as exc:
        server.stop()
        unavailable(f"Redis unavailable: {exc}")
    return server


APPENDER = """
import asyncio, sys, chronik
async def main():
    async with chronik.open_store(sys.argv[1]) as store:
        for i in range(int(sys.argv[2])):
            await store.append(chronik.StreamId("race", "shared"),
                               [chronik.EventData("race.shared", {"i": i, "by": "child"})])
            await store.append(chronik.StreamId("race", f"child-{i}"),
                               [chronik.EventData("race.own", {"i": i}) for _ in range(2)])
asyncio.run(main())
"""


async def tail_subscription(store: RedisEventStore, done: asyncio.Event) -> list[RecordedEvent]:
    """Every event a live subscription delivers until ``done`` and caught up with the head."""
    seen: list[RecordedEvent] = []
    async with store.subscribe(batch_size=37) as sub:
        while True:
            try:
                seen.append(await asyncio.wait_for(anext(sub), 0.5))
            except TimeoutError:
                if done.is_set() and seen and seen[-1].position == await store.head():
                    return seen


async def tail_read_all(store: RedisEventStore, done: asyncio.Event) -> list[RecordedEvent]:
    """Every event read by paging read_all after the last position, until ``done`` and
    caught up with the head."""
    seen: list[RecordedEvent] = []
    while True:
        after = seen[-1].position if seen else None
        page = [e async for e in store.read_all(after=after, limit=50)]
        seen += page
        if not page:
            if done.is_set() and seen and seen[-1].position == await store.head():
                return seen
            await asyncio.sleep(0.001)


async def test_racing_writers_and_a_process_never_make_a_reader_skip(redis_url: str) -> None:
    """Writers on separate connections and in a second OS process append to one stream and
    to many while readers tail: each reader sees every position once, in order, no gap."""
    writers = [await open_store(redis_url).open() for _ in range(4)]
    readers = [await open_store(redis_url).open() for _ in range(2)]
    done = asyncio.Event()
    tails = [
        asyncio.create_task(tail_subscription(readers[0], done)),
        asyncio.create_task(tail_read_all(readers[1], done)),
    ]
    child = spawn(APPENDER, redis_url, "60")

    async def write(n: int, store: RedisEventStore) -> None:
        for i in range(60):
            await store.append(StreamId("race", "shared"), [EventData("race.shared", {"i": i})])
            async with store.transaction() as tx:
                tx.append(StreamId("race", f"w{n}-{i}"), [EventData("race.own", {"i": i})])
                tx.append(StreamId("race", f"x{n}-{i}"), [EventData("race.own", {"i": i})])

    try:
        await asyncio.gather(*(write(n, w) for n, w in enumerate(writers)))
        await finish(child)
        done.set()
        seen_by = await asyncio.wait_for(asyncio.gather(*tails), 60)
        everything = [e async for e in readers[0].read_all()]
        total = 4 * 60 * 3 + 60 * 3
        assert len(everything) == total
        assert [e.position.commit for e in everything] == list(range(1, total + 1))
        for seen in seen_by:
            assert [e.event_id for e in seen] == [e.event_id for e in everything]
        shared = [e async for e in readers[0].read_stream(StreamId("race", "shared"))]
        assert [e.sequence for e in shared] == list(range(5 * 60))
        assert [e.position for e in shared] == sorted(e.position for e in shared)
    finally:
        for s in writers + readers:
            await s.close()


LADDER = """
import asyncio, json, sys, chronik
async def main():
    s = chronik.StreamId("ladder", "one")
    wins = []
    async with chronik.open_store(sys.argv[1]) as store:
        for _ in range(int(sys.argv[2])):
            v = await store.stream_version(s)
            try:
                r = await store.append(s, [chronik.EventData("ladder.step", {"by": sys.argv[3]})],
                                       chronik.NO_STREAM if v is None else v)
            except chronik.WrongExpectedVersion:
                continue
            wins.append(r.first_sequence)
    print(json.dumps(wins))
asyncio.run(main())
"""


async def test_exactly_one_competing_expected_version_append_wins(redis_url: str) -> None:
    """Of N appenders with the same expectation (own connections), one wins each version; with
    two OS processes climbing the same stream too, no sequence is won twice or lost."""
    stores = [await open_store(redis_url).open() for _ in range(6)]
    try:
        s = StreamId("compete", "one")
        for version in range(5):
            expected: chronik.Expected = NO_STREAM if version == 0 else version - 1
            outcomes = await asyncio.gather(
                *(
                    st.append(s, [EventData("t", {"n": n})], expected)
                    for n, st in enumerate(stores)
                ),
                return_exceptions=True,
            )
            wins = [o for o in outcomes if isinstance(o, chronik.AppendResult)]
            assert len(wins) == 1 and wins[0].first_sequence == version
            assert all(
                isinstance(o, chronik.WrongExpectedVersion) for o in outcomes if o not in wins
            )

        children = [spawn(LADDER, redis_url, "80", f"p{k}") for k in range(2)]

        async def climb(name: str, store: RedisEventStore) -> list[int]:
            ladder, won = StreamId("ladder", "one"), []
            for _ in range(80):
                v = await store.stream_version(ladder)
                try:
                    r = await store.append(
                        ladder,
                        [EventData("ladder.step", {"by": name})],
                        NO_STREAM if v is None else v,
                    )
                except chronik.WrongExpectedVersion:
                    continue
                won.append(r.first_sequence)
            return won

        local = await asyncio.gather(*(climb(f"l{k}", st) for k, st in enumerate(stores[:3])))
        remote = [json.loads(await finish(c)) for c in children]
        claims = {f"l{k}": w for k, w in enumerate(local)} | {
            f"p{k}": w for k, w in enumerate(remote)
        }
        events = [e async for e in stores[0].read_stream(StreamId("ladder", "one"))]
        assert sorted(q for w in claims.values() for q in w) == list(range(len(events)))
        for e in events:  # each stored step is the one its writer was told it won
            assert e.sequence in claims[e.json()["by"]]
        assert len({w for w in claims if claims[w]}) >= 2  # they really competed
    finally:
        for st in stores:
            await st.close()


async def test_kill_9_of_the_server_loses_no_acknowledged_append(own_server: RedisService) -> None:
    """With appendfsync always, a SIGKILL of redis-server while appends are in flight loses
    none that was acknowledged; after a restart on the same data the log has no gap, and the
    open store reads on and appends again (a retry with the same ids)."""
    url = own_server.url(prefix="crash")
    acked: list[chronik.AppendResult] = []
    try:
        async with open_store(url) as store:

            async def append_until_it_fails(n: int) -> None:
                for i in range(100_000):
                    try:
                        r = await store.append(
                            StreamId("crash", f"s{n}"),
                            [EventData("t", {"i": i}), EventData("t", {"i": i})],
                        )
                    except chronik.StoreUnavailable:
                        return
                    acked.append(r)

            writers = [asyncio.create_task(append_until_it_fails(n)) for n in range(4)]
            while len(acked) < 300:
                await asyncio.sleep(0.005)
            await asyncio.to_thread(own_server.crash)
            await asyncio.wait_for(asyncio.gather(*writers), 30)
            assert await store.head() is not None  # reads find the restarted server
            after = [EventData("t", {"after": True})]
            for _ in range(10):  # pooled connections died with it: retry with the same ids
                try:
                    acked.append(await store.append(StreamId("crash", "after"), after))
                    break
                except chronik.StoreUnavailable:
                    assert not store.health.ok
            assert store.health.ok and acked[-1].stream == StreamId("crash", "after")
        async with open_store(url) as store:
            everything = [e async for e in store.read_all()]
            assert [e.position.commit for e in everything] == list(range(1, len(everything) + 1))
            stored = {e.position for e in everything}
            for r in acked:
                assert set(r.positions) <= stored
                got = [e async for e in store.read_stream(r.stream, r.first_sequence, limit=2)]
                assert tuple(e.position for e in got) == r.positions
    finally:
        own_server.stop()


async def test_a_unit_refused_mid_way_writes_nothing(store: RedisEventStore) -> None:
    """A unit whose last table write is bad (unknown column, missing table, a foreign key of
    the wrong type under the prefix) writes none of its appends, checkpoint, lease or rows."""
    spec = TableSpec("rm_items", (("id", "TEXT"), ("n", "INTEGER")), ("id",))
    async with store.transaction() as tx:
        tx.write_tables([TableWrite("ensure", spec.name, spec=spec)])
        tx.write_tables([TableWrite.upsert(spec.name, {"id": "a", "n": 1}, ("id",))])
    head = await store.head()
    raw = redis.asyncio.Redis.from_url(store.options.server_url)
    await raw.set(f"{store.prefix}:t:rm_foreign", b"not a hash")
    await raw.hset(f"{store.prefix}:table_columns", "rm_foreign", " id ")
    await raw.hset(f"{store.prefix}:table_keys", "rm_foreign", "id")
    bad_writes = [
        (TableWrite.upsert(spec.name, {"id": "b", "nope": 1}, ("id",)), chronik.ReadModelError),
        (TableWrite.upsert("rm_missing", {"id": "b"}, ("id",)), chronik.ReadModelError),
        (TableWrite.upsert("rm_foreign", {"id": "b"}, ("id",)), chronik.StoreUnavailable),
    ]
    try:
        for bad, error in bad_writes:
            with pytest.raises(error):
                async with store.transaction() as tx:
                    tx.append(StreamId("unit", "a"), [EventData("t", {})], NO_STREAM)
                    tx.append_tagged([EventData("t", {}, tags=["k:1"])])
                    tx.save_checkpoint("proj", chronik.Position(1), epoch=3)
                    tx.acquire_lease("lease", "me", 30)
                    tx.save_snapshot(chronik.Snapshot(StreamId("unit", "a"), 0, "s", 1, b"{}"))
                    tx.write_tables([TableWrite.upsert(spec.name, {"id": "a", "n": 2}, ("id",))])
                    tx.write_tables([bad])
            assert await store.head() == head
            assert await store.stream_version(StreamId("unit", "a")) is None
            assert [e async for e in store.read_query(chronik.Query.of(tags=["k:1"]))] == []
            assert await store.load_checkpoint("proj") is None
            assert await store.load_snapshot(StreamId("unit", "a")) is None
            assert await store.read_leases("lease") == []
            assert await store.read_table(spec.name) == [{"id": "a", "n": 1}]
        assert (await store.acquire_lease("lease", "me", 30)) == 1  # the store works on
    finally:
        await raw.aclose()


SUBSCRIBER_APPENDER = """
import asyncio, sys, time, chronik
async def main():
    async with chronik.open_store(sys.argv[1]) as store:
        for i in range(int(sys.argv[2])):
            await asyncio.sleep(0.02)
            await store.append(chronik.StreamId("remote", "r1"),
                               [chronik.EventData("remote.tick", {"i": i, "t": time.time()})])
asyncio.run(main())
"""


async def test_a_subscription_is_woken_by_another_process(redis_url: str) -> None:
    """Appends of another process reach a live subscriber through pub/sub: quickly, although
    this store would only poll every 30 s."""
    async with open_store(redis_url, poll_interval=30) as store:
        for _ in range(100):
            if store.listening:
                break
            await asyncio.sleep(0.02)
        assert store.listening
        latencies = []
        async with store.subscribe() as sub:
            child = spawn(SUBSCRIBER_APPENDER, redis_url, "30")
            async for event in sub:
                latencies.append(time.time() - event.json()["t"])
                if len(latencies) == 30:
                    break
        await finish(child)
    assert sorted(latencies)[15] < 0.1, latencies
    assert max(latencies) < 1.0, latencies


async def test_the_server_script_cache_may_be_flushed(store: RedisEventStore) -> None:
    """After SCRIPT FLUSH (a restarted server) the store loads its scripts again."""
    await store.append(StreamId("flush", "a"), [EventData("t", {})])
    raw = redis.asyncio.Redis.from_url(store.options.server_url)
    try:
        await raw.script_flush()
    finally:
        await raw.aclose()
    await store.append(StreamId("flush", "a"), [EventData("t", {})], 0)
    assert [e.sequence async for e in store.read_stream(StreamId("flush", "a"))] == [0, 1]


async def test_prefixes_keep_stores_apart(redis_server: RedisService) -> None:
    """Two prefixes on one server are two stores: neither sees the other's events."""
    a = open_store(redis_server.url(prefix="apart_a"))
    b = open_store(redis_server.url(prefix="apart_b"))
    async with a, b:
        await a.append(StreamId("x", "1"), [EventData("t", {})], NO_STREAM)
        await b.append(StreamId("x", "1"), [EventData("t", {})], NO_STREAM)
        assert len([e async for e in a.read_all()]) == 1
        assert await b.stream_version(StreamId("x", "1")) == 0


async def test_the_durability_check_at_open(
    own_server: RedisService, caplog: pytest.LogCaptureFixture
) -> None:
    """A weaker fsync than ``?appendfsync=`` asks is refused; without AOF the store warns, or
    refuses with ``?require_aof=true``."""
    raw = redis.asyncio.Redis.from_url(own_server.url())
    try:
        async with open_store(own_server.url(appendfsync="always")) as s:
            assert s.durability == ("yes", "always")
        await raw.config_set("appendfsync", "everysec")
        with pytest.raises(chronik.ConfigurationError, match="everysec"):
            await open_store(own_server.url(appendfsync="always")).open()
        async with open_store(own_server.url(appendfsync="everysec")):
            pass
        await raw.config_set("appendonly", "no")
        with pytest.raises(chronik.ConfigurationError, match="AOF is off"):
            await open_store(own_server.url(require_aof="true")).open()
        with caplog.at_level(logging.WARNING, "chronik.store.redis"):
            async with open_store(own_server.url()) as s:
                await s.append(StreamId("x", "1"), [EventData("t", {})], ANY)
        assert "AOF is off" in caplog.text
    finally:
        await raw.aclose()
        own_server.stop()


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("prefix=bad%20prefix", "prefix"),
        ("appendfsync=never", "appendfsync"),
        ("require_aof=maybe", "require_aof"),
        ("pool_max_size=1", "pool_max_size"),
        ("colour=blue", "colour"),
    ],
)
def test_bad_options_are_refused_naming_them(query: str, word: str) -> None:
    """A bad store option in the URL is a ConfigurationError that names it."""
    with pytest.raises(chronik.ConfigurationError, match=word):
        chronik.open_store(f"redis://127.0.0.1:1/0?{query}")


async def test_an_unreachable_server_is_store_unavailable() -> None:
    """Opening a store on a port nobody listens on fails with StoreUnavailable."""
    from chronik.testing.service_base import free_port

    with pytest.raises(chronik.StoreUnavailable):
        await open_store(f"redis://127.0.0.1:{free_port()}/0").open()
