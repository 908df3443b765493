"""W3s (rehydrate with snapshots) and W7 (in-process command throughput) beside raw sqlite3."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import msgspec

import chronik
from bench import raw

registry = chronik.EventRegistry()


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


@registry.event("bench.added")
class Added(msgspec.Struct):
    sku: str
    cents: int


class Tally(msgspec.Struct):
    count: int = 0
    total_cents: int = 0
    last_sku: str = ""


class Add(msgspec.Struct):
    sku: str
    cents: int


def decide(command: chronik.Command, state: Tally) -> Added:
    if command.payload.cents < 0:
        raise chronik.CommandRejected("negative")
    return Added(command.payload.sku, command.payload.cents)


def evolve(state: Tally, event: Added) -> Tally:
    return Tally(state.count + 1, state.total_cents + event.cents, event.sku)


def make_app(url: str, every: int | None = 100) -> chronik.Chronik:
    app = chronik.Chronik(store=url, registry=registry)
    snapshots = chronik.Snapshots(every=every) if every else None
    app.add_decider("bench", decide, evolve, Tally, commands={"Add": Add}, snapshots=snapshots)
    return app


# --- W3s: rehydrate a 10,000-event aggregate whose newest snapshot is 100 events old ----------

LOADS = 50


def setup_w3s(path: str, events: int) -> None:
    """A stream of ``events`` events and a snapshot 100 events before its end."""

    async def fill() -> None:
        async with make_app(f"sqlite:///{path}") as app:
            stream = chronik.StreamId("bench", "big")
            state = Tally()
            for start in range(0, events, 500):
                batch = [Added(f"sku-{i}", i % 1000) for i in range(start, start + 500)]
                await app.store.append(stream, [registry.to_event_data(e) for e in batch])
                for e in batch:
                    state = evolve(state, e)
                    if state.count == events - 100:
                        await app.store.save_snapshot(
                            chronik.Snapshot(
                                stream, events - 101, "bench", 1, msgspec.json.encode(state)
                            )
                        )

    asyncio.run(fill())


async def w3s_chronik(path: str, events: int) -> float:
    async with make_app(f"sqlite:///{path}") as app:
        model = app.bus.model("bench")
        stream = chronik.StreamId("bench", "big")
        times = []
        for _ in range(LOADS):
            start = time.perf_counter()
            loaded = await app.bus.repository.load(model, stream, use_cache=False)
            times.append((time.perf_counter() - start) * 1000)
            assert loaded.state.count == events and loaded.replayed == 100
        return statistics.median(times)


def w3s_raw(path: str, events: int) -> float:
    """Per load: read the snapshot row, then the events after it (stream id by subquery, one
    statement), decoding state and events straight into the typed Structs with msgspec (what
    chronik hands ``evolve``; faster than orjson to a dict plus a constructor), folding with
    the same ``evolve``."""
    conn = raw.connect(path)
    tally = msgspec.json.Decoder(Tally).decode
    added = msgspec.json.Decoder(Added).decode
    snapshot = (
        "SELECT sequence, state FROM chronik_snapshots WHERE tenant = '' AND domain = ? "
        "AND aggregate_id = ?"
    )
    tail = (
        "SELECT payload FROM chronik_events WHERE stream_id = (SELECT id FROM chronik_streams "
        "WHERE tenant = '' AND domain = ? AND aggregate_id = ?) AND sequence > ? "
        "ORDER BY sequence"
    )
    times = []
    for _ in range(LOADS):
        start = time.perf_counter()
        seq, state_bytes = conn.execute(snapshot, ("bench", "big")).fetchone()
        state = tally(state_bytes)
        for (payload,) in conn.execute(tail, ("bench", "big", seq)):
            state = evolve(state, added(payload))
        times.append((time.perf_counter() - start) * 1000)
        assert state.count == events
    conn.close()
    return statistics.median(times)


# --- W7: dispatch = load + decide + append, 5,000 commands over 500 aggregates ----------------


async def w7_chronik(path: str, commands: int, aggregates: int) -> float:
    async with make_app(f"sqlite:///{path}") as app:
        batch = [
            chronik.Command(
                domain="bench",
                aggregate_id=f"agg-{i % aggregates}",
                type="Add",
                payload={"sku": f"sku-{i}", "cents": i % 1000},
                command_id=f"cmd-{i}",
            )
            for i in range(commands)
        ]
        start = time.perf_counter()
        for command in batch:
            await app.dispatch(command)
        elapsed = time.perf_counter() - start
        head = await app.store.head()
        assert head is not None and head.commit == commands
        return commands / elapsed


def run_all(
    runs: int, quick: bool, only: set[str], w1_raw_runs: list[float], emit: Any, run_many: Any
) -> None:
    """Emit W3s and W7 (``w1_raw_runs``: the raw W1 rates of this run, W7's baseline)."""
    events = 1_000 if quick else 10_000
    if "W3s" in only:
        _w3s(runs, events, emit)
    commands, aggregates = (500, 50) if quick else (5_000, 500)
    if "W7" in only:
        log("W7 command throughput ...")
        emit(
            "W7",
            "commands/s",
            run_many(runs, lambda p, _sc: w7_chronik(p, commands, aggregates), None),
            w1_raw_runs,
            note=f"{commands} commands over {aggregates} aggregates, each with a command id: "
            "idempotency check + load (cached) + decide + append; raw = raw sqlite3 W1 append "
            "rate of this run, target ratio >= 0.7 (issue 20)",
        )


def _w3s(runs: int, events: int, emit: Any) -> None:
    log("W3s rehydrate with snapshots ...")
    mine, theirs = [], []
    for _ in range(runs):
        d = tempfile.mkdtemp(prefix="chronik-bench-")
        path = os.path.join(d, "events.db")
        try:
            setup_w3s(path, events)
            theirs.append(w3s_raw(path, events))
            mine.append(asyncio.run(w3s_chronik(path, events)))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    emit(
        "W3s",
        "ms",
        mine,
        theirs,
        duration=True,
        note=f"load a {events}-event aggregate from its snapshot + 100 later events "
        f"(median of {LOADS} loads per run); raw = sqlite3 reading the same rows; "
        "target < 2 ms",
    )
