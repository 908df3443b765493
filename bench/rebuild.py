"""W8-rebuild: a blue/green rebuild of 1,000,000 events; its rate and how often it shows progress.

One SQLite store holds 1,000,000 events (1,000 streams), projected once by the W8 projection.
Each run then rebuilds it into a new generation while the previous one serves, requested through
``ProjectionAdmin`` as ``chronik projections rebuild`` does. A second store object reads the
status rows every 20 ms, as the CLI does; the progress gap is the longest time between two
changes of the reported build position, from the first status that shows the build to the one
that shows the switch (target: progress at least once a second). Raw: the W8 sqlite3 upsert loop
over the same events, whose commits are its progress.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import time

import chronik
from bench.__main__ import emit, fill, log, store_url
from bench.projections import projection, raw_project
from bench.raw import connect as raw_connect
from chronik.projections import ProjectionAdmin, ProjectionProcessor

POLL = 0.02  # seconds between two status reads


async def _rebuilds(path: str, runs: int, events: int) -> tuple[list[float], list[float]]:
    """Rebuild ``runs`` times; the rate (events/s) and the longest progress gap (ms) of each."""
    rates, gaps = [], []
    store = chronik.open_store(store_url(path))
    other = chronik.open_store(store_url(path))  # the CLI's connection
    async with store, other, ProjectionProcessor(store, projection()) as proc:
        head = await store.head()
        assert head is not None
        await proc.wait_for(head)
        admin = ProjectionAdmin(other)
        for _ in range(runs):
            target = (await admin.status("w8")).generation + 1
            await admin.request("w8", "rebuild")
            rate, gap = await _follow(admin, target, events)
            rates.append(rate)
            gaps.append(gap * 1000)
    return rates, gaps


async def _follow(admin: ProjectionAdmin, target: int, events: int) -> tuple[float, float]:
    """Watch one rebuild the way the CLI does, until generation ``target`` serves."""
    start: float | None = None
    last_change, gap, shown = 0.0, 0.0, None
    while True:
        s = await admin.status("w8")
        now = time.perf_counter()
        if start is None and s.building == target:
            start = last_change = now
        if start is not None:
            if s.build_position != shown or s.generation == target:
                gap = max(gap, now - last_change)
                last_change, shown = now, s.build_position
            if s.generation == target and s.building is None:
                return events / (now - start), gap
        await asyncio.sleep(POLL)


def _raw(path: str, runs: int, events: int) -> tuple[list[float], list[float]]:
    rates, gaps = [], []
    for _ in range(runs):
        conn = raw_connect(path)
        start = time.perf_counter()
        times = [start]
        n = raw_project(conn, lambda times=times: times.append(time.perf_counter()))
        assert n == events, n
        rates.append(n / (time.perf_counter() - start))
        gaps.append(1000 * max(b - a for a, b in itertools.pairwise(times)))
        conn.close()
    return rates, gaps


def run(runs: int, quick: bool) -> None:
    """Run W8-rebuild and print its two lines."""
    events, streams = (100_000, 100) if quick else (1_000_000, 1_000)
    log(f"W8-rebuild of {events:,} events ...")
    d = tempfile.mkdtemp(prefix="chronik-bench-")
    path = os.path.join(d, "events.db")
    try:
        fill(path, [(f"s{i}", events // streams) for i in range(streams)])
        raw_rates, raw_gaps = _raw(path, runs, events)
        rates, gaps = asyncio.run(_rebuilds(path, runs, events))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    note = f"blue/green rebuild of {events} events into a new generation, requested as the CLI does"
    emit("W8-rebuild", "events/s", rates, raw_rates, note=note + "; raw = the W8 sqlite3 loop")
    emit(
        "W8-rebuild-progress",
        "ms",
        gaps,
        raw_gaps,
        duration=True,
        note="longest time between two progress reports in the status row, read every "
        f"{POLL * 1000:.0f} ms; raw = longest time between two commits of the raw loop; "
        "target < 1000 ms",
    )
