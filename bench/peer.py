"""The Python peer in the same run: pyeventsourcing (``eventsourcing`` 9.5) beside chronik.

Each peer workload does the work of chronik's workload of the same name, with eventsourcing's
own persistence module (``eventsourcing.sqlite`` here, ``eventsourcing.postgres`` in
bench/peer_pg.py) and its Application / Aggregate API, written as its documentation shows:

- W1 (append-1): one aggregate per stream held in memory, one ``order(...)`` event then
  ``app.save(order)`` per call (its optimistic concurrency: the (id, version) primary key).
- W2 (append-batch10): a new aggregate, its created event and nine more, one ``save``.
- W3 (rehydrate): ``app.events.get(id)``, the aggregate's stored events read and decoded into
  domain event objects, as chronik's W3 reads and decodes its stream (no fold on either side:
  ``app.repository.get`` would also apply each event to the aggregate).
- W4 (read-all, decoded): ``app.notification_log.select`` in pages of 1,000 and
  ``app.mapper.to_domain_event`` on each, as eventsourcing's own projection runner does.

Every event carries bench's PAYLOAD (customer, amount, note) as its attributes. The chronik
run is the same function as chronik's own line and runs alternated with the peer's (peer,
chronik, peer, ...) so that load from elsewhere hits both alike.

Output, one JSON line per figure, in the shape of every other bench line: ``"workload":
"W1-peer"`` (etc.), ``"value"`` = chronik's median, ``"raw"`` = eventsourcing's median,
``"ratio"`` = chronik / eventsourcing for rates and eventsourcing / chronik for durations, so a
ratio above 1 always means chronik is faster; ``"runs"`` / ``"raw_runs"`` are chronik's and the
peer's runs, ``"peer"`` names the package and version.

Durability is the same on both sides: SQLite in WAL mode with synchronous=NORMAL (chronik's
default; eventsourcing turns WAL on itself and gets synchronous=NORMAL from the factory below,
since SQLite's own default in WAL mode is FULL, an fsync per commit).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool, SQLiteFactory
from eventsourcing.utils import Environment, EnvType

from bench.__main__ import (
    PAYLOAD,
    Scale,
    fill,
    log,
    run_many,
    w1_chronik,
    w2_chronik,
    w3_chronik,
    w4_chronik,
)

PEER = f"eventsourcing {version('eventsourcing')}"
SQLITE_DURABILITY = "WAL synchronous=NORMAL, both"
CUSTOMER, AMOUNT, NOTE = "cust-17", 42, "some text for the order line"
assert {"customer": CUSTOMER, "amount": AMOUNT, "note": NOTE} == PAYLOAD
NAMES = ("W1-peer", "W2-peer", "W3-peer", "W4-peer")


class Order(Aggregate):
    """The peer's aggregate: created with, and then ordering, bench's PAYLOAD."""

    @event("Opened")
    def __init__(self, customer: str, amount: int, note: str) -> None:
        """Record the created event."""

    @event("Ordered")
    def order(self, customer: str, amount: int, note: str) -> None:
        """Record one more event on this stream."""


def new_order() -> Order:
    return Order(customer=CUSTOMER, amount=AMOUNT, note=NOTE)


def add(order: Order) -> None:
    order.order(customer=CUSTOMER, amount=AMOUNT, note=NOTE)


class _NormalSyncPool(SQLiteConnectionPool):
    """eventsourcing's SQLite pool, each new connection at synchronous=NORMAL."""

    def _create_connection(self) -> SQLiteConnection:
        conn = super()._create_connection()
        conn.cursor().execute("PRAGMA synchronous = NORMAL")
        return conn


class NormalSyncSQLiteFactory(SQLiteFactory):
    """``eventsourcing.sqlite``'s factory with chronik's durability (no connection is open yet
    when the pool is swapped: the factory's constructor opens none)."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        old = self.datastore.pool
        self.datastore.pool = _NormalSyncPool(db_name=old.db_name, lock_timeout=old.lock_timeout)


class Shop(Application[UUID]):
    """The peer's application: defaults (JSON transcoder, no cache, no snapshots), but for the
    notification log's section size, 10 by default, which caps a select: W4 reads pages of
    1,000 as chronik's W4 does."""

    log_section_size = 1000


def open_sqlite(path: str) -> Shop:
    """An application on a SQLite file, its synchronous setting checked."""
    app = Shop({"PERSISTENCE_MODULE": f"{__name__}:NormalSyncSQLiteFactory", "SQLITE_DBNAME": path})
    factory = app.factory
    assert isinstance(factory, NormalSyncSQLiteFactory)
    with factory.datastore.transaction(commit=False) as c:
        c.execute("PRAGMA synchronous")
        assert c.fetchone()[0] == 1, "expected synchronous=NORMAL"
    return app


# --- peer workloads, on any Shop (the PostgreSQL ones open theirs with peer_pg.open_pg) -------


def w1(app: Shop, sc: Scale) -> float:
    orders: list[Order | None] = [None] * sc.w1_streams
    start = time.perf_counter()
    for i in range(sc.w1):
        j = i % sc.w1_streams
        order = orders[j]
        if order is None:
            order = orders[j] = new_order()
        else:
            add(order)
        app.save(order)
    return sc.w1 / (time.perf_counter() - start)


def w2(app: Shop, sc: Scale) -> float:
    start = time.perf_counter()
    for _ in range(sc.w2 // 10):
        order = new_order()
        for _ in range(9):
            add(order)
        app.save(order)
    return sc.w2 / (time.perf_counter() - start)


def w3(app: Shop, sc: Scale) -> float:
    (first,) = app.notification_log.select(start=None, limit=1)
    oid = first.originator_id
    assert isinstance(oid, UUID), oid
    start = time.perf_counter()
    n = len(list(app.events.get(oid)))
    elapsed = (time.perf_counter() - start) * 1000
    assert n == sc.w3, n
    return elapsed


def w4(app: Shop, sc: Scale) -> float:
    decode = app.mapper.to_domain_event
    select = app.notification_log.select
    start = time.perf_counter()
    n, after = 0, None
    while True:
        page = select(start=after, limit=1000, inclusive_of_start=False)
        if not page:
            break
        for notification in page:
            decode(notification)
        n += len(page)
        after = page[-1].id
    rate = n / (time.perf_counter() - start)
    assert n == sc.w4, n
    return rate


def fill_peer(app: Shop, counts: list[int]) -> None:
    """Write one aggregate per count, ``count`` events each, saved 1,000 events at a time."""
    for count in counts:
        order = new_order()
        for i in range(1, count):
            if i % 1000 == 0:
                app.save(order)
            add(order)
        app.save(order)


def on_sqlite(
    fn: Callable[[Shop, Scale], float], counts: list[int] | None = None
) -> tuple[Callable[[str, Scale], float], Callable[[str], None] | None]:
    """A peer workload as a run_many function (and setup) on a fresh SQLite file."""

    def run(path: str, sc: Scale) -> float:
        app = open_sqlite(path)
        try:
            return fn(app, sc)
        finally:
            app.close()

    def setup(path: str) -> None:
        app = open_sqlite(path)
        try:
            fill_peer(app, counts or [])
        finally:
            app.close()

    return run, (setup if counts else None)


# --- runner and output ---------------------------------------------------------------------


def pair(
    runs: int,
    mine: Callable[[str, Scale], Any],
    theirs: Callable[[str, Scale], Any],
    sc: Scale,
    setups: tuple[Callable[[str], None] | None, Callable[[str], None] | None] = (None, None),
) -> tuple[list[float], list[float]]:
    """chronik's and the peer's runs, alternated (peer first), each on a fresh store."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        b += run_many(1, theirs, sc, setups[1])
        a += run_many(1, mine, sc, setups[0])
    return a, b


def emit(
    workload: str,
    backend: str,
    unit: str,
    mine: list[float],
    theirs: list[float],
    *,
    durability: str,
    note: str,
    duration: bool = False,
) -> None:
    """One JSON line: value = chronik, raw = the peer, ratio > 1 when chronik is faster."""
    value, peer = statistics.median(mine), statistics.median(theirs)
    line = {
        "workload": workload,
        "backend": backend,
        "value": round(value, 2),
        "unit": unit,
        "raw": round(peer, 2),
        "ratio": round(peer / value if duration else value / peer, 3),
        "runs": [round(r, 2) for r in mine],
        "raw_runs": [round(r, 2) for r in theirs],
        "durability": durability,
        "peer": PEER,
        "note": note + f"; raw = {PEER}, ratio = chronik / peer speed (> 1: chronik faster)",
    }
    print(json.dumps(line), flush=True)


def run(runs: int, quick: bool, only: set[str]) -> None:
    """The `make bench` hook: W1-peer ... W4-peer on SQLite (all four with ``peer``)."""
    sc = Scale(quick)
    want = set(NAMES) if "peer" in only else only & set(NAMES)
    kw: dict[str, Any] = {"durability": SQLITE_DURABILITY}
    if "W1-peer" in want:
        log("W1 append-1, eventsourcing peer ...")
        mine, theirs = pair(runs, w1_chronik, on_sqlite(w1)[0], sc)
        note = f"append-1: {sc.w1} events over {sc.w1_streams} streams; peer: Application.save"
        emit("W1-peer", "sqlite", "events/s", mine, theirs, note=note, **kw)
    if "W2-peer" in want:
        log("W2 append-batch10, eventsourcing peer ...")
        mine, theirs = pair(runs, w2_chronik, on_sqlite(w2)[0], sc)
        note = f"append-batch10: {sc.w2} events, 10 per call, new stream each; peer: new "
        note += "aggregate + 9 events, one Application.save"
        emit("W2-peer", "sqlite", "events/s", mine, theirs, note=note, **kw)
    if "W3-peer" in want:
        log("W3 rehydrate, eventsourcing peer ...")
        fn, setup = on_sqlite(w3, [sc.w3])
        mine, theirs = pair(runs, w3_chronik, fn, sc, (lambda p: fill(p, [("big", sc.w3)]), setup))
        note = f"rehydrate: read and decode a {sc.w3}-event stream; peer: app.events.get"
        emit("W3-peer", "sqlite", "ms", mine, theirs, note=note, duration=True, **kw)
    if "W4-peer" in want:
        log("W4 read-all, eventsourcing peer ...")
        fn, setup = on_sqlite(w4, [sc.w4 // 100] * 100)
        streams = [(f"r{i}", sc.w4 // 100) for i in range(100)]
        mine, theirs = pair(runs, w4_chronik, fn, sc, (lambda p: fill(p, streams), setup))
        note = f"read-all: {sc.w4} events in pages of 1,000, decoded; peer: "
        note += "notification_log.select + mapper.to_domain_event"
        emit("W4-peer", "sqlite", "events/s", mine, theirs, note=note, **kw)
