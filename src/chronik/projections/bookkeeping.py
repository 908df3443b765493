"""Projection bookkeeping in the store's database: the system tables and the rows of them.

Status rows, control requests, dead letters, leases and plans are tables of the store
(``chronik.store.tables``: created by the SQLite and PostgreSQL migrations, present in a memory
store from the start), so any process pointed at the same store (the CLI, an admin UI) sees the
status of the projections a server runs, and its requests reach the running processor within a
heartbeat. Here: the table specs, the plan of a partitioned projection, the status row a
processor commits with every batch, and the lag helpers. Values in, rows out: nothing here
writes to the store.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Final, NamedTuple

from chronik.errors import ReadModelError
from chronik.messages import Position
from chronik.store.base import EventStore, TableWrite
from chronik.store.tables import DEAD_LETTERS, LEASES, PLANS, REQUESTS, STATUS

if TYPE_CHECKING:
    from chronik.projections.lanes import View

__all__ = [
    "DEAD_LETTERS",
    "LEASES",
    "PLANS",
    "REQUESTS",
    "STATUS",
    "Plan",
    "RateMeter",
    "lag_events",
    "load_plan",
    "status_row",
]

RATE_WINDOW: Final = 5.0  # seconds of history behind events/s


class Plan(NamedTuple):
    """The generations of a partitioned projection: the one that serves and the one that builds
    (each with the version and partition count that built it), and retired ones whose tables
    are dropped once no partition uses them."""

    generation: int
    version: int
    partitions: int
    building: int | None = None
    building_version: int | None = None
    building_partitions: int | None = None
    retired: tuple[int, ...] = ()
    switching: bool = False  # the serving generation stops; the switch follows once all stopped

    def newest(self) -> int:
        """The highest generation the plan has used (a new one is always higher)."""
        return max(self.generation, self.building or 0, *self.retired)

    def write(self, name: str) -> TableWrite:
        """The upsert of this plan as the plan of projection ``name``."""
        values = {
            "name": name,
            "generation": self.generation,
            "version": self.version,
            "partitions": self.partitions,
            "building": self.building,
            "building_version": self.building_version,
            "building_partitions": self.building_partitions,
            "switching": int(self.switching),
            "retired": ",".join(map(str, self.retired)),
        }
        return TableWrite.upsert(PLANS.name, values, ("name",))


async def load_plan(store: EventStore, name: str) -> Plan | None:
    """The plan of a partitioned projection, or None if its partition 0 never ran."""
    try:
        rows = await store.read_table(PLANS.name, {"name": name}, limit=1)
    except ReadModelError:  # the table is created by the first processor
        return None
    if not rows:
        return None
    r = rows[0]
    retired = tuple(int(g) for g in (r["retired"] or "").split(",") if g)
    return Plan(
        r["generation"],
        r["version"],
        r["partitions"],
        r["building"],
        r["building_version"],
        r["building_partitions"],
        retired,
        bool(r["switching"]),
    )


def lag_events(position: Position | None, head: Position | None) -> int:
    """Events between a position and the head, from the positions alone: the row id part
    (``index``, PostgreSQL) when there is one, else ``commit`` (memory, SQLite rowids)."""
    if head is None:
        return 0
    if head.index or (position is not None and position.index):
        return max(0, head.index - (position.index if position is not None else 0))
    return max(0, head.commit - (position.commit if position is not None else 0))


class RateMeter:
    """Events per second over the last few seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def __call__(self, processed: int) -> float:
        now = time.monotonic()
        samples = self._samples
        samples.append((now, processed))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        t0, n0 = samples[0]
        return (processed - n0) / (now - t0) if now > t0 else 0.0


def status_row(
    view: View, owner: str, head: Position | None, counters: tuple[int, float, int]
) -> TableWrite:
    """The status row of a processor as it stands (``counters`` = events processed, events per
    second, recorded_at in us of the last event applied)."""
    processed, rate, last_event_us = counters
    active, building, state = view.active, view.building, view.state
    position = active.position
    lag = lag_events(position, head)
    if building is not None and state == "running":
        state = "rebuilding"
    values = {
        "name": view.key,
        "version": active.version,
        "generation": active.generation,
        "building": building.generation if building else None,
        "building_version": building.version if building else None,
        "state": state,
        "position": None if position is None else str(position),
        "build_position": str(building.position) if building and building.position else None,
        "head": None if head is None else str(head),
        "lag_events": lag,
        "lag_seconds": max(0.0, time.time() - last_event_us / 1e6) if lag else 0.0,
        "events_per_s": rate,
        "processed": processed,
        "last_error": view.last_error,
        "heartbeat": time.time_ns() // 1000,
        "owner": owner,
    }
    return TableWrite.upsert(STATUS.name, values, ("name",))
