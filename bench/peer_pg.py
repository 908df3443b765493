"""The Python peer on PostgreSQL: eventsourcing 9.5's ``eventsourcing.postgres`` beside chronik.

W1-W4 are bench/peer.py's workloads on eventsourcing's PostgreSQL recorder (psycopg 3, its
connection pool, its defaults: each save one pipelined transaction that takes the events
table's EXCLUSIVE lock so that notification ids commit in order, plus a NOTIFY). W5 runs 8, 16
and 32 appenders, each on its own aggregate, one event per save: threads for eventsourcing (its
API is synchronous; a pool of as many connections), tasks for chronik (a pool of as many). The
server is bench/postgres.py's, at PostgreSQL's default durability (fsync=on,
synchronous_commit=on) for both. The output is bench/peer.py's (value = chronik, raw = peer,
ratio > 1 when chronik is faster), with backend "postgres".
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import psycopg
from eventsourcing.postgres import PostgresFactory

from bench import peer
from bench import postgres as pgb
from bench.__main__ import Scale, log
from bench.peer import Order, Shop, add, new_order

DURABILITY = "PostgreSQL 15 defaults: fsync=on, synchronous_commit=on, both"
NAMES = ("W1-peer", "W2-peer", "W3-peer", "W4-peer", "W5-peer")


def schema_for(path: str) -> str:
    """The peer's own schema per run (chronik's runs use bench/postgres.py's)."""
    return "p_" + hashlib.sha1(path.encode()).hexdigest()[:16]


def open_pg(path: str, pool: int = 2) -> Shop:
    """An application on the bench server, in a fresh schema, its pool open before timing."""
    url = urlsplit(pgb.BASE)
    schema = schema_for(path)
    with psycopg.connect(pgb.BASE, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    app = Shop(
        {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/"),
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": url.username or "postgres",
            "POSTGRES_PASSWORD": url.password or "",
            "POSTGRES_SCHEMA": schema,
            "POSTGRES_POOL_SIZE": str(pool),
        }
    )
    factory = app.factory
    assert isinstance(factory, PostgresFactory)
    factory.datastore.pool.wait()
    return app


def on_pg(
    fn: Callable[[Shop, Scale], float], counts: list[int] | None = None, pool: int = 2
) -> tuple[Callable[[str, Scale], float], Callable[[str], None] | None]:
    """A peer workload as a run_many function (and setup) in a fresh schema."""

    def run(path: str, sc: Scale) -> float:
        app = open_pg(path, pool)
        try:
            return fn(app, sc)
        finally:
            app.close()

    def setup(path: str) -> None:
        app = open_pg(path)
        try:
            peer.fill_peer(app, counts or [])
        finally:
            app.close()

    return run, (setup if counts else None)


def w5(tasks: int) -> Callable[[Shop, Scale], float]:
    """``tasks`` threads, each saving ``sc.w5 // tasks`` events, one per save, on its aggregate."""

    def run(app: Shop, sc: Scale) -> float:
        per_task: int = sc.w5 // tasks  # set by bench/postgres.py
        gate = threading.Barrier(tasks + 1)
        errors: list[BaseException] = []

        def worker() -> None:
            gate.wait()
            try:
                order: Order = new_order()
                app.save(order)
                for _ in range(per_task - 1):
                    add(order)
                    app.save(order)
            except BaseException as exc:  # re-raised by the caller
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(tasks)]
        for t in threads:
            t.start()
        gate.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        rate = tasks * per_task / (time.perf_counter() - start)
        if errors:
            raise errors[0]
        return rate

    return run


def run(sc: Scale, runs: int, want: set[str], base: str) -> None:
    """bench/postgres.py's hook, its server up at ``base``: the peer lines ``want`` names (all
    of them with ``peer``)."""
    pgb.BASE = base  # the same already, unless bench/postgres.py runs as __main__
    want = set(NAMES) if "peer" in want else want & set(NAMES)
    kw: dict[str, Any] = {"durability": DURABILITY}
    emit, pair = peer.emit, peer.pair
    if "W1-peer" in want:
        log("postgres W1 append-1, eventsourcing peer ...")
        mine, theirs = pair(runs, pgb.w1_chronik, on_pg(peer.w1)[0], sc)
        note = f"append-1: {sc.w1} events over {sc.w1_streams} streams; peer: Application.save"
        emit("W1-peer", "postgres", "events/s", mine, theirs, note=note, **kw)
    if "W2-peer" in want:
        log("postgres W2 append-batch10, eventsourcing peer ...")
        mine, theirs = pair(runs, pgb.w2_chronik, on_pg(peer.w2)[0], sc)
        note = f"append-batch10: {sc.w2} events, 10 per call, new stream each; peer: new "
        note += "aggregate + 9 events, one Application.save"
        emit("W2-peer", "postgres", "events/s", mine, theirs, note=note, **kw)
    if "W3-peer" in want:
        log("postgres W3 rehydrate, eventsourcing peer ...")
        fn, setup = on_pg(peer.w3, [sc.w3])
        mine, theirs = pair(runs, pgb.w3_chronik, fn, sc, (pgb.fill([("big", sc.w3)]), setup))
        note = f"rehydrate: read and decode a {sc.w3}-event stream; peer: app.events.get"
        emit("W3-peer", "postgres", "ms", mine, theirs, note=note, duration=True, **kw)
    if "W4-peer" in want:
        log("postgres W4 read-all, eventsourcing peer ...")
        fn, setup = on_pg(peer.w4, [sc.w4 // 100] * 100)
        chronik_setup = pgb.fill([(f"r{i}", sc.w4 // 100) for i in range(100)])
        mine, theirs = pair(runs, pgb.w4_chronik, fn, sc, (chronik_setup, setup))
        note = f"read-all: {sc.w4} events in pages of 1,000, decoded; peer: "
        note += "notification_log.select + mapper.to_domain_event"
        emit("W4-peer", "postgres", "events/s", mine, theirs, note=note, **kw)
    if "W5-peer" in want:
        for tasks in (8, 16, 32):
            log(f"postgres W5 concurrent-append x{tasks}, eventsourcing peer ...")
            fn = on_pg(w5(tasks), pool=tasks)[0]
            mine, theirs = pair(runs, pgb.w5_chronik(tasks), fn, sc)
            note = f"{tasks} appenders, 1 event per call, distinct streams, {sc.w5} events; "
            note += f"peer: {tasks} threads, pool of {tasks}, Application.save"
            emit(f"W5-{tasks}-peer", "postgres", "events/s", mine, theirs, note=note, **kw)
