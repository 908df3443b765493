"""Lanes: the generations of a projection's tables a processor advances, seen as values.

A ``Lane`` is one generation with its checkpoint and parked streams; the processor owns its
lanes and is the only one that changes them. ``View`` is the frozen snapshot of a processor
that ``chronik.projections.control`` and ``chronik.projections.plan`` decide from; the
functions here turn a generation into the table writes that create, drop or clear it, and
read a lane as the database has it. ``Waiters`` are the read-your-writes waits on a lane.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import NamedTuple

from chronik.errors import ConfigurationError, ValidationError
from chronik.messages import Position, RecordedEvent
from chronik.projections import dead_letters
from chronik.projections.bookkeeping import Plan
from chronik.projections.projection import Projection
from chronik.store.base import EventStore, TableSpec, TableWrite
from chronik.store.records import ReadPage

__all__ = [
    "START",
    "Lane",
    "LaneView",
    "View",
    "Waiters",
    "checkpoint_name",
    "drop_tables",
    "ensure_tables",
    "load_lane",
    "partition_key",
    "specs",
    "wants_commit",
]

START = Position(0)


def partition_key(p: Projection, partition: int, heartbeat: float, lease_ttl: float) -> str:
    """The name of a partition's status row, requests and dead letters (``name`` or
    ``name/k``), once its processor's settings are checked."""
    if not p.handlers:
        raise ConfigurationError(f"projection {p.name!r} has no handlers")
    if type(partition) is not int or not 0 <= partition < p.partitions:
        raise ValidationError(f"{p.name} has no partition {partition!r}")
    if lease_ttl <= 2 * heartbeat:
        raise ValidationError("lease_ttl must be more than twice the heartbeat")
    return p.name if p.partitions == 1 else f"{p.name}/{partition}"


def checkpoint_name(projection: str, generation: int) -> str:
    """The checkpoint name of one generation of a projection."""
    return f"projection:{projection}:g{generation}"


class LaneView(NamedTuple):
    """A lane's state as values."""

    generation: int
    version: int
    frozen: bool
    position: Position | None
    applied: Position | None
    caught_up: bool
    stop_at: Position | None = None  # a repartition holds the lane there


class Lane:
    """One generation of a projection's tables with its own checkpoint and parked streams."""

    def __init__(self, generation: int, version: int, frozen: bool = False) -> None:
        self.generation = generation
        self.version = version
        self.frozen = frozen  # built by another version: serves reads, is not advanced
        self.position: Position | None = None  # read up to here (committed or committing)
        self.applied: Position | None = None  # committed up to here: what wait_for trusts
        self.parked: set[str] = set()
        self.dirty = False  # position advanced (scanned) without a checkpoint write yet
        self.caught_up = False
        self.isolate_until: Position | None = None  # one event per commit up to here
        self.stop_at: Position | None = None  # a repartition: read nothing past here

    def checkpoint(self, projection: str) -> str:
        """The checkpoint name of this generation."""
        return checkpoint_name(projection, self.generation)

    def view(self) -> LaneView:
        """This lane's state as values."""
        return LaneView(
            self.generation,
            self.version,
            self.frozen,
            self.position,
            self.applied,
            self.caught_up,
            self.stop_at,
        )

    def cut(self, read: ReadPage) -> tuple[list[RecordedEvent], Position | None]:
        """A page read for this lane, cut at ``stop_at`` (chronik.projections.repartition):
        the events up to there, and ``stop_at`` as how far the read went if it went past it
        (none of the lane's events lies between)."""
        page, bound = read
        stop = self.stop_at
        if stop is None:
            return page, bound
        kept = [e for e in page if e.position <= stop]
        if len(kept) < len(page) or (bound is not None and bound > stop):
            return kept, stop
        return kept, bound

    def quiet_until(self, store: EventStore, types: tuple[str, ...]) -> Position | None:
        """How far this lane may move without a read: every event after its position up to
        there was appended by ``store`` itself, none of ``types`` (``committed_types``);
        None: read. Not while a repartition or an isolated event holds the lane."""
        if self.position is None or self.stop_at is not None or self.isolate_until is not None:
            return None
        known = store.committed_types(self.position)
        return None if known is None or not known[1].isdisjoint(types) else known[0]

    def scanned(self, bound: Position | None) -> bool:
        """Nothing of this lane's up to ``bound`` (its read came back empty): caught up, and
        moved there; True when it moved (its waiters may go on)."""
        self.caught_up = True
        if bound is None or (self.position is not None and bound <= self.position):
            return False
        self.position = self.applied = bound
        self.dirty = True
        return True

    def __repr__(self) -> str:
        return f"<Lane g{self.generation} v{self.version} at {self.position}>"


@dataclass(frozen=True, slots=True)
class View:
    """What a processor's decisions are made from: its projection and partition, its state and
    its lanes, as values taken at one moment."""

    projection: Projection
    partition: int
    key: str  # the name of the partition's status row, requests and dead letters
    state: str
    last_error: str | None
    plan: Plan | None
    outdated: bool
    active: LaneView
    building: LaneView | None

    def lanes(self) -> dict[int, LaneView]:
        """The lanes by generation (the serving one even if frozen)."""
        found = {self.active.generation: self.active}
        if self.building is not None:
            found[self.building.generation] = self.building
        return found


async def load_lane(
    store: EventStore,
    projection: Projection,
    partition: int,
    key: str,
    generation: int,
    version: int,
) -> Lane:
    """A new lane of one partition as the database has it: checkpoint and parked streams."""
    lane = Lane(generation, version, frozen=version != projection.version)
    checkpoint = await store.load_checkpoint(lane.checkpoint(projection.name), partition)
    lane.position = lane.applied = checkpoint.position if checkpoint else None
    lane.parked = await dead_letters.parked_streams(store, key, generation)
    return lane


def specs(projection: Projection, generation: int) -> list[TableSpec]:
    """The table specs of one generation of the projection."""
    return [t.spec(generation) for t in projection.tables.values()]


def ensure_tables(projection: Projection, generation: int) -> list[TableWrite]:
    """Writes that create one generation's tables if they are missing."""
    return [TableWrite("ensure", s.name, spec=s) for s in specs(projection, generation)]


def drop_tables(projection: Projection, generation: int) -> list[TableWrite]:
    """Writes that drop one generation's tables."""
    return [TableWrite("drop", s.name) for s in specs(projection, generation)]


class Waiters:
    """Read-your-writes: waits until the serving lane has applied a position."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Position, asyncio.Future[None]]] = []

    @staticmethod
    def reached(lane: Lane, position: Position) -> bool:
        """Whether ``lane`` serves and has applied ``position``."""
        mine = lane.applied
        return not lane.frozen and mine is not None and mine >= position

    async def wait(self, position: Position) -> None:
        """Wait until ``resolve`` finds ``position`` reached (or ``fail`` ends the wait)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((position, fut))
        try:
            await fut
        finally:
            self.waiting = [(p, f) for p, f in self.waiting if f is not fut]

    def resolve(self, lane: Lane) -> None:
        """End the waits whose position the serving ``lane`` has reached."""
        for position, fut in self.waiting:
            if not fut.done() and self.reached(lane, position):
                fut.set_result(None)

    def fail(self, exc: Exception) -> None:
        """End every wait with ``exc``."""
        for _, fut in self.waiting:
            if not fut.done():
                fut.set_exception(exc)


def wants_commit(
    waiters: Waiters, lanes: list[Lane], store: EventStore, types: tuple[str, ...]
) -> bool:
    """Whether a processor idle between rounds wakes for a commit of ``store`` (the object it
    reads) itself: yes unless every one of its ``lanes`` may move past it unread (none of its
    ``types``: ``Lane.quiet_until``) and none of its ``waiters`` waits for a position."""
    return bool(waiters.waiting) or any(lane.quiet_until(store, types) is None for lane in lanes)
