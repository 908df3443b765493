"""PostgreSQL workloads of `make bench`, beside raw asyncpg doing the same work in the same run.

Starts its own PostgreSQL 15 (default durability: fsync on, synchronous_commit on) on a free
port in a temp dir, runs W1-W5 and the append-to-subscriber latency, and prints one JSON line
per figure (backend "postgres"). Run alone with ``python -m bench.postgres [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import chronik
from bench import raw_pg
from bench.__main__ import PAYLOAD, Scale, emit, log, run_many
from chronik.store.postgres import PostgresEventStore
from chronik.testing.services import PostgresService, ServiceNotStarted

DURABILITY = "PostgreSQL 15 defaults: fsync=on, synchronous_commit=on"
BASE = ""  # the server's URL, set by run()


def schema_for(path: str) -> str:
    """A fresh schema per run_many run (it hands each run a new temp path)."""
    return "b_" + hashlib.sha1(path.encode()).hexdigest()[:16]


def url_for(path: str, pool: int = 16) -> str:
    """The store URL of a run: its own schema, a pool of ``pool`` connections opened up front
    (the raw baselines open theirs before timing too)."""
    return f"{BASE}?schema={schema_for(path)}&pool_max_size={pool}&pool_min_size={pool}"


def dsn() -> str:
    return BASE


def pg(path: str, pool: int = 2) -> PostgresEventStore:
    store = chronik.open_store(url_for(path, pool))
    assert isinstance(store, PostgresEventStore)
    return store


def event() -> chronik.EventData:
    return chronik.EventData("bench.event", PAYLOAD)


# --- chronik workloads -----------------------------------------------------------------------


async def w1_chronik(path: str, sc: Scale) -> float:
    async with pg(path) as store:
        streams = [chronik.StreamId("bench", f"s{i}") for i in range(sc.w1_streams)]
        versions: list[chronik.Expected] = [chronik.NO_STREAM] * len(streams)
        start = time.perf_counter()
        for i in range(sc.w1):
            j = i % len(streams)
            r = await store.append(streams[j], [event()], versions[j])
            versions[j] = r.last_sequence
        return sc.w1 / (time.perf_counter() - start)


async def w2_chronik(path: str, sc: Scale) -> float:
    async with pg(path) as store:
        start = time.perf_counter()
        for i in range(sc.w2 // 10):
            events = [event() for _ in range(10)]
            await store.append(chronik.StreamId("bench", f"b{i}"), events, chronik.NO_STREAM)
        return sc.w2 / (time.perf_counter() - start)


async def warm(store: PostgresEventStore) -> None:
    """Before timing, as the raw side prepares its statements on its connection: chronik's
    stream page and its log page after a position (every page but the first) run once on rows
    the timed read never meets (a stream that does not exist, the log after its head), so the
    timed read pays neither their first preparation nor a new backend's first catalog lookups.
    The first log page's statement is still prepared in the timed read, and the stream-name
    cache stays empty: the timed read resolves every stream it meets."""
    async for _ in store.read_stream(chronik.StreamId("bench", "not-there")):
        pass
    async for _ in store.read_all(after=await store.head(), limit=1):
        pass


async def w3_chronik(path: str, sc: Scale) -> float:
    async with pg(path) as store:
        await warm(store)
        start = time.perf_counter()
        n = 0
        async for e in store.read_stream(chronik.StreamId("bench", "big")):
            e.json()
            n += 1
        elapsed = (time.perf_counter() - start) * 1000
        assert n == sc.w3, n
        return elapsed


async def w4_chronik(path: str, sc: Scale) -> float:
    async with pg(path) as store:
        await warm(store)
        start = time.perf_counter()
        n = 0
        async for e in store.read_all():
            e.json()
            n += 1
        assert n == sc.w4, n
        return n / (time.perf_counter() - start)


def w5_chronik(tasks: int) -> Callable[[str, Scale], Any]:
    async def run(path: str, sc: Scale) -> float:
        per_task = sc.w5 // tasks
        async with pg(path, pool=tasks) as store:

            async def worker(k: int) -> None:
                stream = chronik.StreamId("bench", f"c{k}")
                version: chronik.Expected = chronik.NO_STREAM
                for _ in range(per_task):
                    version = (await store.append(stream, [event()], version)).last_sequence

            start = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(tasks)))
            return tasks * per_task / (time.perf_counter() - start)

    return run


async def latency_chronik(path: str, sc: Scale, tasks: int = 32) -> list[float]:
    """Append-to-delivery (ms) seen by a subscriber in another process (so through LISTEN /
    NOTIFY), while ``tasks`` appenders run W5: from append() returning to the subscriber
    receiving the event (time.monotonic is one clock for both processes)."""
    per_task = sc.w5 // tasks
    total = tasks * per_task
    async with pg(path, pool=tasks) as store:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.postgres",
            "--subscriber",
            url_for(path, 2),
            str(total),
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None
        assert (await child.stdout.readline()).strip() == b"ready"
        sent: dict[str, float] = {}

        async def worker(k: int) -> None:
            stream = chronik.StreamId("bench", f"l{k}")
            version: chronik.Expected = chronik.NO_STREAM
            for _ in range(per_task):
                ev = event()
                r = await store.append(stream, [ev], version)
                sent[ev.event_id] = time.monotonic()
                version = r.last_sequence

        await asyncio.gather(*(worker(k) for k in range(tasks)))
        received = json.loads(await asyncio.wait_for(child.stdout.read(), 60))
        await child.wait()
    # Floored at 10 us: a busy writer's task resumes after its append's reply later than the
    # subscriber may see the event (negative), and a ratio needs a value above 0.
    return [max(0.01, (at - sent[eid]) * 1000) for eid, at in received]


async def subscriber(url: str, total: int) -> None:
    """The subscriber process of the latency run: prints (event id, arrival) pairs as JSON."""
    async with chronik.open_store(url) as store:
        assert isinstance(store, PostgresEventStore)
        while not store.listening:
            await asyncio.sleep(0.01)
        got: list[tuple[str, float]] = []
        sub = store.subscribe()
        print("ready", flush=True)
        async for e in sub:
            got.append((e.event_id, time.monotonic()))
            if len(got) == total:
                break
        await sub.close()
    print(json.dumps(got), flush=True)


# --- raw workloads (bench.raw_pg: prepared statements, orjson; connections opened and
# statements prepared before timing, as chronik's pool is opened before timing) --------------


async def w1_raw(path: str, sc: Scale, kind: type[raw_pg.Writer] = raw_pg.Writer) -> float:
    schema = schema_for(path)
    conn = await raw_pg.connect(dsn(), schema)
    writer = await kind.prepare(conn, schema)
    versions = [0] * sc.w1_streams
    start = time.perf_counter()
    for i in range(sc.w1):
        j = i % sc.w1_streams
        await writer.append(j, versions[j], [PAYLOAD])
        versions[j] += 1
    rate = sc.w1 / (time.perf_counter() - start)
    await conn.close()
    return rate


async def w2_raw(path: str, sc: Scale, kind: type[raw_pg.Writer] = raw_pg.Writer) -> float:
    schema = schema_for(path)
    conn = await raw_pg.connect(dsn(), schema)
    writer = await kind.prepare(conn, schema)
    start = time.perf_counter()
    for i in range(sc.w2 // 10):
        await writer.append(i, 0, [PAYLOAD] * 10)
    rate = sc.w2 / (time.perf_counter() - start)
    await conn.close()
    return rate


async def w3_raw(path: str, sc: Scale) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn())
    reader = await raw_pg.Reader.prepare(conn, schema_for(path))
    start = time.perf_counter()
    n = await reader.read_stream("big")
    elapsed = (time.perf_counter() - start) * 1000
    await conn.close()
    assert n == sc.w3, n
    return elapsed


async def w4_raw(path: str, sc: Scale) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn())
    reader = await raw_pg.Reader.prepare(conn, schema_for(path))
    start = time.perf_counter()
    n = await reader.read_all()
    rate = n / (time.perf_counter() - start)
    await conn.close()
    assert n == sc.w4, n
    return rate


def w5_raw(tasks: int, kind: type[raw_pg.Writer] = raw_pg.Writer) -> Callable[[str, Scale], Any]:
    async def run(path: str, sc: Scale) -> float:
        schema = schema_for(path)
        per_task = sc.w5 // tasks
        conns = [await raw_pg.connect(dsn(), schema) for _ in range(tasks)]
        writers = [await kind.prepare(c, schema) for c in conns]

        async def worker(k: int) -> None:
            for i in range(per_task):
                await writers[k].append(k, i, [PAYLOAD])

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(tasks)))
        rate = tasks * per_task / (time.perf_counter() - start)
        for c in conns:
            await c.close()
        return rate

    return run


# --- fixtures and output ---------------------------------------------------------------------


def fill(streams: list[tuple[str, int]]) -> Callable[[str], None]:
    """A run_many setup writing (aggregate_id, count) streams in appends of 1,000, then settling
    the table (VACUUM ANALYZE: hint bits, visibility map, statistics, as autovacuum leaves a
    store read long after its writes), so that neither side's timed read pays for that."""

    def setup(path: str) -> None:
        async def go() -> None:
            async with pg(path) as store:
                for aggregate_id, count in streams:
                    s = chronik.StreamId("bench", aggregate_id)
                    for start in range(0, count, 1000):
                        await store.append(s, [event() for _ in range(min(1000, count - start))])
            import asyncpg

            conn = await asyncpg.connect(dsn())
            await conn.execute(f'VACUUM (ANALYZE) "{schema_for(path)}".events')
            await conn.close()

        asyncio.run(go())

    return setup


def pair(
    runs: int,
    mine: Callable[[str, Scale], Any],
    theirs: Callable[[str, Scale], Any],
    sc: Scale,
    setup: Callable[[str], None] | None = None,
) -> tuple[list[float], list[float]]:
    """chronik and raw runs, alternated so that load from elsewhere hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        b += run_many(1, theirs, sc, setup)
        a += run_many(1, mine, sc, setup)
    return a, b


def writes(
    runs: int,
    workload: str,
    mine: Callable[[str, Scale], Any],
    theirs: Callable[[type[raw_pg.Writer]], Callable[[str, Scale], Any]],
    sc: Scale,
    note: str,
) -> None:
    """An append workload beside two raw clients, all three alternated: ``workload`` beside
    plain inserts (``note``: what they are) and ``workload-checked`` beside inserts behind the
    same optimistic concurrency check as chronik's (raw_pg.CheckedWriter)."""
    a: list[float] = []
    b: list[float] = []
    c: list[float] = []
    for _ in range(runs):
        b += run_many(1, theirs(raw_pg.Writer), sc, None)
        c += run_many(1, theirs(raw_pg.CheckedWriter), sc, None)
        a += run_many(1, mine, sc, None)
    put(workload, "events/s", a, b, note=note)
    put(
        f"{workload}-checked",
        "events/s",
        a,
        c,
        note=f"{workload} beside a raw client that checks the expectation as chronik does: "
        "one prepared statement per call whose CTE moves the stream's version row only from "
        "the expected version (a new stream: inserts it unless it exists), then inserts the "
        "events, autocommit",
    )


def put(workload: str, unit: str, runs: list[float], raw: list[float], **kw: Any) -> None:
    """bench's emit, relabelled for this backend."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit(workload, unit, runs, raw, **kw)
    line = json.loads(out.getvalue())
    line["backend"] = "postgres"
    line["durability"] = DURABILITY
    print(json.dumps(line), flush=True)


def run(quick: bool = False, runs: int = 3, only: set[str] | None = None) -> None:
    """Start a server, run every PostgreSQL workload, print the JSON lines, stop it."""
    global BASE
    sc = Scale(quick)
    sc.w5 = 8_000 // (10 if quick else 1)
    want = only or ALL
    service = PostgresService(durable=True)
    try:
        service.start()
    except ServiceNotStarted as exc:
        log(f"postgres: skipped ({exc})")
        service.stop()
        return
    BASE = service.url("postgres")
    try:
        _workloads(sc, runs, want)
    finally:
        service.stop()


def _workloads(sc: Scale, runs: int, want: set[str]) -> None:
    if "W9" in want:
        log("postgres W9 append-to-read-model ...")
        _w9(sc, runs)
    if "W1" in want:
        log("postgres W1 append-1 ...")
        writes(
            runs,
            "W1",
            w1_chronik,
            lambda kind: functools.partial(w1_raw, kind=kind),
            sc,
            note=f"append-1: {sc.w1} events over {sc.w1_streams} streams, exact expectation; "
            "raw = asyncpg, one prepared one-row INSERT, autocommit, no expectation check",
        )
    if "W2" in want:
        log("postgres W2 append-batch10 ...")
        writes(
            runs,
            "W2",
            w2_chronik,
            lambda kind: functools.partial(w2_raw, kind=kind),
            sc,
            note=f"append-batch10: {sc.w2} events, 10 per call, new stream each; raw = asyncpg, "
            "one prepared 10-row INSERT ... VALUES per call, autocommit",
        )
    if "W3" in want:
        log("postgres W3 rehydrate ...")
        setup = fill([("big", sc.w3)])
        mine, raw = pair(runs, w3_chronik, w3_raw, sc, setup)
        put(
            "W3",
            "ms",
            mine,
            raw,
            duration=True,
            note=f"rehydrate: read and decode a {sc.w3}-event stream (table settled by VACUUM; "
            "statements prepared before timing on both sides, chronik's by warm()); "
            f"raw = asyncpg prepared statements, pages of 1,000, {raw_pg.LOADS_NAME}",
        )
    if "W4" in want:
        log("postgres W4 read-all ...")
        setup = fill([(f"r{i}", sc.w4 // 100) for i in range(100)])
        mine, raw = pair(runs, w4_chronik, w4_raw, sc, setup)
        put(
            "W4",
            "events/s",
            mine,
            raw,
            note=f"read-all: {sc.w4} events in pages of 1,000, decoded (table settled by "
            "VACUUM; statements prepared before timing on both sides, chronik's by warm(), "
            "its stream names resolved in the timed read); raw = asyncpg prepared statement by "
            f"(xid, id), {raw_pg.LOADS_NAME}",
        )
    if "W5" in want:
        for tasks in (8, 16, 32):
            log(f"postgres W5 concurrent-append x{tasks} ...")
            writes(
                runs,
                f"W5-{tasks}",
                w5_chronik(tasks),
                functools.partial(w5_raw, tasks),
                sc,
                note=f"{tasks} appenders (pool of {tasks}), 1 event per call, distinct streams, "
                f"{sc.w5} events; raw = asyncpg with {tasks} connections",
            )
    if "latency" in want:
        log("postgres append-to-subscriber latency under W5 x32 ...")
        p50s, p99s = [], []
        for _ in range(runs):
            lat = run_many(1, _latency_run, sc)
            p50s.append(lat[0])
            p99s.append(_LAST_P99[0])
        for name, values in (("latency-p50", p50s), ("latency-p99", p99s)):
            put(
                name,
                "ms",
                values,
                [50.0] * len(values),
                duration=True,
                note="append() returned -> delivered to a subscriber in another process "
                "(LISTEN/NOTIFY) under W5 with 32 appenders; raw = the 50 ms target, "
                "ratio = 50/value",
            )
    if want & {"peer", "W1-peer", "W2-peer", "W3-peer", "W4-peer", "W5-peer"}:
        try:
            from bench import peer_pg
        except ImportError as exc:
            log(f"postgres peer: skipped ({exc}; pip install -e '.[dev]')")
        else:
            peer_pg.run(sc, runs, want, BASE)


_LAST_P99 = [0.0]
W9_APPENDS = 1000


async def w9_chronik(path: str, appends: int) -> list[float]:
    """append() then the projection's wait_for: the read model has the event."""
    from bench.projections import projection
    from chronik.projections import ProjectionProcessor

    latencies: list[float] = []
    store = pg(path, pool=4)
    async with store, ProjectionProcessor(store, projection()) as proc:
        for i in range(appends):
            start = time.perf_counter()
            r = await store.append(chronik.StreamId("bench", f"s{i % 100}"), [event()])
            await proc.wait_for(r.position)
            latencies.append((time.perf_counter() - start) * 1000)
    return latencies


async def w9_raw(path: str, appends: int) -> list[float]:
    """asyncpg: the append, then the read model's upsert in its own transaction (both
    statements prepared before timing)."""
    schema = schema_for(path)
    conn = await raw_pg.connect(dsn(), schema)
    writer = await raw_pg.Writer.prepare(conn, schema)
    await conn.execute(
        f'CREATE TABLE "{schema}".rm (id text PRIMARY KEY, amount bigint, seq bigint)'
    )
    upsert = await conn.prepare(
        f'INSERT INTO "{schema}".rm (id, amount, seq) VALUES ($1, $2, $3) '
        "ON CONFLICT (id) DO UPDATE SET amount = excluded.amount, seq = excluded.seq"
    )
    versions = [0] * 100
    latencies: list[float] = []
    for i in range(appends):
        j = i % 100
        start = time.perf_counter()
        await writer.append(j, versions[j], [PAYLOAD])
        await upsert.fetch(f"s{j}", PAYLOAD["amount"], versions[j])
        versions[j] += 1
        latencies.append((time.perf_counter() - start) * 1000)
    await conn.close()
    return latencies


def _w9(sc: Scale, runs: int) -> None:
    appends = W9_APPENDS // 10 if sc.w1 < 5_000 else W9_APPENDS
    mine: list[list[float]] = []
    theirs: list[list[float]] = []
    for k in range(runs):
        theirs.append(asyncio.run(w9_raw(f"w9-raw-{k}-{time.time_ns()}", appends)))
        mine.append(asyncio.run(w9_chronik(f"w9-{k}-{time.time_ns()}", appends)))
    note = (
        f"append-to-read-model latency, {appends} appends over 100 streams, one upsert each; "
        "raw = asyncpg append + upsert; target p99 < 50 ms"
    )
    for name, q in (("W9-p50", 0.5), ("W9-p99", 0.99)):

        def pick(samples: list[float], q: float = q) -> float:
            ordered = sorted(samples)
            return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

        put(
            name, "ms", [pick(m) for m in mine], [pick(t) for t in theirs], duration=True, note=note
        )


def _latency_run(path: str, sc: Scale) -> float:
    lat = sorted(asyncio.run(latency_chronik(path, sc)))
    _LAST_P99[0] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return statistics.median(lat)


ALL = {"W1", "W2", "W3", "W4", "W5", "latency", "W9", "peer"}  # peer: bench/peer_pg.py


def run_from_bench(args: argparse.Namespace) -> None:
    """The `make bench` hook: every PostgreSQL workload, unless ``--only`` is given, then only
    those it names as ``pg-W1`` ... ``pg-latency`` (or all of them with ``postgres``)."""
    if not any(a == "--only" or a.startswith("--only=") for a in sys.argv[1:]):
        want = set(ALL)
    else:
        only = set(args.only.split(","))
        want = set(ALL) if "postgres" in only else {n[3:] for n in only if n.startswith("pg-")}
    if want:
        run(args.quick, args.runs, want)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.postgres")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="W1,W2,W3,W4,W5,latency")
    parser.add_argument("--subscriber", nargs=2, metavar=("URL", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        asyncio.run(subscriber(args.subscriber[0], int(args.subscriber[1])))
        return
    run(args.quick, args.runs, set(args.only.split(",")))


if __name__ == "__main__":
    sys.exit(main())
