"""archive: reading through the archive beside reading the hot log, and one archived stream.

One SQLite store holds N events (300,000 by default, 10,000,000 with ``--full``) over many
streams, appended in rounds so each stream's events spread over the log. ``hot-only`` reads all
N events from the hot store (``read_all``); then the archiver seals all but 10% into a
directory archive and drops them from the hot store, and ``archive+hot`` reads the same N events
through the archive and the hot log (what a projection rebuild or a catch-up reads). The ratio
is archive+hot / hot-only (target >= 0.5). ``archived-stream`` is the median time to read one
archived stream (a random stream, the archive opened afresh once, its indexes then cached;
target < 50 ms).

    python -m bench.archive [--full] [--runs 3]     # or: python -m bench --only archive
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from typing import NamedTuple

import chronik
from bench import raw
from bench.__main__ import PAYLOAD, log, store_url
from chronik.archive import Archive
from chronik.archive.urls import open_blobs
from chronik.lifecycle.archiver import archive_log

STREAM_READS = 50


class Result(NamedTuple):
    """What one bench run measured."""

    events: int
    hot_runs: list[float]
    arch_runs: list[float]
    stream_ms: list[float]
    seal_rate: float


def _fill(path: str, events: int, streams: int) -> None:
    """``events`` events over ``streams`` streams, in rounds of one append per stream."""
    conn = raw.connect(path)
    per = max(1, events // (streams * 10))
    versions: dict[int, int | None] = {}
    written = 0
    while written < events:
        for s in range(streams):
            n = min(per, events - written)
            if n <= 0:
                break
            versions[s] = raw.append(conn, f"a{s}", [PAYLOAD] * n, versions.get(s))
            written += n
            if s % 2000 == 1999:  # the raw connection's background checkpoints never catch
                # up with a writer that never pauses: the WAL would grow by the whole store
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def _read_all(store: chronik.EventStore) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    async for _ in store.read_all():
        n += 1
    return n / (time.perf_counter() - start), n


async def _measure(path: str, arc: str, streams: int, runs: int) -> Result:
    hot_rates: list[float] = []
    arch_rates: list[float] = []
    stream_ms: list[float] = []
    total = 0
    async with chronik.open_store(store_url(path)) as store:
        for _ in range(runs):
            rate, total = await _read_all(store)
            hot_rates.append(rate)
        archive = Archive(open_blobs(arc))
        await archive.open()
        start = time.perf_counter()
        report = await archive_log(
            store, archive, retain_at_least=max(1, total // 10), segment_events=100_000
        )
        seal_s = time.perf_counter() - start
        log(f"archive: sealed {report.events} events in {report.segments} segments, {seal_s:.1f}s")
        store.attach_archive(archive)
        for _ in range(runs):
            rate, seen = await _read_all(store)
            assert seen == total, (seen, total)
            arch_rates.append(rate)
        await archive.close()
        fresh = Archive(open_blobs(arc))  # a reader that has read nothing yet
        await fresh.open()
        store.attach_archive(fresh)
        rng = random.Random(7)  # every stream has archived events
        for s in rng.sample(range(streams), min(STREAM_READS, streams)):
            t0 = time.perf_counter()
            got = [e async for e in store.read_stream(chronik.StreamId("bench", f"a{s}"))]
            elapsed = (time.perf_counter() - t0) * 1000
            assert got and got[0].sequence == 0
            stream_ms.append(elapsed)
        await fresh.close()
    return Result(total, hot_rates, arch_rates, stream_ms, report.events / seal_s)


def run(runs: int, quick: bool, full: bool = False) -> None:
    """Print the archive lines (JSON)."""
    events = 10_000_000 if full else 30_000 if quick else 1_000_000
    streams = max(100, events // 100)
    d = tempfile.mkdtemp(prefix="chronik-bench-archive-")
    try:
        path, arc = os.path.join(d, "events.db"), os.path.join(d, "archive")
        log(f"archive: filling {events} events over {streams} streams ...")
        _fill(path, events, streams)
        res = asyncio.run(_measure(path, arc, streams, runs))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    n, hot, arch = res.events, statistics.median(res.hot_runs), statistics.median(res.arch_runs)
    lines = [
        {
            "workload": "archive-rebuild",
            "backend": "sqlite+directory",
            "value": round(arch, 1),
            "unit": "events/s",
            "raw": round(hot, 1),
            "ratio": round(arch / hot, 3),
            "target": ">= 0.5",
            "runs": [round(r, 1) for r in res.arch_runs],
            "raw_runs": [round(r, 1) for r in res.hot_runs],
            "note": f"read_all of {n} events, 90% archived + 10% hot, vs the same {n} all hot; "
            f"sealing ran at {res.seal_rate:.0f} events/s",
        },
        {
            "workload": "archive-stream",
            "backend": "sqlite+directory",
            "value": round(statistics.median(res.stream_ms), 2),
            "unit": "ms",
            "target": "< 50",
            "first_ms": round(res.stream_ms[0], 2),
            "note": f"median read_stream of one archived stream ({n // streams} events) of {n} "
            f"events, {STREAM_READS} random streams; first_ms = the first read, which loads "
            "the segment indexes",
        },
    ]
    for line in lines:
        print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.archive")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="30,000 events")
    parser.add_argument("--full", action="store_true", help="10,000,000 events (long)")
    args = parser.parse_args()
    run(args.runs, args.quick, args.full)


if __name__ == "__main__":
    main()
