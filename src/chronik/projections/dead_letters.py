"""Dead letters: the events a projection parked, in one place.

A handler that keeps failing under the ``park`` policy parks its event: the failed one is a
dead letter with its error, and every later event of its stream is parked behind it
(``blocked``) so per-stream order holds while other streams go on. A retry applies a stream's
parked events again, in order; a drop deletes them (never applied) and the stream flows on.
Here: the rows, the reads that find them, the retry, and the ``DeadLetter`` an operator sees.
Functions read the store and return table writes; the processor commits them.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from chronik.messages import Position, RecordedEvent
from chronik.projections.projection import Projection
from chronik.projections.readmodel import ReadModel
from chronik.store.base import EventStore, TableWrite
from chronik.store.tables import DEAD_LETTERS

__all__ = [
    "DeadLetter",
    "delete",
    "forget",
    "forget_generation",
    "forget_key",
    "headless",
    "from_rows",
    "park",
    "parked_streams",
    "retry",
]

_ORDER = ("position", "position_index")


class DeadLetter(msgspec.Struct):
    """An event a projection parked: the failed one (``blocked`` false) or one waiting behind it."""

    projection: str
    event_id: str
    generation: int
    position: str
    stream: str
    sequence: int
    type: str
    error: str | None
    attempts: int
    blocked: bool
    parked_at: float


def park(
    key: str,
    generation: int,
    e: RecordedEvent,
    error: str | None,
    attempts: int,
    blocked: bool = False,
) -> TableWrite:
    """The dead-letter row of a parked event (``blocked``: it only waits behind a failed one)."""
    values = {
        "projection": key,
        "event_id": e.event_id,
        "generation": generation,
        "position": e.position.commit,
        "position_index": e.position.index,
        "stream": str(e.stream),
        "sequence": e.sequence,
        "type": e.type,
        "error": error,
        "attempts": attempts,
        "blocked": int(blocked),
        "parked_at": time.time_ns() // 1000,
    }
    return TableWrite.upsert(DEAD_LETTERS.name, values, DEAD_LETTERS.primary_key)


def delete(key: str, generation: int, event_id: str) -> TableWrite:
    """The write that deletes one dead letter."""
    values = {"projection": key, "generation": generation, "event_id": event_id}
    return TableWrite.delete(DEAD_LETTERS.name, values)


async def _rows(store: EventStore, key: str, generation: int) -> list[dict[str, Any]]:
    """The dead letters of one partition's generation, oldest first."""
    where = {"projection": key, "generation": generation}
    return await store.read_table(DEAD_LETTERS.name, where, order_by=_ORDER)


async def parked_streams(store: EventStore, key: str, generation: int) -> set[str]:
    """The streams of one partition's generation that have parked events."""
    where = {"projection": key, "generation": generation}
    return {r["stream"] for r in await store.read_table(DEAD_LETTERS.name, where)}


async def forget(store: EventStore, key: str, generation: int) -> list[TableWrite]:
    """Writes that delete one partition's dead letters of one generation."""
    rows = await store.read_table(DEAD_LETTERS.name, {"projection": key, "generation": generation})
    return [delete(key, generation, r["event_id"]) for r in rows]


async def forget_generation(store: EventStore, name: str, generation: int) -> list[TableWrite]:
    """Writes that delete the dead letters of one generation of every partition of ``name``."""
    rows = await store.read_table(DEAD_LETTERS.name, {"generation": generation})
    return [
        delete(r["projection"], generation, r["event_id"])
        for r in rows
        if r["projection"] == name or r["projection"].startswith(f"{name}/")
    ]


async def forget_key(store: EventStore, key: str) -> list[TableWrite]:
    """Writes that delete every dead letter of one partition (any generation)."""
    rows = await store.read_table(DEAD_LETTERS.name, {"projection": key})
    return [delete(key, r["generation"], r["event_id"]) for r in rows]


async def parking_partition(
    store: EventStore, name: str, generation: int, partitions: int
) -> str | None:
    """The first of ``name``'s partitions 0..partitions-1 with dead letters in ``generation``."""
    keys = {f"{name}/{k}" for k in range(partitions)}
    rows = await store.read_table(DEAD_LETTERS.name, {"generation": generation})
    return min((r["projection"] for r in rows if r["projection"] in keys), default=None)


async def headless(store: EventStore, key: str, generation: int) -> set[str]:
    """Streams whose first parked event is one that only waited (its failed one was dropped)."""
    first: dict[str, bool] = {}
    for r in await _rows(store, key, generation):
        first.setdefault(r["stream"], bool(r["blocked"]))
    return {stream for stream, blocked in first.items() if blocked}


async def retry(
    store: EventStore, projection: Projection, key: str, generation: int, streams: set[str] | None
) -> list[TableWrite]:
    """The writes of applying parked events again (of ``streams``, or all), per stream in order:
    the handlers' rows, the deletes of the letters applied, the letters that failed again. A
    stream with none left flows on; an event id in ``streams`` stands for its stream."""
    rows = await _rows(store, key, generation)
    if streams is not None:
        streams = {r["stream"] for r in rows if r["stream"] in streams or r["event_id"] in streams}
    failed: set[str] = set()
    rm = ReadModel(store, projection.tables, generation)
    writes: list[TableWrite] = []
    for r in rows:
        if (streams is not None and r["stream"] not in streams) or r["stream"] in failed:
            continue
        event = await store.get_event(r["event_id"])
        if event is not None and event.type in projection.handlers:
            rm.begin(event)
            try:
                await projection.handle(event, rm)
            except Exception as exc:
                rm.discard()
                failed.add(r["stream"])
                error = f"{type(exc).__name__}: {exc}"
                values = {**r, "error": error, "attempts": (r["attempts"] or 0) + 1}
                writes.append(
                    TableWrite.upsert(DEAD_LETTERS.name, values, DEAD_LETTERS.primary_key)
                )
                continue
            rm.keep()
        writes.append(delete(key, generation, r["event_id"]))
    return rm.writes + writes


def from_rows(
    rows: list[dict[str, Any]], current: dict[str, int], targets: set[str] | None
) -> list[DeadLetter]:
    """The ``DeadLetter``s of dead-letter ``rows`` of the current generation of each partition
    (``current``: status row name -> generation), of ``targets`` only if given."""
    return [
        DeadLetter(
            r["projection"],
            r["event_id"],
            r["generation"],
            str(Position(r["position"], r["position_index"])),
            r["stream"],
            r["sequence"],
            r["type"],
            r["error"],
            r["attempts"],
            bool(r["blocked"]),
            r["parked_at"] / 1e6,
        )
        for r in rows
        if (targets is None or r["projection"] in targets)
        and current.get(r["projection"]) == r["generation"]
    ]
