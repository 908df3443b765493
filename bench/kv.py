"""The embedded key-value store (``lmdb://``) beside chronik on SQLite and beside raw py-lmdb.

`python -m bench --only lmdb`: W1 (single appends), W6 (32 concurrent appenders), W3 (rehydrate
a 10k-event stream) and W4 (read all 100k events) on chronik's LMDB store at sync=normal, plus
W1-full (both stores at full durability). Each line has the raw py-lmdb baseline of the same
run (``raw``, ``ratio`` as in every bench line) and chronik on SQLite doing the same workload
in the same run (``sqlite``, ``sqlite_runs``, and ``vs_sqlite``: lmdb / sqlite for rates,
sqlite / lmdb for durations, so above 1 means LMDB is faster).

The raw baseline does chronik's work on chronik's layout (``chronik.store.lmdb.keys``: the log,
the stream, id and type indexes, the stream's version) with plain py-lmdb calls: one write
transaction per append at the same durability, the expectation checked by reading the
stream's version; one cursor walk per read with each payload decoded by the same ``loads`` as
the SQLite baselines. Stores to read are filled through chronik (untimed).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

import lmdb
import msgspec
import orjson

import chronik
from bench import raw
from bench.__main__ import PAYLOAD, Scale, emit, fill, log, run_many
from chronik.store.lmdb.keys import DATABASES

DURABILITY = {
    "normal": "LMDB sync=normal (metasync=False) beside SQLite WAL synchronous=NORMAL",
    "full": "LMDB sync=full beside SQLite WAL synchronous=FULL (fsync per commit, both)",
}
_U64 = struct.Struct(">Q")
_STREAM = struct.Struct(">Qq")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def lmdb_url(path: str, sync: str = "normal") -> str:
    return f"lmdb:///{path}.lmdb?sync={sync}"


def sqlite_url(path: str, sync: str = "normal") -> str:
    return f"sqlite:///{path}?synchronous={sync}"


# --- chronik workloads (either store, by URL) ----------------------------------------------------


def w1(make_url: Callable[[str, str], str], sync: str) -> Callable[[str, Scale], Any]:
    """W1 as bench.__main__.w1_chronik, on the store ``make_url`` names."""

    async def run(path: str, sc: Scale) -> float:
        async with chronik.open_store(make_url(path, sync)) as store:
            streams = [chronik.StreamId("bench", f"s{i}") for i in range(sc.w1_streams)]
            versions: list[chronik.Expected] = [chronik.NO_STREAM] * len(streams)
            start = time.perf_counter()
            for i in range(sc.w1):
                j = i % len(streams)
                r = await store.append(
                    streams[j], [chronik.EventData("bench.event", PAYLOAD)], versions[j]
                )
                versions[j] = r.last_sequence
            return sc.w1 / (time.perf_counter() - start)

    return run


def w3(make_url: Callable[[str, str], str]) -> Callable[[str, Scale], Any]:
    """W3 as bench.__main__.w3_chronik, on the store ``make_url`` names."""

    async def run(path: str, sc: Scale) -> float:
        async with chronik.open_store(make_url(path, "normal")) as store:
            start = time.perf_counter()
            n = 0
            async for e in store.read_stream(chronik.StreamId("bench", "big")):
                e.json()
                n += 1
            elapsed = (time.perf_counter() - start) * 1000
            assert n == sc.w3, n
            return elapsed

    return run


def w4(make_url: Callable[[str, str], str]) -> Callable[[str, Scale], Any]:
    """W4 as bench.__main__.w4_chronik, on the store ``make_url`` names."""

    async def run(path: str, sc: Scale) -> float:
        async with chronik.open_store(make_url(path, "normal")) as store:
            start = time.perf_counter()
            n, after = 0, None
            while True:
                page = 0
                async for e in store.read_all(after=after, limit=1000):
                    e.json()
                    after = e.position
                    page += 1
                n += page
                if page == 0:
                    break
            assert n == sc.w4, n
            return n / (time.perf_counter() - start)

    return run


def w6(make_url: Callable[[str, str], str], tasks: int = 32) -> Callable[[str, Scale], Any]:
    """W6 as bench.growth.w6_chronik (``tasks`` concurrent appenders, 8 streams each)."""

    async def run(path: str, sc: Scale) -> float:
        per_task = sc.w6 // tasks
        async with chronik.open_store(make_url(path, "normal")) as store:

            async def worker(k: int) -> None:
                streams = [chronik.StreamId("bench", f"w{k}-{i}") for i in range(8)]
                versions: list[chronik.Expected] = [chronik.NO_STREAM] * 8
                for i in range(per_task):
                    j = i % 8
                    r = await store.append(
                        streams[j], [chronik.EventData("bench.event", PAYLOAD)], versions[j]
                    )
                    versions[j] = r.last_sequence

            start = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(tasks)))
            return tasks * per_task / (time.perf_counter() - start)

    return run


def fill_lmdb(streams: list[tuple[str, int]]) -> Callable[[str], None]:
    """Untimed setup: ``streams`` (aggregate id, count) written through chronik's LMDB store."""

    def setup(path: str) -> None:
        async def go() -> None:
            async with chronik.open_store(lmdb_url(path)) as store:
                for aggregate_id, count in streams:
                    s = chronik.StreamId("bench", aggregate_id)
                    for start in range(0, count, 1000):
                        n = min(1000, count - start)
                        events = [chronik.EventData("bench.event", PAYLOAD) for _ in range(n)]
                        await store.append(s, events)

        asyncio.run(go())

    return setup


# --- raw py-lmdb ---------------------------------------------------------------------------------


def raw_open(path: str, sync: str = "normal") -> tuple[lmdb.Environment, dict[str, Any]]:
    env = lmdb.open(
        f"{path}.lmdb",
        map_size=1 << 30,
        max_dbs=len(DATABASES),
        sync=True,
        metasync=sync == "full",
    )
    with env.begin(write=True) as txn:
        dbs = {name: env.open_db(name.encode(), txn=txn) for name in DATABASES}
    return env, dbs


def raw_w1(sync: str) -> Callable[[str, Scale], float]:
    def run(path: str, sc: Scale) -> float:
        env, dbs = raw_open(path, sync)
        log_db, streams, nums = dbs["log"], dbs["streams"], dbs["stream_nums"]
        stream_events, ids, types = dbs["stream_events"], dbs["event_ids"], dbs["types"]
        keys = [f"\x00bench\x00s{i}\x00".encode() for i in range(sc.w1_streams)]
        versions: list[int | None] = [None] * sc.w1_streams
        start = time.perf_counter()
        for i in range(sc.w1):
            j = i % sc.w1_streams
            payload = orjson.dumps(PAYLOAD)
            event_id = os.urandom(16).hex()
            with env.begin(write=True) as txn:
                old = txn.get(keys[j], db=streams)
                if old is None:
                    cur = txn.cursor(db=nums)
                    no = _U64.unpack(cur.key())[0] + 1 if cur.last() else 1
                    txn.put(_U64.pack(no), _encode(("bench", f"s{j}", "")), db=nums)
                    seq = 0
                else:
                    no, version = _STREAM.unpack(old)
                    if version != versions[j]:
                        raise RuntimeError("expectation failed")
                    seq = version + 1
                cur = txn.cursor(db=log_db)
                pos = _U64.pack(_U64.unpack(cur.key())[0] + 1 if cur.last() else 1)
                now = time.time_ns() // 1000
                record = (event_id, no, seq, "bench.event", 1, payload, None, None, now, None)
                txn.put(pos, _encode(record), db=log_db, append=True)
                txn.put(_U64.pack(no) + _U64.pack(seq), pos, db=stream_events)
                txn.put(event_id.encode(), pos, db=ids)
                txn.put(b"bench.event\x00" + pos, b"", db=types)
                txn.put(keys[j], _STREAM.pack(no, seq), db=streams)
            versions[j] = seq
        rate = sc.w1 / (time.perf_counter() - start)
        env.close()
        return rate

    return run


def raw_w3(path: str, sc: Scale) -> float:
    env, dbs = raw_open(path)
    start = time.perf_counter()
    n, loads = 0, raw.loads
    with env.begin() as txn:
        no = _STREAM.unpack(txn.get(b"\x00bench\x00big\x00", b"", db=dbs["streams"]))[0]
        prefix = _U64.pack(no)
        cur = txn.cursor(db=dbs["stream_events"])
        log_cur = txn.cursor(db=dbs["log"])
        cur.set_range(prefix)
        positions = []
        for key, pos in cur:
            if key[:8] != prefix:
                break
            positions.append(pos)
        for _key, value in log_cur.getmulti(positions):
            loads(_decode(value)[5])
            n += 1
    elapsed = (time.perf_counter() - start) * 1000
    env.close()
    assert n == sc.w3, n
    return elapsed


def raw_w4(path: str, sc: Scale) -> float:
    env, dbs = raw_open(path)
    start = time.perf_counter()
    n, loads = 0, raw.loads
    with env.begin() as txn:
        for _key, value in txn.cursor(db=dbs["log"]):
            loads(_decode(value)[5])
            n += 1
    rate = n / (time.perf_counter() - start)
    env.close()
    assert n == sc.w4, n
    return rate


# --- lines ---------------------------------------------------------------------------------------


def put(
    workload: str,
    unit: str,
    mine: list[float],
    theirs: list[float],
    sqlite: list[float],
    sync: str,
    note: str,
    duration: bool = False,
) -> None:
    """bench's emit, relabelled for lmdb, with chronik-on-SQLite beside it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit(workload, unit, mine, theirs, duration=duration, note=note)
    line = json.loads(out.getvalue())
    line["backend"] = "lmdb"
    line["durability"] = DURABILITY[sync]
    value, on_sqlite = statistics.median(mine), statistics.median(sqlite)
    line["sqlite"] = round(on_sqlite, 2)
    line["sqlite_runs"] = [round(r, 2) for r in sqlite]
    line["vs_sqlite"] = round(on_sqlite / value if duration else value / on_sqlite, 3)
    print(json.dumps(line), flush=True)


def run(runs: int, quick: bool) -> None:
    """Every lmdb line (`--only lmdb`)."""
    sc = Scale(quick)
    w1_raw: list[float] = []
    for workload, sync in (("W1", "normal"), ("W1-full", "full")):
        log(f"lmdb {workload} append-1 ...")
        theirs = run_many(runs, raw_w1(sync), sc)
        w1_raw = w1_raw or theirs
        mine = run_many(runs, w1(lmdb_url, sync), sc)
        sqlite = run_many(runs, w1(sqlite_url, sync), sc)
        put(
            workload,
            "events/s",
            mine,
            theirs,
            sqlite,
            sync,
            f"append-1: {sc.w1} events over {sc.w1_streams} streams, exact expectation; raw = "
            "py-lmdb, one write transaction: version read, 5 puts, commit",
        )
    log("lmdb W6 concurrent-append ...")
    put(
        "W6",
        "events/s",
        run_many(runs, w6(lmdb_url), sc),
        w1_raw,
        run_many(runs, w6(sqlite_url), sc),
        "normal",
        f"32 tasks, 1 event per call, {sc.w6} events (group commit: one flush per batch); "
        "raw = raw single-caller W1 of this run",
    )
    log("lmdb W3 rehydrate ...")
    setup3 = fill_lmdb([("big", sc.w3)])
    theirs = run_many(runs, raw_w3, sc, setup3)
    mine = run_many(runs, w3(lmdb_url), sc, setup3)
    sqlite = run_many(runs, w3(sqlite_url), sc, lambda p: fill(p, [("big", sc.w3)]))
    put(
        "W3",
        "ms",
        mine,
        theirs,
        sqlite,
        "normal",
        f"rehydrate: read and decode a {sc.w3}-event stream; raw = py-lmdb, one cursor walk "
        f"of the stream index, getmulti of the log, {raw.LOADS_NAME} of each payload",
        duration=True,
    )
    log("lmdb W4 read-all ...")
    streams = [(f"r{i}", sc.w4 // 100) for i in range(100)]
    theirs = run_many(runs, raw_w4, sc, fill_lmdb(streams))
    mine = run_many(runs, w4(lmdb_url), sc, fill_lmdb(streams))
    sqlite = run_many(runs, w4(sqlite_url), sc, lambda p: fill(p, streams))
    put(
        "W4",
        "events/s",
        mine,
        theirs,
        sqlite,
        "normal",
        f"read-all: {sc.w4} events in pages of 1,000, decoded; raw = py-lmdb, one cursor walk "
        f"of the log, {raw.LOADS_NAME} of each payload",
    )
