"""W8 projection catch-up and W9 append-to-read-model latency, beside raw sqlite3 loops.

W8: 100,000 stored events (1,000 streams) projected into a SQLite read model, one upsert per
event (a whole row as a tuple, ``ReadModel.upsert_row``), checkpoint committed with the rows;
raw = a plain sqlite3 loop that reads the same pages, decodes the payloads (``bench.raw.loads``)
and runs the same upserts (one ``executemany`` per page) and checkpoint writes in transactions
of the same size. W9: one event appended at a time while the projection runs live; the time
from the append call until ``wait_for`` sees it applied (p50 and p99); raw = a sqlite3 append
transaction followed by the upsert transaction, per event.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import chronik
from bench.__main__ import PAYLOAD, Scale, emit, fill, log, run_many, store_url
from bench.raw import append as raw_append
from bench.raw import connect as raw_connect
from bench.raw import loads as raw_loads
from chronik.projections import Projection, ProjectionProcessor, ReadModel, Table

BATCH = 500
TABLE = "w8_totals"


class Sizes:
    def __init__(self, quick: bool) -> None:
        d = 10 if quick else 1
        self.w8 = 100_000 // d
        self.w8_streams = 1_000 // d
        self.w9 = 2_000 // d


def projection(keywords: bool = False) -> Projection:
    """The W8 projection: one upsert per event, a whole row given as a tuple
    (``ReadModel.upsert_row``), or as keyword arguments (``upsert``) with ``keywords``."""
    p = Projection(
        "w8",
        tables=[
            Table(
                TABLE,
                {"id": str, "customer": str, "amount": int, "seq": int},
                primary_key="id",
            )
        ],
        batch_size=BATCH,
    )

    def on_event(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        d = e.json()
        rm.upsert_row(TABLE, (e.stream.aggregate_id, d["customer"], d["amount"], e.sequence))

    def on_event_keywords(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        d = e.json()
        rm.upsert(
            TABLE,
            id=e.stream.aggregate_id,
            customer=d["customer"],
            amount=d["amount"],
            seq=e.sequence,
        )

    p.on("bench.event")(on_event_keywords if keywords else on_event)
    return p


def _setup(sz: Sizes) -> Any:
    def setup(path: str) -> None:
        per = sz.w8 // sz.w8_streams
        fill(path, [(f"s{i}", per) for i in range(sz.w8_streams)])

    return setup


# --- W8 ----------------------------------------------------------------------------------------


def w8_chronik(sz: Sizes, keywords: bool = False) -> Any:
    async def run(path: str, _sc: Scale) -> float:
        async with chronik.open_store(store_url(path)) as store:
            head = await store.head()
            assert head is not None
            start = time.perf_counter()
            async with ProjectionProcessor(store, projection(keywords)) as proc:
                await proc.wait_for(head)
            rate = sz.w8 / (time.perf_counter() - start)
            rows = await store.read_table(TABLE + "__g1")
            assert len(rows) == sz.w8_streams, len(rows)
            return rate

    return run


def raw_project(conn: Any, on_commit: Any = None) -> int:
    """The raw W8 loop: read a page of 500, resolve its new stream ids in one query, decode
    each payload to a dict with ``bench.raw.loads``, run the page's upserts (one per event)
    with one ``executemany``, write the checkpoint, commit; the events it applied.

    ``on_commit()`` is called after each commit (its progress). WAL checkpoints run in the
    background, as chronik's store runs them."""
    conn.start_checkpoints()
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(
        f"CREATE TABLE {TABLE} (id TEXT, customer TEXT, amount INTEGER, seq INTEGER, "
        "PRIMARY KEY (id))"
    )
    upsert = (
        f"INSERT INTO {TABLE} (id, customer, amount, seq) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET customer = excluded.customer, "
        "amount = excluded.amount, seq = excluded.seq"
    )
    page = (
        "SELECT position, stream_id, sequence, payload FROM chronik_events "
        "WHERE position > ? AND type IN (?) ORDER BY position LIMIT ?"
    )
    names: dict[int, str] = {}
    loads = raw_loads
    after, n = 0, 0
    while True:
        rows = conn.execute(page, (after, "bench.event", BATCH)).fetchall()
        if not rows:
            return n
        missing = list({r[1] for r in rows}.difference(names))
        if missing:
            names.update(
                conn.execute(
                    "SELECT id, aggregate_id FROM chronik_streams "
                    f"WHERE id IN ({','.join('?' * len(missing))})",
                    missing,
                ).fetchall()
            )
        params = []
        for _, stream_id, sequence, payload in rows:
            d = loads(payload)
            params.append((names[stream_id], d["customer"], d["amount"], sequence))
        after = rows[-1][0]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(upsert, params)
        conn.execute(
            "INSERT OR REPLACE INTO chronik_checkpoints VALUES (?, ?, ?, ?, ?, ?)",
            ("raw", 0, after, 0, 0, 0),
        )
        conn.execute("COMMIT")
        n += len(rows)
        if on_commit is not None:
            on_commit()


def w8_raw(sz: Sizes) -> Any:
    def run(path: str, _sc: Scale) -> float:
        conn = raw_connect(path)
        start = time.perf_counter()
        n = raw_project(conn)
        rate = n / (time.perf_counter() - start)
        assert n == sz.w8, n
        conn.close()
        return rate

    return run


# --- W9 ----------------------------------------------------------------------------------------


def w9_chronik(sz: Sizes, out: list[list[float]]) -> Any:
    async def run(path: str, _sc: Scale) -> float:
        latencies: list[float] = []
        store = chronik.open_store(store_url(path))
        async with store, ProjectionProcessor(store, projection()) as proc:
            for i in range(sz.w9):
                stream = chronik.StreamId("bench", f"s{i % 100}")
                start = time.perf_counter()
                r = await store.append(stream, [chronik.EventData("bench.event", PAYLOAD)])
                await proc.wait_for(r.position)
                latencies.append((time.perf_counter() - start) * 1000)
        out.append(latencies)
        return statistics.median(latencies)

    return run


def w9_raw(sz: Sizes, out: list[list[float]]) -> Any:
    def run(path: str, _sc: Scale) -> float:
        conn = raw_connect(path)
        conn.execute(f"CREATE TABLE {TABLE} (id TEXT PRIMARY KEY, amount INTEGER, seq INTEGER)")
        upsert = (
            f"INSERT INTO {TABLE} (id, amount, seq) VALUES (?, ?, ?) ON CONFLICT (id) "
            "DO UPDATE SET amount = excluded.amount, seq = excluded.seq"
        )
        versions: dict[str, int | None] = {}
        latencies = []
        for i in range(sz.w9):
            name = f"s{i % 100}"
            start = time.perf_counter()
            version = versions[name] = raw_append(conn, name, [PAYLOAD], versions.get(name))
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(upsert, (name, PAYLOAD["amount"], version))
            conn.execute("COMMIT")
            latencies.append((time.perf_counter() - start) * 1000)
        conn.close()
        out.append(latencies)
        return statistics.median(latencies)

    return run


def _p99(samples: list[list[float]]) -> list[float]:
    return [statistics.quantiles(s, n=100)[98] for s in samples]


def run(runs: int, quick: bool, only: set[str] | None = None) -> None:
    """Run W8 and W9 (or those named in ``only``) and print one JSON line per figure."""
    sz = Sizes(quick)
    sc = Scale(quick)
    if only is None or "W8" in only:
        log("W8 projection catch-up ...")
        raw_runs = run_many(runs, w8_raw(sz), sc, _setup(sz))
        emit(
            "W8",
            "events/s",
            run_many(runs, w8_chronik(sz), sc, _setup(sz)),
            raw_runs,
            note=f"projection catch-up: {sz.w8} events into a SQLite read model, one upsert_row "
            f"per event, checkpoint with the rows every {BATCH}; target ratio >= 0.75",
        )
        emit(
            "W8-upsert",
            "events/s",
            run_many(runs, w8_chronik(sz, keywords=True), sc, _setup(sz)),
            raw_runs,
            note="W8 with the handler writing its row by keywords (rm.upsert(table, id=..., "
            "...)), the same raw baseline",
        )
    if only is None or "W9" in only:
        log("W9 append-to-read-model latency ...")
        mine: list[list[float]] = []
        theirs: list[list[float]] = []
        raw_p50 = run_many(runs, w9_raw(sz, theirs), sc)
        p50 = run_many(runs, w9_chronik(sz, mine), sc)
        note = f"{sz.w9} appends of 1 event, each awaited until the live projection applied it"
        emit("W9-p50", "ms", p50, raw_p50, duration=True, note=note)
        emit(
            "W9-p99",
            "ms",
            _p99(mine),
            _p99(theirs),
            duration=True,
            note=note + "; target < 20 ms",
        )
