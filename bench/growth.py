"""How cost grows (issue 20), each figure beside a raw sqlite3 baseline of the same run.

W3-<n>: rehydrate an n-event stream (100, 1k, 10k; + 100k with ``--only growth``), linear = the
same us/event and ratio at each size. W4-<n>(-memory): read a 1M-event store (+ 10M), decoded,
in a fresh process: events/s and the RSS the read adds (target < 50 MB). store-bytes: file bytes
per event against a minimal raw table of the same rows (target <= 1.3 x). W6-<n>: 1, 8, 32, 128
concurrent appenders (no collapse). Stores are filled through sqlite3 on chronik's schema
(executemany, 200,000 rows per transaction); ``python -m bench.growth read chronik|raw PATH`` is
the child that measures one W4 read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

import chronik
from bench import raw

DURABILITY = "WAL synchronous=NORMAL"
PAYLOAD = {"customer": "cust-17", "amount": 42, "note": "some text for the order line"}
MEMORY_TARGET_MB = 50
APPENDERS = (1, 8, 32, 128)


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def label(n: int) -> str:
    """100 -> '100', 10_000 -> '10k', 1_000_000 -> '1M'."""
    for unit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def url(path: str) -> str:
    return f"sqlite:///{path}"


def emit(
    workload: str,
    unit: str,
    mine: list[float],
    theirs: list[float],
    ratio: str | float,
    note: str,
    **extra: Any,
) -> dict[str, Any]:
    """Print one bench line; ratio: 'rate' or 'size' (value/raw), 'duration' (raw/value), or a
    target (value/target)."""
    value, base = statistics.median(mine), statistics.median(theirs)
    if isinstance(ratio, str):
        ratio_value = base / value if ratio == "duration" else value / base
    else:
        ratio_value = value / ratio
    line: dict[str, Any] = {
        "workload": workload,
        "backend": "sqlite",
        "value": _round(value),
        "unit": unit,
        "raw": _round(base),
        "ratio": round(ratio_value, 3),
        "runs": [_round(r) for r in mine],
        "raw_runs": [_round(r) for r in theirs],
        "durability": DURABILITY,
        **extra,
        "note": note,
    }
    print(json.dumps(line), flush=True)
    return line


def _round(x: float) -> float:
    return round(x, 2) if abs(x) >= 10 else round(x, 4)


@contextlib.contextmanager
def scratch() -> Iterator[str]:
    """A store path in a new temporary directory, removed afterwards."""
    d = tempfile.mkdtemp(prefix="chronik-growth-")
    try:
        yield os.path.join(d, "events.db")
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- fixtures: big stores through plain sqlite3 (not timed) -----------------------------------


def bulk_fill(path: str, names: Sequence[str], per_stream: int, chunk: int = 200_000) -> None:
    """``per_stream`` events in each stream of ``names``, round-robin, on chronik's schema."""
    conn = raw.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute("BEGIN")
    ids = [
        conn.execute(
            "INSERT INTO chronik_streams (tenant, domain, aggregate_id, version) "
            "VALUES ('', 'bench', ?, ?)",
            (name, per_stream - 1),
        ).lastrowid
        for name in names
    ]
    conn.execute("COMMIT")
    payload, now, s = msgspec.json.encode(PAYLOAD), time.time_ns() // 1000, len(ids)
    prefix = chronik.new_event_id()[:24]  # UUIDv7-shaped, time-ordered ids, as chronik makes
    total = s * per_stream
    rows = (
        (ids[i % s], i // s, f"{prefix}{i:012x}", "bench.event", 1, payload, None, None, now)
        for i in range(total)
    )
    for _ in range(0, total, chunk):
        conn.execute("BEGIN")
        conn.executemany(raw.INSERT_EVENT, itertools.islice(rows, chunk))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


# --- W3 by stream length -----------------------------------------------------------------------


async def w3_pair(path: str, n: int, reps: int) -> tuple[float, float]:
    """Median ms of ``reps`` raw reads and of ``reps`` chronik reads, taken in turn."""
    conn = raw.connect(path)
    mine, theirs = [], []
    async with chronik.open_store(url(path)) as store:
        stream = chronik.StreamId("bench", "big")
        for _ in range(reps):
            start = time.perf_counter()
            got = raw.read_stream(conn, "big")
            theirs.append((time.perf_counter() - start) * 1000)
            assert got == n, got
            start, got = time.perf_counter(), 0
            async for e in store.read_stream(stream):
                e.json()
                got += 1
            mine.append((time.perf_counter() - start) * 1000)
            assert got == n, got
    conn.close()
    return statistics.median(mine), statistics.median(theirs)


def run_w3(runs: int, sizes: Sequence[int]) -> None:
    for n in sizes:
        log(f"W3 rehydrate {label(n)} ...")
        reps = max(3, min(20, 30_000 // n))  # median of several reads per run, in turn
        mine, theirs = [], []
        for _ in range(runs):
            with scratch() as path:
                bulk_fill(path, ["big"], n)
                chronik_ms, raw_ms = asyncio.run(w3_pair(path, n, reps))
                mine.append(chronik_ms)
                theirs.append(raw_ms)
        emit(
            f"W3-{label(n)}",
            "ms",
            mine,
            theirs,
            "duration",
            f"rehydrate: read and decode one {n}-event stream (median of {reps} reads per run, "
            "raw and chronik in turn on the same store); linear = same us/event and same ratio "
            "at every size",
            events=n,
            us_per_event=round(statistics.median(mine) * 1000 / n, 3),
            raw_us_per_event=round(statistics.median(theirs) * 1000 / n, 3),
        )


# --- W4 over millions of events, with the memory the read adds ---------------------------------


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS, so the peak is the read's own (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # the peak then also covers start-up: an overestimate, never an under
        pass


def _finish(events: int, start: float, before: float) -> dict[str, float]:
    seconds, after, peak = time.perf_counter() - start, _status_mb("VmRSS"), _status_mb("VmHWM")
    return {
        "events": events,
        "seconds": seconds,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "rss_peak_mb": peak,
    }


async def _read_chronik(path: str) -> dict[str, float]:
    async with chronik.open_store(url(path)) as store:
        await store.head()  # the reader connection is open before "before"
        before = _status_mb("VmRSS")
        _reset_peak()
        start, n = time.perf_counter(), 0
        async for e in store.read_all():
            e.json()
            n += 1
        return _finish(n, start, before)


def _read_raw(path: str) -> dict[str, float]:
    conn = raw.connect(path)
    before = _status_mb("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    n = raw.read_all(conn)
    result = _finish(n, start, before)
    conn.close()
    return result


def read_in_child(which: str, path: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.growth", "read", which, path],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def run_w4(runs: int, sizes: Sequence[int]) -> None:
    for n in sizes:
        log(f"W4 read-all {label(n)}: writing the store ...")
        began = time.perf_counter()
        streams, mine, theirs = max(1, n // 1000), [], []
        with scratch() as path:
            bulk_fill(path, [f"r{i}" for i in range(streams)], n // streams)
            log(f"W4 read-all {label(n)}: written in {time.perf_counter() - began:.0f} s")
            for _ in range(runs):
                theirs.append(read_in_child("raw", path))
                mine.append(read_in_child("chronik", path))
            db_mb = os.path.getsize(path) / 1e6
        log(f"W4 read-all {label(n)}: {time.perf_counter() - began:.0f} s in all")
        assert all(r["events"] == n for r in mine + theirs), (mine, theirs)
        common = f"read-all: {n} events ({streams} streams, {db_mb:.0f} MB file), decoded, "
        emit(
            f"W4-{label(n)}",
            "events/s",
            [r["events"] / r["seconds"] for r in mine],
            [r["events"] / r["seconds"] for r in theirs],
            "rate",
            common + "chronik: one read_all() iterator; raw: pages of 1,000 by position",
            events=n,
        )
        emit(
            f"W4-{label(n)}-memory",
            "MB",
            [r["rss_peak_mb"] - r["rss_before_mb"] for r in mine],
            [r["rss_peak_mb"] - r["rss_before_mb"] for r in theirs],
            MEMORY_TARGET_MB,
            common + "peak RSS added by the read (VmHWM - VmRSS before, fresh process); "
            f"target < {MEMORY_TARGET_MB} MB; ratio = value / {MEMORY_TARGET_MB}",
            events=n,
            rss_before_mb=round(statistics.median(r["rss_before_mb"] for r in mine), 1),
            rss_after_mb=round(statistics.median(r["rss_after_mb"] for r in mine), 1),
        )


# --- store bytes per event ---------------------------------------------------------------------

RAW_TABLE = """CREATE TABLE events (
    id TEXT NOT NULL, stream TEXT NOT NULL, sequence INTEGER NOT NULL, type TEXT NOT NULL,
    payload BLOB NOT NULL, metadata BLOB, timestamp INTEGER NOT NULL)"""
RAW_KEYS = (
    "CREATE UNIQUE INDEX events_id ON events (id)",
    "CREATE UNIQUE INDEX events_stream ON events (stream, sequence)",
)


async def _write_chronik(path: str, n: int) -> None:
    """n events through chronik's append: 10 per call, streams of 100 taken in turn."""
    streams = [chronik.StreamId("bench", f"order-{i:06d}") for i in range(max(1, n // 100))]
    async with chronik.open_store(url(path)) as store:
        for rnd in range(n // (10 * len(streams))):
            for stream in streams:
                cid = chronik.new_event_id()
                meta = {"correlation_id": cid, "causation_id": cid}
                events = [chronik.EventData("bench.event", PAYLOAD, meta) for _ in range(10)]
                await store.append(stream, events, rnd * 10 - 1 if rnd else chronik.NO_STREAM)


def _file_bytes(path: str) -> int:
    """The database file's size once its WAL (if any) is checkpointed into it."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return os.path.getsize(path)


def _copy_raw(source: str, target: str, keys: bool) -> int:
    """The same rows in a minimal table (keys: with the two unique indexes a store needs)."""
    src = sqlite3.connect(source)
    rows = src.execute(
        "SELECT e.event_id, s.domain || '/' || s.aggregate_id, e.sequence, e.type, e.payload, "
        "e.metadata, e.recorded_at FROM chronik_events e "
        "JOIN chronik_streams s ON s.id = e.stream_id ORDER BY e.position"
    )
    dst = sqlite3.connect(target, isolation_level=None)
    dst.execute("BEGIN")
    for statement in (RAW_TABLE, *(RAW_KEYS if keys else ())):
        dst.execute(statement)
    dst.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    dst.execute("COMMIT")
    dst.close()
    src.close()
    return _file_bytes(target)


def run_store_bytes(runs: int, n: int) -> None:
    log(f"store bytes per event ({label(n)} events) ...")
    mine, theirs, bare = [], [], []
    for _ in range(runs):
        with scratch() as path:
            asyncio.run(_write_chronik(path, n))
            mine.append(_file_bytes(path) / n)
            theirs.append(_copy_raw(path, path + ".raw", keys=True) / n)
            bare.append(_copy_raw(path, path + ".bare", keys=False) / n)
    emit(
        "store-bytes",
        "bytes/event",
        mine,
        theirs,
        "size",
        f"SQLite file size / events: {n} events (10 per append, streams of 100, "
        f"{len(msgspec.json.encode(PAYLOAD))}-byte payload, correlation + causation ids) "
        "written by chronik's append vs the same rows in a minimal raw table (id, stream, "
        "sequence, type, payload, metadata, timestamp) with unique (id) and (stream, sequence); "
        "ratio = value / raw, target <= 1.3; raw_table_only: the same table without indexes",
        events=n,
        raw_table_only=round(statistics.median(bare), 2),
        ratio_table_only=round(statistics.median(mine) / statistics.median(bare), 3),
    )


# --- W6 by number of appenders -----------------------------------------------------------------


async def w6_chronik(path: str, tasks: int, total: int) -> float:
    per_task = total // tasks
    async with chronik.open_store(url(path)) as store:

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


def run_w6(runs: int, total: int, w1_raw_runs: list[float]) -> None:
    first: float | None = None
    for tasks in APPENDERS:
        log(f"W6 {tasks} appenders ...")
        mine = []
        for _ in range(runs):
            with scratch() as path:
                mine.append(asyncio.run(w6_chronik(path, tasks, total)))
        value = statistics.median(mine)
        first = value if first is None else first
        emit(
            f"W6-{tasks}",
            "events/s",
            mine,
            w1_raw_runs,
            "rate",
            f"{tasks} concurrent appenders, 1 event per call, {total // tasks * tasks} events; "
            "raw = raw sqlite3 single-caller W1 of this run; vs_one_appender = this / W6-1 "
            "(no collapse: it does not fall as appenders are added)",
            appenders=tasks,
            vs_one_appender=round(value / first, 3),
        )


# --- entry points ------------------------------------------------------------------------------


def run(runs: int, quick: bool, only: set[str], w1_raw_runs: list[float]) -> None:
    """The growth figures ``only`` selects; 'growth' adds W3 at 100k and W4 at 10M."""
    big = "growth" in only
    d = 10 if quick else 1
    if big or "W3-growth" in only:
        run_w3(runs, [n // d for n in (100, 1_000, 10_000, *((100_000,) if big else ()))])
    if big or "W4-growth" in only:
        run_w4(runs, [n // d for n in (1_000_000, *((10_000_000,) if big else ()))])
    if big or "store-bytes" in only:
        run_store_bytes(runs, 100_000 // d)
    if big or "W6-growth" in only:
        run_w6(runs, 20_000 // d, w1_raw_runs)


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] != "read" or sys.argv[2] not in ("chronik", "raw"):
        sys.exit("usage: python -m bench.growth read chronik|raw PATH")
    sqlite3.connect(":memory:").close()  # warm the driver: only the read is measured
    which, path = sys.argv[2], sys.argv[3]
    result = asyncio.run(_read_chronik(path)) if which == "chronik" else _read_raw(path)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
