"""`make bench`: chronik's workloads beside a raw sqlite3 baseline measured in the same run.

Prints one JSON line per figure. value and raw are medians of the runs; ratio is value/raw for
rates and raw/value for durations, so 1.0 means "as fast as raw sqlite3" either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

import chronik
from bench import growth, raw

DURABILITY = "WAL synchronous=NORMAL"
PAYLOAD = {"customer": "cust-17", "amount": 42, "note": "some text for the order line"}


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


class Scale:
    def __init__(self, quick: bool) -> None:
        d = 10 if quick else 1
        self.w1 = 5_000 // d
        self.w1_streams = 500 // d
        self.w2 = 50_000 // d
        self.w3 = 10_000 // d
        self.w4 = 100_000 // d
        self.w6 = 20_000 // d


def store_url(path: str) -> str:
    return f"sqlite:///{path}"


# --- chronik workloads (each returns a rate in events/s or a duration in ms) -----------------


async def w1_chronik(path: str, sc: Scale) -> float:
    async with chronik.open_store(store_url(path)) as store:
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


async def w2_chronik(path: str, sc: Scale) -> float:
    async with chronik.open_store(store_url(path)) as store:
        start = time.perf_counter()
        for i in range(sc.w2 // 10):
            events = [chronik.EventData("bench.event", PAYLOAD) for _ in range(10)]
            await store.append(chronik.StreamId("bench", f"b{i}"), events, chronik.NO_STREAM)
        return sc.w2 / (time.perf_counter() - start)


async def w3_chronik(path: str, sc: Scale) -> float:
    async with chronik.open_store(store_url(path)) as store:
        stream = chronik.StreamId("bench", "big")
        start = time.perf_counter()
        n = 0
        async for e in store.read_stream(stream):
            e.json()
            n += 1
        elapsed = (time.perf_counter() - start) * 1000
        assert n == sc.w3, n
        return elapsed


async def w4_chronik(path: str, sc: Scale) -> float:
    async with chronik.open_store(store_url(path)) as store:
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


async def w6_chronik(path: str, sc: Scale) -> float:
    """W6: 32 concurrent appenders (growth.w6_chronik sweeps the number)."""
    return await growth.w6_chronik(path, 32, sc.w6)


# --- raw workloads ---------------------------------------------------------------------------


def w1_raw(path: str, sc: Scale) -> float:
    conn = raw.connect(path)
    versions: list[int | None] = [None] * sc.w1_streams
    start = time.perf_counter()
    for i in range(sc.w1):
        j = i % sc.w1_streams
        versions[j] = raw.append(conn, f"s{j}", [PAYLOAD], versions[j])
    rate = sc.w1 / (time.perf_counter() - start)
    conn.close()
    return rate


def w2_raw(path: str, sc: Scale) -> float:
    conn = raw.connect(path)
    start = time.perf_counter()
    for i in range(sc.w2 // 10):
        raw.append(conn, f"b{i}", [PAYLOAD] * 10, None)
    rate = sc.w2 / (time.perf_counter() - start)
    conn.close()
    return rate


def w3_raw(path: str, sc: Scale) -> float:
    conn = raw.connect(path)
    start = time.perf_counter()
    n = raw.read_stream(conn, "big")
    elapsed = (time.perf_counter() - start) * 1000
    assert n == sc.w3, n
    conn.close()
    return elapsed


def w4_raw(path: str, sc: Scale) -> float:
    conn = raw.connect(path)
    start = time.perf_counter()
    n = raw.read_all(conn)
    rate = n / (time.perf_counter() - start)
    assert n == sc.w4, n
    conn.close()
    return rate


# --- fixtures (not timed) ----------------------------------------------------------------------


def fill(path: str, streams: list[tuple[str, int]]) -> None:
    """Write (aggregate_id, count) streams quickly, in big transactions, through the raw path."""
    conn = raw.connect(path)
    for aggregate_id, count in streams:
        version = None
        for start in range(0, count, 1000):
            version = raw.append(conn, aggregate_id, [PAYLOAD] * min(1000, count - start), version)
    conn.close()


# --- runner ------------------------------------------------------------------------------------


def run_many(
    runs: int,
    fn: Callable[[str, Scale], Any],
    sc: Scale,
    setup: Callable[[str], None] | None = None,
) -> list[float]:
    out = []
    for _ in range(runs):
        d = tempfile.mkdtemp(prefix="chronik-bench-")
        path = os.path.join(d, "events.db")
        try:
            if setup is not None:
                setup(path)
            result = fn(path, sc)
            if isinstance(result, Coroutine):
                result = asyncio.run(result)
            out.append(float(result))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return out


def emit(
    workload: str,
    unit: str,
    runs: list[float],
    raw_runs: list[float],
    *,
    duration: bool = False,
    note: str = "",
    raw_value: float | None = None,
) -> None:
    value = statistics.median(runs)
    raw_median = statistics.median(raw_runs) if raw_value is None else raw_value
    ratio = raw_median / value if duration else value / raw_median
    line = {
        "workload": workload,
        "backend": "sqlite",
        "value": round(value, 2),
        "unit": unit,
        "raw": round(raw_median, 2),
        "ratio": round(ratio, 3),
        "runs": [round(r, 2) for r in runs],
        "raw_runs": [round(r, 2) for r in raw_runs],
        "durability": DURABILITY,
    }
    if note:
        line["note"] = note
    print(json.dumps(line), flush=True)


def memory_mb(which: str, path: str) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", which, path],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--only",
        default="W1,W2,W3,W4,W4-memory,W6,W3-growth,W4-growth,store-bytes,W6-growth,"
        "peer,W3s,W7,W8,W9,W8-rebuild,W10,W11,W12,dcb,pg-dcb,lmdb,archive",
        help="growth = every growth figure incl. W3 at 100k and W4 at 10M events (bench.growth); "
        "dcb / pg-dcb = the DCB lines on SQLite / PostgreSQL, dcb-growth / pg-dcb-growth = "
        "their condition and tag-query lines at 1M events (bench.dcb); lmdb = W1, W1-full, W6, W3 "
        "and W4 on the lmdb:// store beside SQLite and raw py-lmdb (bench.kv); archive = reads "
        "through a 90%% archive vs the hot log, one archived stream (bench.archive)",
    )
    parser.add_argument("--quick", action="store_true", help="sizes / 10, for a smoke test")
    parser.add_argument("--full", action="store_true", help="archive: 10M events, not 1M")
    args = parser.parse_args()
    sc = Scale(args.quick)
    only = set(args.only.split(","))
    runs = args.runs
    w1_raw_runs: list[float] = []
    if only & {"W1", "W6", "W7", "W6-growth", "growth"}:
        log("W1 append-1 ...")
        w1_raw_runs = run_many(runs, w1_raw, sc)
        if "W1" in only:
            emit(
                "W1",
                "events/s",
                run_many(runs, w1_chronik, sc),
                w1_raw_runs,
                note=f"append-1: {sc.w1} events over {sc.w1_streams} streams, exact expectation; "
                "raw = sqlite3, expectation checked by the version UPDATE, one INSERT, commit",
            )
    if "W2" in only:
        log("W2 append-batch10 ...")
        raw_runs = run_many(runs, w2_raw, sc)
        emit(
            "W2",
            "events/s",
            run_many(runs, w2_chronik, sc),
            raw_runs,
            note=f"append-batch10: {sc.w2} events, 10 per call, new stream each; raw = sqlite3, "
            "stream INSERT + one executemany of 10 events, commit",
        )
    if "W3" in only:
        log("W3 rehydrate ...")

        def setup3(p: str) -> None:
            fill(p, [("big", sc.w3)])

        raw_runs = run_many(runs, w3_raw, sc, setup3)
        emit(
            "W3",
            "ms",
            run_many(runs, w3_chronik, sc, setup3),
            raw_runs,
            duration=True,
            note=f"rehydrate: read and decode a {sc.w3}-event stream; raw = sqlite3 pages of "
            f"1,000 (chronik's columns), {raw.LOADS_NAME} of each payload",
        )
    if only & {"W4", "W4-memory"}:
        streams = [(f"r{i}", sc.w4 // 100) for i in range(100)]

        def setup4(p: str) -> None:
            fill(p, streams)
            os.sync()  # the fill's dirty pages written back before either side's timed read

        if "W4" in only:
            log("W4 read-all ...")
            mine: list[float] = []
            raw_runs = []
            for _ in range(runs):  # alternated, so that load from elsewhere hits both alike
                raw_runs += run_many(1, w4_raw, sc, setup4)
                mine += run_many(1, w4_chronik, sc, setup4)
            emit(
                "W4",
                "events/s",
                mine,
                raw_runs,
                note=f"read-all: {sc.w4} events in pages of 1,000, decoded; raw = sqlite3, "
                f"chronik's columns, {raw.LOADS_NAME} of each payload",
            )
        if "W4-memory" in only:
            log("W4 memory ...")
            d = tempfile.mkdtemp(prefix="chronik-bench-")
            path = os.path.join(d, "events.db")
            try:
                setup4(path)
                mine = [memory_mb("chronik", path) for _ in range(runs)]
                theirs = [memory_mb("raw", path) for _ in range(runs)]
            finally:
                shutil.rmtree(d, ignore_errors=True)
            value = statistics.median(mine)
            line = {
                "workload": "W4-memory",
                "backend": "sqlite",
                "value": round(value, 2),
                "unit": "MB",
                "raw": round(statistics.median(theirs), 2),
                "ratio": round(value / 50, 3),
                "runs": [round(r, 2) for r in mine],
                "raw_runs": [round(r, 2) for r in theirs],
                "durability": DURABILITY,
                "note": f"peak RSS added by reading {sc.w4} events; target < 50 MB, "
                "ratio = value / 50",
            }
            print(json.dumps(line), flush=True)
    if "W6" in only:
        log("W6 concurrent-append ...")
        emit(
            "W6",
            "events/s",
            run_many(runs, w6_chronik, sc),
            w1_raw_runs,
            note=f"32 tasks, 1 event per call, {sc.w6} events; raw = raw single-caller W1 "
            "of this run, target ratio >= 1.5",
        )
    if only & {"growth", "W3-growth", "W4-growth", "store-bytes", "W6-growth"}:
        growth.run(runs, args.quick, only, w1_raw_runs)
    if only & {"peer", "W1-peer", "W2-peer", "W3-peer", "W4-peer"}:
        try:
            from bench import peer  # eventsourcing beside chronik: W1-peer ... W4-peer
        except ImportError as exc:
            log(f"peer: skipped ({exc}; pip install -e '.[dev]')")
        else:
            peer.run(runs, args.quick, only)
    if only & {"W3s", "W7"}:
        from bench import commands

        commands.run_all(runs, args.quick, only, w1_raw_runs, emit, run_many)
    if "W10" in only:
        from bench import server

        server.run_all(runs, args.quick, emit)
    if "W12" in only:
        from bench import sagas

        sagas.run_all(runs, args.quick, emit)
    if only & {"W8", "W9"}:
        from bench import projections

        projections.run(runs, args.quick, only)
    if "W8-rebuild" in only:
        from bench import rebuild

        rebuild.run(runs, args.quick)
    if "affinity" in only:
        from bench import affinity  # routing by aggregate affinity on 3 nodes (PostgreSQL)

        affinity.run(runs, args.quick)
    if "takeover" in only:
        from bench import takeover  # partition takeover after kill -9 / a clean leave

        takeover.run(runs)
    if "cluster" in only:
        from bench import cluster  # commands/s of 1, 2 and 3 chronik serve processes (PostgreSQL)

        cluster.run(min(runs, 2), args.quick)
    from bench import postgres

    postgres.run_from_bench(args)
    if only & {"dcb", "pg-dcb", "dcb-growth", "pg-dcb-growth", "postgres"}:
        from bench import dcb  # the DCB speedrun beside eventsourcing, conditions, tag queries

        dcb.run(runs, args.quick, only | ({"pg-dcb"} if "postgres" in only else set()))
    if "W11" in only:
        from bench import transports

        transports.run(runs, args.quick)
    if "archive" in only:
        from bench import archive  # reads through the archive vs the hot log (bench.archive)

        archive.run(runs, args.quick, args.full)
    if "lmdb" in only:
        try:
            from bench import kv  # the embedded key-value store beside SQLite and raw py-lmdb
        except ImportError as exc:
            log(f"lmdb: skipped ({exc}; pip install -e '.[lmdb]')")
        else:
            kv.run(runs, args.quick)


if __name__ == "__main__":
    main()
